"""The consent-state guarantees end to end, one regression test per fault that once broke them: webhook, retry
worker, DynamoDB (moto) with faults injected at the SDK boundary, and the Braze emulator over HTTP.

Connector for these tests: OPTED_IN <- purpose `marketing`, UNSUBSCRIBED <- purpose `newsletter` (DESIGN §3's
example), and the sales-offers subscription group.
"""

import json
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError
from freezegun import freeze_time

from didomi_braze.domain.connector import parse_connector_document
from didomi_braze.domain.didomi import parse_webhook
from didomi_braze.domain.mapping import plan
from didomi_braze.domain.ports import StoredOlder
from tests.integration.conftest import call_webhook
from tests.samples import connector_document, http_event

NOW = datetime.now(UTC).replace(microsecond=0)
USER = "customer-42"
MARKETING = "consents_purposes_marketing_enabled"
NEWSLETTER = "consents_purposes_newsletter_enabled"
SALES_GROUP = "3f1c9a52-7d4e-4b8a-9c61-2e5f0a7b8d13"
LEASE_SECONDS = 6  # the webhook's lease with the tests' Braze timeouts (2 s + 0.5 s, rounded up, + 3 s)


@pytest.fixture(autouse=True)
def marketing_and_newsletter(aws, braze):
    doc = connector_document(braze.url)
    doc["mappings"] = [
        {"id": "OPTED_IN", "value": MARKETING},
        {"id": "UNSUBSCRIBED", "value": NEWSLETTER},
        {"id": SALES_GROUP, "value": "consents_purposes_offers_values_topics_sales_enabled"},
    ]
    aws.put_connector(doc)
    return parse_connector_document(json.dumps(doc), allow_loopback=True)


def consent_event(minute: int, user: str = USER, event_id: str | None = None, **purposes: bool) -> dict:
    """A confirmed consent event at 12:<minute> setting these purposes (and nothing else: events are partial)."""
    event = http_event("event-created")
    body = json.loads(event["body"])
    entity = body["parameters"]["entity"]
    entity.update(id=event_id or f"5a1f0c2e-0000-4000-8000-{minute:012d}", created_at=f"2026-05-04T12:{minute:02d}:00.000Z")
    entity["user"]["organization_user_id"] = user
    entity["consents"]["purposes"] = [{"id": name, "enabled": value} for name, value in purposes.items()]
    event["body"] = json.dumps(body)
    return event


def user_updated(version: int, updated_at: str, newsletter: bool) -> dict:
    event = http_event("user-updated")
    body = json.loads(event["body"])
    for name, enabled, v in (("old_entity", not newsletter, version - 1), ("new_entity", newsletter, version)):
        body["parameters"][name]["version"] = v
        body["parameters"][name]["consents"]["purposes"][0]["enabled"] = enabled
    body["parameters"]["new_entity"]["updated_at"] = updated_at
    event["body"] = json.dumps(body)
    return event


def email_state(braze):
    return braze.state(f"external_id:{USER}").email_subscribe


def drain(clock, worker, seconds=400):
    for _ in range(seconds):
        clock.tick(1)
        while worker.poll_once(wait_seconds=0):
            pass


def sent_email_states(braze):
    return [o.get("email_subscribe") for r in braze.track_requests() for o in r.body["attributes"] if "email_subscribe" in o]


def fail_state_writes(aws_client, when=lambda params: True):
    """Fail the state table's UpdateItem calls (ProvisionedThroughputExceeded) while `when` says so."""

    def refuse(params, **kwargs):
        if when(params):
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "injected"}}, "UpdateItem")

    aws_client.meta.events.register("before-parameter-build.dynamodb.UpdateItem", refuse)
    return lambda: aws_client.meta.events.unregister("before-parameter-build.dynamodb.UpdateItem", refuse)


def _table_client():
    from didomi_braze import runtime

    return runtime.dependencies().delivery.state._ddb


