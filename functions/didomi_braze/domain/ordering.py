"""Never let an older consent state overwrite a newer one: positions, and the per-user merged state.

Every Didomi change has a *position*: the time of the change (a user's `updated_at`; a consent event's
`updated_at` when it was edited, else its `created_at`; all normalised to UTC so that a stream mixing both kinds
sorts by when the change happened), then, for users, the record's `version`, then the entity id, which breaks
ties deterministically and makes the same change delivered twice compare equal. Between two states of the same
Didomi user the higher `version` is newer whatever the clocks say (DESIGN §4).

The connector keeps, per Braze user, the newest known value and position of every Didomi input a mapping reads
(the *merged state*, README "Ordering"). Events are partial: an event updates the inputs it carries and leaves
the others as they were, and only a newer position replaces a stored value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Position:
    time: str  # ISO 8601 UTC with microseconds and a four-digit year: sorts as a string
    version: Decimal | None = None  # Didomi user records only
    entity: str = ""  # the Didomi user id (user records) or the consent event id

    @property
    def key(self) -> str:
        """Sorts like the position for everything but the version rule (time, then version, then entity)."""
        return f"{self.time}|{_version_key(self.version)}|{self.entity}"

    def is_newer_than(self, other: Position) -> bool:
        if self._same_user_record(other):
            return (self.version, self.key) > (other.version, other.key)
        return self.key > other.key

    def _same_user_record(self, other: Position) -> bool:
        return self.version is not None and other.version is not None and self.entity == other.entity

    def to_dict(self) -> dict:
        out = {"time": self.time, "entity": self.entity}
        if self.version is not None:
            out["version"] = str(self.version)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping) -> Position:
        version = raw.get("version")
        return cls(str(raw["time"]), Decimal(str(version)) if version is not None else None, str(raw.get("entity", "")))


def _version_key(version: Decimal | None) -> str:
    if version is None:
        return ""
    whole, _, fraction = f"{version:f}".partition(".")
    return f"{int(whole):020d}" + (f".{fraction}" if fraction.strip("0") else "")


@dataclass(frozen=True, slots=True)
class StoredInput:
    """One Didomi input of the merged state: its newest known value and where it comes from.

    `quiet`: the change that brought this fact sent nothing to Braze, because the value was already known (a
    second webhook for the same change, a change back to the same value). Whether that value reached Braze then
    rests on an older change's delivery, which may have died before its Braze call: a redelivery of that older
    change is sent again rather than judged superseded."""

    value: bool
    position: Position
    quiet: bool = False


MergedState = Mapping[str, StoredInput]


@dataclass(frozen=True, slots=True)
class Merge:
    """What merging a change's inputs into the stored state gives, input by input."""

    state: dict[str, StoredInput]  # the merged state
    newer: dict[str, StoredInput]  # inputs that replace (or add to) the stored state
    seen: frozenset[str]  # inputs whose delivery may rest on this change: stored at its very position already
    # (it was seen before), or at a newer one only by a quiet fact of the same value
    older: frozenset[str]  # inputs the stored state already has newer values for


def merge(stored: MergedState, carried: Mapping[str, StoredInput]) -> Merge:
    state = dict(stored)
    newer: dict[str, StoredInput] = {}
    seen, older = set(), set()
    for name, incoming in carried.items():
        current = stored.get(name)
        if current is None or incoming.position.is_newer_than(current.position):
            newer[name] = state[name] = incoming
        elif incoming.position.key == current.position.key or (current.quiet and current.value == incoming.value):
            seen.add(name)
        else:
            older.add(name)
    return Merge(state, newer, frozenset(seen), frozenset(older))


def newest(changes: list[Mapping[str, StoredInput]]) -> dict[str, StoredInput]:
    """Several changes of one user combined: for each input, the value at the newest position."""
    out: dict[str, StoredInput] = {}
    for carried in changes:
        for name, incoming in carried.items():
            if name not in out or incoming.position.is_newer_than(out[name].position):
                out[name] = incoming
    return out


def quietly(inputs: Mapping[str, StoredInput]) -> dict[str, StoredInput]:
    return {name: StoredInput(stored.value, stored.position, quiet=True) for name, stored in inputs.items()}


def stored_older(stored: StoredInput | None, incoming: Position) -> bool:
    """The state table's own test, evaluated inside one conditional write (so it can only compare strings and
    numbers): true when the stored input is certainly older than `incoming`, so that writing over it loses
    nothing. False may be a false alarm (the version rule); the caller then merges exactly, as `merge` does, under a
    revision check. The same change stored already is not older: written again, it would clear its `quiet` mark,
    which still vouches for nothing (the exact merge leaves it as it is)."""
    if stored is None:
        return True
    if stored.position.key >= incoming.key:
        return False
    mine = stored.position
    if incoming.version is None or mine.version is None or mine.entity != incoming.entity:
        return True
    return mine.version <= incoming.version
