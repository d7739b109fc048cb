"""Braze `/users/track` requests and what Braze's answers mean for delivery (README: "Delivery, retries")."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from .mapping import EMAIL_FIELD, GROUP_PREFIX, BrazeIdentity

TRACK_PATH = "/users/track"
MAX_OBJECTS_PER_REQUEST = 75  # Braze's hard limit across attributes, events and purchases
DEFAULT_OBJECTS_PER_REQUEST = 50  # the limit on newer active-user plans: safe everywhere

DELIVERED = "delivered"
RETRYABLE = "retryable"  # 5xx, timeouts, connection errors, 401/403: each one spends a retry
RATE_LIMITED = "rate_limited"  # 429: backpressure, waits for the reset and spends nothing
PERMANENT = "permanent"


def attributes_object(identity: BrazeIdentity, fields: Mapping[str, str], upsert_mode: bool) -> dict:
    """The `/users/track` attributes object setting these Braze fields (`email_subscribe`, `group:<id>`)."""
    obj: dict = {identity.kind: identity.value}
    if not upsert_mode:
        obj["_update_existing_only"] = True
    if EMAIL_FIELD in fields:
        obj["email_subscribe"] = fields[EMAIL_FIELD]
    groups = sorted((name[len(GROUP_PREFIX) :], state) for name, state in fields.items() if name.startswith(GROUP_PREFIX))
    if groups:
        obj["subscription_groups"] = [{"subscription_group_id": gid, "subscription_state": state} for gid, state in groups]
    return obj


def track_body(objects: list[dict]) -> bytes:
    return json.dumps({"attributes": objects}, separators=(",", ":")).encode()


@dataclass(frozen=True)
class BrazeOutcome:
    """What one `/users/track` call came to.

    `kind` is the fate of the request as a whole; on a delivered request, `item_errors` lists the objects
    (by index in `attributes`) that Braze rejected: those are permanent failures, everything else was applied.
    """

    kind: str
    reason: str
    status: int | None = None
    retry_at: float | None = None  # epoch seconds before which Braze asked us not to call again (429)
    refresh_credentials: bool = False  # 401/403: the key may have been rotated in the secret
    item_errors: dict[int, str] = field(default_factory=dict)
    window: RateWindow | None = None  # where the workspace's rate limit stood, as Braze's headers said

    def item_error(self, index: int) -> str | None:
        return self.item_errors.get(index)


@dataclass(frozen=True)
class RateWindow:
    """Braze's `X-RateLimit-*` headers, sent on every request: the workspace's limit, what is left of it in the
    current window (shared with every other integration of the workspace), and when the window resets."""

    limit: int
    remaining: int
    reset: float  # epoch seconds


def classify_response(status: int, headers: Mapping[str, str], body: bytes, object_count: int) -> BrazeOutcome:
    """Classify Braze's HTTP answer. Headers are matched case-insensitively."""
    outcome = _classify(status, headers, body, object_count)
    window = rate_window(headers)
    return replace(outcome, window=window) if window else outcome


def rate_window(headers: Mapping[str, str]) -> RateWindow | None:
    found = {name.lower(): value for name, value in headers.items() if name.lower().startswith("x-ratelimit-")}
    try:
        limit, remaining = int(found["x-ratelimit-limit"]), int(found["x-ratelimit-remaining"])
        reset = float(found["x-ratelimit-reset"])
    except (KeyError, TypeError, ValueError):
        return None
    return RateWindow(limit, max(remaining, 0), reset)


def _classify(status: int, headers: Mapping[str, str], body: bytes, object_count: int) -> BrazeOutcome:
    message = _message(body)
    if 200 <= status < 300:
        if not isinstance(message, dict) or message.get("message") != "success":
            got = message.get("message") if isinstance(message, dict) else None
            return BrazeOutcome(RETRYABLE, f"braze answered {status} without success (message={_short(got)})", status)
        errors = message.get("errors") or []
        item_errors: dict[int, str] = {}
        for error in errors if isinstance(errors, list) else [errors]:
            index = error.get("index") if isinstance(error, dict) else None
            text = _short(error.get("type") if isinstance(error, dict) else error)
            if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < object_count:
                item_errors[index] = text
            else:
                # An error Braze does not tie to an object: count it against every object.
                item_errors.update({i: text for i in range(object_count) if i not in item_errors})
        return BrazeOutcome(DELIVERED, "success", status, item_errors=item_errors)

    detail = _short(message.get("message") if isinstance(message, dict) else None)
    if status == 429:
        return BrazeOutcome(RATE_LIMITED, "braze rate limit (429)", status, retry_at=_rate_limit_reset(headers))
    if status in (401, 403):
        return BrazeOutcome(RETRYABLE, f"braze refused the API key ({status}): {detail}", status, refresh_credentials=True)
    if status >= 500:
        return BrazeOutcome(RETRYABLE, f"braze server error ({status}): {detail}", status)
    if status in (400, 404, 413):
        return BrazeOutcome(PERMANENT, f"braze rejected the request ({status}): {detail}", status)
    # Any other 4xx is unexpected: retry on the schedule rather than drop a consent change.
    return BrazeOutcome(RETRYABLE, f"unexpected braze answer ({status}): {detail}", status)


def transport_failure(problem: str) -> BrazeOutcome:
    """Timeouts and connection errors: Braze may be down or slow. Always retryable."""
    return BrazeOutcome(RETRYABLE, f"braze unreachable: {problem}")


def _message(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _rate_limit_reset(headers: Mapping[str, str]) -> float | None:
    for name, value in headers.items():
        if name.lower() == "x-ratelimit-reset":
            try:
                return float(value)
            except (TypeError, ValueError):
                return None
    return None


def _short(value: object, limit: int = 200) -> str:
    text = value if isinstance(value, str) else json.dumps(value) if value is not None else "-"
    return text if len(text) <= limit else text[: limit - 1] + "…"
