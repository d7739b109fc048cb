"""RetryFunction: a batch of RetryQueue messages → as few Braze calls as possible, partial batch response."""

from __future__ import annotations

import time

from aws_lambda_powertools.utilities.data_classes import SQSEvent, event_source

from ..domain.errors import ConfigurationError
from ..observability import count, logger, metrics
from ..runtime import dependencies, prepare
from ..service.retry import DEADLINE_MARGIN_SECONDS, RetryRecord, retry_batch

prepare()  # SDK clients in the init phase


@logger.inject_lambda_context  # no custom keys are appended: nothing to clear between invocations
@metrics.log_metrics
@event_source(data_class=SQSEvent)
def handler(event: SQSEvent, context) -> dict:
    # Powertools' BatchProcessor handles records one at a time; merging a batch into shared Braze requests
    # needs the whole batch, so the partial batch response is built here instead.
    records = [
        RetryRecord(
            message_id=record.message_id,
            receipt_handle=record.receipt_handle,
            body=record.body or "",
            receive_count=int(record.attributes.get("ApproximateReceiveCount") or 1),
            first_received_at=_seconds(record.attributes.get("ApproximateFirstReceiveTimestamp")),
        )
        for record in event.records
    ]
    try:
        deps = dependencies()
    except ConfigurationError as exc:
        # The whole batch fails and comes back: nothing is lost, and Lambda's Errors metric shows the outage.
        count("WorkerUnavailable")
        logger.error("RetryFunction cannot run: fix the configuration", extra={"problem": str(exc), "batch_size": len(records)})
        raise
    deadline = time.time() + context.get_remaining_time_in_millis() / 1000 - DEADLINE_MARGIN_SECONDS
    failures = retry_batch(records, deps, deadline)
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failures]}


def _seconds(milliseconds: str | None) -> float | None:
    return int(milliseconds) / 1000 if milliseconds and milliseconds.isdigit() else None
