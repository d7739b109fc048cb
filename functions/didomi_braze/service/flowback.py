"""The flow back, Braze → Didomi: one batch of the ingest queue (S3 notifications of Currents files, copies of them
that had to wait, replayed events), each message settled on its own (README "The flow back").

For each Braze user, in the order the changes happened in Braze:

1. **Judge** the change against the user's merged state (`StateStore.read`): the inverse mapping, echoes of this
   connector's own updates, changes older than the newest Didomi value, values Didomi already has (writeback.py).
2. **Write** it to Didomi as a consent event with a deterministic id (Didomi refuses a second event with the same
   id, which counts as written) and the flow back's delegate, which the webhook skips.
3. **Merge** the written value into the user's state through the one delivery flow (delivery.py), which also gives
   Braze what the merged state calls for. Usually Braze has it already (it is where the change came from); when a
   Didomi update reached Braze after the change, this puts the newer choice back.

Then each message is acknowledged only when every event in it was written, skipped with a reason, or parked:

- a Didomi 5xx, timeout, connection error or a 401 a new session did not cure, S3 or the state table unreachable:
  the message comes back after the retry schedule's next delay (domain/schedule.py); once the retries are spent,
  each event still owed is parked on the ingest dead-letter queue with its reason;
- Didomi's 429 or the end of the invocation's time: a copy of the message is queued for later, keeping the counts
  (waiting is not a failure);
- any other Didomi 4xx, a file that is not Avro, a record that cannot be read: parked at once with the reason.

Handled events are recorded in a ledger (a small item per event, with a TTL) and skipped as `duplicate` when
Currents delivers them again; everything written is idempotent, so a message that comes back redoes only what it
had not finished.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from ..domain.braze import DELIVERED, PERMANENT, RETRYABLE
from ..domain.connector import ConnectorConfig
from ..domain.currents import (
    EVENT_TYPES,
    CurrentsEvent,
    CurrentsFile,
    IngestMessage,
    InvalidCurrentsEvent,
    event_type_of,
    parse_ingest_message,
    parse_record,
    record_fingerprint,
)
from ..domain.didomi_api import PERMANENT as DIDOMI_PERMANENT
from ..domain.didomi_api import RATE_LIMITED as DIDOMI_RATE_LIMITED
from ..domain.didomi_api import WRITTEN, DidomiAnswer
from ..domain.errors import DidomiUnavailable, FileUnavailable, MalformedRetryMessage, StateUnavailable, UnreadableFile
from ..domain.mapping import Change
from ..domain.ports import CurrentsFiles, DeadLetter, DidomiApi, EventLedger, RetryQueue, StateStore
from ..domain.retry import PendingChange, UserWork, iso_utc
from ..domain.schedule import RetrySchedule
from ..domain.writeback import (
    SkipBack,
    UnwritableChange,
    WriteBack,
    consent_event,
    current_value,
    decide,
    identity_of,
    with_event,
)
from ..observability import count, count_by, logger
from .delivery import BUSY, SKIPPED, UNAVAILABLE, Outcome
from .dependencies import Dependencies

LEASE_MARGIN_SECONDS = 5
DEADLINE_MARGIN_SECONDS = 5  # the invocation's last seconds settle the batch (postpone, park, queue copies)
CONCURRENCY = 8  # users judged and written side by side (Didomi does not rate-limit /consents/*)

# What became of one Currents event, or of a file that could not be read.
DONE = "done"  # written, skipped with a reason, or parked
FAILED = "failed"  # comes back on the retry schedule
WAITING = "waiting"  # comes back in a copy, without spending a retry


@dataclass
class FlowBack:
    """What the flow back needs besides the forward path's dependencies."""

    didomi: DidomiApi
    files: CurrentsFiles
    state: StateStore  # the forward path's state table: the user's merged state is read from it
    ledger: EventLedger
    queue: RetryQueue  # the ingest queue (copies, postponed retries) and its dead-letter queue (parked events)
    schedule: RetrySchedule
    opt_ins: bool = False  # opt-ins flow back too (CURRENTS_OPT_INS); opt-outs always do
    concurrency: int = CONCURRENCY