def _die_after_the_claim(event, config, aws):
    """What an invocation that took the lease and merged the event, then died (timeout, out of memory), leaves."""
    from didomi_braze import runtime

    change = plan(parse_webhook(json.loads(event["body"])), config)
    state = runtime.dependencies().delivery.state
    now = datetime.now(UTC).timestamp()
    state.claim(change.identity.state_key, change.inputs, "dead-invocation", change.event_id, now, now + 30, StoredOlder())


# -- 1. never acknowledge an undelivered event -------------------------------------------------------------------
def test_a_redelivery_meeting_a_dead_invocation_s_lease_is_queued_and_delivered_never_called_a_duplicate(
    aws, braze, worker, marketing_and_newsletter
):
    event = consent_event(0, newsletter=False)
    with freeze_time(NOW) as clock:
        _die_after_the_claim(event, marketing_and_newsletter, aws)
        status, answer = call_webhook(event)  # Didomi delivers it again within the dead invocation's lease
        assert status == 202 and answer["status"] == "queued"
        drain(clock, worker, 60)
    assert email_state(braze) == "unsubscribed"


def test_a_redelivery_after_a_dead_invocation_s_lease_ran_out_is_sent_again(aws, braze, marketing_and_newsletter):
    event = consent_event(0, newsletter=False)
    with freeze_time(NOW) as clock:
        _die_after_the_claim(event, marketing_and_newsletter, aws)
        clock.tick(31)
        assert call_webhook(event) == (200, {"status": "delivered"})
    assert email_state(braze) == "unsubscribed"


def test_a_change_whose_first_delivery_died_reaches_braze_even_after_its_twin_webhook_was_skipped(
    aws, braze, marketing_and_newsletter
):
    # Didomi sends event.created and user.updated for one change. The first dies after merging; the second finds
    # nothing new and sends nothing; Didomi then delivers the first again: it must not be judged superseded.
    event = consent_event(15, newsletter=False)
    twin = user_updated(8, "2026-05-04T12:15:00.001Z", newsletter=False)
    with freeze_time(NOW) as clock:
        _die_after_the_claim(event, marketing_and_newsletter, aws)
        clock.tick(31)
        status, answer = call_webhook(twin)
        assert status == 200 and answer["reason"] == "no_change" and braze.requests == []
        clock.tick(LEASE_SECONDS)
        assert call_webhook(event) == (200, {"status": "delivered"})
    assert email_state(braze) == "unsubscribed"


# -- 2. an older value never wins after a lost write -------------------------------------------------------------
def test_a_queued_opt_in_never_overwrites_a_later_opt_out_even_when_every_later_state_write_is_lost(aws, braze, worker):
    with freeze_time(NOW) as clock:
        braze.fail_next("503", "503")  # the request and its second try
        assert call_webhook(consent_event(0, newsletter=True, marketing=True))[0] == 202  # 12:00 opt-in waits
        clock.tick(LEASE_SECONDS + 1)
        # From here on, every write after a Braze call is lost (throttling): only the claims before one go through.
        restore = fail_state_writes(_table_client(), when=lambda params: "REMOVE" in params["UpdateExpression"])
        try:
            assert call_webhook(consent_event(1, newsletter=False)) == (200, {"status": "delivered"})  # 12:01 opt-out
            drain(clock, worker)  # the 12:00 opt-in's retries
        finally:
            restore()

    states = sent_email_states(braze)
    assert states[states.index("unsubscribed") :] == ["unsubscribed"] * (len(states) - states.index("unsubscribed"))
    assert email_state(braze) == "unsubscribed"


def test_when_the_state_table_is_unavailable_the_webhook_answers_503_and_applies_nothing(aws, braze):
    restore = fail_state_writes(_table_client())
    try:
        status, answer = call_webhook(consent_event(0, newsletter=True))
    finally:
        restore()
    assert status == 503 and "state_table_unavailable" in answer["error"]
    assert braze.requests == [] and aws.messages(aws.retry_queue) == []


