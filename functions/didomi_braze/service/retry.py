"""One batch from the retry queue: as few Braze calls as the data allows, each message settled on its own.

The messages are grouped by user and delivered through the same flow as a webhook (delivery.py): each user's
changes are merged into their state and Braze gets what the merged state calls for. Then each message is:

- delivered or skipped: left out of the failures, so that Lambda deletes it;
- failed (5xx, timeout, connection error, 401/403, state table unavailable): made visible again after the
  schedule's next delay and reported as a failure, so that SQS delivers the same message again; parked on the
  dead-letter queue with its reason once the retries are spent;
- waiting without failing (Braze's rate limit, another invocation holding the user, no time left): a fresh copy
  is queued for when the wait ends, carrying the counts so far, and this one is deleted;
- rejected by Braze (400/404/413, a per-object error): parked at once.

A message whose fate cannot be recorded is reported as a failure: it comes back, it is never dropped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime

from ..domain.braze import DELIVERED, PERMANENT, RATE_LIMITED
from ..domain.errors import MalformedRetryMessage
from ..domain.ports import DeadLetter
from ..domain.retry import PendingChange, by_user, iso_utc
from ..observability import count, count_by, logger
from .delivery import BUSY, FINAL, Outcome
from .dependencies import Dependencies

LEASE_MARGIN_SECONDS = 5
DEADLINE_MARGIN_SECONDS = 3  # the invocation's last seconds settle the batch (postpone, park, release)


@dataclass(frozen=True)
class RetryRecord:
    """An SQS record as the worker needs it. `receive_count` counts the receives of this copy of the message."""

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    first_received_at: float | None = None  # epoch seconds


def retry_batch(records: list[RetryRecord], deps: Dependencies, deadline: float) -> list[str]:
    """Retry a batch; returns the message ids to report as batch item failures."""
    batch = _Batch(records, deps)
    try:
        batch.run(deadline)
    finally:
        batch.flush_counts()
    return batch.failures


class _Batch:
    def __init__(self, records: list[RetryRecord], deps: Dependencies):
        self.deps = deps
        self.records = {r.message_id: r for r in records}
        self.pending: dict[str, PendingChange] = {}
        self.failures: list[str] = []
        self.counts = {"DeliveredAfterRetry": 0, "RetriesScheduled": 0, "RetriesDeferred": 0}  # emitted once per batch
        self.run_counts: dict[str, Counter] = {}  # backfill runs: applied / skipped / parked

    def run(self, deadline: float) -> None:
        for record in self.records.values():
            try:
                self.pending[record.message_id] = PendingChange.from_json(record.body)
            except MalformedRetryMessage as exc:
                self.park(record.message_id, None, str(exc), "malformed_message")
        if not self.pending:
            return
        count("RetryAttempts", len(self.pending))
        work = by_user(list(self.pending.items()))
        config = self.deps.connector()  # a broken document fails the whole batch loudly: nothing is lost
        outcomes = self.deps.delivery.deliver(work, config, lease_until=deadline + LEASE_MARGIN_SECONDS, deadline=deadline)
        now = self.deps.clock()  # after the Braze calls, which may have taken their whole timeout
        # Leases first: where a quiet mark could not be written, the fields it stood for are still owed.
        unrecorded = {id(o) for o in self.deps.delivery.release(outcomes)}
        for user, outcome in zip(work, outcomes, strict=True):
            still_owed = outcome.lease.unsent if id(outcome) in unrecorded else ()
            for message_id in user.tags:
                self.settle(message_id, outcome, now, still_owed)

    def settle(self, message_id: str, outcome: Outcome, now: float, still_owed: tuple[str, ...] = ()) -> None:
        record, pending = self.records[message_id], self.pending[message_id]
        log = self._log(message_id)
        # Every earlier receive of this copy made one Braze call (a receive that made none, or two, sends a fresh copy).
        calls = pending.calls + record.receive_count - 1 + outcome.calls
        before = pending.failures + record.receive_count - 1  # failures before this receive
        if outcome.kind in FINAL:
            if outcome.kind == DELIVERED:
                self.counts["DeliveredAfterRetry"] += 1
                logger.info(
                    "event delivered after retry",
                    extra={**log, "outcome": "delivered", "fields": outcome.sent, "braze_status": outcome.status},
                )
            else:
                reason = outcome.skip_reason or "no_change"
                count_by("EventsSkipped", "reason", reason)
                logger.info("retry skipped", extra={**log, "outcome": "skipped", "reason": reason, "detail": outcome.reason})
            if still_owed:
                self.requeue(
                    message_id, "the state table did not record what this delivery left unsent", 1, before, calls, still_owed
                )
            else:
                self._count_run(message_id, "applied" if outcome.kind == DELIVERED else "skipped")
            return
        if outcome.kind == PERMANENT:
            self.park(message_id, outcome, outcome.reason, "braze_rejected", calls)
            return
        owed = (*outcome.owed, *still_owed)
        if outcome.kind in (RATE_LIMITED, BUSY):  # waiting, not failing: a fresh copy keeps the counts
            if outcome.kind == BUSY:  # the holder usually gives the lease back long before it runs out
                delay = self.deps.schedule.relook_when_busy(outcome.retry_at, now, self.deps.rng)
            else:
                delay = self.deps.schedule.wait_until(outcome.retry_at, now)
            self.requeue(message_id, outcome.reason, delay, before, calls, owed)
            return
        # A failure: Braze 5xx, timeout, connection error, 401/403, or the state table unavailable.
        failures = before + 1
        delay = self.deps.schedule.next_retry_in(failures, self._first_failure(message_id), now)
        if delay is None:
            reason = f"retries exhausted after {failures - 1} retries; last: {outcome.reason}"
            self.park(message_id, outcome, reason, "retries_exhausted", calls)
            return
        if outcome.calls != 1 or still_owed:
            # A copy, so that the receive count stays the count of Braze calls (and the copy can owe more).
            self.requeue(message_id, outcome.reason, delay, failures, calls, owed, failed_with=outcome.status or 0)
            return
        try:
            self.deps.queue.postpone(record.receipt_handle, delay)
        except Exception as exc:
            # It still comes back, after the queue's own visibility timeout instead of the schedule's delay.
            logger.error(
                "could not postpone a retry; it returns after the queue's visibility timeout",
                extra={**log, "problem": str(exc)},
            )
        self._scheduled(message_id, outcome.reason, outcome.status, delay)
        self.failures.append(message_id)

    def _scheduled(self, message_id: str, reason: str, status: int | None, delay: int) -> None:
        self.counts["RetriesScheduled"] += 1
        logger.warning(
            "retry failed; next retry scheduled",
            extra={
                **self._log(message_id),
                "outcome": "retry_failed",
                "reason": reason,
                "braze_status": status,
                "retry_in_seconds": delay,
            },
        )

    def requeue(
        self,
        message_id: str,
        reason: str,
        delay: int,
        failures: int,
        calls: int,
        owed: tuple[str, ...],
        failed_with: int | None = None,  # a failure (Braze's status, 0 for none) rather than a wait
    ) -> None:
        """Queue a fresh copy carrying the counts so far (and what it owes), and let this one go."""
        pending = self.pending[message_id]
        copy = replace(
            pending,
            owed=tuple(sorted({*(pending.owed or ()), *owed})) if owed else pending.owed,
            failures=failures,
            calls=calls,
            reason=reason,
            first_failure_at=iso_utc(self._first_failure(message_id)) if failures else None,
        )
        try:
            self.deps.queue.enqueue(copy.to_json(), delay)
        except Exception as exc:
            logger.error(
                "could not queue a copy of a retry; it comes back as it is", extra={**self._log(message_id), "problem": str(exc)}
            )
            self.failures.append(message_id)
            return
        if failed_with is not None:
            self._scheduled(message_id, reason, failed_with or None, delay)
            return
        self.counts["RetriesDeferred"] += 1
        logger.info(
            "retry waits", extra={**self._log(message_id), "outcome": "waits", "reason": reason, "retry_in_seconds": delay}
        )

    def park(self, message_id: str, outcome: Outcome | None, reason: str, category: str, calls: int | None = None) -> None:
        record, pending = self.records[message_id], self.pending.get(message_id)
        why = DeadLetter(
            reason=reason,
            attempts=calls if calls is not None else (pending.calls if pending else 0),
            first_failure_at=self._first_failure_at(message_id),
            last_braze_status=outcome.status if outcome else None,
            event_id=pending.change.event_id if pending else None,
            category=category,
        )
        body = pending.ready_to_replay().to_json() if pending else record.body
        try:
            self.deps.queue.dead_letter(body, why)
        except Exception as exc:
            logger.error(
                "could not dead-letter a message; it stays on the retry queue",
                extra={**self._log(message_id), "problem": str(exc)},
            )
            self.failures.append(message_id)
            return
        count_by("EventsDeadLettered", "reason", category)
        self._count_run(message_id, "parked")
        logger.error(
            "event dead-lettered",
            extra={
                **self._log(message_id),
                "outcome": "dead_lettered",
                "category": category,
                "reason": reason,
                "braze_status": why.last_braze_status,
            },
        )

    def _first_failure(self, message_id: str) -> float:
        """From the message, else the first receive of this copy (a copy only comes back after a failure), else now."""
        record, pending = self.records[message_id], self.pending.get(message_id)
        if pending and pending.first_failure_at:
            try:
                return datetime.fromisoformat(pending.first_failure_at.replace("Z", "+00:00")).timestamp()
            except ValueError:
                pass
        if record.receive_count > 1 and record.first_received_at:
            return record.first_received_at
        return self.deps.clock()

    def _first_failure_at(self, message_id: str) -> str:
        return iso_utc(self._first_failure(message_id))

    def _count_run(self, message_id: str, outcome: str) -> None:
        """A backfill run's message is settled for good (a copy sent on waits and counts when it settles)."""
        pending = self.pending.get(message_id)
        if pending is not None and pending.run is not None:
            self.run_counts.setdefault(pending.run, Counter())[outcome] += 1

    def flush_counts(self) -> None:
        for name, value in self.counts.items():
            if value:
                count(name, value)
        runs = self.deps.backfill_runs
        for run, counts in self.run_counts.items() if runs is not None else ():
            try:
                runs.add_settled(run, dict(counts))
            except Exception as exc:  # progress only: the messages themselves are settled
                logger.warning("could not count a backfill run's settled messages", extra={"run": run, "problem": str(exc)})

    def _log(self, message_id: str) -> dict:
        out: dict = {"message_id": message_id, "receive": self.records[message_id].receive_count}
        pending = self.pending.get(message_id)
        if pending:
            change = pending.change
            out.update(
                event_id=change.event_id,
                event_type=change.event_type,
                event_time=change.position.time,
                user_ref=self.deps.user_ref(change.identity.key),
            )
        return out
