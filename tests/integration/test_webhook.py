"""WebhookFunction in-process: moto for AWS, the Braze emulator over HTTP on 127.0.0.1.

Each test asserts what a user would see: the answer Didomi gets, what Braze received, what sits in the queues.
"""

import base64
import json
from datetime import UTC, datetime

import pytest
from freezegun import freeze_time

from didomi_braze import __version__
from tests.integration.conftest import call_webhook
from tests.samples import BRAZE_API_KEY, WEBHOOK_TOKEN, connector_document, http_event

LEASE_SECONDS = 6  # the webhook's lease with the tests' 0.5 s Braze read timeout: 2 + 0.5, rounded up, + 3
SALES = "3f1c9a52-7d4e-4b8a-9c61-2e5f0a7b8d13"
WEEKLY = "9b2e4d61-0c3a-4f7e-8d15-6a9c1b3e5f27"

EXPECTED_BRAZE_OBJECT = {
    "user-created": {
        "external_id": "customer-7",
        "_update_existing_only": True,
        "email_subscribe": "opted_in",
        "subscription_groups": [
            {"subscription_group_id": SALES, "subscription_state": "subscribed"},
            {"subscription_group_id": WEEKLY, "subscription_state": "subscribed"},
        ],
    },
    "user-updated": {"external_id": "customer-42", "_update_existing_only": True, "email_subscribe": "unsubscribed"},
    "event-created": {
        "external_id": "customer-42",
        "_update_existing_only": True,
        "email_subscribe": "opted_in",
        "subscription_groups": [{"subscription_group_id": SALES, "subscription_state": "subscribed"}],
    },
    "event-created-base64": {
        "external_id": "customer-42",
        "_update_existing_only": True,
        "email_subscribe": "opted_in",
        "subscription_groups": [{"subscription_group_id": SALES, "subscription_state": "subscribed"}],
    },
    "event-updated-confirmed": {
        "external_id": "customer-9",
        "_update_existing_only": True,
        "email_subscribe": "opted_in",
        "subscription_groups": [{"subscription_group_id": SALES, "subscription_state": "unsubscribed"}],
    },
    "event-updated": {
        "external_id": "customer-9",
        "_update_existing_only": True,
        "subscription_groups": [{"subscription_group_id": SALES, "subscription_state": "subscribed"}],
    },
}


@pytest.mark.parametrize("name", sorted(EXPECTED_BRAZE_OBJECT))
def test_each_sample_event_sends_braze_exactly_the_prescribed_update(aws, braze, name):
    status, body = call_webhook(http_event(name))

    assert (status, body) == (200, {"status": "delivered"})
    [request] = braze.track_requests()
    assert request.body == {"attributes": [EXPECTED_BRAZE_OBJECT[name]]}
    assert request.headers["authorization"] == f"Bearer {BRAZE_API_KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == f"didomi-braze-preference-sync/{__version__}"
    assert aws.messages(aws.retry_queue) == [] and aws.messages(aws.dead_letter_queue) == []


def test_the_user_state_in_braze_follows_the_events(aws, braze):
    with freeze_time(datetime.now(UTC)) as clock:
        assert call_webhook(http_event("user-updated"))[0] == 200  # 2026-05-02: newsletter withdrawn
        assert braze.state("external_id:customer-42").email_subscribe == "unsubscribed"
        clock.tick(LEASE_SECONDS + 1)  # the first delivery's lease has run out on its own
        assert call_webhook(http_event("event-created"))[0] == 200  # 2026-05-04: opts in again, and to sales offers
    assert braze.state("external_id:customer-42").email_subscribe == "opted_in"
    assert braze.state("external_id:customer-42").subscription_groups == {SALES: "subscribed"}


def test_a_second_change_within_the_first_delivery_s_lease_is_queued_until_the_lease_runs_out(aws, braze, worker):
    # The trade-off of one state-table round trip per delivered event (README "Ordering"): the lease is not
    # given back, so a change for the same user in its first seconds goes through the worker.
    with freeze_time(datetime.now(UTC)) as clock:
        assert call_webhook(http_event("user-updated"))[0] == 200
        status, answer = call_webhook(http_event("event-created"))
        assert status == 202 and answer["reason"] == "another update for this user is being delivered"
        assert answer["retry_in_seconds"] <= LEASE_SECONDS
        for _ in range(LEASE_SECONDS + 2):
            clock.tick(1)
            worker.poll_once(wait_seconds=0)
    assert braze.state("external_id:customer-42").email_subscribe == "opted_in"
    assert [r.status for r in braze.track_requests()] == [201, 201]


