"""WebhookFunction: API Gateway HTTP API (payload 2.0) → one Didomi event → Braze."""

from __future__ import annotations

import json
import time

from ..observability import logger, metrics
from ..runtime import dependencies, prepare
from ..service.webhook import WebhookRequest, receive_webhook
from .events import APIGatewayProxyEventV2, event_source

prepare()  # SDK clients in the init phase


@logger.inject_lambda_context  # no custom keys are appended: nothing to clear between invocations
@metrics.log_metrics
@event_source(data_class=APIGatewayProxyEventV2)
def handler(event: APIGatewayProxyEventV2, context) -> dict:
    context_ = event.request_context
    request = WebhookRequest(
        authorization=event.headers.get("authorization"),
        body=event.body,
        is_base64=event.is_base64_encoded,
        source_ip=context_.http.source_ip,
        jwt_claims=context_.authorizer.jwt_claim or None,
        deadline=time.time() + context.get_remaining_time_in_millis() / 1000,
    )
    answer = receive_webhook(request, dependencies)
    return {
        "statusCode": answer.status,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(answer.body),
    }
