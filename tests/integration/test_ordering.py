"""The ordering and duplicate guard end to end: webhook, retry worker, DynamoDB (moto) and the Braze emulator."""

import json
from datetime import UTC, datetime

import pytest
from freezegun import freeze_time

from didomi_braze.adapters.state_table import StateTableUnavailable, user_key
from tests.integration.conftest import call_webhook
from tests.samples import http_event

NOW = datetime.now(UTC).replace(microsecond=0)
USER = "customer-42"


def consent_event(minute: int, newsletter: bool, user: str = USER, event_id: str | None = None) -> dict:
    """A confirmed consent event at 12:<minute> setting the newsletter purpose."""
    event = http_event("event-created")
    body = json.loads(event["body"])
    entity = body["parameters"]["entity"]
    entity.update(id=event_id or f"5a1f0c2e-0000-4000-8000-{minute:012d}", created_at=f"2026-05-04T12:{minute:02d}:00.000Z")
    entity["user"]["organization_user_id"] = user
    entity["consents"]["purposes"] = [{"id": "newsletter", "enabled": newsletter}]
    event["body"] = json.dumps(body)
    return event


def user_updated(version: int, newsletter: bool) -> dict:
    event = http_event("user-updated")
    body = json.loads(event["body"])
    for name, enabled, v in (("old_entity", not newsletter, version - 1), ("new_entity", newsletter, version)):
        body["parameters"][name]["version"] = v
        body["parameters"][name]["updated_at"] = f"2026-05-02T09:{v:02d}:00.000Z"
        body["parameters"][name]["consents"]["purposes"][0]["enabled"] = enabled
    event["body"] = json.dumps(body)
    return event


def drain(clock, worker, seconds=400):
    for _ in range(seconds):
        clock.tick(1)
        while worker.poll_once(wait_seconds=0):
            pass


def test_a_stale_opt_in_waiting_for_retry_never_overwrites_a_later_opt_out(aws, braze, worker):
    with freeze_time(NOW) as clock:
        braze.fail_next("503")
        assert call_webhook(consent_event(0, True))[0] == 202  # the opt-in meets a Braze outage and waits
        clock.tick(60)
        assert call_webhook(consent_event(1, False)) == (200, {"status": "delivered"})  # the opt-out goes straight through
        drain(clock, worker)

    assert braze.state(f"external_id:{USER}").email_subscribe == "unsubscribed"
    assert [r.body["attributes"][0]["email_subscribe"] for r in braze.track_requests() if r.status == 201] == ["unsubscribed"]
    assert aws.messages(aws.retry_queue) == [] and aws.messages(aws.dead_letter_queue) == []


def test_user_updated_v5_then_v4_makes_no_braze_call_for_v4(aws, braze):
    assert call_webhook(user_updated(5, False))[1] == {"status": "delivered"}

    status, answer = call_webhook(user_updated(4, True))

    assert status == 200 and answer["status"] == "skipped" and answer["reason"] == "superseded"
    assert len(braze.track_requests()) == 1
    assert braze.state(f"external_id:{USER}").email_subscribe == "unsubscribed"


def test_the_same_body_twice_reaches_braze_once(aws, braze):
    event = user_updated(5, False)
    assert call_webhook(event)[1] == {"status": "delivered"}

    status, answer = call_webhook(event)

    assert status == 200 and answer["reason"] == "duplicate"
    assert len(braze.track_requests()) == 1


def test_the_same_event_delivered_again_while_it_waits_for_retry_is_a_duplicate(aws, braze, worker):
    with freeze_time(NOW) as clock:
        braze.fail_next("503")
        assert call_webhook(consent_event(0, True))[0] == 202
        assert call_webhook(consent_event(0, True))[1]["reason"] == "duplicate"
        drain(clock, worker, 60)

    assert [r.status for r in braze.track_requests()] == [503, 201]


def test_an_event_answered_503_is_applied_when_didomi_delivers_it_again(aws, braze, monkeypatch):
    from didomi_braze import runtime

    queues = runtime.dependencies().queues
    braze.fail_next("503")
    with monkeypatch.context() as patch:
        patch.setattr(queues, "enqueue_retry", _fail)
        assert call_webhook(consent_event(0, True))[0] == 503  # neither delivered nor queued

    assert call_webhook(consent_event(0, True)) == (200, {"status": "delivered"})
    assert braze.state(f"external_id:{USER}").email_subscribe == "opted_in"