@dataclass(frozen=True)
class IngestRecord:
    """An SQS record of the ingest queue as the service needs it."""

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    first_received_at: float | None = None


@dataclass
class _Event:
    event: CurrentsEvent
    message_id: str
    file: CurrentsFile | None
    fate: str = FAILED
    reason: str = "not handled yet"
    retry_at: float | None = None
    didomi_status: int | None = None
    written: WriteBack | None = None


@dataclass
class _Message:
    record: IngestRecord
    parsed: IngestMessage
    events: list[_Event] = field(default_factory=list)
    unread: list[tuple[CurrentsFile, str, str]] = field(default_factory=list)  # (file, FAILED/WAITING, reason)
    malformed: list[tuple[str, str, str]] = field(default_factory=list)  # (ledger key, body to park, reason)
    blocked: str | None = None  # why the message must come back although none of its events failed


def ingest_batch(records: list[IngestRecord], deps: Dependencies, flow: FlowBack, deadline: float) -> list[str]:
    """Handle a batch of the ingest queue; returns the message ids to report as batch item failures."""
    return _Batch(records, deps, flow).run(deadline)


class _Batch:
    def __init__(self, records: list[IngestRecord], deps: Dependencies, flow: FlowBack):
        self.records, self.deps, self.flow = records, deps, flow
        self.messages: list[_Message] = []
        self.failures: list[str] = []
        self.config: ConnectorConfig | None = None
        self.parked_records: list[str] = []  # ledger keys of unreadable records parked by this batch

    def run(self, deadline: float) -> list[str]:
        for record in self.records:
            try:
                self.messages.append(_Message(record, parse_ingest_message(record.body)))
            except MalformedRetryMessage as exc:
                self._park_body(record, record.body, str(exc), "malformed_message", None)
        self.config = self.deps.connector()  # a broken document fails the whole batch loudly: nothing is lost
        events = self._read(deadline)
        pending = self._not_yet_handled(events)
        if pending:
            self._handle(pending, self.config, deadline)
        for message in self.messages:
            self._settle(message)
        self._remember([e.event.ledger_key for e in events if e.fate == DONE] + self.parked_records)
        return self.failures

    # -- read ------------------------------------------------------------------------------------------------
    def _read(self, deadline: float) -> list[_Event]:
        out: list[_Event] = []
        for message in self.messages:
            if message.parsed.event is not None:
                message.events.append(_Event(message.parsed.event, message.record.message_id, None))
            for file in message.parsed.files:
                event_type = event_type_of(file.key)
                if event_type not in EVENT_TYPES:
                    count_by("CurrentsFilesSkipped", "reason", "not_subscription")
                    logger.info("currents file skipped: not a subscription event type", extra={"event_type": event_type})
                    continue
                if self.deps.clock() > deadline - DEADLINE_MARGIN_SECONDS:
                    message.unread.append((file, WAITING, "no time left to read the file in this invocation"))
                    continue
                try:
                    records = list(self.flow.files.records(file.bucket, file.key))
                except FileUnavailable as exc:
                    message.unread.append((file, FAILED, str(exc)))
                    continue
                except UnreadableFile as exc:
                    self._park(message, message.parsed.for_file(file), str(exc), "unreadable_file")
                    continue
                count("CurrentsFilesRead")
                for raw in records:
                    try:
                        message.events.append(_Event(parse_record(raw, event_type), message.record.message_id, file))
                    except InvalidCurrentsEvent as exc:
                        body = json.dumps({"file": file.name, "record": raw}, default=str, sort_keys=True)
                        message.malformed.append((record_fingerprint(raw), body, f"unreadable Currents record: {exc}"))
            out.extend(message.events)
        if out:
            count("CurrentsEventsReceived", len(out))
        return out

    def _not_yet_handled(self, events: list[_Event]) -> list[_Event]:
        """Drop what was handled before (ledger) or appears twice in this batch (the same id in two files); park the
        records that cannot be read, once."""
        malformed = [(m, *item) for m in self.messages for item in m.malformed]
        try:
            handled = self.flow.ledger.handled([e.event.ledger_key for e in events] + [key for _, key, _, _ in malformed])
        except StateUnavailable as exc:
            for e in events:
                e.reason = f"ledger of handled events unavailable: {exc}"
            for message, *_ in malformed:
                message.blocked = f"ledger of handled events unavailable: {exc}"
            return []
        for message, key, body, reason in malformed:
            if key not in handled and key not in self.parked_records:
                if self._park_body(message.record, body, reason, "malformed_event", None, message=message):
                    self.parked_records.append(key)
        pending, first = [], set()
        for e in events:
            key = e.event.ledger_key
            replayed = e.file is None  # an event moved back from the dead-letter queue: it was recorded when parked
            if (key in handled and not replayed) or key in first:
                self._skipped(e, "duplicate", "this Currents event was handled before (Currents delivers at least once)")
                continue
            first.add(key)
            pending.append(e)
        return pending

    # -- judge and write, per user -----------------------------------------------------------------------------
    def _handle(self, events: list[_Event], config: ConnectorConfig, deadline: float) -> None:
        by_user: dict[str, list[_Event]] = {}
        for e in events:
            identity = identity_of(e.event, config)
            if identity is None:
                decision = decide(e.event, config, self.flow.opt_ins, {})
                self._skipped(e, decision.reason, decision.detail)
                continue
            by_user.setdefault(identity.state_key, []).append(e)
        users = [(key, sorted(group, key=lambda e: (e.event.time, e.event.id))) for key, group in by_user.items()]
        # The Braze call and the settling need the invocation's last seconds.
        work_until = deadline - self.deps.delivery.braze_seconds - DEADLINE_MARGIN_SECONDS
        _parallel(lambda user: self._user(*user, config, work_until), users, self.flow.concurrency)
        self._deliver([e for _, group in users for e in group if e.written is not None and e.fate == DONE], config, deadline)

    def _user(self, state_key: str, events: list[_Event], config: ConnectorConfig, work_until: float) -> None:
        """One user's changes, oldest first: each is judged on the state the previous ones left."""
        try:
            record = self.flow.state.read(state_key)
        except StateUnavailable as exc:
            for e in events:
                e.reason = f"state table unavailable: {exc}"
            return
        merged = dict(record.inputs) if record else {}
        didomi_users: dict[str, list[dict]] = {}  # per regulation: the user's Didomi records, as this batch left them
        for index, e in enumerate(events):
            if self.deps.clock() > work_until:
                for rest in events[index:]:
                    rest.fate, rest.reason = WAITING, "no time left to write it in this invocation"
                return
            decision = decide(e.event, config, self.flow.opt_ins, merged)
            if isinstance(decision, SkipBack):
                self._skipped(e, decision.reason, decision.detail)
                continue
            try:
                answer = self._write(e, decision, didomi_users, config)
            except DidomiUnavailable as exc:
                answer = exc.answer
            if answer is None:
                continue  # parked
            if answer.kind != WRITTEN:
                self._didomi_failed(events[index:], answer)
                return
            # Written, or Didomi had it already: either way the merged state now holds it (the webhook skips the
            # events the flow back writes, so the merged state learns it here or not at all).
            merged[decision.input] = decision.stored
            e.fate, e.written = DONE, decision

    def _write(
        self, e: _Event, write: WriteBack, didomi_users: dict[str, list[dict]], config: ConnectorConfig
    ) -> DidomiAnswer | None:
        """One consent event per configured regulation that does not hold the value yet (the forward path reads
        every configured regulation into the same inputs). Returns the last answer (WRITTEN when there was nothing
        to write); None when the change was parked. Raises DidomiUnavailable when the user cannot be read."""
        answer = DidomiAnswer(WRITTEN, "Didomi already has it")
        wrote = []
        for regulation in sorted(config.regulations):
            if regulation not in didomi_users:
                count("DidomiRequests")
                didomi_users[regulation] = list(self.flow.didomi.users(write.identity.value, regulation))
            users = didomi_users[regulation]
            if current_value(users, write.input) is write.value:
                continue
            try:
                body = consent_event(write, users, regulation)
            except UnwritableChange as exc:
                self._park_event(e, str(exc), "unwritable", None)
                return None
            count("DidomiRequests")
            answer = self.flow.didomi.create_event(body)
            if answer.kind == DIDOMI_RATE_LIMITED:
                count("DidomiRateLimited")
            if answer.kind == DIDOMI_PERMANENT:
                self._park_event(e, answer.reason, "didomi_rejected", answer.status)
                return None
            if answer.kind != WRITTEN:
                return answer
            didomi_users[regulation] = with_event(users, body["consents"], write.identity.value)
            wrote.append(regulation)
        if wrote:
            e.reason = "written to Didomi"
            count("DidomiEventsWritten")
            logger.info(
                "braze change written to Didomi",
                extra={**self._log(e), "input": write.input, "value": write.value, "regulations": wrote},
            )
        else:
            detail = f"Didomi already has {write.input} = {str(write.value).lower()}"
            count_by("CurrentsEventsSkipped", "reason", "no_change")
            logger.info("braze change not written to Didomi", extra={**self._log(e), "reason": "no_change", "detail": detail})
            e.reason = detail
        return answer

    def _didomi_failed(self, events: list[_Event], answer: DidomiAnswer) -> None:
        """The change could not be written, and the user's later changes wait for it (they are judged after it)."""
        fate = WAITING if answer.kind == DIDOMI_RATE_LIMITED else FAILED
        for e in events:
            e.fate, e.reason, e.retry_at, e.didomi_status = fate, answer.reason, answer.retry_at, answer.status
        logger.warning("braze change not written to Didomi", extra={**self._log(events[0]), "reason": answer.reason})

    # -- merge into the user's state, and give Braze what it calls for -------------------------------------------
    def _deliver(self, written: list[_Event], config: ConnectorConfig, deadline: float) -> None:
        if not written:
            return
        work: dict[str, UserWork] = {}
        for e in written:
            change = _change(e.written)
            work.setdefault(change.identity.key, UserWork(change.identity)).add(change, tag=e.event.id)
        by_id = {e.event.id: e for e in written}
        users = list(work.values())
        outcomes = self.deps.delivery.deliver(users, config, lease_until=deadline + LEASE_MARGIN_SECONDS, deadline=deadline)
        try:
            for user, outcome in zip(users, outcomes, strict=True):
                for change, tag in zip(user.changes, user.tags, strict=True):
                    self._hand_off(by_id[tag], change, outcome)
        finally:
            self.deps.delivery.release(outcomes)

    def _hand_off(self, e: _Event, change: Change, outcome: Outcome) -> None:
        """The Didomi write is done; what Braze still needs goes to the forward path's retry queue, as a webhook's
        change would (service/webhook.py)."""
        if outcome.kind in (DELIVERED, SKIPPED):
            return
        if outcome.kind == UNAVAILABLE:
            e.fate, e.reason = FAILED, outcome.reason  # written again (Didomi: already exists), then merged
            return
        now = iso_utc(self.deps.clock())
        failed = outcome.kind in (RETRYABLE, PERMANENT)
        pending = PendingChange(
            change=change,
            owed=outcome.owed if outcome.kind != BUSY or outcome.owed else None,
            reason=outcome.reason,
            queued_at=now,
            failures=1 if failed else 0,
            calls=outcome.calls,
            first_failure_at=now if failed else None,
        )
        try:
            if outcome.kind == PERMANENT:
                why = DeadLetter(outcome.reason, 1, now, outcome.status, change.event_id, "braze_rejected")
                self.deps.queue.dead_letter(pending.ready_to_replay().to_json(), why)
                count_by("EventsDeadLettered", "reason", why.category)
            elif outcome.kind == RETRYABLE:
                self.deps.queue.enqueue(pending.to_json(), self.deps.schedule.delay_after_failure(1) or 1)
            else:
                self.deps.queue.enqueue(pending.to_json(), self.deps.schedule.wait_until(outcome.retry_at, self.deps.clock()))
        except Exception as exc:
            e.fate, e.reason = FAILED, f"could not hand the Braze update to the retry queue: {exc}"
            return
        count("EventsQueued")
        logger.info("braze update after a write-back queued for retry", extra={**self._log(e), "reason": outcome.reason})

    # -- settle ------------------------------------------------------------------------------------------------
    def _remember(self, done: list[str]) -> None:
        if not done:
            return
        try:
            self.flow.ledger.record(done, self.deps.clock())
        except StateUnavailable as exc:
            # Everything is done and idempotent: a redelivery is judged again rather than skipped as a duplicate.
            logger.warning("could not record handled Currents events", extra={"problem": str(exc), "events": len(done)})

    def _settle(self, message: _Message) -> None:
        record = message.record
        failed = [e for e in message.events if e.fate == FAILED] + [u for u in message.unread if u[1] == FAILED]
        if message.blocked:
            failed.append((None, FAILED, message.blocked))
        waiting = [e for e in message.events if e.fate == WAITING] + [u for u in message.unread if u[1] == WAITING]
        if failed:
            failures = message.parsed.failures + record.receive_count
            delay = self.flow.schedule.delay_after_failure(failures)
            if delay is not None:
                self._retry_later(message, delay, failed)
                return
            self._park_remaining(message, f"retries exhausted after {failures - 1} retries", failures)
            return
        if waiting:
            self._continue_later(message)

    def _retry_later(self, message: _Message, delay: int, failed: list) -> None:
        try:
            self.flow.queue.postpone(message.record.receipt_handle, delay)
        except Exception as exc:
            logger.error(
                "could not postpone an ingest message; it returns after the visibility timeout", extra={"problem": str(exc)}
            )
        count("IngestRetriesScheduled")
        first = failed[0]
        reason = first.reason if isinstance(first, _Event) else first[2]
        logger.warning(
            "ingest message failed; next retry scheduled",
            extra={"message_id": message.record.message_id, "reason": reason, "retry_in_seconds": delay},
        )
        self._fail(message.record.message_id)

    def _park_remaining(self, message: _Message, why: str, failures: int) -> None:
        for e in message.events:
            if e.fate in (FAILED, WAITING):
                self._park_event(e, f"{why}; last: {e.reason}", "retries_exhausted", e.didomi_status, attempts=failures)
        for file, _, reason in message.unread:
            self._park(message, message.parsed.for_file(file), f"{why}; last: {reason}", "retries_exhausted", failures)
        for _, body, reason in message.malformed if message.blocked else ():
            self._park_body(message.record, body, reason, "malformed_event", None, failures, message=message)

    def _continue_later(self, message: _Message) -> None:
        """Waiting is not a failure: queue a copy for each unit that still has work, keeping the counts."""
        base = replace(
            message.parsed,
            failures=message.parsed.failures + message.record.receive_count - 1,
            first_failure_at=self._first_failure_at(message),
        )
        copies: list[tuple[IngestMessage, float | None]] = []
        files = {f for f, state, _ in message.unread if state == WAITING}
        files |= {e.file for e in message.events if e.fate == WAITING and e.file is not None}
        for file in sorted(files, key=lambda f: f.name):
            retry_at = max((e.retry_at or 0 for e in message.events if e.file == file and e.fate == WAITING), default=0)
            copies.append((base.for_file(file), retry_at or None))
        for e in message.events:
            if e.fate == WAITING and e.file is None:
                copies.append((replace(base, files=(), event=e.event), e.retry_at))
        try:
            for copy, retry_at in copies:
                delay = self.flow.schedule.wait_until(retry_at, self.deps.clock()) if retry_at else 0
                self.flow.queue.enqueue(replace(copy, reason="waiting").to_json(), delay)
        except Exception as exc:
            logger.error("could not queue a waiting ingest message; it comes back as it is", extra={"problem": str(exc)})
            self._fail(message.record.message_id)
            return
        count("IngestDeferred", len(copies))

    def _park_event(self, e: _Event, reason: str, category: str, didomi_status: int | None, attempts: int | None = None) -> None:
        message = next(m for m in self.messages if m.record.message_id == e.message_id)
        body = IngestMessage(event=e.event).to_json()
        if self._park_body(message.record, body, reason, category, didomi_status, attempts, e.event.id, message):
            e.fate, e.reason = DONE, reason

    def _park(self, message: _Message, parked: IngestMessage, reason: str, category: str, attempts: int | None = None) -> None:
        self._park_body(message.record, parked.ready_to_replay().to_json(), reason, category, None, attempts, None, message)

    def _park_body(
        self,
        record: IngestRecord,
        body: str,
        reason: str,
        category: str,
        didomi_status: int | None,
        attempts: int | None = None,
        event_id: str | None = None,
        message: _Message | None = None,
    ) -> bool:
        parsed = message.parsed if message else None
        why = DeadLetter(
            reason=reason,
            attempts=attempts if attempts is not None else (parsed.failures if parsed else 0) + record.receive_count,
            first_failure_at=self._first_failure_at(message) if message else iso_utc(self.deps.clock()),
            event_id=event_id,
            category=category,
            last_didomi_status=didomi_status,
        )
        try:
            self.flow.queue.dead_letter(body, why)
        except Exception as exc:
            logger.error("could not park a Currents event; its message comes back", extra={"problem": str(exc)})
            self._fail(record.message_id)
            return False
        count_by("CurrentsEventsParked", "reason", category)
        logger.error("currents event parked", extra={"message_id": record.message_id, "event_id": event_id, "reason": reason})
        return True

    def _first_failure_at(self, message: _Message) -> str:
        if message.parsed.first_failure_at:
            return message.parsed.first_failure_at
        record = message.record
        if record.receive_count > 1 and record.first_received_at:
            return iso_utc(record.first_received_at)
        return iso_utc(self.deps.clock())

    # -- helpers -----------------------------------------------------------------------------------------------
    def _fail(self, message_id: str) -> None:
        if message_id not in self.failures:
            self.failures.append(message_id)

    def _skipped(self, e: _Event, reason: str, detail: str) -> None:
        e.fate, e.reason = DONE, detail
        count_by("CurrentsEventsSkipped", "reason", reason)
        logger.info("braze change not written to Didomi", extra={**self._log(e), "reason": reason, "detail": detail})

    def _log(self, e: _Event) -> dict:
        out = {
            "currents_event_id": e.event.id,
            "event_type": e.event.event_type,
            "state_change_source": e.event.state_change_source,
        }
        identity = identity_of(e.event, self.config) if self.config else None
        if identity is not None:
            out["user_ref"] = self.deps.user_ref(identity.key)  # the same ref as the forward path's logs
        return out


def _change(write: WriteBack) -> Change:
    return Change(write.identity, {write.input: write.stored}, f"braze-currents:{write.event.id}", write.event.event_type)


def _parallel(function: Callable, items: list, concurrency: int) -> None:
    global _pool
    if len(items) <= 1 or concurrency <= 1:
        for item in items:
            function(item)
        return
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=CONCURRENCY, thread_name_prefix="flow-back")
    list(_pool.map(function, items))


_pool: ThreadPoolExecutor | None = None
