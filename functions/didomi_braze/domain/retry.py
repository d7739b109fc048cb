"""The retry queue's message: one Didomi change waiting to reach Braze, and how it counts its failures.

A message carries the change itself (the inputs it sets, at its position), not a Braze update: whoever delivers
it merges it into the user's state and sends what the *merged* state calls for, so a message that waited can
never carry an older value over a newer one.

SQS messages cannot be edited. A failed Braze call makes the same message visible again after the schedule's
next delay, and each receive of it counts (`ApproximateReceiveCount`). Waiting that is not a failure (Braze's
rate limit, another invocation holding the user) sends a fresh copy carrying the counts so far instead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from .errors import MalformedRetryMessage
from .mapping import BrazeIdentity, Change
from .ordering import MergedState, Position, StoredInput, merge

MESSAGE_VERSION = 2
IDENTITY_KINDS = ("external_id", "email")


@dataclass(frozen=True)
class PendingChange:
    change: Change
    owed: tuple[str, ...] | None  # Braze fields a failed call was sending; None: what the merge shows
    reason: str  # why it waits, the latest
    queued_at: str  # ISO 8601 UTC, when the change first went to the queue
    failures: int = 0  # failed Braze calls before this copy of the message was sent
    calls: int = 0  # Braze calls before this copy of the message was sent
    first_failure_at: str | None = None
    run: str | None = None  # the backfill run that queued it (README "Backfill"); the worker counts its outcome

    def to_json(self) -> str:
        change = self.change
        run = {"run": self.run} if self.run is not None else {}
        return json.dumps(
            {
                "version": MESSAGE_VERSION,
                "identity": {"kind": change.identity.kind, "value": change.identity.value},
                "event": {"id": change.event_id, "type": change.event_type},
                "position": change.position.to_dict(),
                "inputs": {name: stored.value for name, stored in change.inputs.items()},
                "owed": list(self.owed) if self.owed is not None else None,
                "reason": self.reason,
                "queued_at": self.queued_at,
                "failures": self.failures,
                "calls": self.calls,
                "first_failure_at": self.first_failure_at,
                **run,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> PendingChange:
        try:
            raw = json.loads(text)
            if raw.get("version") != MESSAGE_VERSION:
                found = raw.get("version")
                written_by = f"version {found} of the message format" if isinstance(found, int) else "this connector"
                raise MalformedRetryMessage(f"not a retry message written by {written_by} (expected {MESSAGE_VERSION})")
            identity = BrazeIdentity(raw["identity"]["kind"], raw["identity"]["value"])
            position = Position.from_dict(raw["position"])
            inputs = {str(name): StoredInput(_bool(value), position) for name, value in raw["inputs"].items()}
            owed = raw.get("owed")
            pending = cls(
                change=Change(identity, inputs, str(raw["event"]["id"]), str(raw["event"]["type"])),
                owed=tuple(str(f) for f in owed) if owed is not None else None,
                reason=str(raw.get("reason", "")),
                queued_at=str(raw["queued_at"]),
                failures=_count(raw.get("failures", 0)),
                calls=_count(raw.get("calls", 0)),
                first_failure_at=raw.get("first_failure_at"),
                run=str(raw["run"]) if raw.get("run") is not None else None,
            )
        except MalformedRetryMessage:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, ArithmeticError) as exc:
            raise MalformedRetryMessage(f"not a retry message written by this connector ({type(exc).__name__})") from None
        if identity.kind not in IDENTITY_KINDS or not isinstance(identity.value, str) or not identity.value:
            raise MalformedRetryMessage("retry message has no Braze user")
        if not inputs:
            raise MalformedRetryMessage("retry message carries no consent change")
        return pending

    def ready_to_replay(self) -> PendingChange:
        """The body a parked message keeps: moved back to the retry queue, it starts a fresh schedule (and no longer
        counts for its backfill run, which counted it parked)."""
        return replace(self, failures=0, calls=0, first_failure_at=None, run=None)


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError("input value")
    return value


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError("count")
    return value


@dataclass
class UserWork:
    """Everything one invocation delivers for one Braze user: the changes to merge and the fields owed.

    A change found already merged at its own position was seen before and may never have reached Braze, so its
    fields are sent again, unless a failed call already said what it owes. This is judged change by change: in a
    batch, a newer change of the same value must not hide the redelivery of an older one (`seen_again`)."""

    identity: BrazeIdentity
    changes: list[Change] = field(default_factory=list)
    owed: set[str] = field(default_factory=set)
    judged: list[Change] = field(default_factory=list)  # changes no failed call said what they owe: the merge says
    tags: list[str] = field(default_factory=list)  # who asked (message ids), in order

    def add(self, change: Change, owed: tuple[str, ...] | None = None, tag: str | None = None) -> None:
        self.changes.append(change)
        if owed is not None:
            self.owed.update(owed)
        else:
            self.judged.append(change)
        if tag is not None:
            self.tags.append(tag)

    def seen_again(self, stored: MergedState) -> frozenset[str]:
        """The inputs whose delivery may rest on one of these changes (ordering.Merge.seen), change by change."""
        return frozenset().union(*(merge(stored, change.inputs).seen for change in self.judged))

    @property
    def event(self) -> str:
        return self.changes[-1].event_id if self.changes else "-"


def by_user(items: Sequence[tuple[str, PendingChange]]) -> list[UserWork]:
    """Group pending changes by Braze user: one user is one object in a request (Braze does not keep their order)."""
    work: dict[str, UserWork] = {}
    for tag, pending in items:
        work.setdefault(pending.change.identity.key, UserWork(pending.change.identity)).add(pending.change, pending.owed, tag)
    return list(work.values())


def iso_utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
