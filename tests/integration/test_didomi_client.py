"""The Didomi client against the Didomi emulator over HTTP on 127.0.0.1: sessions, token renewal, answers, pages,
and credentials read from Secrets Manager (moto) that never reach a log line or an answer."""

import io
import json

import boto3
import pytest
from moto import mock_aws

from didomi_braze.adapters.didomi_api import DidomiClient, DidomiCredentialsSource, Urllib3Transport
from didomi_braze.adapters.secrets import SecretStore
from didomi_braze.domain.didomi_api import PERMANENT, RATE_LIMITED, RETRYABLE, WRITTEN, DidomiCredentials
from didomi_braze.domain.errors import ConfigurationError, DidomiUnavailable
from sandbox.didomi_emulator import DidomiEmulator
from sandbox.memory import Clock

KEY, SECRET = "didomi-key-5e7a1c", "didomi-secret-93bd40f1"


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def didomi(clock):
    with DidomiEmulator(
        organization_id="org-1", api_key=KEY, api_secret=SECRET, clock=clock, page_size=3, hang_seconds=1.0
    ) as emulator:
        yield emulator


class Credentials:
    """The secret as the client reads it: counts reads and forced re-reads (after a refused key)."""

    def __init__(self, key=KEY, secret=SECRET):
        self.value = DidomiCredentials(key, secret, "org-1")
        self.forced = 0

    def __call__(self, force: bool) -> DidomiCredentials:
        self.forced += force
        return self.value


def _client(didomi, clock, credentials=None, read_timeout=5.0):
    transport = Urllib3Transport(connect_timeout=1.0, read_timeout=read_timeout)
    return DidomiClient(credentials or Credentials(), didomi.url, transport, clock=clock)


def _event(event_id="e-1", enabled=False):
    return {
        "id": event_id,
        "user": {"organization_user_id": "customer-42"},
        "consents": {"purposes": [{"id": "newsletter", "enabled": enabled}]},
    }


def test_one_session_serves_every_call_and_is_renewed_before_its_hour_ends(didomi, clock):
    client = _client(didomi, clock)
    for n in range(3):
        assert client.create_event(_event(f"e-{n}")).kind == WRITTEN
    assert client.sessions_created == 1 and len(didomi.sessions()) == 1
    clock.advance(54 * 60)
    assert client.create_event(_event("e-3")).kind == WRITTEN and client.sessions_created == 1
    clock.advance(2 * 60)  # 56 minutes: renewed before Didomi's hour runs out
    assert client.create_event(_event("e-4")).kind == WRITTEN and client.sessions_created == 2
    assert all(r.status == 200 for r in didomi.requests)  # never a 401 on the way


def test_a_401_gets_one_new_session_and_the_call_is_repeated(didomi, clock):
    client = _client(didomi, clock)
    client.create_event(_event("e-0"))
    didomi.expire_tokens()
    assert client.create_event(_event("e-1")).kind == WRITTEN
    assert client.sessions_created == 2 and [r.status for r in didomi.requests[-3:]] == [401, 200, 200]


def test_a_second_401_is_a_retryable_failure_and_the_secret_is_read_again(didomi, clock):
    credentials = Credentials()
    client = _client(didomi, clock, credentials)
    didomi.fail_next("401", "401", path="/v1/consents/events")
    answer = client.create_event(_event())
    assert answer.kind == RETRYABLE and answer.refresh_credentials and "a new session did not help" in answer.reason
    assert client.sessions_created == 2 and credentials.forced == 0
    assert client.create_event(_event()).kind == WRITTEN and credentials.forced == 1
    assert "e-1" in didomi.events


def test_a_refused_key_is_retryable_after_reading_the_secret_again(didomi, clock):
    credentials = Credentials(secret="rotated-away")
    client = _client(didomi, clock, credentials)
    answer = client.create_event(_event())
    assert answer.kind == RETRYABLE and answer.refresh_credentials and answer.status == 400
    credentials.value = DidomiCredentials(KEY, SECRET, "org-1")  # the operator put the new secret in place
    assert client.create_event(_event()).kind == WRITTEN and credentials.forced == 1


@pytest.mark.parametrize(("fault", "kind"), [("429", RATE_LIMITED), ("500", RETRYABLE), ("502", RETRYABLE), ("503", RETRYABLE)])
def test_429_and_5xx_are_classified_and_write_nothing(didomi, clock, fault, kind):
    client = _client(didomi, clock)
    didomi.fail_next(fault, path="/v1/consents/events")
    answer = client.create_event(_event())
    assert answer.kind == kind and answer.status == int(fault) and not didomi.events
    if kind == RATE_LIMITED:
        assert answer.retry_at == clock() + 15  # Didomi documents no header: the window


def test_the_session_call_itself_can_be_rate_limited(didomi, clock):
    didomi.fail_next("429", path="/v1/sessions")
    assert _client(didomi, clock).create_event(_event()).kind == RATE_LIMITED


