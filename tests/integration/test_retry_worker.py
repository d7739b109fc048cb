"""RetryFunction through moto's real SQS semantics (DelaySeconds, visibility, redrive) under a frozen clock.

The clock is moved by the test, never slept through: moto enforces visibility on the wall clock, and
freezegun is that clock here.
"""

import json
from datetime import UTC, datetime

import pytest
from freezegun import freeze_time

from didomi_braze.domain.errors import ConfigurationError
from didomi_braze.domain.mapping import BrazeIdentity, Change
from didomi_braze.domain.ordering import Position, StoredInput
from didomi_braze.domain.retry import PendingChange
from tests.integration.conftest import call_webhook, event_for
from tests.samples import connector_document, http_event

# Frozen at today's date: moto also expires messages after the queues' retention period, on the same clock.
START = datetime.now(UTC).replace(microsecond=0)
SCHEDULE = [30, 75, 130, 195, 270]  # seconds after the first failure, with the default delays


def run(clock, worker, seconds: float, step: float = 0.25) -> list[tuple[float, int]]:
    """Advance the clock `step` seconds at a time, polling the queue each time like Lambda's event source.

    Returns (seconds since start, messages handed to the function) for each invocation."""
    calls = []
    for tick in range(1, int(seconds / step) + 1):
        clock.tick(step)
        while handed := worker.poll_once(wait_seconds=0):
            calls.append((tick * step, handed))
    return calls


def on_schedule(calls, expected) -> bool:
    """The retries happened at the expected seconds after the first failure, within 2 s each."""
    return len(calls) == len(expected) and all(abs(t - e) <= 2 for (t, _), e in zip(calls, expected, strict=True))


def parked(aws) -> list[dict]:
    return [
        {"body": json.loads(m["Body"]), **{k: v["StringValue"] for k, v in m["MessageAttributes"].items()}}
        for m in aws.messages(aws.dead_letter_queue)
    ]


def test_an_event_that_always_fails_is_retried_exactly_five_times_on_schedule_then_parked(aws, braze, worker):
    with freeze_time(START) as clock:
        braze.fail_randomly(rate=1.0, seed=1, faults=("503",))
        assert call_webhook(http_event("event-created"))[0] == 202  # the first failure, at t = 0

        calls = run(clock, worker, 400)

    assert on_schedule(calls, SCHEDULE), calls
    # The webhook's own try, then five retries; each try sends its request twice (a 5xx is sent again at once).
    assert len(braze.track_requests()) == 12
    [dead] = parked(aws)
    assert dead["reason"].startswith("retries exhausted after 5 retries; last: braze server error (503)")
    assert dead["attempts"] == "12" and dead["last_braze_status"] == "503" and dead["category"] == "retries_exhausted"
    assert dead["first_failure_at"] == START.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    assert dead["body"]["owed"] == ["email_subscribe", "group:3f1c9a52-7d4e-4b8a-9c61-2e5f0a7b8d13"]
    assert (dead["body"]["failures"], dead["body"]["calls"]) == (0, 0)  # a replay starts a fresh schedule
    assert aws.messages(aws.retry_queue) == []


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_an_event_that_succeeds_on_retry_k_stops_there(aws, braze, worker, k):
    with freeze_time(START) as clock:
        braze.fail_next(*["503"] * (2 * k))  # the webhook's try and the first k-1 retries fail, each sent twice
        call_webhook(http_event("event-created"))

        calls = run(clock, worker, 400)

    assert on_schedule(calls, SCHEDULE[:k])
    assert braze.state("external_id:customer-42").email_subscribe == "opted_in"
    assert parked(aws) == [] and aws.messages(aws.retry_queue) == []


def test_120_queued_events_become_three_braze_calls(aws, braze, worker):
    users = [f"user-{i:03d}" for i in range(120)]
    for user in users:
        braze.add_user(f"external_id:{user}")
    with freeze_time(START) as clock:
        braze.fail_next(*["503"] * 240)  # each webhook's request and its second try
        assert {call_webhook(event_for(user))[0] for user in users} == {202}
        requests_before = len(braze.track_requests())

        calls = run(clock, worker, 40)

    retries = braze.track_requests()[requests_before:]
    assert [len(r.body["attributes"]) for r in retries] == [50, 50, 20]
    assert sum(handed for _, handed in calls) == 120
    assert all(braze.state(f"external_id:{u}").email_subscribe == "opted_in" for u in users)


