"""Parsing Didomi webhook bodies: the six event types, regulations, and what a careless sender gets."""

import pytest

from didomi_braze.domain.didomi import parse_webhook
from didomi_braze.domain.errors import InvalidWebhook
from tests.samples import didomi_body

SAMPLES = [
    "user-created",
    "user-updated",
    "user-deleted",
    "event-created",
    "event-created-pending",
    "event-updated",
    "event-updated-confirmed",
    "event-deleted",
    "event-created-cpra",
]


@pytest.mark.parametrize("name", SAMPLES)
def test_every_sample_event_parses(name):
    webhook = parse_webhook(didomi_body(name))
    assert webhook.type == didomi_body(name)["type"]


def test_user_updated_carries_both_states_positioned_by_updated_at_and_version():
    webhook = parse_webhook(didomi_body("user-updated"))
    old, new = webhook.old_entity.position(), webhook.entity.position()
    assert (old.version, new.version) == (6, 7) and new.is_newer_than(old)
    assert webhook.entity.organization_user_id == "customer-42"
    assert new.time == "2026-05-02T09:15:22.300000Z" and new.entity == "8f7d4d3a-2b1c-4e5f-9a8b-7c6d5e4f3a2b"


def test_an_edited_consent_event_is_positioned_by_its_updated_at_so_a_later_edit_is_newer():
    body = didomi_body("event-updated")
    first = parse_webhook(body).entity.position()
    body["parameters"]["new_entity"]["updated_at"] = "2026-05-05T08:00:00Z"
    second = parse_webhook(body).entity.position()
    assert second.time == "2026-05-05T08:00:00.000000Z" and second.is_newer_than(first)


@pytest.mark.parametrize(
    ("name", "field"),
    [("event-created", "parameters.entity.created_at"), ("user-updated", "parameters.new_entity.updated_at")],
)
def test_an_event_without_its_timestamp_takes_no_position_and_the_error_names_the_field(name, field):
    body = didomi_body(name)
    entity = body["parameters"].get("entity") or body["parameters"]["new_entity"]
    entity.pop("created_at"), entity.pop("updated_at", None)
    with pytest.raises(InvalidWebhook, match=f"{field} is required"):
        parse_webhook(body).entity.position()


@pytest.mark.parametrize("version", [7, 7.0, 7.5])
def test_a_user_version_may_be_any_non_negative_number_as_didomi_s_schema_types_it(version):
    body = didomi_body("user-updated")
    body["parameters"]["new_entity"]["version"] = version
    assert float(parse_webhook(body).entity.position().version) == version


def test_a_user_without_a_version_is_ordered_by_time():
    body = didomi_body("user-updated")
    del body["parameters"]["new_entity"]["version"]
    assert parse_webhook(body).entity.position().version is None


def test_a_user_updated_without_old_entity_is_a_full_state():
    body = didomi_body("user-updated")
    del body["parameters"]["old_entity"]
    assert parse_webhook(body).old_entity is None


def test_a_status_didomi_may_add_later_is_accepted_and_not_confirmed():
    body = didomi_body("event-created")
    body["parameters"]["entity"]["status"] = "approved_by_delegate"
    entity = parse_webhook(body).entity
    assert entity.status == "approved_by_delegate" and not entity.is_confirmed


def test_consent_event_identifies_the_user_through_its_user_object():
    webhook = parse_webhook(didomi_body("event-created"))
    assert webhook.entity.kind == "event"
    assert webhook.entity.organization_user_id == "customer-42"
    assert webhook.entity.status == "confirmed"


def test_regulation_defaults_to_gdpr_and_the_top_level_field_wins():
    body = didomi_body("event-created")
    del body["parameters"]["entity"]["regulation"]
    assert parse_webhook(body).regulation == "gdpr"
    assert parse_webhook(didomi_body("event-created-cpra")).regulation == "cpra"
    body["regulation"] = "CPRA"
    assert parse_webhook(body).regulation == "cpra"


