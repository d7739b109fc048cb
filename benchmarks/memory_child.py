"""Peak RSS of one function's process after N events: `webhook`, `retry`, or `baseline` (boto3 + urllib3 doing
the same Braze calls). Prints one JSON line."""

import json
import os
import sys
import uuid


class Context:
    memory_limit_in_mb = 128
    invoked_function_arn = "arn:aws:lambda:local:123456789012:function:bench"
    aws_request_id = "memory"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 60_000

    def __init__(self, name):
        self.function_name = name


def webhook(events: int) -> None:
    from benchmarks.events import fresh_event
    from didomi_braze.handlers.webhook import handler

    for _ in range(events):
        assert handler(fresh_event(), Context("WebhookFunction"))["statusCode"] == 200


def retry(events: int) -> None:
    from benchmarks.events import retry_message
    from didomi_braze.handlers.retry import handler

    run = uuid.uuid4().hex[:8]
    for start in range(0, events, 100):
        records = [
            {
                "messageId": f"m{i}",
                "receiptHandle": f"r{i}",
                "attributes": {"ApproximateReceiveCount": "1"},
                "body": retry_message(f"m-{run}-{i}"),
            }
            for i in range(start, min(events, start + 100))
        ]
        assert handler({"Records": records}, Context("RetryFunction")) == {"batchItemFailures": []}


def baseline(events: int) -> None:
    import boto3
    import urllib3

    secrets = boto3.client("secretsmanager")
    doc = json.loads(secrets.get_secret_value(SecretId=os.environ["CONNECTOR_SECRET_ID"])["SecretString"])
    secrets.get_secret_value(SecretId=os.environ["WEBHOOK_SECRET_ID"])
    http = urllib3.PoolManager()
    headers = {"Authorization": f"Bearer {doc['authentication']['api_key']}", "Content-Type": "application/json"}
    for i in range(events):
        body = {"attributes": [{"external_id": f"b-{i}", "_update_existing_only": True, "email_subscribe": "opted_in"}]}
        http.request("POST", doc["authentication"]["server"] + "/users/track", body=json.dumps(body).encode(), headers=headers)


if __name__ == "__main__":
    kind, count = sys.argv[1], int(sys.argv[2])
    sys.stdout = open(os.devnull, "w")  # the functions' logs and metrics  # noqa: SIM115
    {"webhook": webhook, "retry": retry, "baseline": baseline}[kind](count)
    sys.stdout = sys.__stdout__
    # VmHWM, not getrusage: Linux carries ru_maxrss over from the parent across fork and exec.
    peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(json.dumps({"max_rss_mb": peak_kb / 1024}))
