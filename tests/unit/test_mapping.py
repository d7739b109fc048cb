"""The mapping semantics: the email truth table, subscription groups, and what each event carries."""

import itertools
import json

import pytest

from didomi_braze.domain.connector import parse_connector_document
from didomi_braze.domain.didomi import parse_webhook
from didomi_braze.domain.errors import InvalidWebhook
from didomi_braze.domain.mapping import Change, Skip, desired, field_inputs, fields_reading, plan, values_of
from tests.samples import connector_document, didomi_body

CONFIG = parse_connector_document(json.dumps(connector_document("EU-01")))
SALES = "3f1c9a52-7d4e-4b8a-9c61-2e5f0a7b8d13"
WEEKLY = "9b2e4d61-0c3a-4f7e-8d15-6a9c1b3e5f27"
NEWSLETTER = "consents_purposes_newsletter_enabled"
SALES_VALUE = "consents_purposes_offers_values_topics_sales_enabled"
WEEKLY_VALUE = "consents_purposes_product_updates_values_frequency_weekly_enabled"
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
    values = {k: v for k, v in ((OPT, o), (UNSUB, u)) if v is not None}
    assert desired(values, _config(OPTED_IN=OPT, UNSUBSCRIBED=UNSUB)).get("email_subscribe") == _expected_email(o, u)


@pytest.mark.parametrize(
    ("mapped", "values", "expected"),
    [
        ({"OPTED_IN": OPT}, {OPT: True}, "opted_in"),
        ({"OPTED_IN": OPT}, {OPT: False}, "subscribed"),  # o false, no UNSUBSCRIBED mapping
        ({"UNSUBSCRIBED": UNSUB}, {UNSUB: False}, "unsubscribed"),
        ({"UNSUBSCRIBED": UNSUB}, {UNSUB: True}, "subscribed"),
        ({"sg": OPT}, {OPT: True}, None),  # no email mapping at all: email_subscribe never sent
    ],
)
def test_email_with_only_one_of_the_two_mappings(mapped, values, expected):
    assert desired(values, _config(**mapped)).get("email_subscribe") == expected


@pytest.mark.parametrize(("enabled", "state"), [(True, "subscribed"), (False, "unsubscribed"), (None, None)])
def test_subscription_group_follows_its_consent_and_null_sends_nothing(enabled, state):
    values = {OPT: enabled} if enabled is not None else {}
    assert desired(values, _config(**{"group-1": OPT})) == ({"group:group-1": state} if state else {})


def test_the_truth_table_reads_merged_inputs_so_a_later_partial_event_keeps_an_unsubscribe():
    # DESIGN §3's example: OPTED_IN <- marketing, UNSUBSCRIBED <- newsletter. Withdrawing marketing after
    # newsletter leaves o = false, u = false: still unsubscribed, not "subscribed" as the event alone would say.
    config = _config(OPTED_IN=OPT, UNSUBSCRIBED=UNSUB)
    assert desired({UNSUB: False}, config)["email_subscribe"] == "unsubscribed"
    assert desired({UNSUB: False, OPT: False}, config)["email_subscribe"] == "unsubscribed"
    assert desired({OPT: False}, config)["email_subscribe"] == "subscribed"  # the event alone
    assert desired({UNSUB: True, OPT: False}, config)["email_subscribe"] == "subscribed"


def test_each_field_knows_the_inputs_it_reads():
    assert field_inputs(CONFIG) == {
        "email_subscribe": (NEWSLETTER, NEWSLETTER),
        f"group:{SALES}": (SALES_VALUE,),
        f"group:{WEEKLY}": (WEEKLY_VALUE,),
    }
    assert fields_reading([NEWSLETTER], CONFIG) == {"email_subscribe"}
    assert CONFIG.inputs == (NEWSLETTER, SALES_VALUE, WEEKLY_VALUE)


def _plan(name, body=None):
    return plan(parse_webhook(body or didomi_body(name)), CONFIG)


def _carried(decision):
    assert isinstance(decision, Change), decision
    return values_of(decision.inputs)


def test_user_created_carries_every_non_null_input():
    decision = _plan("user-created")
    assert decision.identity.key == "external_id:customer-7"
    assert _carried(decision) == {NEWSLETTER: True, SALES_VALUE: True, WEEKLY_VALUE: True}


