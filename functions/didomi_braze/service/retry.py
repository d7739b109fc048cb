"""One batch from the retry queue: as few Braze calls as the data allows, each message settled on its own.

A message is either delivered (left out of the failures, so Lambda deletes it), skipped as superseded (a newer
value reached Braze meanwhile; also deleted), parked on the dead-letter queue with its reason (then deleted), or
postponed to the next delay of the schedule and reported as a failure so that SQS delivers it again. A message
whose fate cannot be recorded is reported as a failure: it comes back, it is never dropped.

Before every retry the user's lease is taken and each field is checked against the newest value Braze was given,
exactly as on the webhook path: a retried opt-in never overwrites a later opt-out.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from ..adapters.queues import DeadLetter
from ..adapters.state_table import Busy, StateTableUnavailable, user_key
from ..domain.braze import DELIVERED, PERMANENT, RETRYABLE, BrazeOutcome, attributes_object
from ..domain.errors import ConfigurationError, MalformedRetryMessage
from ..domain.ordering import judge
from ..domain.retry import PendingUpdate, UserBatchItem, chunks, collapse
from ..observability import count, count_by, logger
from .dependencies import Dependencies

WORKER_LEASE_SECONDS = 120  # twice the worker's timeout
STATE_TABLE_CONCURRENCY = 16  # matches the DynamoDB client's connection pool (runtime.py)


@dataclass(frozen=True)
class RetryRecord:
    """An SQS record as the worker needs it. `receive_count` is the retry number (the first receive is retry 1)."""

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int


@dataclass(frozen=True)
class _Claim:
    """A user item whose lease this batch holds, with what may be sent and the positions it carries."""

    item: UserBatchItem
    key: str
    owner: str
    commit: dict[str, str]


class _Batch:
    def __init__(self, records: list[RetryRecord], deps: Dependencies):
        self.deps = deps
        self.now = deps.clock()
        self.records = {r.message_id: r for r in records}
        self.pending: dict[str, PendingUpdate] = {}
        self.failures: list[str] = []
        self.counts = {"DeliveredAfterRetry": 0, "RetriesScheduled": 0}  # emitted once per batch

    def settle(self, item: UserBatchItem, outcome: BrazeOutcome, item_error: str | None = None) -> list[str]:
        """Settle every message of one user item; returns the ids that left the retry queue for good."""
        gone = []
        for message_id in item.message_ids:
            if outcome.kind == DELIVERED and item_error is None:
                self.delivered(message_id)
                gone.append(message_id)
            elif outcome.kind == DELIVERED or outcome.kind == PERMANENT:
                reason = f"braze rejected the object: {item_error}" if item_error else outcome.reason
                if self.park(message_id, reason, "braze_rejected", outcome.status):
                    gone.append(message_id)
            elif self.retry_later(message_id, outcome):
                gone.append(message_id)
        return gone

    def delivered(self, message_id: str) -> None:
        self.counts["DeliveredAfterRetry"] += 1
        logger.info("event delivered after retry", extra=self._log(message_id))

    def retry_later(self, message_id: str, outcome: BrazeOutcome) -> bool:
        """Postpone to the next delay; park when the schedule is spent. True when the message was parked."""
        record = self.records[message_id]
        delay = self.deps.schedule.delay_after(record.receive_count, self.now, outcome.retry_at)
        if delay is None:
            reason = f"retries exhausted after {record.receive_count} retries; last: {outcome.reason}"
            return self.park(message_id, reason, "retries_exhausted", outcome.status)
        try:
            self.deps.queues.postpone(record.receipt_handle, delay)
        except Exception as exc:
            # It still comes back, after the queue's own visibility timeout instead of the schedule's delay.
            logger.error(
                "could not postpone a retry; it returns after the queue's visibility timeout",
                extra={**self._log(message_id), "problem": str(exc)},
            )
        self.counts["RetriesScheduled"] += 1
        logger.warning(
            "retry failed; next retry scheduled",
            extra={**self._log(message_id), "reason": outcome.reason, "braze_status": outcome.status, "retry_in_seconds": delay},
        )
        self.failures.append(message_id)
        return False

    def park(self, message_id: str, reason: str, category: str, status: int | None = None) -> bool:
        record = self.records[message_id]
        pending = self.pending.get(message_id)
        why = DeadLetter(
            reason=reason,
            attempts=record.receive_count + 1,  # the webhook's own try, then each retry
            first_failure_at=pending.first_failure_at if pending else "unknown",
            last_braze_status=status,
            event_id=pending.event_id if pending else None,
        )
        try:
            self.deps.queues.dead_letter(record.body, why)
        except Exception as exc:
            logger.error(
                "could not dead-letter a message; it stays on the retry queue",
                extra={**self._log(message_id), "problem": str(exc)},
            )
            self.failures.append(message_id)
            return False
        count_by("EventsDeadLettered", "reason", category)
        logger.error("event dead-lettered", extra={**self._log(message_id), "reason": reason, "braze_status": status})
        return True

    def superseded(self, item: UserBatchItem) -> None:
        count_by("EventsSkipped", "reason", "superseded", len(item.message_ids))
        for message_id in item.message_ids:
            logger.info(
                "retry skipped: Braze already has a newer value for every field",
                extra={**self._log(message_id), "reason": "superseded"},
            )

    def finish(self, claim: _Claim, delivered: bool, gone: list[str]) -> None:
        """Record what Braze now has and which events no longer wait, and give the user's lease back."""
        try:
            kept = self.deps.state.finish(
                claim.key,
                claim.owner,
                self.deps.clock(),
                commit=claim.commit if delivered else None,
                remove_pending=[claim.item.message_positions[m] for m in gone],
            )
        except StateTableUnavailable as exc:
            logger.error("could not record the outcome in the state table; the lease will run out", extra={"problem": str(exc)})
            return
        if not kept:
            logger.error("the user's lease ran out before the retry was recorded", extra={"lease_seconds": WORKER_LEASE_SECONDS})

    def _log(self, message_id: str) -> dict:
        out: dict = {"message_id": message_id, "attempt": self.records[message_id].receive_count}
        pending = self.pending.get(message_id)
        if pending:
            out.update(
                event_id=pending.event_id, event_type=pending.event_type, user_ref=self.deps.user_ref(pending.identity.key)
            )
        return out


