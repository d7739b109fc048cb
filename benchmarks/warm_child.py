"""Warm events in one process, like a warm Lambda container: alternately the handler serving a fresh event and the
same calls made bare (the state-table claim and the pooled POST of the same Braze body) with only boto3 and urllib3.
Wall time and CPU time of this process per event; the AWS calls the handler makes, counted from botocore's own
events. Prints one JSON line."""

import json
import os
import sys
import time
import uuid
from collections import defaultdict


class Context:
    function_name = "WebhookFunction"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:local:123456789012:function:WebhookFunction"
    aws_request_id = "warm"

    def __init__(self) -> None:
        self._deadline = time.monotonic() + 15

    def get_remaining_time_in_millis(self) -> int:
        return int((self._deadline - time.monotonic()) * 1000)


def main(events: int, warmup: int = 20) -> dict:
    import boto3
    import botocore.handlers
    import urllib3

    from benchmarks.events import fresh_event

    calls: dict[str, int] = defaultdict(int)
    counting = [False]

    def count_call(event_name: str, **kwargs) -> None:
        if counting[0]:
            _, service, operation = event_name.split(".", 2)
            calls[f"{service} {operation}"] += 1

    # Registered with botocore's built-in handlers, which every session created from now on takes up (boto3's and
    # the function's own), before the handler builds its clients.
    botocore.handlers.BUILTIN_HANDLERS.append(("before-call", count_call))
    from didomi_braze.adapters.state_table import StateTable
    from didomi_braze.domain.ordering import Position, StoredInput
    from didomi_braze.domain.ports import StoredOlder
    from didomi_braze.handlers.webhook import handler

    doc = json.loads(boto3.client("secretsmanager").get_secret_value(SecretId=os.environ["CONNECTOR_SECRET_ID"])["SecretString"])
    http = urllib3.PoolManager(maxsize=4)
    group = {"subscription_group_id": "3f1c9a52-7d4e-4b8a-9c61-2e5f0a7b8d13", "subscription_state": "subscribed"}
    obj = {"external_id": "bench", "_update_existing_only": True, "email_subscribe": "opted_in", "subscription_groups": [group]}
    body = json.dumps({"attributes": [obj]}).encode()
    headers = {"Authorization": f"Bearer {doc['authentication']['api_key']}", "Content-Type": "application/json"}
    state = StateTable(boto3.client("dynamodb"), os.environ["STATE_TABLE_NAME"])
    position = Position("2026-05-04T12:00:00.000000Z", None, "e")
    inputs = {  # the two consents the sample event sets: the same request the handler makes
        "consents_purposes_newsletter_enabled": StoredInput(True, position),
        "consents_purposes_offers_values_topics_sales_enabled": StoredInput(True, position),
    }

    def same_calls() -> None:
        now = time.time()
        state.claim(uuid.uuid4().hex, inputs, "baseline", "e", now, now + 10, StoredOlder())
        http.request("POST", doc["authentication"]["server"] + "/users/track", body=body, headers=headers)

    samples: dict[str, list[float]] = defaultdict(list)
    for i in range(events + warmup):
        event = fresh_event()
        counting[0] = i >= warmup  # the first events warm the pools and caches
        wall, cpu = time.perf_counter(), time.process_time()
        status = handler(event, Context())["statusCode"]
        handler_wall, handler_cpu = time.perf_counter() - wall, time.process_time() - cpu
        counting[0] = False
        wall, cpu = time.perf_counter(), time.process_time()
        same_calls()
        base_wall, base_cpu = time.perf_counter() - wall, time.process_time() - cpu
        if status != 200:
            raise RuntimeError(f"warm handler answered {status}")
        if i >= warmup:
            for name, value in (
                ("handler", handler_wall),
                ("handler_cpu", handler_cpu),
                ("same", base_wall),
                ("same_cpu", base_cpu),
            ):
                samples[name].append(value)
    return {"samples": samples, "calls": {k: v / events for k, v in sorted(calls.items())}, "warmup": warmup}


if __name__ == "__main__":
    events = int(sys.argv[1])
    real_stdout, sys.stdout = sys.stdout, open(os.devnull, "w")  # the function's logs and metrics  # noqa: SIM115
    result = main(events)
    sys.stdout = real_stdout
    print(json.dumps(result))
