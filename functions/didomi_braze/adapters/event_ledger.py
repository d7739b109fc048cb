"""DynamoDB: the `EventLedger` port. One small item per handled Currents event in the state table, keyed
`currents#<sha256 of the event id>` (user records are keyed by a bare hash, so the two never meet), expiring
with the table's TTL attribute.
"""

from __future__ import annotations

from collections.abc import Iterable

from botocore.exceptions import BotoCoreError, ClientError

from ..domain.errors import StateUnavailable

TTL_SECONDS = 30 * 24 * 3600  # Currents redelivers within hours; a month covers a replay from the dead-letter queue
_ATTEMPTS = 5  # rounds for what DynamoDB leaves unprocessed under throttling


class DynamoEventLedger:
    def __init__(self, client, table_name: str):
        self._ddb = client
        self._table = table_name

    def handled(self, keys: Iterable[str]) -> set[str]:
        wanted = list(dict.fromkeys(keys))
        found: set[str] = set()
        for start in range(0, len(wanted), 100):
            request = {
                self._table: {"Keys": [{"user_key": {"S": k}} for k in wanted[start : start + 100]], "ConsistentRead": True}
            }
            for _ in range(_ATTEMPTS):
                answer = self._call("batch_get_item", RequestItems=request)
                found.update(item["user_key"]["S"] for item in answer.get("Responses", {}).get(self._table, []))
                request = answer.get("UnprocessedKeys") or {}
                if not request:
                    break
            if request:
                raise StateUnavailable("the ledger of handled Currents events could not be read (throttled)")
        return found

    def record(self, keys: Iterable[str], now: float) -> None:
        expires = str(int(now) + TTL_SECONDS)
        wanted = list(dict.fromkeys(keys))
        for start in range(0, len(wanted), 25):
            puts = [
                {"PutRequest": {"Item": {"user_key": {"S": k}, "expires_at": {"N": expires}, "handled_at": {"N": str(int(now))}}}}
                for k in wanted[start : start + 25]
            ]
            request = {self._table: puts}
            for _ in range(_ATTEMPTS):
                request = self._call("batch_write_item", RequestItems=request).get("UnprocessedItems") or {}
                if not request:
                    break
            if request:
                raise StateUnavailable("the ledger of handled Currents events could not be written (throttled)")

    def _call(self, operation: str, **kwargs) -> dict:
        try:
            return getattr(self._ddb, operation)(**kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise StateUnavailable(f"{error.get('Code', 'error')}: {error.get('Message', '')}"[:300]) from None
        except BotoCoreError as exc:
            raise StateUnavailable(type(exc).__name__) from None