def retry_batch(records: list[RetryRecord], deps: Dependencies) -> list[str]:
    """Retry a batch; returns the message ids to report as batch item failures."""
    batch = _Batch(records, deps)
    try:
        _retry(batch, deps)
    finally:
        for name, value in batch.counts.items():
            if value:
                count(name, value)
    return batch.failures


def _retry(batch: _Batch, deps: Dependencies) -> None:
    for record in batch.records.values():
        try:
            batch.pending[record.message_id] = PendingUpdate.from_json(record.body)
        except MalformedRetryMessage as exc:
            batch.park(record.message_id, str(exc), "malformed_message")
    if not batch.pending:
        return
    count("RetryAttempts", len(batch.pending))

    items = collapse(list(batch.pending.items()))
    try:
        config = deps.connector()
    except ConfigurationError as exc:
        for item in items:
            batch.settle(item, BrazeOutcome(RETRYABLE, f"connector configuration invalid: {exc}"))
        return

    claims, finishes = _claims(batch, items)
    try:
        refreshed = False
        for chunk in chunks(claims, deps.objects_per_request):
            outcome = _track(deps, config, chunk)
            if outcome.kind == PERMANENT and len(chunk) > 1:
                # Braze refused the request as a whole: send each object alone so one bad object parks only itself.
                for claim in chunk:
                    finishes[claim.owner] = _settle(batch, claim, _track(deps, config, [claim]))
                continue
            for index, claim in enumerate(chunk):
                finishes[claim.owner] = _settle(batch, claim, outcome, outcome.item_error(index))
            if outcome.refresh_credentials and not refreshed:
                refreshed = True
                try:
                    deps.connector(force=True)
                except ConfigurationError as exc:
                    logger.error("connector secret unreadable while refreshing after 401/403", extra={"problem": str(exc)})
    finally:
        # Every lease taken is given back, also when something above failed (then nothing is committed).
        _parallel(lambda f: batch.finish(*f), list(finishes.values()))


def _claims(batch: _Batch, items: list[UserBatchItem]) -> tuple[list[_Claim], dict[str, tuple]]:
    """Take each user's lease (in parallel: these are independent round trips) and keep only the fields Braze has
    no newer value for. Returns the claims to send and, by owner, how each lease is to be given back."""
    deps = batch.deps

    def acquire(item: UserBatchItem) -> tuple[UserBatchItem, str, str, object]:
        key, owner = user_key(item.identity.key), uuid.uuid4().hex
        try:
            return item, key, owner, deps.state.acquire(key, owner, item.newest_position, batch.now, WORKER_LEASE_SECONDS)
        except StateTableUnavailable as exc:
            return item, key, owner, exc

    claims: list[_Claim] = []
    finishes: dict[str, tuple] = {}
    for item, key, owner, state in _parallel(acquire, items):
        if isinstance(state, StateTableUnavailable):
            batch.settle(item, BrazeOutcome(RETRYABLE, f"state table unavailable: {state}"))
            continue
        if isinstance(state, Busy):
            batch.settle(item, BrazeOutcome(RETRYABLE, "another update for this user is being delivered"))
            continue
        verdict = judge(item.update, item.field_positions, state.positions, retry=True)
        claim = _Claim(replace(item, update=verdict.send), key, owner, verdict.positions)
        if verdict.is_skip:
            batch.superseded(item)
            finishes[owner] = (claim, False, list(item.message_ids))
            continue
        claims.append(claim)
        finishes[owner] = (claim, False, [])  # until settled: give the lease back, commit nothing
    return claims, finishes


def _settle(batch: _Batch, claim: _Claim, outcome: BrazeOutcome, item_error: str | None = None) -> tuple:
    gone = batch.settle(claim.item, outcome, item_error)
    return claim, outcome.kind == DELIVERED and item_error is None, gone


_pool: ThreadPoolExecutor | None = None


def _parallel(function, items: list) -> list:
    """Run independent state-table round trips side by side; one pool per container, created on first use."""
    global _pool
    if len(items) <= 1:
        return [function(item) for item in items]
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=STATE_TABLE_CONCURRENCY, thread_name_prefix="state-table")
    return list(_pool.map(function, items))


def _track(deps: Dependencies, config, claims: list[_Claim]) -> BrazeOutcome:
    count("BrazeRequests")
    objects = [attributes_object(c.item.identity, c.item.update, config.upsert_mode) for c in claims]
    return deps.braze.track(config.server, config.api_key, objects)
