"""The flow back's rules, Braze → Didomi: the inverse mapping, echoes, ordering, and the consent event written
(domain/writeback.py), and the Currents records and ingest messages it reads (domain/currents.py)."""

import json
from dataclasses import replace

import hypothesis.strategies as st
import pytest
from hypothesis import given

from didomi_braze.domain.connector import parse_connector_document
from didomi_braze.domain.consent import parse_consents
from didomi_braze.domain.currents import (
    GLOBAL_STATE_CHANGE,
    GROUP_STATE_CHANGE,
    CurrentsFile,
    IngestMessage,
    InvalidCurrentsEvent,
    event_type_of,
    parse_ingest_message,
    parse_record,
)
from didomi_braze.domain.errors import MalformedRetryMessage
from didomi_braze.domain.mapping import EMAIL_FIELD, group_field
from didomi_braze.domain.ordering import Position, StoredInput
from didomi_braze.domain.origin import FLOW_BACK_DELEGATE_ID, written_by_flow_back
from didomi_braze.domain.writeback import (
    WRITE_BACK_SKIP_REASONS,
    SkipBack,
    UnwritableChange,
    WriteBack,
    consent_event,
    current_value,
    decide,
    didomi_event_id,
    with_event,
)
from tests.samples import connector_document, currents_records, ingest_batch_event

CONFIG = parse_connector_document(json.dumps(connector_document("EU-01")))
SALES = "3f1c9a52-7d4e-4b8a-9c61-2e5f0a7b8d13"
NEWSLETTER = "consents_purposes_newsletter_enabled"
SALES_VALUE = "consents_purposes_offers_values_topics_sales_enabled"
GLOBAL = parse_record(currents_records(GLOBAL_STATE_CHANGE)[0], GLOBAL_STATE_CHANGE)  # customer-42 unsubscribes
GROUP = parse_record(currents_records(GROUP_STATE_CHANGE)[0], GROUP_STATE_CHANGE)  # customer-42 leaves sales offers


def _stored(value: bool, time: str = "2026-05-04T10:00:00.000000Z") -> StoredInput:
    return StoredInput(value, Position(time, None, "didomi-event"))


def _config(**mappings):
    doc = connector_document("EU-01")
    doc["mappings"] = [{"id": k, "value": v} for k, v in mappings.items()]
    return parse_connector_document(json.dumps(doc))


# -- the inverse mapping ---------------------------------------------------------------------------------------
def test_global_unsubscribed_sets_the_unsubscribed_input_to_false():
    write = decide(GLOBAL, CONFIG, opt_ins=False, merged={NEWSLETTER: _stored(True)})
    assert isinstance(write, WriteBack)
    assert (write.input, write.value, write.braze_field, write.identity.value) == (NEWSLETTER, False, EMAIL_FIELD, "customer-42")
    assert write.position.time == "2026-05-04T12:30:00.999999Z"  # an opt-out takes its second's last moment


@pytest.mark.parametrize("status", ["Unsubscribed", "unsubscribed", "UNSUBSCRIBED", " Unsubscribed "])
def test_statuses_are_compared_case_insensitively(status):
    assert isinstance(decide(replace(GLOBAL, subscription_status=status), CONFIG, False, {}), WriteBack)


def test_global_subscribed_means_neither_in_nor_out_and_is_never_written():
    for opt_ins in (False, True):
        skip = decide(replace(GLOBAL, subscription_status="Subscribed"), CONFIG, opt_ins, {})
        assert isinstance(skip, SkipBack) and skip.reason == "neutral"


@pytest.mark.parametrize("status", ["Opted In", "opted_in", "OPTED IN"])
def test_opted_in_flows_back_only_when_opt_ins_are_enabled(status):
    event = replace(GLOBAL, subscription_status=status)
    assert decide(event, CONFIG, False, {}).reason == "opt_in_disabled"
    write = decide(event, CONFIG, True, {})
    assert (write.input, write.value) == (NEWSLETTER, True)  # OPTED_IN's input in the sample document


def test_opted_in_writes_the_opted_in_input_when_the_two_mappings_differ():
    config = _config(OPTED_IN="consents_purposes_marketing_enabled", UNSUBSCRIBED=NEWSLETTER)
    assert (
        decide(replace(GLOBAL, subscription_status="Opted In"), config, True, {}).input == "consents_purposes_marketing_enabled"
    )
    assert decide(GLOBAL, config, True, {}).input == NEWSLETTER


