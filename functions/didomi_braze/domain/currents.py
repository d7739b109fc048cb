"""Braze Currents as the flow back reads it: the files Braze writes to S3, the two subscription events, and the
messages of the ingest queue (README "The flow back").

Braze writes Avro files "every 5 minutes or 15,000 events, whichever is sooner" under
`<prefix>/dataexport.<cluster>.S3.integration.<id>/event_type=<type>/date=<YYYY-MM-DD-HH>/<schema>/<zone>/….avro`,
and warns that "File naming conventions may change": a file's event type is read from its `event_type=` path
segment and from nothing else. Delivery is "at-least-once [...] you can use the unique identifier field that is
sent with every event (`id`) to deduplicate events".

Be liberal in what is accepted: fields Braze adds later are ignored ("added fields will always be optional"), and
only what the flow back reads is validated. A record that cannot be read is parked with its reason, never dropped.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from .errors import MalformedRetryMessage

GLOBAL_STATE_CHANGE = "users.behaviors.subscription.GlobalStateChange"
GROUP_STATE_CHANGE = "users.behaviors.subscriptiongroup.StateChange"
EVENT_TYPES = (GLOBAL_STATE_CHANGE, GROUP_STATE_CHANGE)
MESSAGE_VERSION = 1
FILE_MESSAGE = "currents_file"
EVENT_MESSAGE = "currents_event"


class InvalidCurrentsEvent(Exception):
    """A Currents record the flow back cannot act on; the message names the field, never a user's data."""


@dataclass(frozen=True, slots=True)
class CurrentsEvent:
    """One subscription change in Braze, with only the fields the flow back reads."""

    id: str
    event_type: str
    subscription_status: str  # as Braze wrote it: 'Subscribed', 'Unsubscribed', 'Opted In'
    time: int  # UNIX timestamp (seconds) at which the change happened in Braze
    external_user_id: str | None = None
    email_address: str | None = None
    subscription_group_id: str | None = None  # group events only
    state_change_source: str | None = None  # 'REST API', 'Dashboard', 'Subscription Page', ...
    user_id: str | None = None  # Braze's own user id

    @property
    def status(self) -> str:
        """The status compared case-insensitively ('Opted In', 'opted_in' and 'opted in' are one)."""
        return " ".join(self.subscription_status.replace("_", " ").lower().split())

    @property
    def source(self) -> str:
        return " ".join((self.state_change_source or "").lower().split())

    @property
    def at(self) -> str:
        """`time` as the ordering module writes times: ISO 8601 UTC with microseconds, so it sorts against Didomi's."""
        return datetime.fromtimestamp(self.time, tz=UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")

    @property
    def ledger_key(self) -> str:
        return ledger_key(self.id)

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__slots__ if getattr(self, name) is not None}


def ledger_key(event_id: str) -> str:
    """The key of a Currents event in the state table's ledger of handled events (hashed, like user keys)."""
    return "currents#" + hashlib.sha256(event_id.encode()).hexdigest()


def event_type_of(key: str) -> str | None:
    """The Currents event type a file holds, from its `event_type=` path segment (URL-decoded key)."""
    for part in key.split("/"):
        if part.startswith("event_type="):
            return part[len("event_type=") :] or None
    return None