def test_when_the_state_table_is_unavailable_the_worker_counts_a_failed_retry_and_applies_nothing(aws, braze, worker):
    with freeze_time(NOW) as clock:
        braze.fail_next("503", "503")  # the request and its second try
        call_webhook(consent_event(0, newsletter=True))
        restore = fail_state_writes(_table_client())
        try:
            drain(clock, worker, 40)  # retry 1 at 30 s: the table is down, nothing is sent
            assert len(braze.track_requests()) == 2
        finally:
            restore()
        drain(clock, worker, 60)  # retry 2 at 75 s: the table is back
    assert email_state(braze) == "subscribed"


# -- 3. partial events are merged ---------------------------------------------------------------------------------
def test_withdrawing_marketing_after_newsletter_keeps_the_user_unsubscribed(aws, braze):
    with freeze_time(NOW) as clock:
        assert call_webhook(consent_event(0, newsletter=False)) == (200, {"status": "delivered"})
        clock.tick(LEASE_SECONDS + 1)
        status, answer = call_webhook(consent_event(1, marketing=False))  # carries no newsletter choice
        assert status == 200 and answer["reason"] == "no_change"  # o = false, u = false: still unsubscribed
        clock.tick(LEASE_SECONDS + 1)
        assert call_webhook(consent_event(2, newsletter=True)) == (200, {"status": "delivered"})
    assert sent_email_states(braze) == ["unsubscribed", "subscribed"]


def test_an_opt_in_is_not_downgraded_by_an_unrelated_later_event(aws, braze):
    with freeze_time(NOW) as clock:
        call_webhook(consent_event(0, marketing=True, newsletter=True))
        clock.tick(LEASE_SECONDS + 1)
        offers = consent_event(1)
        body = json.loads(offers["body"])
        body["parameters"]["entity"]["consents"]["purposes"] = [{"id": "offers", "values": {"topics": {"value": "sales"}}}]
        offers["body"] = json.dumps(body)
        assert call_webhook(offers) == (200, {"status": "delivered"})
    assert braze.track_requests()[-1].body["attributes"][0] == {
        "external_id": USER,
        "_update_existing_only": True,
        "subscription_groups": [{"subscription_group_id": SALES_GROUP, "subscription_state": "subscribed"}],
    }
    assert email_state(braze) == "opted_in"


def test_a_newer_event_about_another_input_does_not_discard_an_older_waiting_change(aws, braze, worker):
    offers = http_event("event-created")  # 12:00: newsletter and sales offers
    with freeze_time(NOW) as clock:
        braze.fail_next("503", "503")  # the request and its second try
        call_webhook(offers)
        clock.tick(LEASE_SECONDS + 1)
        call_webhook(consent_event(30, newsletter=False))  # 12:30: newsletter withdrawn
        drain(clock, worker, 60)
    assert email_state(braze) == "unsubscribed"
    assert braze.state(f"external_id:{USER}").subscription_groups == {SALES_GROUP: "subscribed"}


# -- 4. an event without its timestamp takes no position ------------------------------------------------------------
def test_an_event_without_a_timestamp_is_refused_naming_the_field_and_blocks_nothing(aws, braze):
    undated = consent_event(0, newsletter=False)
    body = json.loads(undated["body"])
    del body["parameters"]["entity"]["created_at"]
    undated["body"] = json.dumps(body)

    status, answer = call_webhook(undated)

    assert status == 400 and answer["error"].startswith("parameters.entity.created_at is required")
    assert aws.dynamodb.scan(TableName=aws.stack.table_names["StateTable"])["Items"] == []
    assert call_webhook(consent_event(1, newsletter=True)) == (200, {"status": "delivered"})


