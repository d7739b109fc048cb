"""DynamoDB: per Braze user, the position of the value Braze was last given for each field, the events waiting
on the retry queue, and a short lease so that only one invocation at a time sends a user's update to Braze.

Every write is one conditional UpdateItem: there is no read-then-write window.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

TTL_SECONDS = 400 * 24 * 3600  # a user silent for over a year loses its ordering record (see README)


class StateTableUnavailable(Exception):
    """The table could not be read or written: nothing may be applied, since its order cannot be checked."""


@dataclass(frozen=True)
class UserState:
    """What the table holds for one user, read while holding the lease."""

    positions: dict[str, str]
    pending: frozenset[str]


@dataclass(frozen=True)
class Busy:
    """Another invocation holds the user's lease; `lease_position` is the event it is sending."""

    lease_position: str | None


def user_key(identity_key: str) -> str:
    """The table key: a hash, so the table holds no user id in clear."""
    return hashlib.sha256(identity_key.encode()).hexdigest()


class StateTable:
    def __init__(self, client, table_name: str):
        self._ddb = client
        self._table = table_name

    def acquire(self, key: str, owner: str, position: str, now: float, lease_seconds: int) -> UserState | Busy:
        """Take the user's lease if nobody holds it (or theirs ran out) and read the user's state."""
        try:
            item = self._ddb.update_item(
                TableName=self._table,
                Key={"user_key": {"S": key}},
                UpdateExpression=(
                    "SET lease_owner = :owner, lease_until = :until, lease_position = :position, "
                    "positions = if_not_exists(positions, :empty), expires_at = :expires"
                ),
                ConditionExpression="attribute_not_exists(lease_until) OR lease_until < :now",
                ExpressionAttributeValues={
                    ":owner": {"S": owner},
                    ":until": {"N": str(int(now) + lease_seconds)},
                    ":position": {"S": position},
                    ":empty": {"M": {}},
                    ":expires": {"N": str(int(now) + TTL_SECONDS)},
                    ":now": {"N": str(int(now))},
                },
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )["Attributes"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                held = exc.response.get("Item") or {}
                return Busy(held.get("lease_position", {}).get("S"))
            raise StateTableUnavailable(_describe(exc)) from None
        except BotoCoreError as exc:
            raise StateTableUnavailable(_describe(exc)) from None
        positions = {name: value["S"] for name, value in item.get("positions", {}).get("M", {}).items()}
        return UserState(positions, frozenset(item.get("pending", {}).get("SS", [])))

    def finish(
        self,
        key: str,
        owner: str,
        now: float,
        commit: dict[str, str] | None = None,
        add_pending: str | None = None,
        remove_pending: list[str] | None = None,
    ) -> bool:
        """Record what Braze was given and which events wait on the retry queue, and give the lease back.

        Returns False when the lease had been lost (held longer than its time): nothing is written then.
        """
        sets = ["expires_at = :expires"]
        names: dict[str, str] = {}
        values: dict[str, dict] = {":owner": {"S": owner}, ":expires": {"N": str(int(now) + TTL_SECONDS)}}
        for i, (name, position) in enumerate(sorted((commit or {}).items())):
            names[f"#f{i}"] = name
            values[f":p{i}"] = {"S": position}
            sets.append(f"positions.#f{i} = :p{i}")
        expression = "SET " + ", ".join(sets) + " REMOVE lease_owner, lease_until, lease_position"
        if add_pending:
            expression += " ADD pending :add"
            values[":add"] = {"SS": [add_pending]}
        elif remove_pending:
            expression += " DELETE pending :remove"
            values[":remove"] = {"SS": sorted(set(remove_pending))}
        request = {
            "TableName": self._table,
            "Key": {"user_key": {"S": key}},
            "UpdateExpression": expression,
            "ConditionExpression": "lease_owner = :owner",
            "ExpressionAttributeValues": values,
        }
        if names:
            request["ExpressionAttributeNames"] = names
        try:
            self._ddb.update_item(**request)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise StateTableUnavailable(_describe(exc)) from None
        except BotoCoreError as exc:
            raise StateTableUnavailable(_describe(exc)) from None
        return True


def _describe(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}"[:300]
    return type(exc).__name__
