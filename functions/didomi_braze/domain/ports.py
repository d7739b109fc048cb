"""What the use cases need from the outside world, as small protocols. The adapters implement them for AWS and
Braze; the sandbox implements them in memory (checked against the real ones) for simulations and property tests."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # annotations only: the webhook's cold start need not load the Didomi API's module
    from .braze import BrazeOutcome
    from .didomi_api import DidomiAnswer
    from .ordering import StoredInput


@dataclass(frozen=True, slots=True)
class UserRecord:
    """What the state table holds for one user."""

    inputs: dict[str, StoredInput] = field(default_factory=dict)  # the merged Didomi state
    revision: int = 0  # incremented by every claim: an exact merge is written only on the revision it read
    lease_owner: str | None = None
    lease_until: float = 0.0
    lease_event: str | None = None  # what the lease holder is delivering (for operators)

    def leased_at(self, now: float) -> bool:
        return self.lease_owner is not None and self.lease_until >= now


@dataclass(frozen=True)
class StoredOlder:
    """Claim only if no stored input is newer than the one written over it (judged as `stored_older` does)."""


@dataclass(frozen=True)
class AtRevision:
    """Claim only if the record is still at this revision (0: the record does not exist yet)."""

    revision: int


@dataclass(frozen=True)
class Claimed:
    """The lease is ours and the inputs are written; `before` is the record as it was."""

    before: UserRecord


@dataclass(frozen=True)
class Refused:
    """The condition failed (a lease held, an input newer, the revision moved); `current` is the record now."""

    current: UserRecord


class StateStore(Protocol):
    def claim(
        self,
        key: str,
        inputs: Mapping[str, StoredInput],
        owner: str | None,
        event: str,
        now: float,
        lease_until: float,
        expect: StoredOlder | AtRevision,
    ) -> Claimed | Refused:
        """In one conditional write: take the user's lease (free, or run out before `now`), write `inputs`, count
        the revision up. With no `owner`, only merge: no lease is taken or checked. Raises StateUnavailable when the
        table cannot be reached."""
        ...

    def release(self, key: str, owner: str, quiet: tuple[str, ...] = ()) -> bool:
        """Give the lease back if it is still ours, marking these inputs quiet. Raises StateUnavailable."""
        ...

    def read(self, key: str) -> UserRecord | None:
        """The user's record, for operators and the slow path. Raises StateUnavailable."""
        ...


class BrazeApi(Protocol):
    def track(self, server: str, api_key: str, objects: list[dict]) -> BrazeOutcome: ...


@dataclass(frozen=True)
class DeadLetter:
    """Why a message is parked: these become SQS message attributes, readable without opening the body."""

    reason: str
    attempts: int  # Braze calls made for it, the webhook's own try included
    first_failure_at: str
    last_braze_status: int | None = None
    event_id: str | None = None
    category: str = "failed"  # low-cardinality: the metric dimension and the replay grouping
    last_didomi_status: int | None = None  # the flow back's parked events (Braze → Didomi)

    def attributes(self) -> dict[str, str]:
        attrs = {
            "reason": self.reason[:1000],
            "category": self.category,
            "attempts": str(self.attempts),
            "first_failure_at": self.first_failure_at,
            "last_braze_status": str(self.last_braze_status) if self.last_braze_status is not None else "none",
        }
        if self.event_id:
            attrs["event_id"] = self.event_id[:500]
        if self.last_didomi_status is not None:
            attrs["last_didomi_status"] = str(self.last_didomi_status)
        return attrs


class RetryQueue(Protocol):
    def enqueue(self, body: str, delay_seconds: int) -> None:
        """Send a message to the retry queue, delivered after `delay_seconds` (0-900)."""
        ...

    def postpone(self, receipt_handle: str, seconds: int) -> None:
        """Make a received message visible again in `seconds` (the retry schedule's next delay)."""
        ...

    def dead_letter(self, body: str, why: DeadLetter) -> None:
        """Park a message on the dead-letter queue with its reason."""
        ...


# -- the flow back (Braze → Didomi) ----------------------------------------------------------------------------
class DidomiApi(Protocol):
    def create_event(self, body: dict, disable_integrations: bool = False) -> DidomiAnswer:
        """`POST /consents/events` in the secret's organisation. WRITTEN also when Didomi already has the event's id.
        Raises ConfigurationError when the credentials cannot be read (as `users` does)."""
        ...

    def users(self, organization_user_id: str | None = None, regulation: str | None = None) -> Iterator[dict]:
        """`GET /consents/users`, every page, consents under `regulation` (default GDPR). Raises DidomiUnavailable."""
        ...


class CurrentsFiles(Protocol):
    def records(self, bucket: str, key: str) -> Iterator[dict]:
        """The records of one Currents Avro file. Raises FileUnavailable (retry) or UnreadableFile (park)."""
        ...


class EventLedger(Protocol):
    """Which Currents events were handled (written, skipped or parked), for a while: Currents delivers at least once."""

    def handled(self, keys: Iterable[str]) -> set[str]:
        """The keys among these that were recorded. Raises StateUnavailable."""
        ...

    def record(self, keys: Iterable[str], now: float) -> None:
        """Record these keys as handled. Raises StateUnavailable."""
        ...