# -- 5. a later edit of a consent event is not a duplicate of an earlier one ---------------------------------------
def test_two_edits_of_one_consent_event_are_both_applied(aws, braze):
    def edit(updated_at, newsletter):
        event = http_event("event-updated")
        body = json.loads(event["body"])
        new = body["parameters"]["new_entity"]
        new["user"]["organization_user_id"] = USER
        new["updated_at"] = updated_at
        new["consents"]["purposes"] = [{"id": "newsletter", "enabled": newsletter}]
        body["parameters"]["old_entity"]["consents"]["purposes"] = [{"id": "newsletter", "enabled": not newsletter}]
        event["body"] = json.dumps(body)
        return event

    with freeze_time(NOW) as clock:
        assert call_webhook(edit("2026-05-05T10:00:00Z", False)) == (200, {"status": "delivered"})
        clock.tick(LEASE_SECONDS + 1)
        assert call_webhook(edit("2026-05-05T10:05:00Z", True)) == (200, {"status": "delivered"})
    assert sent_email_states(braze) == ["unsubscribed", "subscribed"]


# -- 6. between two states of one Didomi user, the version decides ----------------------------------------------------
def test_user_version_6_is_newer_than_version_5_even_when_stamped_a_millisecond_earlier(aws, braze):
    with freeze_time(NOW) as clock:
        assert call_webhook(user_updated(6, "2026-05-02T09:00:00.000Z", newsletter=False))[0] == 200
        clock.tick(LEASE_SECONDS + 1)
        status, answer = call_webhook(user_updated(5, "2026-05-02T09:00:00.001Z", newsletter=True))
    assert status == 200 and answer["reason"] == "superseded"
    assert sent_email_states(braze) == ["unsubscribed"]


# -- 9. what no mapping reads cannot reject an event ----------------------------------------------------------------
def test_a_malformed_purpose_no_mapping_reads_does_not_reject_the_event(aws, braze):
    event = consent_event(0, newsletter=False)
    body = json.loads(event["body"])
    body["parameters"]["entity"]["consents"]["purposes"].insert(0, {"id": "analytics", "enabled": "yes", "values": 7})
    event["body"] = json.dumps(body)
    assert call_webhook(event) == (200, {"status": "delivered"})
    assert email_state(braze) == "unsubscribed"


def test_a_user_updated_without_old_entity_applies_the_new_state_in_full(aws, braze):
    event = user_updated(7, "2026-05-02T09:00:00.000Z", newsletter=False)
    body = json.loads(event["body"])
    del body["parameters"]["old_entity"]
    event["body"] = json.dumps(body)
    assert call_webhook(event) == (200, {"status": "delivered"})
    assert email_state(braze) == "unsubscribed"


# -- leases and the table ---------------------------------------------------------------------------------------------
def test_a_change_for_a_user_another_invocation_is_delivering_is_merged_and_queued_not_raced(aws, braze, worker):
    with freeze_time(NOW) as clock:
        assert call_webhook(consent_event(0, newsletter=False)) == (200, {"status": "delivered"})
        status, answer = call_webhook(consent_event(1, newsletter=True))  # within the first one's lease
        assert status == 202 and answer["reason"] == "another update for this user is being delivered"
        assert len(braze.requests) == 1
        drain(clock, worker, LEASE_SECONDS + 6)
    assert sent_email_states(braze) == ["unsubscribed", "subscribed"]


def test_the_table_stores_no_user_id_in_clear_and_forgets_after_400_days(aws, braze):
    from didomi_braze.domain.mapping import BrazeIdentity

    call_webhook(consent_event(0, newsletter=True))
    items = aws.dynamodb.scan(TableName=aws.stack.table_names["StateTable"])["Items"]
    assert [i["user_key"]["S"] for i in items] == [BrazeIdentity("external_id", USER).state_key]
    assert USER not in json.dumps(items)
    assert int(items[0]["expires_at"]["N"]) > (datetime.now(UTC) + timedelta(days=399)).timestamp()