def test_a_per_item_error_parks_only_its_own_message(aws, braze, worker):
    users = [f"user-{i}" for i in range(5)]
    for user in users:
        braze.add_user(f"external_id:{user}")
    with freeze_time(START) as clock:
        braze.fail_next(*["503"] * 10, "item_error")  # each webhook's request and its second try
        for user in users:
            call_webhook(event_for(user))
        run(clock, worker, 40)

    [retry_request] = braze.track_requests()[10:]
    rejected = retry_request.body["attributes"][0]["external_id"]
    [dead] = parked(aws)
    assert dead["body"]["identity"]["value"] == rejected
    assert dead["reason"] == "braze rejected the object: injected item error" and dead["attempts"] == "3"
    assert dead["category"] == "braze_rejected"
    assert [u for u in users if braze.state(f"external_id:{u}").updates] == [u for u in users if u != rejected]


def test_a_request_braze_refuses_as_a_whole_is_resent_object_by_object(aws, braze, worker):
    users = ["user-a", "user-b", "user-c"]
    for user in users:
        braze.add_user(f"external_id:{user}")
    with freeze_time(START) as clock:
        braze.fail_next(*["503"] * 6, "400")  # each webhook's request and its second try
        for user in users:
            call_webhook(event_for(user))
        run(clock, worker, 40)

    sizes = [len(r.body["attributes"]) for r in braze.track_requests()[6:]]
    assert sizes == [3, 1, 1, 1]
    assert parked(aws) == []
    assert all(braze.state(f"external_id:{u}").email_subscribe == "opted_in" for u in users)


def test_a_malformed_message_is_parked_at_once_without_holding_up_the_batch(aws, braze, worker):
    with freeze_time(START) as clock:
        aws.sqs.send_message(QueueUrl=aws.retry_queue, MessageBody='{"hello": "world"}')
        braze.fail_next("503", "503")
        call_webhook(http_event("event-created"))
        run(clock, worker, 40)

    [dead] = parked(aws)
    assert dead["body"] == {"hello": "world"} and dead["reason"].startswith("not a retry message written by this connector")
    assert braze.state("external_id:customer-42").email_subscribe == "opted_in"


def test_a_429_in_the_worker_waits_until_braze_s_reset_before_the_next_retry(aws, braze, worker):
    braze.rate_limit_reset_in = 100  # later than the schedule's next delay (45 s)
    with freeze_time(START) as clock:
        braze.fail_next("503", "503", "429")
        call_webhook(http_event("event-created"))
        calls = run(clock, worker, 200)

    assert on_schedule(calls, [30, 130]), calls
    assert braze.state("external_id:customer-42").email_subscribe == "opted_in"


def test_rate_limiting_is_backpressure_it_never_spends_a_retry(aws, braze, worker):
    """Twenty 429s between the failures: still exactly five retries after failures, and `attempts` counts calls (each
    failed try is two: a 5xx is sent again at once)."""
    braze.rate_limit_reset_in = 20
    with freeze_time(START) as clock:
        braze.fail_next("503", "503", *["429"] * 20, *["503"] * 10)
        call_webhook(http_event("event-created"))
        run(clock, worker, 20 * 21 + 400, step=1)

    statuses = [r.status for r in braze.track_requests()]
    assert statuses == [503, 503, *[429] * 20, *[503] * 10]
    [dead] = parked(aws)
    assert dead["reason"].startswith("retries exhausted after 5 retries") and dead["attempts"] == "32"


def test_a_rate_limit_lasting_half_an_hour_still_ends_in_delivery(aws, braze, worker):
    braze.rate_limit_reset_in = 60
    with freeze_time(START) as clock:
        braze.fail_next(*["429"] * 30)
        assert call_webhook(http_event("event-created"))[0] == 202
        run(clock, worker, 31 * 61, step=1)

    assert braze.state("external_id:customer-42").email_subscribe == "opted_in"
    assert parked(aws) == [] and aws.messages(aws.retry_queue) == []


def test_changes_for_one_user_in_one_batch_become_one_object_with_the_newest_state(aws, braze, worker):
    with freeze_time(START) as clock:
        braze.fail_next(*["503"] * 4)  # each webhook's request and its second try
        assert call_webhook(http_event("event-created"))[0] == 202  # 2026-05-04 12:00: opted in; Braze fails
        assert call_webhook(event_for("customer-9"))[0] == 202
        # updated_at 2026-05-02: an older change for the first user, merged beside the lease and superseded
        assert call_webhook(http_event("user-updated"))[1]["reason"] == "superseded"
        run(clock, worker, 40)

    [retry] = braze.track_requests()[4:]
    assert [o["external_id"] for o in retry.body["attributes"]] == ["customer-42", "customer-9"]
    assert retry.body["attributes"][0]["email_subscribe"] == "opted_in"  # the newer state wins


