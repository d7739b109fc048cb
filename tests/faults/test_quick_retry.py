"""A request Braze answers at once with a 5xx is sent again half a second later, within the same leases (README
"Delivery, retries"): a random 5xx costs half a second instead of a 30 s retry. Not after a timeout, a 429 or a
401; not when the leases no longer cover another call; and the retry schedule and `attempts` still hold."""

import pytest

from tests.faults.harness import World, record_call_times, run_worker
from tests.property.didomi_model import NEWSLETTER


@pytest.fixture
def world():
    world = World()
    yield world
    world.close()


@pytest.mark.parametrize("status", ["500", "503"])
def test_a_5xx_answered_at_once_is_sent_again_half_a_second_later_and_the_webhook_answers_delivered(world, status):
    times = record_call_times(world)
    world.workspace.fail_next(status)
    world.didomi.consent("u0", {NEWSLETTER: False}, pending=False, regulation="gdpr")

    answer = world.post(world.didomi.outbox[0].body)

    assert answer.status == 200 and answer.body["status"] == "delivered"
    assert len(times) == 2 and times[1] - times[0] == pytest.approx(0.5)
    assert world.braze_fields("u0") == world.truth("u0") == {"email_subscribe": "unsubscribed"}
    assert world.counts["BrazeQuickRetries"] == 1 and world.counts["BrazeRequests"] == 2
    assert world.queues.retries.depth() == 0


@pytest.mark.parametrize("fault", ["hang", "429", "401"])
def test_a_timeout_a_429_or_a_401_is_not_sent_again_at_once(world, fault):
    times = record_call_times(world)
    world.workspace.fail_next(fault)
    world.didomi.consent("u0", {NEWSLETTER: False}, pending=False, regulation="gdpr")

    assert world.post(world.didomi.outbox[0].body).body["status"] == "queued"
    assert len(times) == 1 and world.counts["BrazeQuickRetries"] == 0


def test_no_second_request_once_the_lease_no_longer_covers_a_whole_braze_call(world):
    """The webhook's lease is 10 s and a call may take 7: after a 5xx answered 2.6 s into the lease, the half-second
    pause leaves too little of it, and the change is queued instead."""
    times = record_call_times(world)
    track = world.braze.track

    def slow_answer(*args, **kwargs):
        world.clock.advance(2.6)
        return track(*args, **kwargs)

    world.braze.track = slow_answer
    world.workspace.fail_next("503")
    world.didomi.consent("u0", {NEWSLETTER: False}, pending=False, regulation="gdpr")

    assert world.post(world.didomi.outbox[0].body).body["status"] == "queued"
    assert len(times) == 1 and world.counts["BrazeQuickRetries"] == 0


def test_a_batch_answered_5xx_is_sent_again_by_the_worker_and_its_messages_are_deleted():
    world = World(users=("u0", "u1"))
    try:
        times = record_call_times(world)
        world.workspace.fail_next("503", "503")  # each webhook's call and its second try: both queued
        world.didomi.consent("u0", {NEWSLETTER: False}, pending=False, regulation="gdpr")
        assert world.post(world.didomi.outbox[0].body).body["status"] == "queued"
        world.workspace.fail_next("503", "503")
        world.didomi.consent("u1", {NEWSLETTER: True}, pending=False, regulation="gdpr")
        assert world.post(world.didomi.outbox[2].body).body["status"] == "queued"
        world.clock.advance(31)
        world.workspace.fail_next("500")  # the worker's batched request; its second try is accepted

        assert world.worker.poll() == 2

        assert len(times) == 6 and times[5] - times[4] == pytest.approx(0.5)
        assert [len(r.body["attributes"]) for r in world.workspace.requests[-2:]] == [2, 2]  # the whole batch again
        assert world.queues.retries.depth() == 0 and world.parked() == []
        for user in ("u0", "u1"):
            assert world.braze_fields(user) == world.truth(user)
    finally:
        world.close()


def test_a_braze_that_always_answers_5xx_still_gets_five_retries_within_five_minutes_and_attempts_counts_every_call(world):
    """Each try is two calls half a second apart; the schedule counts a try as one failure, and `attempts` counts
    the calls: the webhook's two and two for each of the five retries."""
    times = record_call_times(world)
    world.workspace.fail_next(*["503"] * 12)
    world.didomi.consent("u0", {NEWSLETTER: False}, pending=False, regulation="gdpr")
    delivered_at = world.clock()
    assert world.post(world.didomi.outbox[0].body).body["status"] == "queued"

    run_worker(world, 400)

    [dead] = world.parked()
    assert len(times) == 12 and dead.attributes["attempts"] == "12", dead.attributes
    assert dead.attributes["category"] == "retries_exhausted"
    tries = times[::2]
    assert all(second - first == pytest.approx(0.5) for first, second in zip(times[::2], times[1::2], strict=True))
    assert tries[-1] - delivered_at <= 300 - 5, "the fifth retry must start within five minutes, a batching window spare"
