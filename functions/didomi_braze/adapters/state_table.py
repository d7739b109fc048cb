"""DynamoDB: the `StateStore` port. One item per Braze user (keyed by a hash of the user), holding the merged
Didomi state (one attribute `in:<mapping value>` per input: value, position), a revision counter, and a short
lease so that only one invocation at a time sends the user's update to Braze.

A claim is one conditional `UpdateItem` that returns the item as it was (`ALL_OLD`, and the same on a failed
condition): the read and the write are one round trip, with no window between them.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from botocore.exceptions import BotoCoreError, ClientError

from ..domain.errors import StateUnavailable
from ..domain.ordering import Position, StoredInput
from ..domain.ports import AtRevision, Claimed, Refused, StoredOlder, UserRecord

TTL_SECONDS = 400 * 24 * 3600  # a user silent for over a year loses its merged state (see README)
INPUT_PREFIX = "in:"
MAX_CONDITION_LENGTH = 3800  # DynamoDB allows 4 KB per expression


class StateTable:
    def __init__(self, client, table_name: str):
        self._ddb = client
        self._table = table_name

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
        names: dict[str, str] = {}
        values: dict[str, dict] = {
            ":one": {"N": "1"},
            ":zero": {"N": "0"},
            ":expires": {"N": str(int(now) + TTL_SECONDS)},
        }
        sets = ["revision = if_not_exists(revision, :zero) + :one", "expires_at = :expires"]
        conditions: list[str] = []
        if owner is not None:
            sets += ["lease_owner = :owner", "lease_until = :until", "lease_event = :event"]
            values.update({":owner": {"S": owner}, ":until": {"N": _number(lease_until)}, ":event": {"S": event[:500]}})
            values[":now"] = {"N": _number(now)}
            conditions.append("(attribute_not_exists(lease_until) OR lease_until < :now)")
        for i, (name, stored) in enumerate(sorted(inputs.items())):
            names[f"#i{i}"] = INPUT_PREFIX + name
            values[f":i{i}"] = {"M": _input_item(stored)}
            sets.append(f"#i{i} = :i{i}")
            if isinstance(expect, StoredOlder):
                conditions.append(_not_newer(i, stored.position, values))
        if isinstance(expect, AtRevision):
            if expect.revision:
                values[":revision"] = {"N": str(expect.revision)}
                conditions.append("revision = :revision")
            else:
                conditions.append("attribute_not_exists(revision)")
        condition = " AND ".join(conditions)
        if len(condition) > MAX_CONDITION_LENGTH and isinstance(expect, StoredOlder):
            # Too many inputs to check in one expression: read, and merge on the revision read.
            return Refused(self.read(key) or UserRecord())
        request = {
            "TableName": self._table,
            "Key": {"user_key": {"S": key}},
            "UpdateExpression": "SET " + ", ".join(sets),
            "ExpressionAttributeValues": values,
            "ReturnValues": "ALL_OLD",
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if condition:
            request["ConditionExpression"] = condition
        if names:
            request["ExpressionAttributeNames"] = names
        try:
            item = self._ddb.update_item(**request).get("Attributes") or {}
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                return Refused(record_of(exc.response.get("Item") or {}))
            raise StateUnavailable(_describe(exc)) from None
        except BotoCoreError as exc:
            raise StateUnavailable(_describe(exc)) from None
        return Claimed(record_of(item))

    def release(self, key: str, owner: str, quiet: tuple[str, ...] = ()) -> bool:
        request = {
            "TableName": self._table,
            "Key": {"user_key": {"S": key}},
            "UpdateExpression": "REMOVE lease_owner, lease_until, lease_event",
            "ConditionExpression": "lease_owner = :owner",
            "ExpressionAttributeValues": {":owner": {"S": owner}},
        }
        if quiet:
            request["ExpressionAttributeNames"] = {f"#q{i}": INPUT_PREFIX + name for i, name in enumerate(quiet)}
            request["ExpressionAttributeValues"][":quiet"] = {"BOOL": True}
            marks = ", ".join(f"#q{i}.q = :quiet" for i in range(len(quiet)))
            request["UpdateExpression"] = f"SET {marks} " + request["UpdateExpression"]
            request["ConditionExpression"] += "".join(f" AND attribute_exists(#q{i})" for i in range(len(quiet)))
        try:
            self._ddb.update_item(**request)
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                return False
            raise StateUnavailable(_describe(exc)) from None
        except BotoCoreError as exc:
            raise StateUnavailable(_describe(exc)) from None
        return True

    def read(self, key: str) -> UserRecord | None:
        try:
            item = self._ddb.get_item(TableName=self._table, Key={"user_key": {"S": key}}, ConsistentRead=True).get("Item")
        except (ClientError, BotoCoreError) as exc:
            raise StateUnavailable(_describe(exc)) from None
        return record_of(item) if item else None


def _not_newer(i: int, position: Position, values: dict) -> str:
    """The state table's half of `ordering.stored_older`, for input number i."""
    values[f":p{i}"] = {"S": position.key}
    clause = f"#i{i}.p < :p{i}"
    if position.version is not None:
        values[f":n{i}"] = {"N": _number(position.version)}
        values[f":u{i}"] = {"S": position.entity}
        clause += f" AND (attribute_not_exists(#i{i}.n) OR #i{i}.u <> :u{i} OR #i{i}.n <= :n{i})"
    return f"(attribute_not_exists(#i{i}) OR ({clause}))"


def _input_item(stored: StoredInput) -> dict:
    position = stored.position
    item = {
        "v": {"BOOL": stored.value},
        "q": {"BOOL": stored.quiet},
        "p": {"S": position.key},
        "t": {"S": position.time},
        "u": {"S": position.entity},
    }
    if position.version is not None:
        item["n"] = {"N": _number(position.version)}
    return item


def record_of(item: Mapping) -> UserRecord:
    inputs = {}
    for name, attribute in item.items():
        if name.startswith(INPUT_PREFIX) and "M" in attribute:
            raw = attribute["M"]
            version = Decimal(raw["n"]["N"]) if "n" in raw else None
            position = Position(raw["t"]["S"], version, raw["u"]["S"])
            inputs[name[len(INPUT_PREFIX) :]] = StoredInput(raw["v"]["BOOL"], position, raw.get("q", {}).get("BOOL", False))
    return UserRecord(
        inputs=inputs,
        revision=int(item.get("revision", {}).get("N", "0")),
        lease_owner=item.get("lease_owner", {}).get("S"),
        lease_until=float(item.get("lease_until", {}).get("N", "0")),
        lease_event=item.get("lease_event", {}).get("S"),
    )


def _number(value: float | Decimal) -> str:
    return format(Decimal(str(value)).normalize(), "f")


def _code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "error")


def _describe(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}"[:300]
    return type(exc).__name__
