"""Backfill: existing Didomi users brought into Braze through the same mapping and ordering as a webhook.

Pure. A Didomi user object (from `GET /v1/consents/users` or a JSON-lines export) is read as the `new_entity` of a
`user.updated` webhook without `old_entity`, which is a full state (DESIGN §5): every non-null mapped input is
carried, at the user's position (`updated_at`, `version`). The change then travels as a `PendingChange` tagged with
the run, so the worker merges it into the user's state like any other change and a newer change always wins.

A run's progress is one item of the state table (`backfill#<run>`): where reading stopped (Didomi's cursor and how
many users of that page are done, or the file's line), users read, changes queued, and the worker's counts of
applied, skipped and parked messages (README "Backfill").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Protocol

from .connector import ConnectorConfig
from .didomi import parse_webhook
from .errors import InvalidWebhook
from .mapping import Change, Skip, plan

EVENT_TYPE = "backfill"
RUN_KEY_PREFIX = "backfill#"
SETTLED = ("applied", "skipped", "parked")


class BackfillInputError(Exception):
    """A line of the users file that is not a Didomi user object; the message names the file and line."""


def user_change(user: object, config: ConnectorConfig, regulation: str) -> Skip | Change:
    """What one Didomi user object carries for Braze, exactly as a `user.updated` webhook with this state would.

    Raises InvalidWebhook naming the field when a part the mappings or the ordering read is malformed."""
    if not isinstance(user, dict):
        raise InvalidWebhook("a Didomi user must be a JSON object")
    body = {"type": "user.updated", "regulation": regulation, "parameters": {"new_entity": user}}
    outcome = plan(parse_webhook(body), config)
    if isinstance(outcome, Skip):
        return outcome
    version = user.get("version")
    suffix = f":v{version}" if version is not None else ""
    return replace(outcome, event_id=f"{EVENT_TYPE}:{user.get('id') or '-'}{suffix}", event_type=EVENT_TYPE)


def read_users_file(lines: Iterable[str], name: str, start_line: int = 0) -> Iterator[tuple[int, dict]]:
    """(line number, user object) for each non-blank line after `start_line` (1-based numbers, as editors show).

    A line that is not a JSON object raises BackfillInputError naming the file and line; an export that wraps its
    users (`{"data": [...]}` or a JSON array) is refused with a hint, since only JSON lines can be resumed by line."""
    for number, line in enumerate(lines, start=1):
        if number <= start_line or not line.strip():
            continue
        try:
            user = json.loads(line)
        except ValueError as exc:
            hint = " (the file must hold one user object per line: JSON lines)" if number == 1 else ""
            raise BackfillInputError(f"{name} line {number}: not JSON ({exc.msg} at column {exc.colno}){hint}") from None
        if not isinstance(user, dict):
            raise BackfillInputError(f"{name} line {number}: expected a Didomi user object, found {type(user).__name__}")
        if isinstance(user.get("data"), list):
            raise BackfillInputError(f"{name} line {number}: a page of users; write one user object per line (JSON lines)")
        yield number, user


@dataclass(frozen=True)
class Checkpoint:
    """Where a run stands. The CLI writes the reading part; the worker adds the settled counts."""

    run: str
    source: str  # "didomi-api" or "file:<name>"
    regulation: str
    cursor: str | None = None  # didomi-api: the cursor of the page being read (None: the first page)
    done_in_page: int = 0  # didomi-api: users of that page already queued or skipped
    line: int = 0  # file: the last line queued or skipped
    read: int = 0
    queued: int = 0
    not_sent: int = 0  # read but carrying nothing for Braze (no user id, no mapped consent, ...)
    finished: bool = False  # every user was read
    started_at: str = ""
    applied: int = 0
    skipped: int = 0
    parked: int = 0

    @property
    def key(self) -> str:
        return RUN_KEY_PREFIX + self.run

    @property
    def settled(self) -> int:
        return self.applied + self.skipped + self.parked

    @property
    def all_settled(self) -> bool:
        """Every queued change was applied, skipped or parked (a change queued twice may be counted twice)."""
        return self.finished and self.settled >= self.queued

    def progress(self) -> str:
        state = "finished reading" if self.finished else "reading"
        return (
            f"run {self.run}: {self.read} users read, {self.queued} queued, {self.applied} applied, "
            f"{self.skipped} skipped, {self.parked} parked ({state})"
        )


class BackfillRuns(Protocol):
    """The state table's backfill items."""

    def save(self, checkpoint: Checkpoint) -> None:
        """Write the reading part of the checkpoint (the worker's counts are left as they are)."""

    def load(self, run: str) -> Checkpoint | None: ...

    def add_settled(self, run: str, counts: dict[str, int]) -> None:
        """Add the worker's counts (`applied`, `skipped`, `parked`) to a run."""
