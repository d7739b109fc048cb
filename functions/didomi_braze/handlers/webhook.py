"""WebhookFunction: API Gateway HTTP API (payload 2.0) → one Didomi event → Braze."""

from __future__ import annotations

import json

from ..observability import logger, metrics
from ..runtime import dependencies, prepare
from ..service.webhook import WebhookRequest, receive_webhook

prepare()  # SDK clients in the init phase


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict, context) -> dict:
    headers = {str(k).lower(): v for k, v in (event.get("headers") or {}).items()}
    context_ = event.get("requestContext") or {}
    request = WebhookRequest(
        authorization=headers.get("authorization"),
        body=event.get("body"),
        is_base64=bool(event.get("isBase64Encoded")),
        source_ip=(context_.get("http") or {}).get("sourceIp"),
        jwt_claims=((context_.get("authorizer") or {}).get("jwt") or {}).get("claims"),
    )
    answer = receive_webhook(request, dependencies)
    return {
        "statusCode": answer.status,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(answer.body),
    }