def test_when_the_state_table_is_unavailable_the_webhook_answers_503_and_applies_nothing(aws, braze, monkeypatch):
    from didomi_braze import runtime

    monkeypatch.setattr(runtime.dependencies().state, "acquire", _table_down)

    status, answer = call_webhook(consent_event(0, True))

    assert status == 503 and "state_table_unavailable" in answer["error"]
    assert braze.requests == [] and aws.messages(aws.retry_queue) == []


def test_when_the_state_table_is_unavailable_the_worker_postpones_instead_of_applying(aws, braze, worker, monkeypatch):
    from didomi_braze import runtime

    with freeze_time(NOW) as clock:
        braze.fail_next("503")
        call_webhook(consent_event(0, True))
        with monkeypatch.context() as patch:
            patch.setattr(runtime.dependencies().state, "acquire", _table_down)
            drain(clock, worker, 40)  # retry 1 at 30 s: the table is down, nothing is sent
            assert len(braze.track_requests()) == 1
        drain(clock, worker, 60)  # retry 2 at 75 s: the table is back

    assert braze.state(f"external_id:{USER}").email_subscribe == "opted_in"


def test_an_update_for_a_user_another_invocation_is_delivering_is_queued_not_raced(aws, braze, worker):
    with freeze_time(NOW) as clock:
        _hold_lease(aws, USER, "someone-else", until=NOW.timestamp() + 20, position="x")

        status, answer = call_webhook(consent_event(0, True))

        assert status == 202 and answer["reason"] == "another update for this user is being delivered"
        assert braze.requests == []
        drain(clock, worker, 40)  # the lease has run out by the first retry
    assert braze.state(f"external_id:{USER}").email_subscribe == "opted_in"


def test_the_same_event_arriving_while_it_is_being_delivered_is_a_duplicate(aws, braze):
    from didomi_braze.domain.didomi import parse_webhook
    from didomi_braze.domain.ordering import position

    event = consent_event(0, True)
    webhook = parse_webhook(json.loads(event["body"]))
    _hold_lease(
        aws,
        USER,
        "first-delivery",
        until=datetime.now(UTC).timestamp() + 30,
        position=position(webhook.entity.order_key, webhook.event_id),
    )

    assert call_webhook(event)[1]["reason"] == "duplicate"
    assert braze.requests == []


def test_the_table_stores_no_user_id_in_clear(aws, braze):
    call_webhook(consent_event(0, True))
    items = aws.dynamodb.scan(TableName=aws.stack.table_names["StateTable"])["Items"]
    assert [i["user_key"]["S"] for i in items] == [user_key(f"external_id:{USER}")]
    assert USER not in json.dumps(items)
    assert int(items[0]["expires_at"]["N"]) > datetime.now(UTC).timestamp() + 300 * 86400


@pytest.mark.parametrize("delivered_first", [True, False])
def test_a_newer_event_about_another_field_does_not_discard_an_older_pending_change(aws, braze, worker, delivered_first):
    """Events are partial: a newer newsletter choice leaves an older, still waiting, sales-offers choice valid."""
    offers = http_event("event-created")  # 12:00, opts in to the newsletter and to sales offers
    with freeze_time(NOW) as clock:
        braze.fail_next("503")
        call_webhook(offers)
        call_webhook(consent_event(30, False))  # 12:30: newsletter withdrawn
        drain(clock, worker, 60)

    state = braze.state(f"external_id:{USER}")
    assert state.email_subscribe == "unsubscribed"
    assert state.subscription_groups == {"3f1c9a52-7d4e-4b8a-9c61-2e5f0a7b8d13": "subscribed"}


def _hold_lease(aws, user, owner, until, position):
    aws.dynamodb.put_item(
        TableName=aws.stack.table_names["StateTable"],
        Item={
            "user_key": {"S": user_key(f"external_id:{user}")},
            "lease_owner": {"S": owner},
            "lease_until": {"N": str(int(until))},
            "lease_position": {"S": position},
            "positions": {"M": {}},
        },
    )


def _fail(*args, **kwargs):
    raise RuntimeError("SQS is unreachable")


def _table_down(*args, **kwargs):
    raise StateTableUnavailable("ProvisionedThroughputExceededException: simulated")
