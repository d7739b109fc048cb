"""The mapping semantics: the email truth table, subscription groups, and sending only changes."""

import itertools
import json

import pytest

from didomi_braze.domain.connector import parse_connector_document
from didomi_braze.domain.consent import ConsentState
from didomi_braze.domain.didomi import parse_webhook
from didomi_braze.domain.mapping import BrazeUpdate, Push, Skip, plan, update_for
from tests.samples import connector_document, didomi_body

CONFIG = parse_connector_document(json.dumps(connector_document("EU-01")))
SALES = "3f1c9a52-7d4e-4b8a-9c61-2e5f0a7b8d13"
WEEKLY = "9b2e4d61-0c3a-4f7e-8d15-6a9c1b3e5f27"
OPT, UNSUB = "consents_purposes_o_enabled", "consents_purposes_u_enabled"


def _config(**mappings):
    doc = connector_document("EU-01")
    doc["mappings"] = [{"id": k, "value": v} for k, v in mappings.items()]
    return parse_connector_document(json.dumps(doc))


def _expected_email(o, u):
    if u is False:
        return "unsubscribed"
    if o is True:
        return "opted_in"
    if o is False or u is True:
        return "subscribed"
    return None


@pytest.mark.parametrize(("o", "u"), list(itertools.product([True, False, None], repeat=2)))
def test_email_truth_table_first_matching_row_wins(o, u):
    answers = {k: v for k, v in ((OPT, o), (UNSUB, u)) if v is not None}
    update = update_for(ConsentState(answers), _config(OPTED_IN=OPT, UNSUBSCRIBED=UNSUB))
    assert update.email_subscribe == _expected_email(o, u)


@pytest.mark.parametrize(
    ("mapped", "answers", "expected"),
    [
        ({"OPTED_IN": OPT}, {OPT: True}, "opted_in"),
        ({"OPTED_IN": OPT}, {OPT: False}, "subscribed"),  # o false, no UNSUBSCRIBED mapping
        ({"UNSUBSCRIBED": UNSUB}, {UNSUB: False}, "unsubscribed"),
        ({"UNSUBSCRIBED": UNSUB}, {UNSUB: True}, "subscribed"),
        ({"sg": OPT}, {OPT: True}, None),  # no email mapping at all: email_subscribe never sent
    ],
)
def test_email_with_only_one_of_the_two_mappings(mapped, answers, expected):
    assert update_for(ConsentState(answers), _config(**mapped)).email_subscribe == expected


@pytest.mark.parametrize(("enabled", "state"), [(True, "subscribed"), (False, "unsubscribed"), (None, None)])
def test_subscription_group_follows_its_consent_and_null_sends_nothing(enabled, state):
    answers = {OPT: enabled} if enabled is not None else {}
    update = update_for(ConsentState(answers), _config(**{"group-1": OPT}))
    assert update.subscription_groups == ({"group-1": state} if state else {})


def test_changes_since_keeps_only_differing_fields_and_never_sends_a_field_that_became_null():
    old = BrazeUpdate("opted_in", {"a": "subscribed", "b": "subscribed", "c": "subscribed"})
    new = BrazeUpdate("opted_in", {"a": "unsubscribed", "b": "subscribed"})
    assert new.changes_since(old) == BrazeUpdate(None, {"a": "unsubscribed"})


def _plan(name):
    return plan(parse_webhook(didomi_body(name)), CONFIG)


def test_user_created_sends_every_non_null_field():
    decision = _plan("user-created")
    assert isinstance(decision, Push)
    assert decision.identity.key == "external_id:customer-7"
    assert decision.update == BrazeUpdate("opted_in", {SALES: "subscribed", WEEKLY: "subscribed"})


def test_user_updated_sends_only_what_changed():
    # newsletter true -> false; the weekly digest is unchanged, so only the email state is sent
    assert _plan("user-updated").update == BrazeUpdate("unsubscribed", {})


def test_confirmed_event_created_sends_every_non_null_field():
    assert _plan("event-created").update == BrazeUpdate("opted_in", {SALES: "subscribed"})


def test_event_updated_from_pending_to_confirmed_sends_every_field():
    # topics is "news": the sales group's preference is present without "sales"
    assert _plan("event-updated-confirmed").update == BrazeUpdate("opted_in", {SALES: "unsubscribed"})


def test_event_updated_between_two_confirmed_states_sends_only_the_change():
    assert _plan("event-updated").update == BrazeUpdate(None, {SALES: "subscribed"})


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("event-created-pending", "pending"),
        ("user-deleted", "deleted"),
        ("event-deleted", "deleted"),
        ("event-created-cpra", "regulation_not_configured"),
    ],
)
def test_skipped_sample_events_say_why(name, reason):
    decision = _plan(name)
    assert isinstance(decision, Skip) and decision.reason == reason and decision.detail


def test_an_event_without_organization_user_id_is_skipped():
    body = didomi_body("event-created")
    del body["parameters"]["entity"]["user"]["organization_user_id"]
    assert plan(parse_webhook(body), CONFIG).reason == "no_user_id"


def test_an_update_that_changes_nothing_mapped_is_skipped_as_no_change():
    body = didomi_body("user-updated")
    body["parameters"]["new_entity"]["consents"] = body["parameters"]["old_entity"]["consents"]
    assert plan(parse_webhook(body), CONFIG).reason == "no_change"


def test_a_pending_update_of_a_confirmed_event_is_not_pushed():
    body = didomi_body("event-updated")
    body["parameters"]["new_entity"]["status"] = "pending_approval"
    assert plan(parse_webhook(body), CONFIG).reason == "pending"


def test_email_identifier_uses_the_organization_user_id_as_braze_email():
    doc = connector_document("EU-01")
    doc["properties"]["user_identifier"] = "email"
    body = didomi_body("event-created")
    body["parameters"]["entity"]["user"]["organization_user_id"] = "ada@example.com"
    decision = plan(parse_webhook(body), parse_connector_document(json.dumps(doc)))
    assert decision.identity.kind == "email" and decision.identity.value == "ada@example.com"


def test_configured_non_gdpr_regulations_are_applied():
    doc = connector_document("EU-01")
    doc["properties"]["regulations"] = ["gdpr", "cpra"]
    decision = plan(parse_webhook(didomi_body("event-created-cpra")), parse_connector_document(json.dumps(doc)))
    assert decision.update.email_subscribe == "unsubscribed"
