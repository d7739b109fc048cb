"""One batch from the retry queue: as few Braze calls as the data allows, each message settled on its own.

A message is either delivered (left out of the failures, so Lambda deletes it), parked on the dead-letter
queue with its reason (then also deleted), or postponed to the next delay of the schedule and reported as a
failure so that SQS delivers it again. A message whose fate cannot be recorded is reported as a failure:
it comes back, it is never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..adapters.queues import DeadLetter
from ..domain.braze import DELIVERED, PERMANENT, RETRYABLE, BrazeOutcome, attributes_object
from ..domain.errors import ConfigurationError, MalformedRetryMessage
from ..domain.retry import PendingUpdate, UserBatchItem, chunks, collapse
from ..observability import count, count_by, logger
from .dependencies import Dependencies


@dataclass(frozen=True)
class RetryRecord:
    """An SQS record as the worker needs it. `receive_count` is the retry number (the first receive is retry 1)."""

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int


class _Batch:
    def __init__(self, records: list[RetryRecord], deps: Dependencies):
        self.deps = deps
        self.now = deps.clock()
        self.records = {r.message_id: r for r in records}
        self.pending: dict[str, PendingUpdate] = {}
        self.failures: list[str] = []
        self.counts = {"DeliveredAfterRetry": 0, "RetriesScheduled": 0}  # emitted once per batch

    def settle(self, items: list[UserBatchItem], outcome: BrazeOutcome) -> None:
        for index, item in enumerate(items):
            for message_id in item.message_ids:
                if outcome.kind == DELIVERED and outcome.item_error(index) is None:
                    self.delivered(message_id)
                elif outcome.kind == DELIVERED:
                    self.park(
                        message_id, f"braze rejected the object: {outcome.item_error(index)}", "braze_rejected", outcome.status
                    )
                elif outcome.kind == PERMANENT:
                    self.park(message_id, outcome.reason, "braze_rejected", outcome.status)
                else:
                    self.retry_later(message_id, outcome)

    def delivered(self, message_id: str) -> None:
        self.counts["DeliveredAfterRetry"] += 1
        logger.info("event delivered after retry", extra=self._log(message_id))

    def retry_later(self, message_id: str, outcome: BrazeOutcome) -> None:
        record = self.records[message_id]
        delay = self.deps.schedule.delay_after(record.receive_count, self.now, outcome.retry_at)
        if delay is None:
            reason = f"retries exhausted after {record.receive_count} retries; last: {outcome.reason}"
            self.park(message_id, reason, "retries_exhausted", outcome.status)
            return
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

    def park(self, message_id: str, reason: str, category: str, status: int | None = None) -> None:
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
            return
        count_by("EventsDeadLettered", "reason", category)
        logger.error("event dead-lettered", extra={**self._log(message_id), "reason": reason, "braze_status": status})

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
        batch.settle(items, BrazeOutcome(RETRYABLE, f"connector configuration invalid: {exc}"))
        return

    refreshed = False
    for chunk in chunks(items, deps.objects_per_request):
        outcome = _track(deps, config, chunk)
        if outcome.kind == PERMANENT and len(chunk) > 1:
            # Braze refused the request as a whole: send each object alone so one bad object parks only itself.
            for item in chunk:
                batch.settle([item], _track(deps, config, [item]))
            continue
        batch.settle(chunk, outcome)
        if outcome.refresh_credentials and not refreshed:
            refreshed = True
            try:
                deps.connector(force=True)
            except ConfigurationError as exc:
                logger.error("connector secret unreadable while refreshing after 401/403", extra={"problem": str(exc)})


def _track(deps: Dependencies, config, items: list[UserBatchItem]) -> BrazeOutcome:
    count("BrazeRequests")
    objects = [attributes_object(item.identity, item.update, config.upsert_mode) for item in items]
    return deps.braze.track(config.server, config.api_key, objects)
