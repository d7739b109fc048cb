"""Braze request bodies and the classification of Braze's answers."""

import json

import pytest

from didomi_braze.domain.braze import (
    DELIVERED,
    PERMANENT,
    RATE_LIMITED,
    RETRYABLE,
    attributes_object,
    classify_response,
    track_body,
)
from didomi_braze.domain.mapping import BrazeIdentity

UPDATE = {"email_subscribe": "opted_in", "group:g2": "unsubscribed", "group:g1": "subscribed"}


def test_attributes_object_has_the_documented_shape():
    obj = attributes_object(BrazeIdentity("external_id", "customer-42"), UPDATE, upsert_mode=False)
    assert obj == {
        "external_id": "customer-42",
        "_update_existing_only": True,
        "email_subscribe": "opted_in",
        "subscription_groups": [
            {"subscription_group_id": "g1", "subscription_state": "subscribed"},
            {"subscription_group_id": "g2", "subscription_state": "unsubscribed"},
        ],
    }


def test_upsert_mode_lets_braze_create_the_profile_and_email_can_identify_the_user():
    obj = attributes_object(BrazeIdentity("email", "ada@example.com"), {"email_subscribe": "unsubscribed"}, upsert_mode=True)
    assert obj == {"email": "ada@example.com", "email_subscribe": "unsubscribed"}


def test_track_body_wraps_objects_in_attributes():
    assert json.loads(track_body([{"external_id": "a"}])) == {"attributes": [{"external_id": "a"}]}


def _classify(status, body, headers=None, count=1):
    return classify_response(status, headers or {}, json.dumps(body).encode() if not isinstance(body, bytes) else body, count)


def test_201_success_is_delivered():
    outcome = _classify(201, {"message": "success", "attributes_processed": 1})
    assert outcome.kind == DELIVERED and not outcome.item_errors


def test_per_item_errors_fail_only_their_own_objects():
    outcome = _classify(
        201, {"message": "success", "errors": [{"type": "bad email", "input_array": "attributes", "index": 1}]}, count=3
    )
    assert outcome.kind == DELIVERED
    assert outcome.item_error(0) is None and outcome.item_error(1) == "bad email" and outcome.item_error(2) is None


def test_an_error_without_an_index_counts_against_every_object():
    outcome = _classify(201, {"message": "success", "errors": ["something failed"]}, count=2)
    assert set(outcome.item_errors) == {0, 1}


@pytest.mark.parametrize("body", [{"message": "queued"}, {}, b"not json", b""])
def test_a_2xx_without_success_is_a_failure_and_is_retried(body):
    assert _classify(200, body).kind == RETRYABLE


@pytest.mark.parametrize("header", ["X-RateLimit-Reset", "x-ratelimit-reset", "X-RATELIMIT-RESET"])
def test_429_is_backpressure_waiting_for_the_reset_header_whatever_its_case(header):
    outcome = _classify(429, {"message": "rate limited"}, {header: "1777777777"})
    assert outcome.kind == RATE_LIMITED and outcome.retry_at == 1777777777.0


def test_429_without_a_usable_reset_header_follows_the_schedule():
    assert _classify(429, {}, {"X-RateLimit-Reset": "soon"}).retry_at is None


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_are_retried_after_refreshing_the_secret(status):
    outcome = _classify(status, {"message": "Invalid API key"})
    assert outcome.kind == RETRYABLE and outcome.refresh_credentials


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_retryable(status):
    assert _classify(status, {"message": "oops"}).kind == RETRYABLE


@pytest.mark.parametrize("status", [400, 404, 413])
def test_400_404_413_are_permanent_with_the_reason(status):
    outcome = _classify(status, {"message": "Invalid payload"})
    assert outcome.kind == PERMANENT and str(status) in outcome.reason and "Invalid payload" in outcome.reason


def test_an_unexpected_4xx_is_retried_rather_than_dropped():
    assert _classify(418, {}).kind == RETRYABLE


def test_a_long_braze_message_is_shortened_in_the_reason():
    assert len(_classify(400, {"message": "x" * 5000}).reason) < 300
