"""RetryFunction: a batch of RetryQueue messages → as few Braze calls as possible, partial batch response."""

from __future__ import annotations

from ..domain.errors import ConfigurationError
from ..observability import count, logger, metrics
from ..runtime import dependencies, prepare
from ..service.retry import RetryRecord, retry_batch

prepare()  # SDK clients in the init phase


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict, context) -> dict:
    # Powertools' BatchProcessor handles records one at a time; collapsing a batch into shared Braze
    # requests needs the whole batch, so the partial batch response is built here instead.
    records = [
        RetryRecord(
            message_id=r["messageId"],
            receipt_handle=r["receiptHandle"],
            body=r.get("body") or "",
            receive_count=int(r.get("attributes", {}).get("ApproximateReceiveCount", "1")),
        )
        for r in event.get("Records", [])
    ]
    try:
        deps = dependencies()
    except ConfigurationError as exc:
        # The whole batch fails and comes back: nothing is lost, and Lambda's Errors metric shows the outage.
        count("WorkerUnavailable")
        logger.error("RetryFunction cannot run: fix the configuration", extra={"problem": str(exc), "batch_size": len(records)})
        raise
    failures = retry_batch(records, deps)
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failures]}