def test_a_group_unsubscribe_sets_the_groups_input_to_false_and_a_subscribe_only_by_choice():
    write = decide(GROUP, CONFIG, False, {})
    assert (write.input, write.value, write.braze_field) == (SALES_VALUE, False, group_field(SALES))
    subscribed = replace(GROUP, subscription_status="Subscribed")
    assert decide(subscribed, CONFIG, False, {}).reason == "opt_in_disabled"
    assert decide(subscribed, CONFIG, True, {}).value is True


def test_group_ids_match_whatever_their_case():
    assert isinstance(decide(replace(GROUP, subscription_group_id=SALES.upper()), CONFIG, False, {}), WriteBack)


@pytest.mark.parametrize(
    ("event", "config", "reason"),
    [
        (replace(GROUP, subscription_group_id="not-mapped"), CONFIG, "not_mapped"),
        (GLOBAL, _config(OPTED_IN=NEWSLETTER), "not_mapped"),  # no UNSUBSCRIBED mapping
        (replace(GROUP, subscription_status="Opted In"), CONFIG, "unknown_status"),  # Braze documents it for groups
        (replace(GLOBAL, subscription_status="Paused"), CONFIG, "unknown_status"),
        (replace(GLOBAL, external_user_id=None), CONFIG, "no_user_id"),
    ],
)
def test_what_has_no_inverse_is_skipped_with_its_reason(event, config, reason):
    skip = decide(event, config, True, {})
    assert isinstance(skip, SkipBack) and skip.reason == reason and reason in WRITE_BACK_SKIP_REASONS


def test_with_user_identifier_email_the_email_address_is_the_user():
    config = parse_connector_document(json.dumps(connector_document("EU-01", properties={"user_identifier": "email"})))
    assert decide(GLOBAL, config, False, {}).identity.value == "customer-42@example.com"
    assert decide(replace(GLOBAL, email_address=None), config, False, {}).reason == "no_user_id"


# -- echoes, ordering, equality ---------------------------------------------------------------------------------
def test_a_rest_api_change_equal_to_what_the_connector_gave_braze_is_an_echo():
    echo = replace(GLOBAL, state_change_source="REST API")
    # newsletter false in the merged state: the connector gave Braze "unsubscribed"
    assert decide(echo, CONFIG, False, {NEWSLETTER: _stored(False)}).reason == "echo"
    assert decide(replace(echo, state_change_source="rest api"), CONFIG, False, {NEWSLETTER: _stored(False)}).reason == "echo"
    group_echo = replace(GROUP, state_change_source="REST API")
    assert decide(group_echo, CONFIG, False, {SALES_VALUE: _stored(False)}).reason == "echo"


def test_a_rest_api_change_the_connector_did_not_give_is_written():
    # The customer's own backend unsubscribed the user through Braze's REST API; the connector gave "opted_in".
    change = replace(GLOBAL, state_change_source="REST API")
    assert isinstance(decide(change, CONFIG, False, {NEWSLETTER: _stored(True)}), WriteBack)


def test_the_same_value_from_another_source_is_not_an_echo_but_no_change():
    assert decide(GLOBAL, CONFIG, False, {NEWSLETTER: _stored(False)}).reason == "no_change"


def test_a_change_older_than_the_newest_didomi_value_is_not_written():
    next_second = "2026-05-04T12:30:01.000000Z"
    assert decide(GLOBAL, CONFIG, False, {NEWSLETTER: _stored(True, next_second)}).reason == "superseded"
    # Currents reports whole seconds: within the Braze change's second the order is unknown, and the opt-out wins.
    same_second = "2026-05-04T12:30:00.500000Z"
    assert isinstance(decide(GLOBAL, CONFIG, False, {NEWSLETTER: _stored(True, same_second)}), WriteBack)


def test_within_its_second_a_braze_opt_in_yields_to_a_didomi_withdrawal():
    opted_in = replace(GLOBAL, subscription_status="Opted In")
    same_second = "2026-05-04T12:30:00.500000Z"
    assert decide(opted_in, CONFIG, True, {NEWSLETTER: _stored(False, same_second)}).reason == "superseded"


