"""WebhookFunction: API Gateway HTTP API (payload 2.0) → one Didomi event → Braze.

The event is read as the dict Lambda hands over, the way Powertools' `APIGatewayProxyEventV2` reads it (headers
matched case-insensitively, the source address required): the data class and its decorator would cost the cold
start their imports and every event a few wrappers, for the five values the handler reads.
"""

from __future__ import annotations

import json
import time

from ..observability import logger, metrics
from ..runtime import dependencies, prepare
from ..service.webhook import WebhookRequest, receive_webhook

prepare()  # SDK clients in the init phase


@logger.inject_lambda_context  # no custom keys are appended: nothing to clear between invocations
@metrics.log_metrics
def handler(event: dict, context) -> dict:
    context_ = event["requestContext"]
    authorizer = context_.get("authorizer") or {}
    request = WebhookRequest(
        authorization=_header(event.get("headers"), "authorization"),
        body=event.get("body"),
        is_base64=event.get("isBase64Encoded"),
        source_ip=context_["http"]["sourceIp"],
        jwt_claims=(authorizer.get("jwt") or {}).get("claims") or None,
        deadline=time.time() + context.get_remaining_time_in_millis() / 1000,
    )
    answer = receive_webhook(request, dependencies)
    return {
        "statusCode": answer.status,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(answer.body),
    }


def _header(headers: dict | None, name: str) -> str | None:
    """A header by its lower-case name, whatever its case in the event (the last one given wins)."""
    found = None
    for key, value in (headers or {}).items():
        if key.lower() == name:
            found = value
    return found
