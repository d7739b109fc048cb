"""`replay`: what sits in the dead-letter queue, what replaying it would send, and moving chosen messages back.

- **List** (no `--category`): every parked message, grouped by its `category` attribute and then its `reason`.
- **Dry run** (`--category`, optionally `--reason` and `--message-id`): for each user of the chosen messages, what
  the retry worker would send now. Their changes are merged into the user's state-table record and judged the way
  the delivery flow judges them (`ordering.merge`, `Delivery.due`, `mapping.desired`), so a change Braze has since
  had a newer value for shows as superseded. Nothing is written anywhere.
- **Move** (`--move`): each chosen message is sent to the retry queue (as a fresh message, with a fresh schedule of
  retries), then deleted from the dead-letter queue. If the send fails, the message stays in the dead-letter queue;
  if the delete fails after the send, it is in both queues: replaying a message twice is harmless (the worker
  judges it against the user's state again), and the report names it.

While the command runs it holds the messages it read (invisible for `HOLD_SECONDS`), then makes the ones it did
not move visible again; if it is interrupted, they come back on their own when the hold runs out.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TextIO

from botocore.exceptions import BotoCoreError, ClientError

from didomi_braze.adapters.state_table import StateTable
from didomi_braze.domain.braze import attributes_object
from didomi_braze.domain.connector import ConnectorConfig
from didomi_braze.domain.errors import ConfigurationError, MalformedRetryMessage, StateUnavailable
from didomi_braze.domain.mapping import desired, values_of
from didomi_braze.domain.ordering import merge, newest
from didomi_braze.domain.ports import StateStore, UserRecord
from didomi_braze.domain.retry import PendingChange, by_user
from didomi_braze.observability import user_ref
from didomi_braze.service.delivery import Delivery

from .aws import Aws, OperatorError, describe, stack_outputs
from .connector import deployed_config
from .trace import webhook_tokens

HOLD_SECONDS = 300  # how long the messages read stay invisible while the operator looks at them
REDRIVEN = "redriven"  # no reason attribute: the retry queue's redrive policy moved it (the worker kept failing)
REDRIVEN_REASON = "moved by the retry queue's redrive policy after 10 receives: the worker crashed or timed out each time"


@dataclass(frozen=True)
class Parked:
    message_id: str
    receipt_handle: str
    body: str
    attributes: dict[str, str]

    @property
    def category(self) -> str:
        return self.attributes.get("category") or (REDRIVEN if "reason" not in self.attributes else "failed")

    @property
    def reason(self) -> str:
        return self.attributes.get("reason") or REDRIVEN_REASON

    def pending(self) -> PendingChange:
        """The change, ready for a fresh schedule (a redriven body may still carry its spent retries)."""
        return PendingChange.from_json(self.body).ready_to_replay()


class DeadLetterQueue:
    def __init__(self, sqs, url: str, hold_seconds: int = HOLD_SECONDS, wait_seconds: int = 1):
        self._sqs, self.url = sqs, url
        self._hold, self._wait = hold_seconds, wait_seconds

    def approximate_size(self) -> int:
        attributes = self._sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(attributes["Attributes"].get("ApproximateNumberOfMessages", 0))

    def read(self, limit: int) -> list[Parked]:
        """Up to `limit` messages, held invisible for the hold time (each read once)."""
        found: dict[str, Parked] = {}
        while len(found) < limit:
            got = self._sqs.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=min(10, limit - len(found)),
                VisibilityTimeout=self._hold,
                WaitTimeSeconds=self._wait,  # long polling asks every SQS server, so an empty answer means empty
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not got:
                break
            for message in got:
                attributes = {k: v.get("StringValue", "") for k, v in message.get("MessageAttributes", {}).items()}
                found[message["MessageId"]] = Parked(message["MessageId"], message["ReceiptHandle"], message["Body"], attributes)
        return list(found.values())

    def release(self, parked: list[Parked]) -> None:
        """Make messages visible again at once (they would be anyway when the hold runs out)."""
        for start in range(0, len(parked), 10):
            chunk = parked[start : start + 10]
            self._sqs.change_message_visibility_batch(
                QueueUrl=self.url,
                Entries=[{"Id": str(i), "ReceiptHandle": p.receipt_handle, "VisibilityTimeout": 0} for i, p in enumerate(chunk)],
            )


@dataclass
class MoveReport:
    moved: list[str] = field(default_factory=list)
    not_sent: dict[str, str] = field(default_factory=dict)  # still in the dead-letter queue only
    not_deleted: dict[str, str] = field(default_factory=dict)  # in the retry queue and still in the dead-letter queue


def move(sqs, parked: list[Parked], dead_letter_url: str, retry_url: str) -> MoveReport:
    """Send each message to the retry queue, then delete it from the dead-letter queue: never the other way round."""
    report = MoveReport()
    for start in range(0, len(parked), 10):
        chunk = {str(i): p for i, p in enumerate(parked[start : start + 10])}
        try:
            sent = sqs.send_message_batch(
                QueueUrl=retry_url,
                Entries=[{"Id": i, "MessageBody": p.pending().to_json(), "DelaySeconds": 0} for i, p in chunk.items()],
            )
        except (ClientError, BotoCoreError) as exc:
            report.not_sent.update({p.message_id: describe(exc) for p in chunk.values()})
            continue
        for failure in sent.get("Failed", []):
            report.not_sent[chunk[failure["Id"]].message_id] = failure.get("Message") or failure.get("Code", "refused")
        delivered = [chunk[s["Id"]] for s in sent.get("Successful", [])]
        if not delivered:
            continue
        try:
            deleted = sqs.delete_message_batch(
                QueueUrl=dead_letter_url,
                Entries=[{"Id": str(i), "ReceiptHandle": p.receipt_handle} for i, p in enumerate(delivered)],
            )
            refused = {int(f["Id"]): f.get("Message") or f.get("Code", "refused") for f in deleted.get("Failed", [])}
        except (ClientError, BotoCoreError) as exc:
            refused = dict.fromkeys(range(len(delivered)), describe(exc))
        for i, p in enumerate(delivered):
            if i in refused:
                report.not_deleted[p.message_id] = refused[i]
            else:
                report.moved.append(p.message_id)
    return report


# -- the dry run ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    """What the retry worker would do now for one user's chosen messages."""

    user_ref: str
    message_ids: tuple[str, ...]
    request_object: dict | None  # the /users/track attributes object it would send; None: nothing to send
    why_not: str = ""  # when nothing would be sent
    lease_until: float | None = None  # another invocation holds the user: the worker waits for it, then judges


