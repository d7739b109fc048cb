"""Braze's rate limit as backpressure, through the webhook, the worker and the emulator's fixed windows."""

from datetime import UTC, datetime

from freezegun import freeze_time

from tests.integration.conftest import call_webhook, event_for

START = datetime(2026, 5, 4, 12, 0, 0, tzinfo=UTC)  # the start of a window: windows are counted from epoch 0


def _users(braze, count):
    users = [f"burst-{i:03d}" for i in range(count)]
    for user in users:
        braze.add_user(f"external_id:{user}")
    return users


def run(clock, worker, seconds):
    for _ in range(seconds):
        clock.tick(1)
        while worker.poll_once(wait_seconds=0):
            pass


def test_a_burst_is_handed_to_the_batched_worker_once_a_quarter_of_the_window_is_spent(aws, braze, worker):
    braze.requests_per_window, braze.window_seconds = 10, 60
    users = _users(braze, 40)
    with freeze_time(START) as clock:
        answers = [call_webhook(event_for(user)) for user in users]
        assert [a[1]["status"] for a in answers] == ["delivered"] * 2 + ["queued"] * 38
        assert answers[2][1]["reason"] == "braze rate limit nearly reached: handed to the batched worker"
        run(clock, worker, 10)

    statuses = [r.status for r in braze.track_requests()]
    assert statuses == [201] * 3  # two single-user calls, then one request for the 38 handed-off users
    assert len(braze.track_requests()[-1].body["attributes"]) == 38
    assert all(braze.state(f"external_id:{u}").email_subscribe == "opted_in" for u in users)


def test_the_worker_waits_for_the_next_window_instead_of_collecting_429s(aws, braze, worker, monkeypatch):
    from didomi_braze import runtime

    monkeypatch.setattr(runtime.dependencies().delivery, "objects_per_request", 5)
    braze.requests_per_window, braze.window_seconds = 4, 60
    users = _users(braze, 30)
    with freeze_time(START) as clock:
        braze.use_capacity(2)  # another integration of the customer's used half the window
        for user in users:
            call_webhook(event_for(user))  # the first call leaves 1 of 4: every other event is handed off
        run(clock, worker, 150)

    statuses = [r.status for r in braze.track_requests()]
    assert 429 not in statuses, statuses
    assert all(braze.state(f"external_id:{u}").email_subscribe == "opted_in" for u in users)
    assert aws.messages(aws.retry_queue) == [] and aws.messages(aws.dead_letter_queue) == []