def test_a_timeout_is_retryable_and_the_write_it_hid_is_recognised_as_written(didomi, clock):
    client = _client(didomi, clock, read_timeout=0.3)
    didomi.fail_next("hang", path="/v1/consents/events")
    assert client.create_event(_event()).kind == RETRYABLE  # Didomi applied it; the answer was lost
    again = client.create_event(_event())
    assert (again.kind, again.duplicate) == (WRITTEN, True)


def test_an_unreachable_didomi_is_retryable():
    client = DidomiClient(Credentials(), "http://127.0.0.1:9", Urllib3Transport(connect_timeout=0.5), clock=Clock())
    answer = client.create_event(_event())
    assert answer.kind == RETRYABLE and "unreachable" in answer.reason


def test_a_rejected_event_is_permanent_with_didomis_reason(didomi, clock):
    body = {**_event(), "consents": {"purposes": [{"id": "no-such-purpose", "enabled": False}]}}
    answer = _client(didomi, clock).create_event(body)
    assert answer.kind == PERMANENT and answer.status == 400 and "is not a purpose of this organization" in answer.reason


def test_disable_integrations_is_passed_when_asked(didomi, clock):
    _client(didomi, clock).create_event(_event(), disable_integrations=True)
    assert didomi.requests[-1].query["$disable_integrations"] == "true" and not didomi.notifications


def test_every_user_is_read_page_after_page(didomi, clock):
    for n in range(7):
        didomi.add_user(f"customer-{n}", {"purposes": []})
    client = _client(didomi, clock)
    assert [u["organization_user_id"] for u in client.users()] == [f"customer-{n}" for n in range(7)]
    pages = [r for r in didomi.requests if r.path == "/v1/consents/users"]
    assert len(pages) == 3 and "$cursor" not in pages[0].query and all("$cursor" in p.query for p in pages[1:])
    assert [u["organization_user_id"] for u in client.users("customer-4")] == ["customer-4"]


def test_a_bare_list_of_users_is_accepted_and_a_repeated_cursor_stops_the_reading():
    def bare(method, url, headers, body):
        if url.endswith("/v1/sessions"):
            return 200, {}, b'{"access_token": "t"}'
        return 200, {}, b'[{"id": "u1"}, {"id": "u2"}]'

    assert [u["id"] for u in DidomiClient(Credentials(), "https://api.didomi.io", bare, clock=Clock()).users()] == ["u1", "u2"]

    def looping(method, url, headers, body):
        if url.endswith("/v1/sessions"):
            return 200, {}, b'{"access_token": "t"}'
        return 200, {}, b'{"data": [{"id": "u"}], "limit": 1, "cursor": "same"}'

    with pytest.raises(DidomiUnavailable, match="same cursor twice"):
        list(DidomiClient(Credentials(), "https://api.didomi.io", looping, clock=Clock()).users())


def test_a_failed_page_raises_with_the_classified_answer(didomi, clock):
    didomi.fail_next("503", path="/v1/consents/users")
    with pytest.raises(DidomiUnavailable) as caught:
        list(_client(didomi, clock).users())
    assert caught.value.answer.kind == RETRYABLE and caught.value.answer.status == 503


# -- credentials from Secrets Manager ------------------------------------------------------------------------
@mock_aws
def test_credentials_come_from_the_secret_and_are_read_again_when_forced():
    secrets = boto3.client("secretsmanager", region_name="eu-central-1")
    arn = secrets.create_secret(
        Name="didomi", SecretString=json.dumps({"key": KEY, "secret": SECRET, "organization_id": "org-1"})
    )["ARN"]
    source = DidomiCredentialsSource(SecretStore(secrets, max_age=300), arn)
    assert source.load().organization_id == "org-1"
    secrets.put_secret_value(SecretId=arn, SecretString=json.dumps({"key": KEY, "secret": "new", "organization_id": "org-1"}))
    assert source.load().secret == SECRET  # cached
    assert source.load(force=True).secret == "new"
    secrets.put_secret_value(SecretId=arn, SecretString='{"key": "", "secret": "", "organization_id": ""}')
    with pytest.raises(ConfigurationError, match="key is required"):
        source.load(force=True)


def test_no_key_secret_or_token_reaches_a_log_line_or_an_answer(didomi, clock):
    from didomi_braze.observability import logger

    buffer = io.StringIO()
    handler = logger.registered_handler
    previous = handler.setStream(buffer)
    try:
        client = _client(didomi, clock)
        answers = [client.create_event(_event("e-1"))]
        didomi.expire_tokens()
        didomi.fail_next("401", "503", path="/v1/consents/events")
        answers += [client.create_event(_event("e-2")), client.create_event(_event("e-3"))]
        bad = _client(didomi, clock, Credentials(secret="wrong-" + SECRET))
        answers.append(bad.create_event(_event("e-4")))
    finally:
        handler.setStream(previous)
    tokens = list(didomi.tokens)
    text = buffer.getvalue() + "".join(repr(a) for a in answers)
    for secret in (KEY, SECRET, *tokens):
        assert secret not in text
