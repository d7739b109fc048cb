"""Didomi's Platform API as this connector uses it: credentials, sessions, and what Didomi's answers mean.

Pure: the HTTP calls are made by `adapters/didomi_api.py`, which asks this module what to send and what an answer
means (README "The flow back").

- Sessions (developers.didomi.io, "Authentication"): `POST /v1/sessions` with `{"type": "api-key", "key", "secret"}`
  returns an `access_token`; "Tokens will expire after 1 hour", and "If there is a problem authenticating you, a 400
  error is returned". A token is used for at most `TOKEN_REFRESH_SECONDS` and renewed once after a 401.
- Consent users are listed "by pages of 100 and every query returns a `cursor` value [...] The returned `cursor`
  is `null` when there is no more result available" (docs, "Query users"); the OpenAPI document types the answer
  as a bare list, which is accepted too.
- Errors are `{"code", "name", "message", "errors"}`; "2xx codes indicate a success; 4xx codes indicate an error in
  the parameters [...] 5xx codes indicate a Didomi server-side error" (docs, "Errors").
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigurationError

DIDOMI_API_URL = "https://api.didomi.io"
SESSIONS_PATH = "/v1/sessions"
EVENTS_PATH = "/v1/consents/events"
USERS_PATH = "/v1/consents/users"
TOKEN_LIFETIME_SECONDS = 3600  # "Tokens will expire after 1 hour"
TOKEN_REFRESH_SECONDS = 55 * 60  # renewed well before, so that a call never leaves with a token about to expire
RATE_LIMIT_WINDOW_SECONDS = 15  # "100 requests every 15 seconds per organization" (routes outside /consents)
_LOOPBACK = re.compile(r"^http://(127\.0\.0\.1|localhost):(\d{1,5})$")

OK = "ok"
WRITTEN = "written"  # a consent event created, or one with the same id that already exists
RETRYABLE = "retryable"  # 5xx, timeouts, connection errors, a 401 that a new session did not cure
RATE_LIMITED = "rate_limited"  # 429: wait, without spending a retry
UNAUTHORIZED = "unauthorized"  # 401: the client takes a new session once and repeats the call
PERMANENT = "permanent"  # any other 4xx: the request itself is wrong; parked with Didomi's reason


@dataclass(frozen=True)
class DidomiCredentials:
    """The Didomi secret: an API key and secret (Didomi console, Settings > Private API keys) and the organisation."""

    key: str = field(repr=False)
    secret: str = field(repr=False)
    organization_id: str

    @property
    def key_ref(self) -> str:
        """Which key a cached session belongs to, without holding the key itself in a second place."""
        return hashlib.sha256(self.key.encode()).hexdigest()[:16]


def parse_didomi_secret(text: str, secret_id: str) -> DidomiCredentials:
    """The secret's JSON `{"key", "secret", "organization_id"}`. Messages name fields, never their values."""
    try:
        doc = json.loads(text)
    except ValueError:
        raise ConfigurationError(
            f'Didomi secret {secret_id} is not JSON; expected {{"key": ..., "secret": ..., "organization_id": ...}}'
        ) from None
    if not isinstance(doc, dict):
        raise ConfigurationError(f"Didomi secret {secret_id} must be a JSON object with key, secret and organization_id")
    problems = []
    for name, what in (("key", "a Didomi API key"), ("secret", "its API secret"), ("organization_id", "your organisation id")):
        value = doc.get(name)
        if not isinstance(value, str) or not value.strip() or value.startswith("<"):
            problems.append(f"Didomi secret {secret_id}: {name} is required ({what})")
    if problems:
        raise ConfigurationError(problems)
    return DidomiCredentials(doc["key"].strip(), doc["secret"], doc["organization_id"].strip())


def didomi_base_url(raw: str | None, allow_loopback: bool) -> str:
    """Didomi's API host. Only https://api.didomi.io, or a loopback URL when DIDOMI_ALLOW_LOOPBACK=true (local only),
    so that a changed setting cannot send the API key anywhere else."""
    value = (raw or "").strip().rstrip("/")
    if not value or value == DIDOMI_API_URL:
        return DIDOMI_API_URL
    loopback = _LOOPBACK.match(value)
    if loopback and allow_loopback and 0 < int(loopback.group(2)) < 65536:
        return value
    hint = " (loopback URLs need DIDOMI_ALLOW_LOOPBACK=true, for local runs only)" if loopback else ""
    raise ConfigurationError(f"DIDOMI_API_URL {value[:100]!r} is not Didomi's API{hint}; leave it unset to use {DIDOMI_API_URL}")