def judge(parked: list[Parked], state: StateStore, config: ConnectorConfig, ref, now: float) -> list[Verdict]:
    """The delivery flow's judgement (delivery.py: claim → judge), read-only: no lease is taken, nothing written."""
    work = by_user([(p.message_id, p.pending()) for p in parked])
    verdicts = []
    for user in work:
        record = state.read(user.identity.state_key) or UserRecord()
        merged = merge(record.inputs, newest([change.inputs for change in user.changes]))
        lease = record.lease_until if record.leased_at(now) else None
        who, ids = ref(user.identity.key), tuple(user.tags)
        if not merged.newer and not user.seen_again(record.inputs) and not user.owed:
            why = "superseded: Braze already has newer values for every consent these messages set"
            verdicts.append(Verdict(who, ids, None, why, lease))
            continue
        after = desired(values_of(merged.state), config)
        due = Delivery.due(record, merged, user, config)  # the fields the worker would send
        send = {name: after[name] for name in sorted(due) if name in after}
        if not send:
            verdicts.append(Verdict(who, ids, None, "no change: the merged state calls for nothing new", lease))
            continue
        verdicts.append(Verdict(who, ids, attributes_object(user.identity, send, config.upsert_mode), "", lease))
    return verdicts


# -- the command ----------------------------------------------------------------------------------------------------
def replay(
    aws: Aws,
    stack: str,
    category: str | None,
    reason: str | None,
    message_ids: list[str],
    do_move: bool,
    limit: int,
    out: TextIO,
    now: float,
) -> int:
    if limit < 1:
        raise OperatorError("--max must be at least 1")
    if (reason or message_ids or do_move) and not category:
        raise OperatorError("choose the messages with --category (run without options to list the categories)")
    outputs = stack_outputs(aws, stack)
    sqs = aws.client("sqs")
    queue = DeadLetterQueue(sqs, outputs["DeadLetterQueueUrl"])
    try:
        size = queue.approximate_size()
        parked = queue.read(limit)
    except (ClientError, BotoCoreError) as exc:
        raise OperatorError(f"cannot read the dead-letter queue: {describe(exc)}") from None
    moved: set[str] = set()
    try:
        if category is None:
            _list(parked, size, stack, out)
            return 0
        chosen = [p for p in parked if _chosen(p, category, reason, message_ids)]
        if not chosen:
            present = ", ".join(sorted({p.category for p in parked})) or "none: the dead-letter queue is empty"
            raise OperatorError(f"no parked message matches (categories present: {present})")
        replayable, broken = [], []
        for p in chosen:
            try:
                p.pending()
                replayable.append(p)
            except MalformedRetryMessage as exc:
                broken.append((p, str(exc)))
        try:
            config = deployed_config(aws, outputs["ConnectorSecretArn"])
        except ConfigurationError as exc:
            raise OperatorError(f"the deployed connector document is invalid; fix it before replaying: {exc}") from None
        tokens = webhook_tokens(aws, outputs["WebhookSecretArn"])
        try:
            verdicts = judge(
                replayable,
                StateTable(aws.client("dynamodb"), outputs["StateTableName"]),
                config,
                lambda key: user_ref(tokens[0], key),
                now,
            )
        except StateUnavailable as exc:
            raise OperatorError(f"cannot read the state table: {exc}") from None
        _dry_run(chosen, verdicts, broken, out)
        if not do_move:
            print(f"\nDry run: nothing was moved. To move these {len(replayable)} message(s) back to the retry queue:", file=out)
            print(f"  {_command(stack, category, reason, message_ids)} --move", file=out)
            return 0
        report = move(sqs, replayable, queue.url, outputs["RetryQueueUrl"])
        moved = set(report.moved)
        return _report(report, broken, out)
    finally:
        try:
            queue.release([p for p in parked if p.message_id not in moved])
        except (ClientError, BotoCoreError):
            print(f"(the messages read come back on their own within {HOLD_SECONDS} s)", file=out)