def test_a_401_in_the_worker_picks_up_a_rotated_key_for_the_rest_of_the_batch(aws, braze, worker, monkeypatch):
    from didomi_braze import runtime

    monkeypatch.setattr(runtime.dependencies().delivery, "objects_per_request", 2)  # three requests per batch
    users = ["customer-42", "customer-7", "customer-9", "user-a", "user-b", "user-c"]
    for user in users:
        braze.add_user(f"external_id:{user}")
    with freeze_time(START) as clock:
        braze.fail_next(*["503"] * (2 * len(users)))  # each webhook's request and its second try
        for user in users:
            call_webhook(event_for(user))
        braze.api_key = "rotated-key"  # Braze now refuses the cached key
        aws.put_connector(connector_document(braze.url) | {"authentication": {"api_key": "rotated-key", "server": braze.url}})
        run(clock, worker, 35)

    retries = braze.track_requests()[2 * len(users) :]
    assert [(r.status, r.headers["authorization"]) for r in retries] == [
        (401, "Bearer local-braze-api-key"),
        (201, "Bearer rotated-key"),
        (201, "Bearer rotated-key"),
    ]


def test_a_worker_that_crashes_every_time_still_ends_in_the_dead_letter_queue(aws, braze, worker, monkeypatch):
    """The queue's own redrive policy (from template.yaml) is the backstop when the worker cannot settle."""
    from didomi_braze import runtime

    with freeze_time(START) as clock:
        braze.fail_next("503", "503")
        call_webhook(http_event("event-created"))
        monkeypatch.setattr(runtime.dependencies().delivery.braze, "track", _crash)
        crashes = 0
        for _ in range(12 * 400):
            clock.tick(1)
            try:
                worker.poll_once(wait_seconds=0)
            except RuntimeError:
                crashes += 1
            if dead := aws.messages(aws.dead_letter_queue):
                break

    redrive = json.loads(
        aws.sqs.get_queue_attributes(QueueUrl=aws.retry_queue, AttributeNames=["RedrivePolicy"])["Attributes"]["RedrivePolicy"]
    )
    assert crashes == redrive["maxReceiveCount"] == 10
    assert [json.loads(m["Body"])["event"]["type"] for m in dead] == ["event.created"]


def _crash(*args, **kwargs):
    raise RuntimeError("worker crashed")


def test_a_retry_for_a_user_braze_does_not_know_is_not_created_without_upsert(aws, braze, worker):
    position = Position("2026-05-04T12:00:00.000000Z", None, "e1")
    change = Change(
        BrazeIdentity("external_id", "stranger"),
        {"consents_purposes_newsletter_enabled": StoredInput(True, position)},
        "event.created:e1",
        "event.created",
    )
    pending = PendingChange(change, None, "braze server error (503)", "2026-05-04T12:00:00.000000Z", failures=1)
    with freeze_time(START) as clock:
        aws.sqs.send_message(QueueUrl=aws.retry_queue, MessageBody=pending.to_json())
        run(clock, worker, 5)

    assert braze.track_requests()[0].body["attributes"][0]["_update_existing_only"] is True
    assert braze.state("external_id:stranger") is None


def test_a_broken_configuration_fails_the_batch_loudly_and_keeps_every_message(aws, braze, worker, logs, monkeypatch):
    from didomi_braze import runtime

    with freeze_time(START) as clock:
        braze.fail_next("503", "503")
        call_webhook(http_event("event-created"))
        monkeypatch.setenv("RETRY_DELAYS_SECONDS", "30,45")  # too few delays
        runtime.dependencies.cache_clear()
        clock.tick(31)
        with pytest.raises(ConfigurationError):
            worker.poll_once(wait_seconds=0)
        assert "RETRY_DELAYS_SECONDS needs 5 to 9 delays" in logs.getvalue()
        assert len(aws.sqs.receive_message(QueueUrl=aws.retry_queue, VisibilityTimeout=0).get("Messages", [])) == 0  # in flight
        clock.tick(361)  # back after the queue's visibility timeout
        assert len(aws.messages(aws.retry_queue)) == 1
