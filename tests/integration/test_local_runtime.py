"""The local stand-ins for Lambda: each function with its own environment from the template, and the SQS event
source's batching window (MaximumBatchingWindowInSeconds) under a frozen clock."""

import os
from dataclasses import replace
from datetime import UTC, datetime

import urllib3
from freezegun import freeze_time

from didomi_braze import runtime
from sandbox.lambda_runtime import RetryQueuePoller, WebhookGateway
from sandbox.stack import LocalStack
from tests.integration.conftest import REGION, call_webhook, event_for
from tests.samples import WEBHOOK_TOKEN, http_event

START = datetime.now(UTC).replace(microsecond=0)


def _own(spec, **extra):
    """The function's environment as the template declares it, plus the test's loopback Braze."""
    return {**spec.environment, "BRAZE_ALLOW_LOOPBACK": "true", **extra}


def test_each_function_gets_its_own_environment_not_the_other_s(aws, braze, monkeypatch):
    webhook, retry = aws.stack.function("WebhookFunction"), aws.stack.function("RetryFunction")
    assert retry.environment["BRAZE_READ_TIMEOUT_SECONDS"] == "10" and "BRAZE_READ_TIMEOUT_SECONDS" not in webhook.environment
    monkeypatch.delenv("BRAZE_READ_TIMEOUT_SECONDS")  # the process holds only what both functions share
    calling, seen = ["nobody"], {}
    built = runtime._built

    def spy(overlay):  # which dependencies each function's calls are served
        seen[calling[0]] = built(overlay)
        return seen[calling[0]]

    monkeypatch.setattr(runtime, "_built", spy)
    gateway = WebhookGateway(webhook, environment=_own(webhook)).start()
    poller = RetryQueuePoller(aws.sqs, aws.retry_queue, retry, REGION, wait_seconds=0, batching_window=0, environment=_own(retry))
    try:
        braze.fail_next("503", "503")  # the request and its second try
        calling[0] = "webhook"
        event = http_event("event-created")
        answer = urllib3.request(
            "POST", gateway.url, body=event["body"].encode(), headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
        )
        assert answer.status == 202
        calling[0] = "retry"
        with freeze_time(datetime.now(UTC)) as clock:
            clock.tick(31)  # past the first delay
            assert poller.poll_once(wait_seconds=0) == 1
    finally:
        gateway.stop()

    # One Braze call is 2 s connect + the read timeout: 5 s on the webhook, 10 s in the worker, as in the template.
    assert seen["webhook"].delivery.braze_seconds == 7.0
    assert seen["retry"].delivery.braze_seconds == 12.0
    assert seen["webhook"] is not seen["retry"]  # two containers, as in Lambda
    assert braze.state("external_id:customer-42").email_subscribe == "opted_in"


def test_the_local_stack_keeps_the_worker_s_settings_out_of_the_webhook():
    with LocalStack(with_gateway=False, with_poller=False) as stack:
        webhook, retry = stack.function("WebhookFunction"), stack.function("RetryFunction")
        assert "BRAZE_READ_TIMEOUT_SECONDS" not in os.environ
        assert "BRAZE_READ_TIMEOUT_SECONDS" not in webhook.environment
        assert retry.environment["BRAZE_READ_TIMEOUT_SECONDS"] == "10"
        assert webhook.environment["BRAZE_ALLOW_LOOPBACK"] == retry.environment["BRAZE_ALLOW_LOOPBACK"] == "true"
        # What both share is in the process, for code that calls a handler directly.
        assert os.environ["STATE_TABLE_NAME"] == webhook.environment["STATE_TABLE_NAME"]


def _queue(aws, users):
    for user in users:
        assert call_webhook(event_for(user))[0] == 202


def test_the_poller_holds_a_partial_batch_until_the_window_has_passed(aws, braze):
    retry = aws.stack.function("RetryFunction")
    assert retry.sqs_batching_window == 5.0 and retry.sqs_batch_size == 100
    users = [f"window-{i}" for i in range(3)]
    for user in users:
        braze.add_user(f"external_id:{user}")
    with freeze_time(START) as clock:
        poller = RetryQueuePoller(aws.sqs, aws.retry_queue, retry, REGION, wait_seconds=0)
        braze.fail_next(*["503"] * 6)  # each webhook's request and its second try
        _queue(aws, users)
        clock.tick(30)  # the first delay: all three become visible
        assert poller.poll_once() == 0  # received and held: the batch is not full
        clock.tick(4.75)
        assert poller.poll_once() == 0
        assert len(braze.track_requests()) == 6  # only the webhooks' own tries so far
        clock.tick(0.25)  # 5 s since the first message was received
        assert poller.poll_once() == 3

    retries = braze.track_requests()[6:]
    assert [len(r.body["attributes"]) for r in retries] == [3]  # one request for the whole batch
    assert aws.messages(aws.retry_queue) == []


def test_a_full_batch_is_handed_over_at_once(aws, braze):
    retry = replace(aws.stack.function("RetryFunction"), sqs_batch_size=4)
    users = [f"full-{i}" for i in range(4)]
    for user in users:
        braze.add_user(f"external_id:{user}")
    with freeze_time(START) as clock:
        poller = RetryQueuePoller(aws.sqs, aws.retry_queue, retry, REGION, wait_seconds=0)
        braze.fail_next(*["503"] * 8)  # each webhook's request and its second try
        _queue(aws, users)
        clock.tick(30)
        assert poller.poll_once() == 4


def test_with_the_template_s_batching_window_the_fifth_retry_still_runs_within_five_minutes(aws, braze):
    # DESIGN §5: the default delays add up to 270 s so that the window and polling still fit in Didomi's 300 s.
    retry = aws.stack.function("RetryFunction")
    with freeze_time(START) as clock:
        poller = RetryQueuePoller(aws.sqs, aws.retry_queue, retry, REGION, wait_seconds=0)
        braze.fail_randomly(rate=1.0, seed=1, faults=("503",))
        assert call_webhook(http_event("event-created"))[0] == 202  # the first failure, at t = 0
        retries = []
        for tick in range(1, 400 * 4 + 1):
            clock.tick(0.25)
            if poller.poll_once():
                retries.append(tick * 0.25)

    # Retries are due 30, 75, 130, 195 and 270 s after the first failure (the schedule is anchored there, so the
    # window does not add up): each runs within the 5 s window and the poll's quarter-second steps of its time.
    expected = [35, 80, 135, 200, 275]
    assert len(retries) == 5 and all(e <= r <= e + 1 for r, e in zip(retries, expected, strict=True)), retries
    assert retries[-1] < 300
    [parked] = aws.messages(aws.dead_letter_queue)
    assert parked["MessageAttributes"]["category"]["StringValue"] == "retries_exhausted"
