"""`trace`: what happened to one user. Everything the functions logged about the user (found by `user_ref`, the
keyed hash the log lines carry instead of the user's id), in order, and what the state table holds for them.

- `user_ref` is computed as the functions compute it (`observability.user_ref`, keyed with the webhook token) for
  the user's Braze identity (`external_id:<id>` or `email:<address>`, per the connector's `user_identifier`); with
  the previous token too, since lines written before a rotation carry the old hash.
- The search is the stack's saved CloudWatch Logs Insights query (`TraceQueryName` output), over both functions'
  log groups; its `{{user_ref}}` placeholder is filled in here, and in the console when run from there.
- The state record is read with the functions' own adapter (`StateTable.read`), under the key they use
  (`BrazeIdentity.state_key`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, TextIO

from botocore.exceptions import BotoCoreError, ClientError

from didomi_braze.adapters.state_table import StateTable
from didomi_braze.domain.connector import USER_IDENTIFIERS, ConnectorConfig
from didomi_braze.domain.errors import ConfigurationError, StateUnavailable
from didomi_braze.domain.mapping import BrazeIdentity, desired, values_of
from didomi_braze.domain.ports import UserRecord
from didomi_braze.observability import user_ref

from .aws import Aws, OperatorError, describe, stack_outputs
from .connector import deployed_document, parse_deployed

# The log fields the timeline reads, besides Powertools' own `level` and `message`, and the outcomes it tells
# apart: tests/unit/test_operations_template.py checks both against what functions/ logs.
FIELDS_READ = (
    "outcome",
    "event_type",
    "event_id",
    "event_time",
    "receive",
    "reason",
    "detail",
    "braze_status",
    "retry_in_seconds",
    "fields",
    "category",
    "cause",
    "problem",
)
OUTCOMES = ("delivered", "skipped", "queued", "retry_failed", "waits", "dead_lettered", "unavailable")
PLACEHOLDER = "{{user_ref}}"
MAX_ROWS = 10_000  # the most rows one Logs Insights query returns
USER_REF = re.compile(r"^[0-9a-f]{16}$")
DURATION = re.compile(r"^(\d+)([mhd])$")
UNITS = {"m": 60, "h": 3600, "d": 86400}


# -- CloudWatch Logs Insights -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SavedQuery:
    name: str
    query: str
    log_groups: tuple[str, ...]

    def for_user(self, ref: str) -> str:
        if PLACEHOLDER not in self.query:
            raise OperatorError(f"the saved query {self.name!r} has no {PLACEHOLDER} placeholder: redeploy template.yaml")
        if not USER_REF.match(ref):
            raise ValueError("a user_ref is 16 hexadecimal digits")
        return self.query.replace(PLACEHOLDER, ref)


class LogsInsights(Protocol):
    def saved_query(self, name: str) -> SavedQuery: ...

    def run(self, query: str, log_groups: Sequence[str], start: int, end: int) -> list[dict[str, str]]:
        """The query's result rows (field → value) between two epoch seconds."""
        ...


class CloudWatchLogsInsights:
    def __init__(self, client, sleep: Callable[[float], None] = time.sleep, poll_seconds: float = 1.0, patience: int = 300):
        self._logs = client
        self._sleep = sleep
        self._poll_seconds = poll_seconds
        self._patience = patience  # polls before giving up (Logs Insights itself stops a query after 60 minutes)

    def saved_query(self, name: str) -> SavedQuery:
        request = {"queryDefinitionNamePrefix": name, "maxResults": 1000}
        try:
            while True:
                page = self._logs.describe_query_definitions(**request)
                for definition in page.get("queryDefinitions", []):
                    if definition.get("name") == name:
                        return SavedQuery(name, definition["queryString"], tuple(definition.get("logGroupNames") or ()))
                if not page.get("nextToken"):
                    break
                request["nextToken"] = page["nextToken"]
        except (ClientError, BotoCoreError) as exc:
            raise OperatorError(f"cannot read the saved query {name!r}: {describe(exc)}") from None
        raise OperatorError(f"no saved Logs Insights query named {name!r}: deploy this version of template.yaml")

    def run(self, query: str, log_groups: Sequence[str], start: int, end: int) -> list[dict[str, str]]:
        try:
            query_id = self._logs.start_query(
                logGroupNames=list(log_groups), startTime=start, endTime=end, queryString=query, limit=MAX_ROWS
            )["queryId"]
            for _ in range(self._patience):
                answer = self._logs.get_query_results(queryId=query_id)
                status = answer.get("status")
                if status == "Complete":
                    return [{cell["field"]: cell.get("value", "") for cell in row} for row in answer.get("results", [])]
                if status not in ("Scheduled", "Running"):
                    raise OperatorError(f"the Logs Insights query ended {status}")
                self._sleep(self._poll_seconds)
            self._logs.stop_query(queryId=query_id)
        except (ClientError, BotoCoreError) as exc:
            raise OperatorError(f"the Logs Insights query failed: {describe(exc)}") from None
        waited = self._patience * self._poll_seconds
        raise OperatorError(f"the Logs Insights query took longer than {waited:g} s; try a shorter --since")