def session_body(credentials: DidomiCredentials) -> bytes:
    return json.dumps({"type": "api-key", "key": credentials.key, "secret": credentials.secret}).encode()


@dataclass(frozen=True)
class Session:
    token: str = field(repr=False)
    key_ref: str
    obtained_at: float

    def usable(self, key_ref: str, now: float) -> bool:
        return self.key_ref == key_ref and 0 <= now - self.obtained_at < TOKEN_REFRESH_SECONDS


@dataclass(frozen=True)
class DidomiAnswer:
    """What one Didomi call came to. `data` is the decoded JSON body of a success."""

    kind: str
    reason: str
    status: int | None = None
    retry_at: float | None = None  # RATE_LIMITED: epoch seconds before which not to call again
    refresh_credentials: bool = False  # the key may have been rotated in the secret: read it again
    duplicate: bool = False  # WRITTEN: Didomi already had an event with this id
    data: Any = None

    @property
    def succeeded(self) -> bool:
        return self.kind in (OK, WRITTEN)


def classify_session(status: int, body: bytes) -> tuple[str | None, DidomiAnswer | None]:
    """`POST /sessions`: the access token, or why there is none. A 400 means Didomi refused the key and secret:
    retried after reading the secret again (it may be mid-rotation), like Braze's 401/403."""
    if 200 <= status < 300:
        decoded = _json(body)
        token = decoded.get("access_token") if isinstance(decoded, dict) else None
        if isinstance(token, str) and token:
            return token, None
        return None, DidomiAnswer(RETRYABLE, f"didomi answered {status} to POST /sessions without an access_token", status)
    if status in (400, 401, 403):
        detail = _detail(body)
        return None, DidomiAnswer(RETRYABLE, f"didomi refused the API key ({status}): {detail}", status, refresh_credentials=True)
    return None, None  # 429, 5xx and the rest mean what they mean anywhere: `classify` says


def classify(status: int, headers: Mapping[str, str], body: bytes, now: float, creating: bool = False) -> DidomiAnswer:
    """Classify Didomi's answer to a call made with a token. With `creating` (`POST /consents/events` with an id),
    an answer saying the event already exists counts as written: the id is the idempotency key."""
    if 200 <= status < 300:
        decoded = _json(body)
        return DidomiAnswer(WRITTEN if creating else OK, "success", status, data=decoded)
    detail = _detail(body)
    if creating and (status == 409 or (400 <= status < 500 and "already exist" in detail.lower())):
        return DidomiAnswer(WRITTEN, f"didomi already has this event ({status})", status, duplicate=True)
    if status == 401:
        return DidomiAnswer(UNAUTHORIZED, f"didomi refused the access token (401): {detail}", status)
    if status == 429:
        return DidomiAnswer(RATE_LIMITED, "didomi rate limit (429)", status, retry_at=now + _retry_after(headers))
    if status >= 500:
        return DidomiAnswer(RETRYABLE, f"didomi server error ({status}): {detail}", status)
    if 400 <= status < 500:
        return DidomiAnswer(PERMANENT, f"didomi rejected the request ({status}): {detail}", status)
    return DidomiAnswer(RETRYABLE, f"unexpected didomi answer ({status}): {detail}", status)


def transport_failure(problem: str) -> DidomiAnswer:
    return DidomiAnswer(RETRYABLE, f"didomi unreachable: {problem}")


def users_page(data: Any) -> tuple[list[dict], str | None]:
    """One page of `GET /consents/users`: `{data, limit, cursor}` as documented, or a bare list as in the OpenAPI
    document. Raises ValueError when it is neither."""
    if isinstance(data, list):
        return [u for u in data if isinstance(u, dict)], None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        cursor = data.get("cursor")
        if cursor is not None and not isinstance(cursor, str | int):
            raise ValueError("cursor must be a string or null")
        return [u for u in data["data"] if isinstance(u, dict)], (str(cursor) if cursor not in (None, "") else None)
    raise ValueError("expected {data, limit, cursor} or a list of users")


def _retry_after(headers: Mapping[str, str]) -> float:
    """Didomi documents no header on a 429; honour `Retry-After` (seconds) if one comes, else wait out the window."""
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                return min(max(float(value), 1.0), 900.0)
            except (TypeError, ValueError):
                break
    return float(RATE_LIMIT_WINDOW_SECONDS)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def _detail(body: bytes, limit: int = 200) -> str:
    decoded = _json(body)
    message = decoded.get("message") if isinstance(decoded, dict) else None
    text = message if isinstance(message, str) and message else "-"
    return text if len(text) <= limit else text[: limit - 1] + "…"
