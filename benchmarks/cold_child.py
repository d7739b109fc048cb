"""One cold start, in a fresh process: `handler` imports WebhookFunction and serves one event; `baseline` does
the same work (both secrets, the two state-table requests, one Braze call) with nothing but boto3 and urllib3
(the state-table requests go through the thin StateTable adapter, which is boto3 calls and nothing else).

Prints one JSON line: seconds spent importing and serving the first event."""

import time

STARTED = time.perf_counter()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402


class Context:
    function_name = "WebhookFunction"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:local:123456789012:function:WebhookFunction"
    aws_request_id = "cold-start"


def handler_run(event: dict) -> tuple[float, int]:
    from didomi_braze.handlers.webhook import handler

    imported = time.perf_counter()
    status = handler(event, Context())["statusCode"]
    return imported, status


def baseline_run(event: dict) -> tuple[float, int]:
    import hmac

    import boto3
    import urllib3

    imported = time.perf_counter()
    secrets, dynamodb = boto3.client("secretsmanager"), boto3.client("dynamodb")
    token = secrets.get_secret_value(SecretId=os.environ["WEBHOOK_SECRET_ID"])["SecretString"]
    if not hmac.compare_digest(event["headers"]["authorization"].encode(), f"Bearer {token}".encode()):
        return imported, 401
    body = json.loads(event["body"])
    entity = body["parameters"]["entity"]
    user = entity["user"]["organization_user_id"]
    doc = json.loads(secrets.get_secret_value(SecretId=os.environ["CONNECTOR_SECRET_ID"])["SecretString"])
    newsletter = {p["id"]: p.get("enabled") for p in entity["consents"]["purposes"]}["newsletter"]
    # The same two state-table requests the handler makes (same expressions, so the same server-side work).
    from didomi_braze.adapters.state_table import StateTable, user_key

    table, key, owner = StateTable(dynamodb, os.environ["STATE_TABLE_NAME"]), user_key(f"external_id:{user}"), "baseline"
    now = time.time()
    table.acquire(key, owner, entity["created_at"] + "#" + entity["id"], now, 30)
    attributes = {
        "external_id": user,
        "_update_existing_only": True,
        "email_subscribe": "opted_in" if newsletter else "unsubscribed",
    }
    response = urllib3.PoolManager().request(
        "POST",
        doc["authentication"]["server"] + "/users/track",
        body=json.dumps({"attributes": [attributes]}).encode(),
        headers={"Authorization": f"Bearer {doc['authentication']['api_key']}", "Content-Type": "application/json"},
    )
    table.finish(key, owner, now, commit={"email_subscribe": entity["created_at"] + "#" + entity["id"]})
    return imported, 200 if response.status == 201 else 500


if __name__ == "__main__":
    kind, event_json = sys.argv[1], sys.argv[2]
    imported, status = (handler_run if kind == "handler" else baseline_run)(json.loads(event_json))
    done = time.perf_counter()
    print(json.dumps({"import": imported - STARTED, "first_event": done - imported, "status": status}))