# -- the timeline -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Moment:
    at: datetime
    source: str  # "webhook", "retry", or the log group
    outcome: str | None  # the log line's `outcome`; None for other lines about the user
    text: str


def timeline(rows: Iterable[Mapping[str, str]], sources: Mapping[str, str]) -> list[Moment]:
    """Log lines (Logs Insights rows with `@timestamp`, `@log`, `@message`) as moments, oldest first."""
    moments = []
    for row in rows:
        try:
            line = json.loads(row.get("@message", ""))
        except ValueError:
            continue  # Lambda's own START/END/REPORT lines and anything not written by the functions
        if not isinstance(line, dict):
            continue
        group = row.get("@log", "").rsplit(":", 1)[-1]  # "<account>:<log group>" in CloudWatch
        source = sources.get(group, group or "?")
        moments.append(Moment(_when(row.get("@timestamp", "")), source, line.get("outcome"), _story(line, source)))
    return sorted(moments, key=lambda m: m.at)


def _when(value: str) -> datetime:
    if value.isdigit():  # epoch milliseconds
        return datetime.fromtimestamp(int(value) / 1000, tz=UTC)
    for pattern in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(value, pattern).replace(tzinfo=UTC)
        except ValueError:
            pass
    return datetime.min.replace(tzinfo=UTC)


def _story(line: dict, source: str) -> str:
    event = " ".join(str(part) for part in (line.get("event_type"), line.get("event_id")) if part)
    if line.get("event_time"):
        event += f" (change of {line['event_time']})"
    head = f"retry (receive {line.get('receive', '?')}) of {event}" if source == "retry" else f"received {event}"
    reason, braze = line.get("reason") or "", _braze(line.get("braze_status"))
    wait = line.get("retry_in_seconds")
    match line.get("outcome"):
        case "delivered":
            return f"{head}: delivered to Braze{braze}: {_fields(line.get('fields'))}"
        case "skipped":
            return f"{head}: skipped ({reason}): {line.get('detail', '')}"
        case "queued":
            return f"{head}: queued, retry in {wait} s: {reason}{braze}"
        case "retry_failed":
            return f"{head}: failed: {reason}{braze}; next retry in {wait} s"
        case "waits":
            return f"{head}: waits {wait} s (not a failure): {reason}"
        case "dead_lettered":
            return f"{head}: parked in the dead-letter queue ({line.get('category', '?')}): {reason}{braze}"
        case "unavailable":
            return f"{head}: not accepted (503, {line.get('cause')}): {line.get('problem', '')}; Didomi delivers it again"
    problem = f": {line['problem']}" if line.get("problem") else ""
    return f"{str(line.get('level', 'info')).lower()}: {line.get('message', '')}{problem}"


def _braze(status: object) -> str:
    return f" [Braze {status}]" if status not in (None, "", "none") else ""


def _fields(fields: object) -> str:
    if not isinstance(fields, dict) or not fields:
        return "-"
    return ", ".join(f"{name}={value}" for name, value in sorted(fields.items()))


# -- the state record ---------------------------------------------------------------------------------------------
def describe_record(record: UserRecord | None, config: ConnectorConfig | None, now: float) -> list[str]:
    if record is None:
        return [
            "The state table has no record for this user: no event of theirs has reached the delivery step "
            "(or the record expired after 400 days without events)."
        ]
    lines = [f"State table record (revision {record.revision}): the merged Didomi inputs, newest known value of each"]
    read = set(config.inputs) if config else set()
    width = max((len(name) for name in record.inputs), default=0)
    for name, stored in sorted(record.inputs.items()):
        position = stored.position
        version = f" v{position.version}" if position.version is not None else ""
        notes = [note for note, on in (("quiet", stored.quiet), ("not read by the mappings", config and name not in read)) if on]
        lines.append(
            f"  {name:{width}}  {str(stored.value).lower():5}  as of {position.time}  ({position.entity}{version})"
            + (f"  [{', '.join(notes)}]" if notes else "")
        )
    if not record.inputs:
        lines.append("  (no inputs)")
    if config is not None:
        fields = desired(values_of(record.inputs), config)
        lines.append(f"  Braze fields this state calls for, with the deployed mappings: {_fields(fields)}")
    if record.leased_at(now):
        lines.append(
            f"  lease: held until {_iso(record.lease_until)} for {record.lease_event or '?'}: an update is being "
            "delivered (a lease runs out on its own if its invocation died)"
        )
    elif record.lease_owner is not None:
        lines.append(f"  lease: ran out at {_iso(record.lease_until)} (free)")
    else:
        lines.append("  lease: free")
    return lines


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the command --------------------------------------------------------------------------------------------------
def parse_since(text: str) -> int:
    match = DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise OperatorError(f"--since {text!r}: give a duration such as 30m, 12h or 7d")
    return int(match.group(1)) * UNITS[match.group(2)]


