"""Who may call the webhook: source allow-list, bearer tokens (current and previous), OAuth claims."""

import pytest

from didomi_braze.domain.access import AccessPolicy, bearer_matches
from didomi_braze.domain.errors import ConfigurationError


@pytest.mark.parametrize(
    ("cidrs", "ip", "allowed"),
    [
        ("", "203.0.113.9", True),  # no list: everyone
        ("35.159.1.63/32", "35.159.1.63", True),
        ("35.159.1.63/32", "35.159.1.64", False),
        ("35.159.1.63", "35.159.1.63", True),  # a bare address is a /32
        ("10.0.0.0/8, 35.159.1.63/32", "10.1.2.3", True),
        ("35.159.1.63/32", None, False),
        ("35.159.1.63/32", "not-an-ip", False),
        ("2001:db8::/32", "2001:db8::1", True),
        ("2001:db8::/32", "35.159.1.63", False),
    ],
)
def test_source_allow_list(cidrs, ip, allowed):
    assert AccessPolicy.parse("bearer", cidrs, None).source_allowed(ip) is allowed


@pytest.mark.parametrize(
    ("mode", "cidrs", "scope", "message"),
    [
        ("basic", "", None, "AUTH_MODE must be 'bearer' or 'oauth'"),
        ("oauth", "", "", "OAUTH_SCOPE is required"),
        ("bearer", "35.159.1.63/33", None, "'35.159.1.63/33' is not an IP address or CIDR block"),
        ("bearer", "didomi", None, "'didomi' is not an IP address"),
    ],
)
def test_invalid_settings_are_named(mode, cidrs, scope, message):
    with pytest.raises(ConfigurationError, match=message):
        AccessPolicy.parse(mode, cidrs, scope)


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        ("Bearer current", True),
        ("Bearer previous", True),
        ("bearer current", True),
        ("Bearer  current ", True),
        ("Bearer other", False),
        ("Bearer", False),
        ("Basic current", False),
        ("current", False),
        ("", False),
        (None, False),
    ],
)
def test_bearer_matches_either_valid_token(header, ok):
    assert bearer_matches(header, ("current", "previous")) is ok


def test_bearer_fails_closed_without_tokens():
    assert not bearer_matches("Bearer ", ("",))
    assert not bearer_matches("Bearer x", ())


@pytest.mark.parametrize(
    ("claims", "ok"),
    [
        ({"scope": "didomi-braze-sync/webhook", "client_id": "abc"}, True),
        ({"scope": "openid didomi-braze-sync/webhook"}, True),
        ({"scope": "didomi-braze-sync/other"}, False),
        ({"scope": "didomi-braze-sync/webhook-admin"}, False),
        ({}, False),
        (None, False),
        ("scope", False),
    ],
)
def test_oauth_claims_must_carry_the_scope(claims, ok):
    assert AccessPolicy.parse("oauth", "", "didomi-braze-sync/webhook").claims_allowed(claims) is ok
