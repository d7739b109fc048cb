"""What Didomi's answers mean, its credentials and host, and its pages of users (domain/didomi_api.py)."""

import json

import pytest

from didomi_braze.domain.didomi_api import (
    OK,
    PERMANENT,
    RATE_LIMITED,
    RETRYABLE,
    TOKEN_REFRESH_SECONDS,
    UNAUTHORIZED,
    WRITTEN,
    Session,
    classify,
    classify_session,
    didomi_base_url,
    parse_didomi_secret,
    users_page,
)
from didomi_braze.domain.errors import ConfigurationError

NOW = 1_800_000_000.0
KEY, SECRET = "didomi-key-3b1f9e", "didomi-secret-8c2d7a"


def _error(status: int, message: str) -> bytes:
    return json.dumps({"code": status, "name": "Error", "message": message, "errors": {}}).encode()


# -- credentials ---------------------------------------------------------------------------------------------
def test_the_secret_holds_key_secret_and_organisation():
    credentials = parse_didomi_secret(json.dumps({"key": KEY, "secret": SECRET, "organization_id": "org"}), "s")
    assert (credentials.key, credentials.secret, credentials.organization_id) == (KEY, SECRET, "org")
    assert KEY not in repr(credentials) and SECRET not in repr(credentials)


@pytest.mark.parametrize(
    ("document", "named"),
    [
        ({"secret": SECRET, "organization_id": "org"}, ["key"]),
        ({"key": KEY, "secret": "", "organization_id": "org"}, ["secret"]),
        ({"key": "<Didomi API key>", "secret": SECRET}, ["key", "organization_id"]),  # the template's placeholder shape
    ],
)
def test_a_secret_missing_a_field_names_every_missing_field_and_no_value(document, named):
    with pytest.raises(ConfigurationError) as caught:
        parse_didomi_secret(json.dumps(document), "arn:didomi")
    message = str(caught.value)
    assert all(f"{name} is required" in message for name in named)
    assert KEY not in message and SECRET not in message


def test_a_secret_that_is_not_json_says_what_is_expected_without_echoing_it():
    with pytest.raises(ConfigurationError, match="not JSON") as caught:
        parse_didomi_secret(f"key={KEY} secret={SECRET}", "arn:didomi")
    assert SECRET not in str(caught.value)


# -- host ------------------------------------------------------------------------------------------------------
def test_the_host_is_didomis_api_unless_loopback_is_allowed():
    assert didomi_base_url(None, False) == "https://api.didomi.io"
    assert didomi_base_url("https://api.didomi.io/", False) == "https://api.didomi.io"
    assert didomi_base_url("http://127.0.0.1:8123", True) == "http://127.0.0.1:8123"
    with pytest.raises(ConfigurationError, match="DIDOMI_ALLOW_LOOPBACK"):
        didomi_base_url("http://127.0.0.1:8123", False)
    for elsewhere in ("https://api.didomi.io.evil.example", "http://api.didomi.io", "https://10.0.0.8"):
        with pytest.raises(ConfigurationError, match="not Didomi's API"):
            didomi_base_url(elsewhere, True)


# -- sessions --------------------------------------------------------------------------------------------------
def test_a_session_is_used_for_55_minutes_of_its_hour_and_only_with_its_key():
    session = Session("token", "key-a", NOW)
    assert session.usable("key-a", NOW + TOKEN_REFRESH_SECONDS - 1)
    assert not session.usable("key-a", NOW + TOKEN_REFRESH_SECONDS)
    assert not session.usable("key-b", NOW)
    assert TOKEN_REFRESH_SECONDS < 3600


def test_the_session_answer_gives_the_token_or_says_the_key_was_refused():
    assert classify_session(200, json.dumps({"access_token": "tok"}).encode()) == ("tok", None)
    token, problem = classify_session(400, _error(400, "Invalid authentication information"))
    assert token is None and problem.kind == RETRYABLE and problem.refresh_credentials
    assert "Invalid authentication information" in problem.reason
    assert classify_session(200, b"{}")[1].kind == RETRYABLE  # a success without a token is not a session
    assert classify_session(503, b"") == (None, None)  # left to the general rules


# -- answers ---------------------------------------------------------------------------------------------------
def test_a_success_is_ok_or_written_and_carries_the_decoded_body():
    assert classify(200, {}, b'{"data": []}', NOW).kind == OK
    answer = classify(200, {}, b'{"id": "e1"}', NOW, creating=True)
    assert (answer.kind, answer.data, answer.duplicate) == (WRITTEN, {"id": "e1"}, False)


@pytest.mark.parametrize(
    ("status", "message"),
    [(409, "Conflict"), (400, "A consent event with id e1 already exists"), (400, "Event already exist")],
)
def test_an_event_that_already_exists_counts_as_written(status, message):
    answer = classify(status, {}, _error(status, message), NOW, creating=True)
    assert (answer.kind, answer.duplicate, answer.succeeded) == (WRITTEN, True, True)


def test_already_exists_means_nothing_outside_a_creation():
    assert classify(400, {}, _error(400, "already exists"), NOW).kind == PERMANENT


def test_other_4xx_are_permanent_with_didomis_reason():
    answer = classify(400, {}, _error(400, "consents.purposes[0].id 'x' is not a purpose"), NOW, creating=True)
    assert answer.kind == PERMANENT and "is not a purpose" in answer.reason and answer.status == 400
    assert classify(403, {}, _error(403, "Forbidden"), NOW).kind == PERMANENT


def test_401_asks_for_a_new_session():
    assert classify(401, {}, _error(401, "expired"), NOW).kind == UNAUTHORIZED


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_are_retryable(status):
    assert classify(status, {}, b"<html>", NOW).kind == RETRYABLE


def test_429_waits_for_retry_after_when_given_else_for_the_documented_window():
    assert classify(429, {}, b"", NOW).retry_at == NOW + 15
    assert classify(429, {"retry-after": "40"}, b"", NOW).retry_at == NOW + 40
    assert classify(429, {"Retry-After": "99999"}, b"", NOW).retry_at == NOW + 900
    assert classify(429, {"Retry-After": "soon"}, b"", NOW).retry_at == NOW + 15
    assert classify(429, {}, b"", NOW).kind == RATE_LIMITED


# -- users -----------------------------------------------------------------------------------------------------
def test_a_page_of_users_as_documented_and_as_the_openapi_document_types_it():
    assert users_page({"data": [{"id": "u1"}], "limit": 100, "cursor": "abc"}) == ([{"id": "u1"}], "abc")
    assert users_page({"data": [{"id": "u1"}], "limit": 100, "cursor": None}) == ([{"id": "u1"}], None)
    assert users_page({"data": [], "cursor": 7}) == ([], "7")
    assert users_page([{"id": "u1"}, "junk"]) == ([{"id": "u1"}], None)
    for bad in (None, {"users": []}, {"data": [], "cursor": {"x": 1}}):
        with pytest.raises(ValueError):
            users_page(bad)