def test_timestamps_with_offsets_are_normalised_to_utc_so_they_sort():
    body = didomi_body("event-created")
    body["parameters"]["entity"]["created_at"] = "2026-05-04T14:00:00+02:00"
    assert parse_webhook(body).entity.position().time == "2026-05-04T12:00:00.000000Z"


@pytest.mark.parametrize(
    ("value", "normalised"),
    [
        ("0001-01-01T00:00:00+01:00", "0001-01-01T00:00:00.000000Z"),
        ("9999-12-31T23:59:59-01:00", "9999-12-31T23:59:59.999999Z"),
        ("0999-06-01T00:00:00Z", "0999-06-01T00:00:00.000000Z"),  # padded, so that it sorts before year 1000
    ],
)
def test_timestamps_at_the_edge_of_the_calendar_keep_their_extreme(value, normalised):
    # found by schemathesis: year 1 moved to UTC by a positive offset overflowed datetime (a 500)
    body = didomi_body("event-created")
    body["parameters"]["entity"]["created_at"] = value
    assert parse_webhook(body).entity.position().time == normalised


@pytest.mark.parametrize("value", ["2026-13-01T00:00:00Z", "", "2026-05-04 noon"])
def test_malformed_timestamps_are_rejected(value):
    body = didomi_body("event-created")
    body["parameters"]["entity"]["created_at"] = value
    with pytest.raises(InvalidWebhook, match="created_at must be an ISO 8601 timestamp"):
        parse_webhook(body).entity.position()


def test_a_blank_organization_user_id_counts_as_absent():
    body = didomi_body("event-created")
    body["parameters"]["entity"]["user"]["organization_user_id"] = "   "
    assert parse_webhook(body).entity.organization_user_id is None


def test_the_same_event_twice_has_the_same_event_id_and_a_newer_one_differs():
    assert parse_webhook(didomi_body("user-updated")).event_id == parse_webhook(didomi_body("user-updated")).event_id
    newer = didomi_body("user-updated")
    newer["parameters"]["new_entity"]["version"] = 8
    assert parse_webhook(newer).event_id != parse_webhook(didomi_body("user-updated")).event_id


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: [], "the body must be a JSON object"),
        (lambda b: {**b, "type": None}, "type is required and must be a string"),
        (lambda b: {**b, "type": "consent.changed"}, "'consent.changed' is not a Didomi event type"),
        (lambda b: {**b, "parameters": "x"}, "parameters is required and must be an object"),
        (lambda b: {**b, "parameters": {}}, "parameters.entity is required and must be an object"),
        (lambda b: {**b, "regulation": 1}, "regulation must be a string"),
        (lambda b: _set(b, "status", 3), "parameters.entity.status must be a string"),
        (lambda b: _set(b, "user", "customer-42"), "parameters.entity.user must be an object"),
    ],
)
def test_malformed_bodies_are_rejected_with_a_message_naming_the_field(mutate, message):
    with pytest.raises(InvalidWebhook) as raised:
        parse_webhook(mutate(didomi_body("event-created")))
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("created_at", "yesterday", "parameters.entity.created_at must be an ISO 8601 timestamp"),
        ("created_at", 1777896000, "parameters.entity.created_at must be an ISO 8601 timestamp string"),
    ],
)
def test_a_malformed_timestamp_is_reported_when_the_event_takes_its_position(key, value, message):
    body = _set(didomi_body("event-created"), key, value)
    with pytest.raises(InvalidWebhook, match=message):
        parse_webhook(body).entity.position()


@pytest.mark.parametrize("version", [True, -1, "7", float("inf")])
def test_a_malformed_user_version_is_reported_when_the_user_takes_its_position(version):
    body = didomi_body("user-updated")
    body["parameters"]["new_entity"]["version"] = version
    with pytest.raises(InvalidWebhook, match="parameters.new_entity.version must be a non-negative number"):
        parse_webhook(body).entity.position()


def test_an_updated_event_without_its_new_entity_is_rejected():
    body = didomi_body("user-updated")
    del body["parameters"]["new_entity"]
    with pytest.raises(InvalidWebhook, match="parameters.new_entity is required"):
        parse_webhook(body)


def _set(body, key, value):
    body["parameters"]["entity"][key] = value
    return body