def parse_record(record: Any, event_type: str) -> CurrentsEvent:
    """Validate one decoded Avro record of a subscription event file. Raises InvalidCurrentsEvent naming the field."""
    if not isinstance(record, Mapping):
        raise InvalidCurrentsEvent("the record is not an object")
    event_id = _text(record, "id", required=True)
    status = _text(record, "subscription_status", required=True)
    time = record.get("time")
    if isinstance(time, bool) or not isinstance(time, int):
        raise InvalidCurrentsEvent("time is required: a UNIX timestamp in seconds")
    try:
        datetime.fromtimestamp(time, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise InvalidCurrentsEvent("time is not a UNIX timestamp Python can represent") from None
    group = _text(record, "subscription_group_id", required=event_type == GROUP_STATE_CHANGE)
    return CurrentsEvent(
        id=event_id,
        event_type=event_type,
        subscription_status=status,
        time=time,
        external_user_id=_text(record, "external_user_id"),
        email_address=_text(record, "email_address"),
        subscription_group_id=group,
        state_change_source=_text(record, "state_change_source"),
        user_id=_text(record, "user_id"),
    )


def _text(record: Mapping, name: str, required: bool = False) -> str | None:
    value = record.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise InvalidCurrentsEvent(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise InvalidCurrentsEvent(f"{name} must be a string")
    return value


def record_fingerprint(record: Any) -> str:
    """Names a record that could not be read (it may have no id), so that parking it twice can be avoided."""
    text = json.dumps(record, sort_keys=True, default=str, separators=(",", ":"))
    return "unreadable:" + hashlib.sha256(text.encode()).hexdigest()[:32]


# -- the ingest queue's messages -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CurrentsFile:
    bucket: str
    key: str  # URL-decoded

    @property
    def name(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class IngestMessage:
    """What one ingest-queue message asks for: Currents files to read (from S3's notification, or a copy of one
    that had to wait), or one event that was parked and is now replayed. The counts travel in copies, as on the
    retry queue (domain/retry.py)."""

    files: tuple[CurrentsFile, ...] = ()
    event: CurrentsEvent | None = None
    failures: int = 0
    first_failure_at: str | None = None
    reason: str = ""

    def for_file(self, file: CurrentsFile) -> IngestMessage:
        return replace(self, files=(file,), event=None)

    def to_json(self) -> str:
        body: dict = {
            "version": MESSAGE_VERSION,
            "failures": self.failures,
            "first_failure_at": self.first_failure_at,
            "reason": self.reason[:1000],
        }
        if self.event is not None:
            body.update(kind=EVENT_MESSAGE, event=self.event.to_dict())
        else:
            body.update(kind=FILE_MESSAGE, files=[{"bucket": f.bucket, "key": f.key} for f in self.files])
        return json.dumps(body, separators=(",", ":"))

    def ready_to_replay(self) -> IngestMessage:
        """The body a parked message keeps: moved back to the ingest queue, it starts a fresh schedule."""
        return replace(self, failures=0, first_failure_at=None)


def parse_ingest_message(text: str) -> IngestMessage:
    """An S3 event notification (`s3:TestEvent` asks for nothing), or a message this connector wrote.
    Raises MalformedRetryMessage for anything else."""
    try:
        raw = json.loads(text)
    except ValueError:
        raise MalformedRetryMessage("not JSON: neither an S3 notification nor a message written by this connector") from None
    if not isinstance(raw, dict):
        raise MalformedRetryMessage("neither an S3 notification nor a message written by this connector")
    if raw.get("Event") == "s3:TestEvent":
        return IngestMessage()
    if isinstance(raw.get("Records"), list):
        return IngestMessage(files=tuple(_notified_files(raw["Records"])))
    if raw.get("version") != MESSAGE_VERSION or raw.get("kind") not in (FILE_MESSAGE, EVENT_MESSAGE):
        raise MalformedRetryMessage("not a message written by this connector's ingest (unknown version or kind)")
    try:
        failures = raw.get("failures", 0)
        if isinstance(failures, bool) or not isinstance(failures, int) or failures < 0:
            raise TypeError("failures")
        first = raw.get("first_failure_at")
        common = {"failures": failures, "first_failure_at": first if isinstance(first, str) else None}
        common["reason"] = str(raw.get("reason") or "")
        if raw["kind"] == EVENT_MESSAGE:
            event = raw["event"]
            return IngestMessage(event=parse_record(event, str(event["event_type"])), **common)
        files = tuple(CurrentsFile(_name(f["bucket"]), _name(f["key"])) for f in raw["files"])
        if not files:
            raise ValueError("no files")
        return IngestMessage(files=files, **common)
    except (KeyError, TypeError, ValueError, InvalidCurrentsEvent) as exc:
        raise MalformedRetryMessage(f"an ingest message that cannot be read ({type(exc).__name__})") from None


def _notified_files(records: list) -> list[CurrentsFile]:
    """The objects an S3 event notification announces. Keys arrive URL-encoded (spaces as '+')."""
    files = []
    for record in records:
        try:
            if not str(record["eventName"]).startswith("ObjectCreated"):
                continue
            s3 = record["s3"]
            files.append(CurrentsFile(_name(s3["bucket"]["name"]), urllib.parse.unquote_plus(_name(s3["object"]["key"]))))
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedRetryMessage(f"an S3 notification record that cannot be read ({type(exc).__name__})") from None
    return files


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("bucket and key must be non-empty strings")
    return value
