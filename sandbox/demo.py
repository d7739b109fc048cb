"""`make demo`: the product end to end on loopback, with the sample events from events/.

A scripted scenario: opt-in with subscription groups, opt-out, a skipped pending event, a skipped non-GDPR
event, a Braze outage that recovers through retries, one that ends in the dead-letter queue, and requests
refused for missing authentication or a malformed body. Then the flow back: a user unsubscribes in Braze, Braze
Currents writes its Avro files to the bucket, the unsubscribe reaches Didomi, and neither Didomi's notification
of it nor Currents' report of the connector's own updates comes back. It prints what happened to each event and
the final Braze state per user.
"""

from __future__ import annotations

import functools
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

import urllib3

from didomi_braze.domain.currents import event_type_of

from .lambda_runtime import function_output_to
from .stack import LocalStack
from .template import ROOT

DEMO_DELAYS = "1,1,2,2,3"
# The sample events are dated 2026-05-04; Braze's clock runs on the same day, so that the times Currents reports
# fall among them as they would in production (a change reaches Braze after Didomi made it).
SAMPLE_DAY = datetime(2026, 5, 4, 11, 0, tzinfo=UTC).timestamp()
# customer-7 as Didomi collected it (what step 1's user.created webhook carried), for the flow back's scene.
CUSTOMER_7 = {
    "purposes": [
        {"id": "newsletter", "enabled": True},
        {"id": "offers", "values": {"topics": {"value": "sales"}}},
        {"id": "product_updates", "values": {"frequency": {"value": "weekly"}}},
    ],
    "channels": [],
    "vendors": {},
}
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


def _parked(stack: LocalStack) -> bool:
    """Drained, and the event is in the dead-letter queue: the step waits for the outcome it tells, not only for
    the queue's approximate counters, which once read 0 on a loaded machine while a retry was still to come."""
    return _queue_drained(stack) and len(stack.dead_letters()) == 1


STEPS = (
    Step("user-created", "user.created: customer-7 opts in to the newsletter, sales offers and the weekly digest"),
    Step("user-updated", "user.updated: customer-42 withdraws newsletter consent (opt-out)"),
    Step("event-created-pending", "event.created, pending approval: customer-42 (Didomi has not applied it yet)"),
    Step("event-created-cpra", "event.created under CPRA: customer-42 (only GDPR is configured)"),
    Step(
        "event-updated-confirmed",
        "event.updated, pending -> confirmed: customer-9 opts in; Braze fails the webhook's try and the first retry",
        faults=("503",) * 4,  # two tries, each request sent twice
        expect_status=202,
        settles=_queue_drained,
    ),
    Step(
        "event-created",
        "event.created: customer-42 opts in again; Braze stays down through every retry",
        faults=("503",) * 12,  # six tries, each request sent twice
        expect_status=202,
        settles=_parked,
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
    braze_clock = functools.partial(_sample_day_clock, time.time())
    stack = LocalStack(
        retry_delays=DEMO_DELAYS, batching_window=DEMO_BATCHING_WINDOW, with_currents=True, braze_clock=braze_clock
    )
    with log_file, stack, function_output_to(log_file):
        stack.didomi.add_user("customer-7", CUSTOMER_7)
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
        if not _flow_back(out, stack, log_file.name, len(STEPS) + 1, deadline=started + timeout):
            failures += 1
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
    print(f"  Didomi emulator     {stack.didomi.url}", file=out)
    print(f"  Currents bucket     s3://{stack.stack.bucket_names['CurrentsBucket']}/currents/ (S3 on moto)", file=out)
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
    # A try that fails sends its request twice (a 5xx is sent again at once); the first try was the webhook's own.
    failed_tries = sum(1 for call in calls if call.fault) // 2
    if calls and calls[-1].status == 201 and not calls[-1].fault:
        return f"{failed_tries - 1} failed, retry {failed_tries} delivered it to Braze ({len(calls)} requests)"
    dead = stack.dead_letters()
    reason = dead[-1].get("reason") if dead else "?"
    return f"all {failed_tries - 1} failed ({len(calls)} requests); parked in the dead-letter queue: {reason}"


def _sample_day_clock(started: float) -> float:
    return SAMPLE_DAY + (time.time() - started)


def _flow_back(out: TextIO, stack: LocalStack, log_path: str, number: int, deadline: float) -> bool:
    """Braze → Didomi: an unsubscribe made in Braze reaches Didomi and does not come back."""
    print(
        f"\n{number}. Braze: customer-7 clicks the unsubscribe link of a newsletter (Subscription Page); "
        "Currents writes its files",
        file=out,
    )
    stack.braze.change_subscription("external_id:customer-7", email_subscribe="unsubscribed", source="Subscription Page")
    keys = stack.currents.flush()
    for key in keys:
        print(f"   s3://{stack.stack.bucket_names['CurrentsBucket']}/…/event_type={event_type_of(key)}/…avro", file=out)
    ingest_queue = stack.stack.queue_urls["IngestQueue"]
    ok = _wait(lambda: stack.didomi.events and stack.queue_depth(ingest_queue) == 0, deadline)
    written = [e for e in stack.didomi.events.values() if e.get("delegate", {}).get("id") == "didomi-braze-preference-sync"]
    user = stack.didomi.user("customer-7") or {"consents": {"purposes": []}}
    newsletter = next((p.get("enabled") for p in user["consents"]["purposes"] if p["id"] == "newsletter"), None)
    skipped = _skip_reasons(log_path)
    print(
        f"   IngestFunction: {len(written)} consent event written to Didomi; customer-7 newsletter is now "
        f"{str(newsletter).lower()} in Didomi (delegate: {written[0]['delegate']['name'] if written else '-'})",
        file=out,
    )
    print(
        f"   the other {sum(skipped.values())} Currents events were not written back: "
        + ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items())),
        file=out,
    )
    before = len(stack.braze.track_requests())
    answers = stack.deliver_didomi_notifications()
    for kind, status, answer in answers:
        print(f"   Didomi notifies its integrations: {kind} -> webhook answered {status} {_describe(answer)}", file=out)
    print(f"   Braze calls caused by Didomi's notifications: {len(stack.braze.track_requests()) - before}", file=out)
    ok = ok and newsletter is False and len(written) == 1 and bool(answers)
    ok = ok and all(a.get("reason") == "from_braze" for _, _, a in answers) and "echo" in skipped
    if not ok:
        print("   UNEXPECTED: the unsubscribe did not reach Didomi exactly once, or came back", file=out)
    return ok


def _skip_reasons(log_path: str) -> dict[str, int]:
    """Why the flow back did not write the other Currents events, from the functions' log lines."""
    reasons: dict[str, int] = {}
    with open(log_path) as log:
        for line in log:
            if '"braze change not written to Didomi"' in line:
                reason = json.loads(line).get("reason", "?")
                reasons[reason] = reasons.get(reason, 0) + 1
    return reasons


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
