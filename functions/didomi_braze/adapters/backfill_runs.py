"""DynamoDB: the `BackfillRuns` port. One item per backfill run in the state table, keyed `backfill#<run>`.

The CLI sets the reading part with `SET` and the worker adds its counts with `ADD`: neither write erases the
other's, whatever their order.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from ..domain.errors import StateUnavailable

if TYPE_CHECKING:
    from ..domain.backfill import Checkpoint

RUN_TTL_SECONDS = 90 * 24 * 3600
_READING = {
    "source": "S",
    "regulation": "S",
    "cursor": "S",
    "done_in_page": "N",
    "line": "N",
    "read": "N",
    "queued": "N",
    "not_sent": "N",
    "finished": "BOOL",
    "started_at": "S",
}


class BackfillRunTable:
    def __init__(self, client, table_name: str, clock=time.time):
        self._ddb = client
        self._table = table_name
        self._clock = clock

    def save(self, checkpoint: Checkpoint) -> None:
        names, values, sets, removes = {}, {}, [], []
        for i, (name, kind) in enumerate(_READING.items()):
            value = getattr(checkpoint, name)
            names[f"#r{i}"] = name
            if value is None:
                removes.append(f"#r{i}")
                continue
            values[f":r{i}"] = {kind: value if kind == "BOOL" else str(value)}
            sets.append(f"#r{i} = :r{i}")
        values[":expires"] = {"N": str(int(self._clock()) + RUN_TTL_SECONDS)}
        sets.append("expires_at = :expires")
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        self._update(checkpoint.key, expression, names, values)

    def load(self, run: str) -> Checkpoint | None:
        from ..domain.backfill import SETTLED, Checkpoint  # on first use: the webhook's cold start never needs it

        try:
            item = self._ddb.get_item(
                TableName=self._table, Key={"user_key": {"S": Checkpoint(run, "", "").key}}, ConsistentRead=True
            ).get("Item")
        except (ClientError, BotoCoreError) as exc:
            raise StateUnavailable(_describe(exc)) from None
        if not item or "source" not in item:
            return None
        fields: dict = {}
        for name, kind in _READING.items():
            if name in item:
                raw = item[name][kind]
                fields[name] = raw if kind in ("S", "BOOL") else int(raw)
        for name in SETTLED:
            fields[name] = int(item.get(name, {}).get("N", "0"))
        return Checkpoint(run=run, **fields)

    def add_settled(self, run: str, counts: dict[str, int]) -> None:
        from ..domain.backfill import SETTLED, Checkpoint  # on first use, as in load()

        adds = [name for name in SETTLED if counts.get(name)]
        if not adds:
            return
        names = {f"#{name}": name for name in adds}
        values = {f":{name}": {"N": str(counts[name])} for name in adds}
        values[":expires"] = {"N": str(int(self._clock()) + RUN_TTL_SECONDS)}
        additions = ", ".join(f"#{name} :{name}" for name in adds)
        self._update(
            Checkpoint(run, "", "").key, f"ADD {additions} SET expires_at = if_not_exists(expires_at, :expires)", names, values
        )

    def _update(self, key: str, expression: str, names: dict, values: dict) -> None:
        request = {
            "TableName": self._table,
            "Key": {"user_key": {"S": key}},
            "UpdateExpression": expression,
            "ExpressionAttributeValues": values,
        }
        if names:
            request["ExpressionAttributeNames"] = names
        try:
            self._ddb.update_item(**request)
        except (ClientError, BotoCoreError) as exc:
            raise StateUnavailable(_describe(exc)) from None


def _describe(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}"[:300]
    return type(exc).__name__