# -- the consent event -----------------------------------------------------------------------------------------
def test_the_event_is_tagged_dated_at_the_braze_change_and_has_a_deterministic_id():
    write = decide(GLOBAL, CONFIG, False, {})
    body = consent_event(write, [], "gdpr")
    assert body["id"] == didomi_event_id(GLOBAL.id, "gdpr") == consent_event(write, [], "gdpr")["id"]
    assert body["id"] != didomi_event_id(GLOBAL.id, "cpra") and body["id"] != didomi_event_id(GROUP.id, "gdpr")
    assert body["created_at"] == "2026-05-04T12:30:00Z"
    assert body["user"] == {"organization_user_id": "customer-42"}
    assert body["consents"] == {"purposes": [{"id": "newsletter", "enabled": False}]}
    assert body["delegate"]["id"] == FLOW_BACK_DELEGATE_ID and written_by_flow_back(body)
    assert body["delegate"]["metadata"]["braze_event_id"] == GLOBAL.id
    assert "regulation" not in body  # Didomi stores an event without one under GDPR
    assert consent_event(write, [], "cpra")["regulation"] == "cpra"


def test_a_v2_value_is_removed_from_the_selection_and_the_other_values_are_kept():
    user = {"consents": {"purposes": [{"id": "offers", "values": {"topics": {"value": "news,sales,events"}}}]}}
    body = consent_event(decide(GROUP, CONFIG, False, {}), [user], "gdpr")
    assert body["consents"] == {"purposes": [{"id": "offers", "values": {"topics": {"value": "news,events"}}}]}
    subscribed = decide(replace(GROUP, subscription_status="Subscribed"), CONFIG, True, {})
    back = consent_event(subscribed, [with_event([user], body["consents"], "customer-42")[0]], "gdpr")
    assert back["consents"]["purposes"][0]["values"]["topics"]["value"] == "news,events,sales"


def test_the_newest_of_several_didomi_users_sharing_an_organization_user_id_is_read():
    old = {"updated_at": "2026-01-01T00:00:00Z", "consents": {"purposes": [{"id": "newsletter", "enabled": False}]}}
    new = {"updated_at": "2026-05-01T00:00:00Z", "consents": {"purposes": [{"id": "newsletter", "enabled": True}]}}
    assert current_value([old, new], NEWSLETTER) is True
    assert current_value([], NEWSLETTER) is None


@pytest.mark.parametrize(
    ("name", "consents"),
    [
        ("consents_channels_email_enabled", {"channels": [{"id": "email", "enabled": False}]}),
        (
            "consents_purposes_news_preferences_weekly_enabled",
            {"purposes": [{"id": "news", "preferences": [{"id": "weekly", "enabled": False}]}]},
        ),
        (
            "consents_purposes_news_preferences_weekly_channel_sms_enabled",
            {"purposes": [{"id": "news", "preferences": [{"id": "weekly", "channels": [{"id": "sms", "enabled": False}]}]}]},
        ),
    ],
)
def test_every_mapping_form_is_written_where_the_forward_mapping_reads_it(name, consents):
    write = decide(GLOBAL, _config(UNSUBSCRIBED=name), False, {})
    assert consent_event(write, [], "gdpr")["consents"] == consents


def test_an_id_that_names_two_places_is_resolved_by_the_users_didomi_state_or_parked():
    name = "consents_purposes_a_values_b_c_enabled"  # purpose a / preference b / value c, or purpose "a_values_b_c"
    write = decide(GLOBAL, _config(UNSUBSCRIBED=name), False, {})
    assert consent_event(write, [], "gdpr")["consents"]["purposes"][0]["id"] == "a"  # the keyword at its word
    purpose = {"consents": {"purposes": [{"id": "a_values_b_c", "enabled": True}]}}
    assert consent_event(write, [purpose], "gdpr")["consents"] == {"purposes": [{"id": "a_values_b_c", "enabled": False}]}
    twice = "consents_purposes_a_values_b_c_d_enabled"  # b/c_d or b_c/d
    with pytest.raises(UnwritableChange, match="ambiguous"):
        consent_event(decide(GLOBAL, _config(UNSUBSCRIBED=twice), False, {}), [], "gdpr")


ids = st.text(alphabet="abcxyz_", min_size=1, max_size=6).filter(lambda s: not s.startswith("_") and not s.endswith("_"))


@st.composite
def mapping_values(draw):
    form = draw(st.sampled_from(["purpose", "value", "preference", "channel"]))
    a, b, c = draw(ids), draw(ids), draw(ids)
    return {
        "purpose": f"consents_purposes_{a}_enabled",
        "value": f"consents_purposes_{a}_values_{b}_{c}_enabled",
        "preference": f"consents_purposes_{a}_preferences_{b}_enabled",
        "channel": f"consents_channels_{a}_enabled",
    }[form]


