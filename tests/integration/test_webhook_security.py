"""Webhook security in the handler: source allow-list, token rotation with a grace period, OAuth claims."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time

from tests.integration.conftest import call_webhook
from tests.samples import WEBHOOK_TOKEN, http_event


@pytest.fixture
def settings(monkeypatch):
    """Change the functions' environment, as a redeploy with other parameters would (a new container)."""
    from didomi_braze import runtime

    def apply(**values):
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        runtime.dependencies.cache_clear()

    return apply


def _from(ip: str, name: str = "event-created", token: str | None = WEBHOOK_TOKEN) -> dict:
    event = http_event(name)
    event["requestContext"]["http"]["sourceIp"] = ip
    if token is None:
        event["headers"].pop("authorization", None)
    else:
        event["headers"]["authorization"] = f"Bearer {token}"
    return event


def test_an_address_outside_the_allow_list_gets_403_before_anything_else(aws, braze, settings, logs):
    settings(ALLOWED_SOURCE_CIDRS="35.159.1.63/32")

    assert call_webhook(_from("35.159.1.63")) == (200, {"status": "delivered"})
    for event in (_from("203.0.113.9"), _from("203.0.113.9", token=None), _from("")):
        status, answer = call_webhook(event)
        assert status == 403 and answer["status"] == "forbidden"
    assert len(braze.requests) == 1 and aws.messages(aws.retry_queue) == []
    assert '"source_ip":"203.0.113.9"' in logs.getvalue().replace(" ", "")


def test_an_invalid_allow_list_is_a_configuration_error_not_an_open_door(aws, braze, settings, logs):
    settings(ALLOWED_SOURCE_CIDRS="35.159.1.63/99")
    assert call_webhook(_from("35.159.1.63"))[0] == 503
    assert "is not an IP address or CIDR block" in logs.getvalue()
    assert braze.requests == []


def test_a_rotated_token_and_the_previous_one_both_work_during_the_grace_period(aws, braze):
    secret = aws.stack.secret_arns["WebhookSecret"]
    start = datetime.now(UTC)
    with freeze_time(start) as clock:
        assert call_webhook(_from("35.159.1.63", "user-created"))[0] == 200  # caches the current token
        aws.secrets.put_secret_value(SecretId=secret, SecretString="rotated-token-0123456789")
        clock.tick(31)  # a token no copy knows is looked up again, at most every 30 s

        assert call_webhook(_from("35.159.1.63", "user-updated", "rotated-token-0123456789"))[0] == 200
        clock.tick(10)  # past the delivery's lease on the user: the next one goes straight to Braze too
        assert call_webhook(_from("35.159.1.63", "event-created", WEBHOOK_TOKEN))[0] == 200  # previous, in grace

        clock.move_to(start + timedelta(hours=25))  # grace period (24 h) over, cache expired
        assert call_webhook(_from("35.159.1.63", "event-updated", WEBHOOK_TOKEN))[0] == 401
        assert call_webhook(_from("35.159.1.63", "event-updated", "rotated-token-0123456789"))[0] == 200


def test_bad_tokens_do_not_turn_into_a_stream_of_secret_reads(aws, braze, monkeypatch):
    from didomi_braze import runtime

    call_webhook(_from("35.159.1.63"))
    reads = []
    client = runtime.dependencies().webhook_tokens._client
    original = client.get_secret_value
    monkeypatch.setattr(client, "get_secret_value", lambda **kw: reads.append(kw) or original(**kw))
    for _ in range(20):
        assert call_webhook(_from("35.159.1.63", token="guess"))[0] == 401
    assert len(reads) <= 2


OAUTH = {"AUTH_MODE": "oauth", "OAUTH_SCOPE": "didomi-braze-sync/webhook"}


def _with_claims(event: dict, claims: dict | None) -> dict:
    if claims is not None:
        event["requestContext"]["authorizer"] = {"jwt": {"claims": claims, "scopes": None}}
    return event


def test_oauth_mode_accepts_what_the_jwt_authorizer_let_through(aws, braze, settings):
    settings(**OAUTH)
    claims = {"client_id": "didomi", "scope": "didomi-braze-sync/webhook", "token_use": "access"}
    event = _with_claims(_from("35.159.1.63", token=None), claims)
    event["headers"]["authorization"] = "Bearer eyJraWQiOi.access-token.signature"
    assert call_webhook(event) == (200, {"status": "delivered"})


@pytest.mark.parametrize("claims", [None, {}, {"scope": "didomi-braze-sync/other"}, {"client_id": "x"}])
def test_oauth_mode_refuses_a_request_that_did_not_come_through_the_authorizer(aws, braze, settings, claims):
    settings(**OAUTH)
    event = _with_claims(_from("35.159.1.63"), claims)  # even with the shared bearer token
    assert call_webhook(event)[0] == 401
    assert braze.requests == []


def test_the_oauth_claims_are_not_logged(aws, braze, settings, logs):
    settings(**OAUTH)
    claims = {"client_id": "didomi-client-7f3a", "scope": "didomi-braze-sync/webhook"}
    call_webhook(_with_claims(_from("35.159.1.63", token=None), claims))
    assert "didomi-client-7f3a" not in logs.getvalue() and json.dumps(claims) not in logs.getvalue()
