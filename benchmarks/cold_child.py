"""One cold start, in a fresh process: `handler` imports WebhookFunction and serves one event; `baseline` does
the same work (both secrets, the state-table request, one Braze call) with nothing but boto3 and urllib3
(the state-table request goes through the thin StateTable adapter, which is a boto3 call and nothing else).

`noop` only starts and exits: the interpreter's own share, subtracted from instruction counts.

Prints one JSON line: wall and CPU seconds spent importing and serving the first event."""

import time

STARTED, STARTED_CPU = time.perf_counter(), time.process_time()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402


class Context:
    function_name = "WebhookFunction"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:local:123456789012:function:WebhookFunction"
    aws_request_id = "cold-start"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 15_000


def handler_run(event: dict) -> tuple[tuple[float, float], int]:
    from didomi_braze.handlers.webhook import handler

    imported = time.perf_counter(), time.process_time()
    status = handler(event, Context())["statusCode"]
    return imported, status


def baseline_run(event: dict) -> tuple[tuple[float, float], int]:
    import hmac

    import boto3
    import urllib3

    imported = time.perf_counter(), time.process_time()
    secrets, dynamodb = boto3.client("secretsmanager"), boto3.client("dynamodb")
    token = secrets.get_secret_value(SecretId=os.environ["WEBHOOK_SECRET_ID"])["SecretString"]
    if not hmac.compare_digest(event["headers"]["authorization"].encode(), f"Bearer {token}".encode()):
        return imported, 401
    body = json.loads(event["body"])
    entity = body["parameters"]["entity"]
    user = entity["user"]["organization_user_id"]
    doc = json.loads(secrets.get_secret_value(SecretId=os.environ["CONNECTOR_SECRET_ID"])["SecretString"])
    newsletter = {p["id"]: p.get("enabled") for p in entity["consents"]["purposes"]}["newsletter"]
    # The same state-table request the handler makes (the same expression, so the same server-side work).
    from didomi_braze.adapters.state_table import StateTable
    from didomi_braze.domain.ordering import Position, StoredInput
    from didomi_braze.domain.ports import StoredOlder

    table, key, now = StateTable(dynamodb, os.environ["STATE_TABLE_NAME"]), f"baseline-{user}", time.time()
    inputs = {"consents_purposes_newsletter_enabled": StoredInput(newsletter, Position(entity["created_at"], None, entity["id"]))}
    table.claim(key, inputs, "baseline", entity["id"], now, now + 10, StoredOlder())
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
    return imported, 200 if response.status == 201 else 500


if __name__ == "__main__":
    kind, event_json = sys.argv[1], sys.argv[2]
    if kind == "noop":
        sys.exit(0)
    (imported, imported_cpu), status = (handler_run if kind == "handler" else baseline_run)(json.loads(event_json))
    done, done_cpu = time.perf_counter(), time.process_time()
    print(
        json.dumps(
            {
                "import": imported - STARTED,
                "first_event": done - imported,
                "import_cpu": imported_cpu - STARTED_CPU,
                "first_event_cpu": done_cpu - imported_cpu,
                "status": status,
            }
        )
    )
