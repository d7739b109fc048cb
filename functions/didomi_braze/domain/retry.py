"""The retry queue's message, and how a batch of retries becomes few Braze requests."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from .errors import MalformedRetryMessage
from .mapping import BrazeIdentity, BrazeUpdate
from .ordering import fields_of, position

MESSAGE_VERSION = 1


@dataclass(frozen=True)
class PendingUpdate:
    """A Braze update waiting on the retry queue: the message body, as JSON."""

    event_id: str
    event_type: str
    identity: BrazeIdentity
    update: BrazeUpdate
    order_key: str
    first_failure_at: str  # ISO 8601 UTC
    first_failure_reason: str

    @property
    def position(self) -> str:
        return position(self.order_key, self.event_id)

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": MESSAGE_VERSION,
                "event_id": self.event_id,
                "event_type": self.event_type,
                "identity": {"kind": self.identity.kind, "value": self.identity.value},
                "update": self.update.to_dict(),
                "order_key": self.order_key,
                "first_failure_at": self.first_failure_at,
                "first_failure_reason": self.first_failure_reason,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> PendingUpdate:
        try:
            raw = json.loads(text)
            identity = raw["identity"]
            update = raw["update"]
            pending = cls(
                event_id=raw["event_id"],
                event_type=raw["event_type"],
                identity=BrazeIdentity(identity["kind"], identity["value"]),
                update=BrazeUpdate.from_dict(update),
                order_key=raw["order_key"],
                first_failure_at=raw["first_failure_at"],
                first_failure_reason=raw["first_failure_reason"],
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MalformedRetryMessage(f"not a retry message written by this connector ({type(exc).__name__})") from None
        if raw.get("version") != MESSAGE_VERSION or pending.identity.kind not in ("external_id", "email"):
            raise MalformedRetryMessage("not a retry message written by this connector (unknown version or identity)")
        if not isinstance(pending.identity.value, str) or pending.update.is_empty():
            raise MalformedRetryMessage("retry message has no user or no update")
        return pending


@dataclass(frozen=True)
class UserBatchItem:
    """One Braze attributes object standing for every queued update of one user in a batch."""

    identity: BrazeIdentity
    update: BrazeUpdate
    message_ids: tuple[str, ...]
    field_positions: dict[str, str]  # field -> position of the message whose value the update carries
    message_positions: dict[str, str]  # message id -> position of its event

    @property
    def newest_position(self) -> str:
        return max(self.message_positions.values())


def collapse(messages: Sequence[tuple[str, PendingUpdate]]) -> list[UserBatchItem]:
    """Merge each user's updates, oldest first so that the newest value of every field wins.

    One user therefore never appears twice in a request (Braze does not keep the order of objects).
    """
    by_user: dict[str, list[tuple[str, PendingUpdate]]] = {}
    for message_id, pending in messages:
        by_user.setdefault(pending.identity.key, []).append((message_id, pending))
    items = []
    for group in by_user.values():
        group.sort(key=lambda pair: pair[1].position)
        merged = BrazeUpdate()
        field_positions: dict[str, str] = {}
        for _, pending in group:
            merged = merged.overlaid_by(pending.update)
            field_positions.update(dict.fromkeys(fields_of(pending.update), pending.position))
        items.append(
            UserBatchItem(
                identity=group[0][1].identity,
                update=merged,
                message_ids=tuple(mid for mid, _ in group),
                field_positions=field_positions,
                message_positions={mid: pending.position for mid, pending in group},
            )
        )
    return items


def chunks(items: list[UserBatchItem], size: int) -> list[list[UserBatchItem]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def iso_utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