@given(name=mapping_values(), value=st.booleans(), selected=st.lists(ids, max_size=3))
def test_whatever_is_written_back_reads_back_as_the_forward_mapping_reads_it(name, value, selected):
    """The inverse is the forward mapping's: the event written resolves the input to the value, or is refused."""
    config = _config(UNSUBSCRIBED=name, OPTED_IN=name)
    event = replace(GLOBAL, subscription_status="Opted In" if value else "Unsubscribed")
    user = {"consents": {"purposes": [{"id": "x", "values": {"y": {"value": ",".join(selected)}}}]}}
    try:
        body = consent_event(decide(event, config, True, {}), [user], "gdpr")
    except UnwritableChange:
        return
    assert parse_consents(body["consents"], "consents").resolve(name) is value


# -- Currents records and ingest messages ------------------------------------------------------------------------
def test_a_files_event_type_is_read_from_its_event_type_segment_only():
    key = f"currents/dataexport.prod-01.S3.integration.x/event_type={GLOBAL_STATE_CHANGE}/date=2026-05-04-12/1/z/f.avro"
    assert event_type_of(key) == GLOBAL_STATE_CHANGE
    assert event_type_of("currents/newlayout/event_type=users.messages.email.Send/f.avro") == "users.messages.email.Send"
    assert event_type_of("currents/users.behaviors.subscription.GlobalStateChange/f.avro") is None


def test_a_record_is_read_liberally_and_refused_without_what_the_flow_back_needs():
    record = {**currents_records(GLOBAL_STATE_CHANGE)[0], "a_field_braze_added_later": 1}
    assert parse_record(record, GLOBAL_STATE_CHANGE).subscription_status == "Unsubscribed"
    for field, value, problem in [
        ("id", None, "id is required"),
        ("time", "1777897800", "time is required"),
        ("time", True, "time is required"),
        ("subscription_status", "", "subscription_status is required"),
        ("external_user_id", 42, "external_user_id must be a string"),
    ]:
        with pytest.raises(InvalidCurrentsEvent, match=problem):
            parse_record({**record, field: value}, GLOBAL_STATE_CHANGE)
    with pytest.raises(InvalidCurrentsEvent, match="subscription_group_id is required"):
        parse_record(record, GROUP_STATE_CHANGE)


def test_s3_notifications_name_the_decoded_keys_and_a_test_event_names_nothing():
    message = parse_ingest_message(ingest_batch_event()["Records"][0]["body"])
    [file] = message.files
    assert "event_type=users.behaviors.subscription.GlobalStateChange" in file.key and file.key.endswith("+0+0.avro")
    assert parse_ingest_message(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})) == IngestMessage()


def test_the_ingest_queues_own_messages_round_trip_and_anything_else_is_malformed():
    copy = IngestMessage(files=(CurrentsFile("b", "k=1/f.avro"),), failures=2, first_failure_at="2026-05-04T12:00:00Z")
    assert parse_ingest_message(copy.to_json()) == replace(copy, reason="")
    parked = IngestMessage(event=GROUP, failures=3)
    assert parse_ingest_message(parked.to_json()).event == GROUP
    assert parse_ingest_message(parked.ready_to_replay().to_json()).failures == 0
    for body in (
        "not json",
        "[]",
        '{"version": 9, "kind": "currents_file"}',
        '{"version": 1, "kind": "currents_file", "files": []}',
    ):
        with pytest.raises(MalformedRetryMessage):
            parse_ingest_message(body)


def test_applying_an_event_to_a_malformed_didomi_record_replaces_what_cannot_be_read():
    users = [{"consents": {"purposes": {"newsletter": True}, "channels": "email"}}]
    [user] = with_event(
        users, {"purposes": [{"id": "newsletter", "enabled": False}], "channels": [{"id": "email", "enabled": False}]}, "c"
    )
    assert user["consents"]["purposes"] == [{"id": "newsletter", "enabled": False}]
    assert user["consents"]["channels"] == [{"id": "email", "enabled": False}]
    assert (
        with_event([], {"purposes": [{"id": "offers", "values": {"topics": {"value": "a"}}}]}, "c")[0]["organization_user_id"]
        == "c"
    )