def test_the_second_webhook_of_one_change_costs_no_braze_call(aws, braze):
    # Didomi sends event.created and user.updated for the same change, within milliseconds of each other.
    event, user = _same_change()
    assert call_webhook(event) == (200, {"status": "delivered"})
    status, answer = call_webhook(user)
    assert status == 200 and answer["reason"] == "no_change"
    assert len(braze.track_requests()) == 1


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("event-created-pending", "pending"),
        ("user-deleted", "deleted"),
        ("event-deleted", "deleted"),
        ("event-created-cpra", "regulation_not_configured"),
    ],
)
def test_skipped_events_are_acknowledged_with_their_reason_and_change_nothing(aws, braze, logs, name, reason):
    status, body = call_webhook(http_event(name))

    assert status == 200 and body["status"] == "skipped" and body["reason"] == reason
    assert braze.requests == []
    assert aws.messages(aws.retry_queue) == [] and aws.messages(aws.dead_letter_queue) == []
    assert f'"reason":"{reason}"' in logs.getvalue().replace(" ", "")


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic bG9jYWw6dG9rZW4=",
        f"Token {WEBHOOK_TOKEN}",
        "Bearer wrong-token",
        f"Bearer {WEBHOOK_TOKEN}x",
        f"Bearer {WEBHOOK_TOKEN[:-1]}",
        f"{WEBHOOK_TOKEN}",
    ],
)
def test_missing_malformed_or_wrong_tokens_get_401_and_nothing_happens(aws, braze, authorization):
    event = http_event("event-created")
    event["headers"].pop("authorization")
    if authorization is not None:
        event["headers"]["Authorization"] = authorization

    status, body = call_webhook(event)

    assert status == 401 and body["status"] == "unauthorized"
    assert braze.requests == [] and aws.messages(aws.retry_queue) == []


def test_sample_unauthenticated_and_wrong_token_events_are_refused(aws, braze):
    assert call_webhook(http_event("unauthenticated"))[0] == 401
    assert call_webhook(http_event("wrong-token"))[0] == 401
    assert braze.requests == []


def test_the_bearer_scheme_is_case_insensitive(aws, braze):
    event = http_event("event-created")
    event["headers"]["authorization"] = f"bearer {WEBHOOK_TOKEN}"
    assert call_webhook(event)[0] == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (None, "the body is empty"),
        ("", "the body is empty"),
        ("{", "the body is not valid JSON"),
        ("[1, 2]", "the body must be a JSON object"),
        ('{"type": "event.created"}', "parameters is required"),
        ('{"type": "user.updated", "parameters": {"old_entity": {}}}', "parameters.new_entity is required"),
        ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ],
)
def test_malformed_bodies_get_400_naming_the_problem_and_nothing_is_sent(aws, braze, body, message):
    event = http_event("event-created")
    event["body"] = body

    status, answer = call_webhook(event)

    assert status == 400 and answer["status"] == "rejected" and message in answer["error"]
    assert "Traceback" not in answer["error"]
    assert braze.requests == [] and aws.messages(aws.retry_queue) == []


def test_sample_malformed_events_are_rejected(aws, braze):
    status, answer = call_webhook(http_event("malformed-json"))
    assert status == 400 and "not valid JSON" in answer["error"]
    status, answer = call_webhook(http_event("wrong-shape"))
    assert status == 400 and answer["error"] == "parameters.entity.consents.purposes[0].enabled must be true, false or null"
    assert braze.requests == []


@pytest.mark.parametrize(("body", "is_base64"), [("!!!not base64!!!", True), (base64.b64encode(b"\xff\xfe\x00").decode(), True)])
def test_undecodable_bodies_get_400(aws, braze, body, is_base64):
    event = http_event("event-created")
    event["body"], event["isBase64Encoded"] = body, is_base64
    assert call_webhook(event)[0] == 400
    assert braze.requests == []


@pytest.mark.parametrize("is_base64", [False, True])
def test_bodies_over_256_kb_get_413(aws, braze, is_base64):
    body = json.dumps({"type": "event.created", "parameters": {"entity": {"padding": "x" * (256 * 1024)}}})
    event = http_event("event-created")
    event["body"] = base64.b64encode(body.encode()).decode() if is_base64 else body
    event["isBase64Encoded"] = is_base64

    status, answer = call_webhook(event)

    assert status == 413 and answer["status"] == "too_large"
    assert braze.requests == []


