"""Who may call the webhook: an optional source-address allow-list, then either the shared bearer token
(current, or previous during a rotation's grace period) or an OAuth access token already checked by API
Gateway's JWT authorizer, whose claims the function checks again (defence in depth)."""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass

from .errors import ConfigurationError

BEARER = "bearer"
OAUTH = "oauth"


@dataclass(frozen=True)
class AccessPolicy:
    mode: str = BEARER
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    oauth_scope: str | None = None

    @classmethod
    def parse(cls, mode: str | None, cidrs: str | None, oauth_scope: str | None) -> AccessPolicy:
        mode = (mode or BEARER).strip().lower()
        if mode not in (BEARER, OAUTH):
            raise ConfigurationError(f"AUTH_MODE must be {BEARER!r} or {OAUTH!r}")
        if mode == OAUTH and not (oauth_scope or "").strip():
            raise ConfigurationError("OAUTH_SCOPE is required when AUTH_MODE is oauth")
        networks = []
        for part in (cidrs or "").split(","):
            if part.strip():
                try:
                    networks.append(ipaddress.ip_network(part.strip(), strict=False))
                except ValueError:
                    raise ConfigurationError(
                        f"ALLOWED_SOURCE_CIDRS: {part.strip()!r} is not an IP address or CIDR block"
                    ) from None
        return cls(mode, tuple(networks), (oauth_scope or "").strip() or None)

    def source_allowed(self, source_ip: str | None) -> bool:
        """True when no allow-list is set, or the address is inside one of its networks."""
        if not self.allowed_networks:
            return True
        try:
            address = ipaddress.ip_address((source_ip or "").strip())
        except ValueError:
            return False
        return any(address in network for network in self.allowed_networks)

    def claims_allowed(self, claims: object) -> bool:
        """The JWT authorizer's claims carry the required scope (Cognito puts scopes space-separated in `scope`)."""
        if not isinstance(claims, dict) or not self.oauth_scope:
            return False
        scopes = claims.get("scope")
        return isinstance(scopes, str) and self.oauth_scope in scopes.split()


def bearer_matches(header: str | None, tokens: tuple[str, ...]) -> bool:
    """`Authorization: Bearer <token>` against each valid token, in constant time, failing closed."""
    if not header or not tokens:
        return False
    scheme, _, presented = header.strip().partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        return False
    matched = False
    for token in tokens:  # every token is compared, so the time does not tell which one matched
        matched |= bool(token) and hmac.compare_digest(presented.encode(), token.encode())
    return matched
