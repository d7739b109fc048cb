"""Braze Currents for the local stack: Avro files with the documented fields of the two subscription events,
written with a real Avro library (fastavro) under the documented S3 key layout.

Sources (braze.com/docs): the Currents event glossary ("Cloud Storage" tab) for the fields, each "(required|optional,
type)"; Braze's own Currents examples write a required field as a plain Avro type, an optional one as a union with
null defaulting to null, and `time` as an Avro `int`. The key layout is Currents' "event delivery semantics" page:
`<prefix>/dataexport.<cluster>.S3.integration.<id>/event_type=<type>/date=<YYYY-MM-DD-HH>/<schema-id>/<zone>/
dataexport.<cluster>.S3.integration.<id>+<partition>+<offset>.avro`, where the date is the hour the events were
queued, not their `time`.
"""

from __future__ import annotations

import hashlib
import io
import itertools
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import fastavro

from .braze_emulator import BrazeWorkspace, SubscriptionChange

GLOBAL = "users.behaviors.subscription.GlobalStateChange"
GROUP = "users.behaviors.subscriptiongroup.StateChange"
CLUSTER = "prod-01"
INTEGRATION = "5f2a0c1e9b7d4e3a8c6f1b20"
SCHEMA_ID = 1
STATUSES = {"opted_in": "Opted In", "subscribed": "Subscribed", "unsubscribed": "Unsubscribed"}

_OPTIONAL_STRINGS = (
    "external_user_id",
    "email_address",
    "channel",
    "channel_identifier",
    "timezone",
    "app_group_id",
    "app_id",
    "state_change_source",
    "send_id",
    "campaign_id",
    "campaign_name",
    "canvas_id",
    "canvas_name",
    "canvas_step_id",
    "canvas_step_name",
    "canvas_variation_id",
    "canvas_variation_name",
    "message_variation_id",
)


def _schema(name: str, required: tuple[str, ...], optional: tuple[str, ...]) -> dict:
    fields = [{"name": "id", "type": "string"}, {"name": "user_id", "type": "string"}]
    fields += [{"name": f, "type": "string"} for f in required]
    fields += [{"name": "time", "type": "int"}]
    fields += [{"name": f, "type": ["null", "string"], "default": None} for f in optional]
    return fastavro.parse_schema({"type": "record", "name": name, "namespace": "com.braze.currents", "fields": fields})


SCHEMAS = {
    GLOBAL: _schema("GlobalStateChange", ("subscription_status",), _OPTIONAL_STRINGS),
    GROUP: _schema(
        "SubscriptionGroupStateChange",
        ("subscription_group_id", "subscription_status"),
        (*_OPTIONAL_STRINGS, "dispatch_id", "message_variation_name", "phone_number"),
    ),
}


def avro_file(event_type: str, records: Iterable[dict], codec: str = "deflate") -> bytes:
    """An Avro object container file of these records, with the event type's schema."""
    buffer = io.BytesIO()
    fastavro.writer(buffer, SCHEMAS[event_type], list(records), codec=codec)
    return buffer.getvalue()


def currents_key(prefix: str, event_type: str, queued_at: float, offset: int, partition: int = 0) -> str:
    name = f"dataexport.{CLUSTER}.S3.integration.{INTEGRATION}"
    hour = datetime.fromtimestamp(queued_at, tz=UTC).strftime("%Y-%m-%d-%H")
    return f"{prefix}/{name}/event_type={event_type}/date={hour}/{SCHEMA_ID}/zone-a/{name}+{partition}+{offset}.avro"


def record_of(change: SubscriptionChange) -> dict:
    """The Currents record Braze writes for one subscription change."""
    kind, _, value = change.identity_key.partition(":")
    record = {
        "id": change.id,
        "user_id": hashlib.sha256(change.identity_key.encode()).hexdigest()[:24],
        "subscription_status": STATUSES[change.state],
        "time": change.time,
        "external_user_id": value if kind == "external_id" else None,
        "email_address": value if kind == "email" else None,
        "channel": "email",
        "app_group_id": "local-workspace",
        "state_change_source": change.source,
    }
    if change.group_id is not None:
        record["subscription_group_id"] = change.group_id
    return record


class CurrentsExport:
    """Braze's Currents connector for one workspace: `flush` writes the changes recorded since the last flush, one
    file per event type, through `put(key, data)` (an S3 PutObject in the local stack)."""

    def __init__(self, workspace: BrazeWorkspace, put: Callable[[str, bytes], None], prefix: str = "currents"):
        self.workspace = workspace
        self.put = put
        self.prefix = prefix
        self.exported = 0
        self._offsets = itertools.count(0, 1000)

    def flush(self, duplicate: bool = False) -> list[str]:
        """Write the pending changes; with `duplicate`, write them twice (Currents delivers at least once)."""
        changes = self.workspace.subscription_changes[self.exported :]
        self.exported += len(changes)
        keys = []
        for event_type in (GLOBAL, GROUP):
            records = [record_of(c) for c in changes if (c.group_id is None) == (event_type == GLOBAL)]
            for _ in range(2 if duplicate and records else 1 if records else 0):
                key = currents_key(self.prefix, event_type, self.workspace.clock(), next(self._offsets))
                self.put(key, avro_file(event_type, records))
                keys.append(key)
        return keys
