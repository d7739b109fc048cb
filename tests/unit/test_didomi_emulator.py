"""The Didomi emulator is as strict as Didomi's documentation (sandbox/didomi_emulator.py), without sockets."""

import json

import pytest

from sandbox.didomi_emulator import DidomiOrganization
from sandbox.memory import Clock

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def org():
    return DidomiOrganization(organization_id="org-1", api_key="k", api_secret="s", clock=Clock(), page_size=2)


def _call(org, method, target, body=None, token=None, headers=None):
    sent = {**JSON, **(headers or {})}
    if token:
        sent["Authorization"] = f"Bearer {token}"
    raw = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else b""
    _, answer = org.receive(method, target, sent, raw)
    return answer.status, answer.body


def _token(org):
    status, body = _call(org, "POST", "/v1/sessions", {"type": "api-key", "key": "k", "secret": "s"})
    assert status == 200
    return body["access_token"]


def _event(**overrides):
    return {
        "user": {"organization_user_id": "customer-42"},
        "consents": {"purposes": [{"id": "newsletter", "enabled": False}]},
        **overrides,
    }


def _create(org, token, body, query=""):
    return _call(org, "POST", f"/v1/consents/events?organization_id=org-1{query}", body, token)


# -- sessions and tokens ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        {"type": "api-key", "key": "k", "secret": "wrong"},
        {"type": "api-key", "key": "other", "secret": "s"},
        {"type": "email", "key": "k", "secret": "s"},
        {"key": "k", "secret": "s"},
    ],
)
def test_a_session_needs_the_api_key_type_key_and_secret(org, body):
    status, answer = _call(org, "POST", "/v1/sessions", body)
    assert status == 400 and answer["name"] == "BadRequest" and answer["message"] == "Invalid authentication information"


def test_tokens_expire_after_an_hour_on_the_emulators_clock(org):
    token = _token(org)
    assert _call(org, "GET", "/v1/consents/users?organization_id=org-1", token=token)[0] == 200
    org.clock.advance(3599)
    assert _call(org, "GET", "/v1/consents/users?organization_id=org-1", token=token)[0] == 200
    org.clock.advance(1)
    assert _call(org, "GET", "/v1/consents/users?organization_id=org-1", token=token)[0] == 401


def test_calls_without_a_valid_bearer_token_are_401(org):
    assert _call(org, "GET", "/v1/consents/users?organization_id=org-1")[0] == 401
    assert _call(org, "GET", "/v1/consents/users?organization_id=org-1", token="forged")[0] == 401
    assert _call(org, "GET", "/v1/consents/users?organization_id=org-1", headers={"Authorization": "Basic k:s"})[0] == 401


def test_the_organisation_id_is_required_and_must_be_the_keys(org):
    token = _token(org)
    assert _call(org, "GET", "/v1/consents/users", token=token)[0] == 400
    assert _call(org, "GET", "/v1/consents/users?organization_id=another-org", token=token)[0] == 403


def test_the_emulator_never_records_the_credentials(org):
    _token(org)
    _call(org, "POST", "/v1/sessions", {"type": "api-key", "key": "k", "secret": "nope"})
    assert "s" not in json.dumps([r.body for r in org.requests]).replace('"', " ").split()


# -- consent events --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (_event(unknown=1), "Unknown property: unknown"),
        (_event(user="customer-42"), "user is required"),
        ({"user": {"organization_user_id": "c"}}, "consents is required"),
        (_event(consents={"purposes": [{"enabled": False}]}), "consents.purposes[0].id is required"),
        (_event(consents={"purposes": [{"id": "no-such-purpose", "enabled": False}]}), "is not a purpose of this organization"),
        (_event(consents={"purposes": [{"id": "newsletter", "enabled": "no"}]}), "enabled must be true, false or null"),
        (_event(consents={"purposes": [{"id": "offers", "values": {"colours": {"value": "red"}}}]}), "is not a preference"),
        (
            _event(consents={"purposes": [{"id": "offers", "values": {"topics": {"value": "sales,gossip"}}}]}),
            "gossip is not a value",
        ),
        (_event(consents={"purposes": [{"id": "offers", "values": {"topics": "sales"}}]}), 'must be an object like {"value"'),
        (_event(delegate={"name": "Braze"}), "delegate.id is required"),
        (_event(status="approved"), "status must be one of"),
        (_event(created_at="yesterday"), "created_at must be an ISO 8601 date"),
        (_event(organization_id="another-org"), "organization_id does not match"),
    ],
)
def test_a_consent_event_that_breaks_the_documented_shape_is_400_and_changes_nothing(org, body, problem):
    status, answer = _create(org, _token(org), body)
    assert status == 400 and problem in answer["message"]
    assert not org.events and not org.users and not org.notifications


def test_vendors_may_be_left_out_as_the_documentation_examples_do(org):
    assert _create(org, _token(org), _event())[0] == 200