def _chosen(parked: Parked, category: str, reason: str | None, message_ids: list[str]) -> bool:
    return (
        parked.category == category
        and (reason is None or parked.reason == reason)
        and (not message_ids or parked.message_id in message_ids)
    )


def _list(parked: list[Parked], size: int, stack: str, out: TextIO) -> None:
    if not parked:
        print(f"The dead-letter queue of stack {stack} is empty.", file=out)
        return
    more = f" of about {size}" if size > len(parked) else ""
    print(f"The dead-letter queue of stack {stack}: {len(parked)}{more} message(s)\n", file=out)
    groups: dict[str, list[Parked]] = defaultdict(list)
    for p in parked:
        groups[p.category].append(p)
    for category, members in sorted(groups.items(), key=lambda item: -len(item[1])):
        failures = sorted(p.attributes.get("first_failure_at", "") for p in members if p.attributes.get("first_failure_at"))
        span = f"   first failures {failures[0]} … {failures[-1]}" if failures else ""
        print(f"{category}: {len(members)}{span}", file=out)
        for reason, count in Counter(p.reason for p in members).most_common(5):
            print(f"  {count:5}  {reason}", file=out)
    print(f"\nNext, a dry run of one category: didomi-braze replay --stack {stack} --category <category>", file=out)


def _dry_run(chosen: list[Parked], verdicts: list[Verdict], broken: list[tuple[Parked, str]], out: TextIO) -> None:
    by_id = {p.message_id: p for p in chosen}
    print(f"{len(chosen)} message(s) chosen; what the retry worker would send for each user now:\n", file=out)
    for verdict in verdicts:
        first = by_id[verdict.message_ids[0]]
        print(f"user_ref {verdict.user_ref}   message(s) {', '.join(verdict.message_ids)}", file=out)
        print(
            f"  parked: {first.reason}   (attempts {first.attributes.get('attempts', '?')}, first failure "
            f"{first.attributes.get('first_failure_at', '?')})",
            file=out,
        )
        if verdict.request_object is not None:
            print(f"  would send: {_json(verdict.request_object)}", file=out)
        else:
            print(f"  would send nothing: {verdict.why_not}; replaying it removes it from the queue", file=out)
        if verdict.lease_until is not None:
            print(
                "  note: another invocation is delivering this user's update now; the worker waits for it, then judges again",
                file=out,
            )
    for p, why in broken:
        print(f"message {p.message_id}: cannot be replayed ({why}); it stays in the dead-letter queue", file=out)


def _report(report: MoveReport, broken: list[tuple[Parked, str]], out: TextIO) -> int:
    print(f"\nMoved {len(report.moved)} message(s) to the retry queue; the retry worker delivers them within seconds.", file=out)
    for message_id, problem in report.not_sent.items():
        print(f"NOT moved {message_id}: the retry queue refused it ({problem}); it stays in the dead-letter queue", file=out)
    for message_id, problem in report.not_deleted.items():
        print(
            f"COPIED {message_id}: it is on the retry queue but could not be deleted from the dead-letter queue ({problem}); "
            "it will show there again, and replaying it twice is harmless",
            file=out,
        )
    if broken:
        print(f"{len(broken)} message(s) could not be replayed and stay in the dead-letter queue.", file=out)
    return 1 if report.not_sent or report.not_deleted else 0


def _command(stack: str, category: str, reason: str | None, message_ids: list[str]) -> str:
    parts = [f"didomi-braze replay --stack {stack} --category {category}"]
    if reason:
        parts.append(f"--reason {_quote(reason)}")
    parts += [f"--message-id {m}" for m in message_ids]
    return " ".join(parts)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _json(value: dict) -> str:
    return json.dumps(value, separators=(", ", ": "))
