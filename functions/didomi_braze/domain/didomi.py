"""Didomi webhook events, validated into typed objects.

Only what the connector uses is validated; unknown fields are ignored, so that Didomi can add fields
without breaking deliveries. Every error names the JSON path of the problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .consent import ConsentState, parse_consents
from .errors import InvalidWebhook

CREATED_OR_DELETED = ("event.created", "event.deleted", "user.created", "user.deleted")
UPDATED = ("event.updated", "user.updated")
EVENT_TYPES = CREATED_OR_DELETED + UPDATED
CONFIRMED = "confirmed"
PENDING = "pending_approval"
DEFAULT_REGULATION = "gdpr"


@dataclass(frozen=True)
class Entity:
    """A Didomi user (the full consent state) or consent event (a partial change), as far as we need it."""

    kind: str  # "user" or "event"
    id: str | None
    organization_user_id: str | None
    consents: ConsentState
    status: str  # consent events: confirmed | pending_approval; users: always confirmed
    regulation: str | None
    created_at: str | None
    updated_at: str | None
    version: int | None

    @property
    def order_key(self) -> str:
        """A string that sorts like the state's age: a user's `updated_at` then `version`, an event's `created_at`."""
        if self.kind == "user":
            return f"{self.updated_at or ''}|{self.version if self.version is not None else 0:012d}"
        return f"{self.created_at or ''}|{0:012d}"


@dataclass(frozen=True)
class DidomiWebhook:
    type: str
    regulation: str
    entity: Entity  # the entity of created/deleted events; `new_entity` of updated events
    old_entity: Entity | None = None  # updated events only

    @property
    def is_deleted(self) -> bool:
        return self.type.endswith(".deleted")

    @property
    def event_id(self) -> str:
        """Identifies this delivery's content, so that the same event delivered twice can be recognised."""
        e = self.entity
        return f"{self.type}:{e.id or '-'}:{e.order_key}"


def parse_webhook(body: Any) -> DidomiWebhook:
    """Validate a decoded JSON body as a Didomi webhook; raise InvalidWebhook naming the problem."""
    if not isinstance(body, dict):
        raise InvalidWebhook("the body must be a JSON object")
    event_type = body.get("type")
    if not isinstance(event_type, str):
        raise InvalidWebhook("type is required and must be a string")
    if event_type not in EVENT_TYPES:
        raise InvalidWebhook(f"type {event_type[:64]!r} is not a Didomi event type (expected one of {', '.join(EVENT_TYPES)})")
    params = body.get("parameters")
    if not isinstance(params, dict):
        raise InvalidWebhook("parameters is required and must be an object")
    top_regulation = _optional_str(body, "regulation", "regulation")
    kind = event_type.split(".")[0]

    if event_type in CREATED_OR_DELETED:
        entity = _entity(kind, params.get("entity"), "parameters.entity")
        old = None
        source_regulation = None
    else:
        old = _entity(kind, params.get("old_entity"), "parameters.old_entity")
        entity = _entity(kind, params.get("new_entity"), "parameters.new_entity")
        source = params.get("source")
        if source is not None and not isinstance(source, dict):
            raise InvalidWebhook("parameters.source must be an object")
        source_regulation = _optional_str(source or {}, "regulation", "parameters.source.regulation")

    regulation = top_regulation or entity.regulation or source_regulation or DEFAULT_REGULATION
    return DidomiWebhook(type=event_type, regulation=regulation.lower(), entity=entity, old_entity=old)


def _entity(kind: str, raw: Any, path: str) -> Entity:
    if not isinstance(raw, dict):
        raise InvalidWebhook(f"{path} is required and must be an object")
    if kind == "user":
        user_id = _optional_str(raw, "organization_user_id", f"{path}.organization_user_id")
        status = CONFIRMED
    else:
        user = raw.get("user")
        if user is not None and not isinstance(user, dict):
            raise InvalidWebhook(f"{path}.user must be an object")
        user_id = _optional_str(user or {}, "organization_user_id", f"{path}.user.organization_user_id")
        status = _optional_str(raw, "status", f"{path}.status") or CONFIRMED
        if status not in (CONFIRMED, PENDING):
            raise InvalidWebhook(f"{path}.status must be {CONFIRMED!r} or {PENDING!r}")
    version = raw.get("version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 0):
        raise InvalidWebhook(f"{path}.version must be a non-negative integer")
    return Entity(
        kind=kind,
        id=_optional_str(raw, "id", f"{path}.id"),
        organization_user_id=user_id if user_id and user_id.strip() else None,
        consents=parse_consents(raw.get("consents"), f"{path}.consents"),
        status=status,
        regulation=_optional_str(raw, "regulation", f"{path}.regulation"),
        created_at=_timestamp(raw, "created_at", path),
        updated_at=_timestamp(raw, "updated_at", path),
        version=version,
    )


def _optional_str(raw: dict, key: str, path: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidWebhook(f"{path} must be a string")
    return value


def _timestamp(raw: dict, key: str, path: str) -> str | None:
    """Normalise an ISO 8601 timestamp to UTC with microseconds, so that timestamps sort as strings."""
    value = _optional_str(raw, key, f"{path}.{key}")
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidWebhook(f"{path}.{key} must be an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        utc = parsed.astimezone(UTC)
    except OverflowError:  # the first or last day Python can hold, moved past it by the offset: keep the extreme
        utc = (datetime.min if parsed.year == 1 else datetime.max).replace(tzinfo=UTC)
    return utc.isoformat(timespec="microseconds").replace("+00:00", "Z")  # %Y would not pad year 1