def test_a_second_event_with_the_same_id_is_refused(org):
    token = _token(org)
    assert _create(org, token, _event(id="e-1"))[0] == 200
    status, answer = _create(org, token, _event(id="e-1", consents={"purposes": [{"id": "newsletter", "enabled": True}]}))
    assert status == 409 and "already exists" in answer["message"]
    assert org.user("customer-42")["consents"]["purposes"] == [{"id": "newsletter", "enabled": False}]


def test_an_event_is_merged_into_the_users_status_and_notified_to_integrations(org):
    token = _token(org)
    org.add_user(
        "customer-42",
        {"purposes": [{"id": "offers", "values": {"topics": {"value": "sales,news"}}}], "channels": [], "vendors": {}},
    )
    delegate = {"id": "someone", "name": "Someone"}
    _create(org, token, _event(id="e-1", delegate=delegate))
    user = org.user("customer-42")
    assert user["version"] == 1
    assert user["consents"]["purposes"] == [
        {"id": "offers", "values": {"topics": {"value": "sales,news"}}},
        {"id": "newsletter", "enabled": False},
    ]
    created, updated = org.drain_notifications()
    assert created["type"] == "event.created" and created["parameters"]["entity"]["delegate"] == delegate
    assert updated["type"] == "user.updated" and updated["parameters"]["source"]["id"] == "e-1"
    assert updated["parameters"]["old_entity"]["version"] == 0 and updated["parameters"]["new_entity"]["version"] == 1


def test_disable_integrations_keeps_the_event_from_the_integrations(org):
    _create(org, _token(org), _event(), "&$disable_integrations=true")
    assert org.user("customer-42")["consents"]["purposes"][0]["enabled"] is False and not org.notifications


def test_a_pending_event_is_stored_but_not_applied(org):
    _create(org, _token(org), _event(status="pending_approval"))
    assert org.user("customer-42")["consents"]["purposes"] == [] and not org.notifications


# -- users -----------------------------------------------------------------------------------------------------
def test_users_come_in_pages_with_a_cursor_until_it_is_null(org):
    for n in range(5):
        org.add_user(f"customer-{n}", {"purposes": []})
    token = _token(org)
    seen, cursor = [], None
    while True:
        query = f"&$cursor={cursor}" if cursor else ""
        status, page = _call(org, "GET", f"/v1/consents/users?organization_id=org-1{query}", token=token)
        assert status == 200 and page["limit"] == len(page["data"]) <= 2
        seen += [u["organization_user_id"] for u in page["data"]]
        cursor = page["cursor"]
        if cursor is None:
            break
    assert seen == [f"customer-{n}" for n in range(5)]
    assert _call(org, "GET", "/v1/consents/users?organization_id=org-1&$cursor=%%%", token=token)[0] == 400


def test_users_filter_by_organization_user_id(org):
    org.add_user("customer-1", {"purposes": []})
    org.add_user("customer-2", {"purposes": []})
    _, page = _call(org, "GET", "/v1/consents/users?organization_id=org-1&organization_user_id=customer-2", token=_token(org))
    assert [u["organization_user_id"] for u in page["data"]] == ["customer-2"] and page["cursor"] is None


# -- rate limits and faults -------------------------------------------------------------------------------------
def test_routes_outside_consents_are_limited_to_100_every_15_seconds_sessions_included(org):
    for _ in range(100):
        _token(org)
    assert _call(org, "POST", "/v1/sessions", {"type": "api-key", "key": "k", "secret": "s"})[0] == 429
    token = next(iter(org.tokens))
    assert _call(org, "GET", "/v1/consents/users?organization_id=org-1", token=token)[0] == 200  # /consents: no limit
    assert _call(org, "GET", "/v1/consents/users?organization_id=org-1&$include_full_tree=true", token=token)[0] == 429
    org.clock.advance(15)
    assert _call(org, "POST", "/v1/sessions", {"type": "api-key", "key": "k", "secret": "s"})[0] == 200


@pytest.mark.parametrize(("fault", "status"), [("401", 401), ("429", 429), ("500", 500), ("503", 503)])
def test_faults_answer_as_told_and_change_nothing(org, fault, status):
    token = _token(org)
    org.fail_next(fault, path="/v1/consents/events")
    assert _create(org, token, _event())[0] == status and not org.users
    assert _create(org, token, _event())[0] == 200


def test_a_hang_applies_the_event_and_loses_the_answer(org):
    token = _token(org)
    org.fail_next("hang")
    request, answer = org.receive(
        "POST",
        "/v1/consents/events?organization_id=org-1",
        {**JSON, "Authorization": f"Bearer {token}"},
        json.dumps(_event()).encode(),
    )
    assert answer.hang and org.user("customer-42") is not None


def test_unknown_routes_are_404(org):
    assert _call(org, "GET", "/v1/organizations", token=_token(org))[0] == 404