@pytest.mark.parametrize("fault", ["503", "500", "hang"])
def test_a_braze_outage_queues_the_event_for_the_first_retry_and_answers_202(aws, braze, fault):
    braze.fail_next(fault, fault)  # a 5xx is sent again at once; a timeout is not

    status, answer = call_webhook(http_event("event-created"))

    assert status == 202 and answer["status"] == "queued" and answer["retry_in_seconds"] == 30
    attributes = aws.sqs.get_queue_attributes(QueueUrl=aws.retry_queue, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"  # DelaySeconds = the first delay
    # A hang is the worst case: Braze applied the update but the answer never came. It is retried all the same.
    assert braze.state("external_id:customer-42").updates == (1 if fault == "hang" else 0)


def test_a_queued_event_carries_the_change_what_it_owes_braze_and_why_it_failed(aws, braze):
    braze.fail_next("503", "503")  # the request and its second try
    call_webhook(http_event("user-updated"))

    [message] = _drain_delayed(aws)

    body = json.loads(message["Body"])
    assert body["identity"] == {"kind": "external_id", "value": "customer-42"}
    assert body["inputs"] == {"consents_purposes_newsletter_enabled": False}
    assert body["owed"] == ["email_subscribe"]
    assert body["reason"].startswith("braze server error (503)")
    assert body["event"]["type"] == "user.updated" and (body["failures"], body["calls"]) == (1, 2)


def test_a_429_is_queued_no_earlier_than_braze_s_rate_limit_reset(aws, braze):
    braze.rate_limit_reset_in = 120
    braze.fail_next("429")

    status, answer = call_webhook(http_event("event-created"))

    assert status == 202 and 119 <= answer["retry_in_seconds"] <= 121


@pytest.mark.parametrize("fault", ["item_error", "400"])
def test_a_rejected_update_is_dead_lettered_at_once_with_its_reason(aws, braze, fault):
    braze.fail_next(fault)

    status, answer = call_webhook(http_event("event-created"))

    assert status == 200 and answer["status"] == "dead_lettered"
    [parked] = aws.messages(aws.dead_letter_queue)
    attributes = {k: v["StringValue"] for k, v in parked["MessageAttributes"].items()}
    assert attributes["attempts"] == "1"
    assert attributes["last_braze_status"] in ("201", "400")
    assert attributes["reason"] == answer["reason"] and attributes["reason"]
    assert attributes["first_failure_at"].endswith("Z")
    assert json.loads(parked["Body"])["owed"] == ["email_subscribe", f"group:{SALES}"]
    assert aws.messages(aws.retry_queue) == []


def test_a_401_refreshes_the_cached_key_so_a_rotated_key_is_used_on_the_next_call(aws, braze):
    call_webhook(http_event("event-created"))  # caches the connector document with the old key
    braze.api_key = "rotated-key"
    aws.put_connector(connector_document(braze.url) | {"authentication": {"api_key": "rotated-key", "server": braze.url}})

    assert call_webhook(http_event("user-created"))[0] == 202  # the old key is refused: queued, cache dropped
    assert call_webhook(http_event("event-updated"))[0] == 200  # well within the cache TTL: the new key is used
    assert braze.track_requests()[-1].headers["authorization"] == "Bearer rotated-key"


def test_when_the_retry_queue_is_unreachable_the_answer_is_503_so_didomi_retries(aws, braze, logs):
    braze.fail_next("503", "503")  # the request and its second try
    aws.sqs.delete_queue(QueueUrl=aws.retry_queue)

    status, answer = call_webhook(http_event("event-created"))

    assert status == 503 and answer["status"] == "unavailable" and "retry_queue_unavailable" in answer["error"]
    assert "retry_queue_unavailable" in logs.getvalue()


def test_when_the_dead_letter_queue_is_unreachable_the_answer_is_503(aws, braze):
    braze.fail_next("400")
    aws.sqs.delete_queue(QueueUrl=aws.dead_letter_queue)
    assert call_webhook(http_event("event-created"))[0] == 503


def test_an_invalid_connector_document_answers_503_and_logs_what_to_fix(aws, braze, logs):
    aws.put_connector(connector_document("https://attacker.example"))

    status, answer = call_webhook(http_event("event-created"))

    assert status == 503 and answer["error"] == "the event could not be processed now (configuration_error); retry later"
    assert "authentication.server 'https://attacker.example' is not a Braze REST endpoint" in logs.getvalue()
    assert braze.requests == []


def test_an_unreadable_webhook_secret_fails_closed_with_503(aws, braze):
    aws.secrets.delete_secret(SecretId=aws.stack.secret_arns["WebhookSecret"], ForceDeleteWithoutRecovery=True)
    status, _ = call_webhook(http_event("event-created"))
    assert status == 503 and braze.requests == []


def test_missing_environment_is_reported_by_name(aws, braze, logs, monkeypatch):
    from didomi_braze import runtime

    monkeypatch.delenv("RETRY_QUEUE_URL")
    runtime.dependencies.cache_clear()
    assert call_webhook(http_event("event-created"))[0] == 503
    assert "environment variable RETRY_QUEUE_URL is not set" in logs.getvalue()


def _same_change():
    """The event.created and the user.updated Didomi sends for one consent change."""
    event, user = http_event("event-created"), http_event("user-updated")
    body = json.loads(user["body"])
    new = body["parameters"]["new_entity"]
    new["updated_at"] = "2026-05-04T12:00:00.001Z"  # Didomi updates the user right after the event
    new["consents"]["purposes"][0]["enabled"] = True
    body["parameters"]["old_entity"]["consents"]["purposes"][0]["enabled"] = False
    user["body"] = json.dumps(body)
    return event, user


def _drain_delayed(aws):
    """Messages sent with a delay, read by moving the clock past it (moto honours DelaySeconds on the wall clock)."""
    with freeze_time(tick=True) as clock:
        clock.tick(31)
        return aws.messages(aws.retry_queue)
