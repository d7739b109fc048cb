"""Didomi webhook events, validated into typed objects.

Be liberal in what is accepted (every payload Didomi's own schema allows, `shared/reference`): unknown fields are
ignored, and only what the connector reads is validated, when it reads it. Consents are validated per mapping
value (consent.py); timestamps only when the event is going to take a position. Every error names the JSON path
of the problem.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from .consent import ConsentState, parse_consents
from .errors import InvalidWebhook
from .ordering import Position

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
    path: str  # where it sits in the body, for error messages
    raw: dict
    organization_user_id: str | None
    consents: ConsentState
    status: str  # consent events: as sent (absent means confirmed); users: always confirmed
    regulation: str | None

    @property
    def id(self) -> str:
        value = self.raw.get("id")
        return value if isinstance(value, str) else ""

    @property
    def is_confirmed(self) -> bool:
        return self.status == CONFIRMED

    def position(self) -> Position:
        """Where this state stands in time. Raises InvalidWebhook naming the missing or malformed field."""
        if self.kind == "user":
            return Position(self._timestamp("updated_at", required=True), self._version(), self.id)
        edited = self._timestamp("updated_at", required=False)
        return Position(edited or self._timestamp("created_at", required=True), None, self.id)

    def _timestamp(self, key: str, required: bool) -> str | None:
        value = self.raw.get(key)
        where = f"{self.path}.{key}"
        if value is None:
            if required:
                raise InvalidWebhook(f"{where} is required: it orders this {self.kind} against other changes")
            return None
        if not isinstance(value, str):
            raise InvalidWebhook(f"{where} must be an ISO 8601 timestamp string")
        return normalise_timestamp(value, where)

    def _version(self) -> Decimal | None:
        value = self.raw.get("version")
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise InvalidWebhook(f"{self.path}.version must be a non-negative number")
        return Decimal(str(value))


@dataclass(frozen=True)
class DidomiWebhook:
    type: str
    regulation: str
    entity: Entity  # the entity of created/deleted events; `new_entity` of updated events
    old_entity: Entity | None = None  # updated events only, when Didomi sent it
    source: dict | None = None  # updated events: the consent event behind the change, when Didomi sent it

    @property
    def is_deleted(self) -> bool:
        return self.type.endswith(".deleted")

    @property
    def cause(self) -> dict | None:
        """The consent event that made Didomi send this webhook: the entity of `event.created`, the `source` of a
        user change. (An `event.updated` is caused by the edit, not by the event's creator.)"""
        if self.type == "event.created":
            return self.entity.raw
        return self.source if self.entity.kind == "user" else None

    @property
    def event_id(self) -> str:
        """Names the change in logs and queue messages (the entity id, and for users the version)."""
        version = self.entity.raw.get("version")
        suffix = f":v{version}" if self.entity.kind == "user" and version is not None else ""
        return f"{self.type}:{self.entity.id or '-'}{suffix}"


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

    old = None
    source = None
    source_regulation = None
    if event_type in CREATED_OR_DELETED:
        entity = _entity(kind, params.get("entity"), "parameters.entity")
    else:
        entity = _entity(kind, params.get("new_entity"), "parameters.new_entity")
        raw_old = params.get("old_entity")
        if raw_old is not None:
            old = _entity(kind, raw_old, "parameters.old_entity")
        if isinstance(params.get("source"), dict):
            source = params["source"]
            source_regulation = _optional_str(source, "regulation", "parameters.source.regulation")

    regulation = top_regulation or entity.regulation or source_regulation or DEFAULT_REGULATION
    return DidomiWebhook(type=event_type, regulation=regulation.lower(), entity=entity, old_entity=old, source=source)


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
    return Entity(
        kind=kind,
        path=path,
        raw=raw,
        organization_user_id=user_id if user_id and user_id.strip() else None,
        consents=parse_consents(raw.get("consents"), f"{path}.consents"),
        status=status,
        regulation=_optional_str(raw, "regulation", f"{path}.regulation"),
    )


def _optional_str(raw: dict, key: str, path: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidWebhook(f"{path} must be a string")
    return value


def normalise_timestamp(value: str, where: str) -> str:
    """An ISO 8601 timestamp in UTC with microseconds and a four-digit year, so that timestamps sort as strings."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidWebhook(f"{where} must be an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        utc = parsed.astimezone(UTC)
    except OverflowError:  # the first or last day Python can hold, moved past it by the offset: keep the extreme
        utc = (datetime.min if parsed.year == 1 else datetime.max).replace(tzinfo=UTC)
    return utc.isoformat(timespec="microseconds").replace("+00:00", "Z")  # %Y would not pad year 1