def test_user_updated_carries_only_what_changed_between_old_and_new():
    # newsletter true -> false; the weekly digest is unchanged, so it is not a change of this event
    assert _carried(_plan("user-updated")) == {NEWSLETTER: False}


def test_user_updated_without_old_entity_carries_its_full_state():
    body = didomi_body("user-updated")
    del body["parameters"]["old_entity"]
    assert _carried(_plan("", body)) == {NEWSLETTER: False, WEEKLY_VALUE: True}


def test_confirmed_event_created_carries_every_non_null_input():
    assert _carried(_plan("event-created")) == {NEWSLETTER: True, SALES_VALUE: True}


def test_event_updated_from_pending_to_confirmed_carries_everything():
    # topics is "news": the sales preference is present without "sales"
    assert _carried(_plan("event-updated-confirmed")) == {NEWSLETTER: True, SALES_VALUE: False}


def test_event_updated_between_two_confirmed_states_carries_only_the_change():
    assert _carried(_plan("event-updated")) == {SALES_VALUE: True}


def test_every_input_of_one_event_shares_the_event_s_position():
    decision = _plan("user-created")
    assert len({stored.position for stored in decision.inputs.values()}) == 1


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("event-created-pending", "pending"),
        ("user-deleted", "deleted"),
        ("event-deleted", "deleted"),
        ("event-created-cpra", "regulation_not_configured"),
        ("event-created-from-braze", "from_braze"),
    ],
)
def test_skipped_sample_events_say_why(name, reason):
    decision = _plan(name)
    assert isinstance(decision, Skip) and decision.reason == reason and decision.detail


def test_skipped_events_need_no_timestamp():
    body = didomi_body("event-deleted")
    body["parameters"]["entity"].pop("created_at")
    assert _plan("", body).reason == "deleted"


def test_an_event_without_organization_user_id_is_skipped():
    body = didomi_body("event-created")
    del body["parameters"]["entity"]["user"]["organization_user_id"]
    assert _plan("", body).reason == "no_user_id"


def test_an_update_that_changes_nothing_mapped_is_skipped_as_no_change():
    body = didomi_body("user-updated")
    body["parameters"]["new_entity"]["consents"] = body["parameters"]["old_entity"]["consents"]
    assert _plan("", body).reason == "no_change"


def test_a_pending_update_of_a_confirmed_event_is_not_pushed():
    body = didomi_body("event-updated")
    body["parameters"]["new_entity"]["status"] = "pending_approval"
    assert _plan("", body).reason == "pending"


def test_a_malformed_consent_a_mapping_reads_rejects_the_event_naming_it():
    body = didomi_body("event-created")
    body["parameters"]["entity"]["consents"]["purposes"][0]["enabled"] = "yes"
    with pytest.raises(InvalidWebhook, match=r"parameters.entity.consents.purposes\[0\].enabled must be true, false or null"):
        _plan("", body)


def test_a_malformed_old_state_counts_as_a_change_rather_than_rejecting_the_event():
    body = didomi_body("user-updated")
    body["parameters"]["old_entity"]["consents"]["purposes"][0]["enabled"] = "yes"
    assert _carried(_plan("", body)) == {NEWSLETTER: False}


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
    assert _carried(decision) == {NEWSLETTER: False}


def test_a_user_change_caused_by_a_flow_back_event_is_skipped():
    """Didomi sends user.updated with the consent event behind it as `source`: the flow back's tag is there."""
    tagged = didomi_body("event-created-from-braze")["parameters"]["entity"]
    body = didomi_body("user-updated")
    body["parameters"]["source"] = tagged
    assert _plan("", body).reason == "from_braze"
    body["parameters"]["source"] = {**tagged, "delegate": {"id": "support-team"}}  # someone else's delegate
    assert isinstance(_plan("", body), Change)


def test_an_edit_of_a_flow_back_event_in_didomi_is_a_didomi_change():
    """The tag says who created the event; an event.updated is caused by whoever edited it."""
    body = didomi_body("event-updated")
    body["parameters"]["new_entity"]["delegate"] = {"id": "didomi-braze-preference-sync"}
    assert isinstance(_plan("", body), Change)


def test_a_delegate_of_any_shape_is_read_liberally():
    body = didomi_body("event-created")
    for delegate in ("didomi-braze-preference-sync", {"id": 7}, ["x"], None):
        body["parameters"]["entity"]["delegate"] = delegate
        assert isinstance(_plan("", body), Change)
