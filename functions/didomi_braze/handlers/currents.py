"""IngestFunction: a batch of the ingest queue (S3 notifications of Braze Currents files) → Didomi, partial batch
response (README "The flow back")."""

from __future__ import annotations

import time

from aws_lambda_powertools.utilities.data_classes import SQSEvent, event_source

from ..domain.errors import ConfigurationError
from ..observability import count, logger, metrics
from ..runtime import dependencies, flow_back, prepare_flow_back
from ..service.flowback import DEADLINE_MARGIN_SECONDS, IngestRecord, ingest_batch

prepare_flow_back()  # SDK clients in the init phase


@logger.inject_lambda_context  # no custom keys are appended: nothing to clear between invocations
@metrics.log_metrics
@event_source(data_class=SQSEvent)
def handler(event: SQSEvent, context) -> dict:
    # Events of one Braze user may sit in several messages and must be handled in their order: the whole batch
    # is needed at once, so the partial batch response is built here rather than by Powertools' BatchProcessor.
    records = [
        IngestRecord(
            message_id=record.message_id,
            receipt_handle=record.receipt_handle,
            body=record.body or "",
            receive_count=int(record.attributes.get("ApproximateReceiveCount") or 1),
            first_received_at=_seconds(record.attributes.get("ApproximateFirstReceiveTimestamp")),
        )
        for record in event.records
    ]
    try:
        deps, flow = dependencies(), flow_back()
        deadline = time.time() + context.get_remaining_time_in_millis() / 1000 - DEADLINE_MARGIN_SECONDS
        failures = ingest_batch(records, deps, flow, deadline)
    except ConfigurationError as exc:
        # A setting, the connector document or the Didomi secret is broken: the whole batch fails and comes back
        # (what was written is idempotent), and Lambda's Errors metric shows the outage. Nothing is lost.
        count("IngestUnavailable")
        logger.error("IngestFunction cannot run: fix the configuration", extra={"problem": str(exc), "batch_size": len(records)})
        raise
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failures]}


def _seconds(milliseconds: str | None) -> float | None:
    return int(milliseconds) / 1000 if milliseconds and milliseconds.isdigit() else None
