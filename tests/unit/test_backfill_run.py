"""The backfill run's bookkeeping with faithful doubles of the queue and the run table: the checkpoint never runs
ahead of what the retry queue certainly holds."""

import io
import json

import pytest

from didomi_braze.domain.backfill import Checkpoint
from didomi_braze.domain.connector import parse_connector_document
from didomi_braze.domain.errors import StateUnavailable
from didomi_braze_ops.backfill import Pace, QueueRefused, Run, Stopped
from tests.samples import connector_document


class Runs:
    def __init__(self):
        self.saved: list[Checkpoint] = []

    def save(self, checkpoint):
        self.saved.append(checkpoint)


class Queue:
    """Accepts batches until told to refuse: then only the first `accept` bodies of the batch get in."""

    def __init__(self, refuse_batch: int | None = None, accept: int = 0):
        self.bodies: list[str] = []
        self.batches = 0
        self.refuse_batch, self.accept = refuse_batch, accept

    def send(self, bodies):
        self.batches += 1
        if self.batches == self.refuse_batch:
            self.bodies.extend(bodies[: self.accept])
            raise QueueRefused(self.accept, "the retry queue refused 7 message(s): throttled")
        self.bodies.extend(bodies)


def users(count):
    for n in range(count):
        user = {
            "id": f"u-{n}",
            "organization_user_id": f"customer-{n}",
            "version": 1,
            "updated_at": "2026-03-01T10:00:00Z",
            "consents": {"purposes": [{"id": "newsletter", "enabled": True}]},
        }
        yield user, {"line": n + 1}


def run(queue, runs, stop=lambda: False):
    config = parse_connector_document(json.dumps(connector_document()))
    return Run(Checkpoint("r1", "file:users.jsonl", "gdpr"), config, runs, queue, io.StringIO(), Pace(), stop)


def test_a_batch_partly_refused_checkpoints_only_the_users_certainly_queued():
    queue, runs = Queue(refuse_batch=2, accept=3), Runs()

    with pytest.raises(Stopped, match="refused 7 message"):
        run(queue, runs).go(users(25), None)

    assert len(queue.bodies) == 13
    assert (runs.saved[-1].line, runs.saved[-1].read, runs.saved[-1].queued) == (13, 13, 13)


def test_a_stop_request_queues_the_batch_in_hand_and_checkpoints_after_it():
    queue, runs = Queue(), Runs()
    asked = iter(range(100))

    saved = run(queue, runs, stop=lambda: next(asked) == 12).go(users(25), None)

    assert len(queue.bodies) == 13 and queue.batches == 2
    assert (saved.line, saved.queued, saved.finished) == (13, 13, False)
    assert runs.saved[-1] == saved


def test_reading_to_the_end_marks_the_run_finished_and_never_saves_ahead_of_the_queue():
    queue, runs = Queue(), Runs()

    saved = run(queue, runs).go(users(21), None)

    assert saved.finished and saved.queued == 21 == len(queue.bodies)
    assert [c.queued for c in runs.saved] == [10, 20, 21]


def test_a_checkpoint_that_cannot_be_written_stops_the_run_without_queueing_the_batch_again():
    class FailingRuns(Runs):
        def save(self, checkpoint):
            if len(self.saved) == 1:
                raise StateUnavailable("ProvisionedThroughputExceededException: slow down")
            super().save(checkpoint)

    queue, runs = Queue(), FailingRuns()

    with pytest.raises(Stopped, match="cannot write the checkpoint"):
        run(queue, runs).go(users(25), None)

    assert len(queue.bodies) == 20  # the second batch once, and no third
    assert [c.queued for c in runs.saved] == [10]