def trace(aws: Aws, stack: str, user: str, since: str, identifier: str | None, out: TextIO, now: float | None = None) -> int:
    user = user.strip()
    if not user:
        raise OperatorError("give the user's Braze external_id (or e-mail address, with an email user_identifier)")
    seconds = parse_since(since)
    now = time.time() if now is None else now
    outputs = stack_outputs(aws, stack)

    document = deployed_document(aws, outputs["ConnectorSecretArn"])
    config, problem = None, None
    try:
        config = parse_deployed(document)
    except ConfigurationError as exc:
        problem = str(exc)
    kind = identifier or (config.user_identifier if config else _identifier_in(document))
    identity = BrazeIdentity(kind, user)
    refs = [user_ref(token, identity.key) for token in webhook_tokens(aws, outputs["WebhookSecretArn"])]

    insights = aws.insights()
    saved = insights.saved_query(outputs["TraceQueryName"])
    rows: list[dict[str, str]] = []
    for ref in refs:
        rows += insights.run(saved.for_user(ref), saved.log_groups, int(now - seconds), int(now))
    sources = {outputs["WebhookLogGroupName"]: "webhook", outputs["RetryLogGroupName"]: "retry"}
    moments = timeline(rows, sources)

    try:
        record = StateTable(aws.client("dynamodb"), outputs["StateTableName"]).read(identity.state_key)
    except StateUnavailable as exc:
        raise OperatorError(f"cannot read the state table {outputs['StateTableName']}: {exc}") from None

    print(f"User {identity.key}   user_ref {' / '.join(refs)}   stack {stack}   last {since}", file=out)
    if problem:
        print(f"! The deployed connector document is invalid, so every webhook answers 503: {problem}", file=out)
        print("  Fix it (make validate-config, then make put-config); Didomi gives up on an event after 5 minutes.", file=out)
        if identifier is None:
            print(f"  (the user is taken to be a Braze {kind}; pass --identifier to say otherwise)", file=out)
    print(file=out)
    if moments:
        width = max(len(m.source) for m in moments)
        for moment in moments:
            print(f"{moment.at.strftime('%Y-%m-%d %H:%M:%S.%f')[:-3]}Z  {moment.source:{width}}  {moment.text}", file=out)
        if len(rows) >= MAX_ROWS:
            print(f"(the first {MAX_ROWS:,} log lines only: shorten --since)", file=out)
    else:
        print(f"No log line about this user in the last {since}.", file=out)
        if identifier is None and config is not None:
            print(f"  (the connector identifies users by {config.user_identifier}: is {user!r} one?)", file=out)
    print(file=out)
    for line in describe_record(record, config, now):
        print(line, file=out)
    if moments and moments[-1].outcome == "dead_lettered":
        print(f"\nThe last event waits in the dead-letter queue: make replay STACK={stack}", file=out)
    return 0


def _identifier_in(document: str) -> str:
    """The user identifier of a document the functions refuse, if it names a valid one."""
    try:
        found = json.loads(document).get("properties", {}).get("user_identifier")
    except (ValueError, AttributeError):
        found = None
    return found if found in USER_IDENTIFIERS else "external_id"


def webhook_tokens(aws: Aws, secret_id: str) -> list[str]:
    """The current token, then the previous one when the secret was rotated (older log lines carry its hash)."""
    client, tokens = aws.client("secretsmanager"), []
    for stage in ("AWSCURRENT", "AWSPREVIOUS"):
        try:
            token = client.get_secret_value(SecretId=secret_id, VersionStage=stage).get("SecretString")
        except ClientError as exc:
            if stage == "AWSPREVIOUS" and exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                break
            raise OperatorError(f"cannot read the webhook secret {secret_id}: {describe(exc)}") from None
        except BotoCoreError as exc:
            raise OperatorError(f"cannot read the webhook secret {secret_id}: {describe(exc)}") from None
        if token and token not in tokens:
            tokens.append(token)
    if not tokens:
        raise OperatorError(f"the webhook secret {secret_id} holds no token")
    return tokens
