"""`make demo`: the product end to end on loopback, with the sample events from events/.

A scripted scenario: opt-in with subscription groups, opt-out, a skipped pending event, a skipped non-GDPR
event, a Braze outage that recovers through retries, one that ends in the dead-letter queue, and requests
refused for missing authentication or a malformed body. It prints what happened to each event and the final
Braze state per user.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

import urllib3

from .lambda_runtime import function_output_to
from .stack import LocalStack
from .template import ROOT

DEMO_DELAYS = "1,1,2,2,3"
DEMO_BATCHING_WINDOW = 0.5


@dataclass(frozen=True)
class Step:
    event: str
    story: str
    faults: tuple[str, ...] = ()
    expect_status: int = 200
    settles: Callable[[LocalStack], bool] | None = None  # for events that go through the retry queue


def _queue_drained(stack: LocalStack) -> bool:
    return stack.queue_depth(stack.retry_queue_url) == 0


STEPS = (
    Step("user-created", "user.created: customer-7 opts in to the newsletter, sales offers and the weekly digest"),
    Step("user-updated", "user.updated: customer-42 withdraws newsletter consent (opt-out)"),
    Step("event-created-pending", "event.created, pending approval: customer-42 (Didomi has not applied it yet)"),
    Step("event-created-cpra", "event.created under CPRA: customer-42 (only GDPR is configured)"),
    Step(
        "event-updated-confirmed",
        "event.updated, pending -> confirmed: customer-9 opts in; Braze is down for two calls",
        faults=("503", "503"),
        expect_status=202,
        settles=_queue_drained,
    ),
    Step(
        "event-created",
        "event.created: customer-42 opts in again; Braze stays down through every retry",
        faults=("503",) * 6,
        expect_status=202,
        settles=_queue_drained,
    ),
    Step("unauthenticated", "a request without the bearer token", expect_status=401),
    Step("malformed-json", "a request whose body is cut off mid-JSON", expect_status=400),
)


def run(out: TextIO = sys.stdout, timeout: float = 50.0) -> int:
    """Run the scenario; returns the process exit code (0 when every step ended as expected)."""
    started = time.monotonic()
    log_file = tempfile.NamedTemporaryFile("w", prefix="didomi-braze-demo-", suffix=".log", delete=False)  # noqa: SIM115
    failures = 0
    # The stack sets the functions' environment before their code is imported, as Lambda does.
    stack = LocalStack(retry_delays=DEMO_DELAYS, batching_window=DEMO_BATCHING_WINDOW)
    with log_file, stack, function_output_to(log_file):
        _banner(out, stack)
        http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=2, read=20))
        for number, step in enumerate(STEPS, start=1):
            stack.braze.fail_next(*step.faults)
            before = len(stack.braze.track_requests())
            status, answer = _post(http, stack.gateway.url, step.event)
            print(f"\n{number}. {step.story}\n   webhook answered {status} {_describe(answer)}", file=out)
            ok = status == step.expect_status
            if step.settles is not None and ok:
                ok = _wait(lambda s=step: s.settles(stack), deadline=started + timeout)
                print(f"   retries: {_retry_story(stack, stack.braze.track_requests()[before:])}", file=out)
            if not ok:
                failures += 1
                print(
                    f"   UNEXPECTED: wanted {step.expect_status}" + ("" if status == step.expect_status else f", got {status}"),
                    file=out,
                )
        _summary(out, stack)
        print(f"\nFunction logs and metrics (JSON lines): {log_file.name}", file=out)
    elapsed = time.monotonic() - started
    print(f"Demo {'finished' if not failures else 'FAILED'} in {elapsed:.1f} s; all local processes stopped.", file=out)
    return 1 if failures else 0


def _banner(out: TextIO, stack: LocalStack) -> None:
    print("Didomi -> Braze preference sync: local demo", file=out)
    print(f"  AWS (moto server)   {stack.moto_url}   queues and secrets created from template.yaml", file=out)
    print(f"  Braze emulator      {stack.braze.url}", file=out)
    print(f"  Webhook             {stack.gateway.url}", file=out)
    production_delays = stack.stack.parameters["RetryDelaysSeconds"]
    production_window = stack.stack.function("RetryFunction").sqs_batching_window
    print(
        f"  Retry delays        {DEMO_DELAYS} s and a {DEMO_BATCHING_WINDOW:g} s batching window, compressed for the demo "
        f"(production default: {production_delays} s and {production_window:g} s)",
        file=out,
    )


def _post(http: urllib3.PoolManager, url: str, name: str) -> tuple[int, dict]:
    event = json.loads((ROOT / "events" / f"webhook-{name}.json").read_text())
    headers = {k: v for k, v in event["headers"].items() if k in ("authorization", "content-type")}
    response = http.request("POST", url, body=(event["body"] or "").encode(), headers=headers)
    try:
        return response.status, json.loads(response.data)
    except ValueError:
        return response.status, {"raw": response.data.decode(errors="replace")}


def _describe(answer: dict) -> str:
    status = answer.get("status", "")
    detail = answer.get("reason") or answer.get("error") or ""
    if status == "skipped":
        detail = f"{detail} ({answer.get('detail')})"
    if status == "queued":
        detail = f"first retry in {answer.get('retry_in_seconds')} s ({detail})"
    return f"{status}: {detail}" if detail else status


def _wait(done: Callable[[], bool], deadline: float) -> bool:
    while time.monotonic() < deadline:
        if done():
            return True
        time.sleep(0.2)
    return False


def _retry_story(stack: LocalStack, calls: list) -> str:
    retries = len(calls) - 1  # the first call was the webhook's own try
    if calls and calls[-1].status == 201 and not calls[-1].fault:
        return f"{retries - 1} failed, retry {retries} delivered it to Braze"
    dead = stack.dead_letters()
    return f"all {retries} failed; parked in the dead-letter queue: {dead[-1].get('reason') if dead else '?'}"


def _summary(out: TextIO, stack: LocalStack) -> None:
    print("\nBraze state per user (from the emulator):", file=out)
    for key in sorted(stack.braze.users):
        user = stack.braze.users[key]
        groups = ", ".join(f"{gid[:8]}…={state}" for gid, state in sorted(user.subscription_groups.items())) or "-"
        print(f"  {key:28} email_subscribe={user.email_subscribe or '-':13} groups: {groups}", file=out)
    dead = stack.dead_letters()
    print(f"\nDead-letter queue: {len(dead)} message(s)", file=out)
    for message in dead:
        print(
            f"  reason={message.get('reason')!r} attempts={message.get('attempts')} "
            f"first_failure_at={message.get('first_failure_at')}",
            file=out,
        )
    print(f"Retry queue: {stack.queue_depth(stack.retry_queue_url)} message(s) left", file=out)
