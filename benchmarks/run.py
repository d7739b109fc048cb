"""`make bench`: cold start, warm per-event time, worker efficiency, memory and package size, each beside a
baseline measured in the same run (alternately where both are timed), against a moto server and the Braze
emulator on 127.0.0.1. Prints a table and writes benchmarks/RESULTS.md."""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import urllib3

from sandbox.lambda_runtime import LambdaContext, function_output_to
from sandbox.stack import LocalStack

from .events import fresh_event, retry_message
from .stats import Sample, describe

ROOT = Path(__file__).resolve().parent.parent


def child_env() -> dict:
    return {**os.environ, "PYTHONPATH": f"{ROOT / 'functions'}{os.pathsep}{ROOT}"}


# -- 1. cold start ---------------------------------------------------------------------------------------------
def cold_start(runs: int) -> dict:
    wall: dict[str, list[float]] = defaultdict(list)
    inner: dict[str, list[dict]] = defaultdict(list)
    for _ in range(runs):
        for kind in ("handler", "baseline"):  # alternately, so both see the same machine load
            started = time.perf_counter()
            out = (
                subprocess.run(
                    [sys.executable, "-m", "benchmarks.cold_child", kind, json.dumps(fresh_event())],
                    cwd=ROOT,
                    env=child_env(),
                    capture_output=True,
                    text=True,
                    check=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            wall[kind].append(time.perf_counter() - started)
            measured = json.loads(out)
            if measured["status"] != 200:
                raise RuntimeError(f"cold start {kind} answered {measured['status']}")
            inner[kind].append(measured)
    result = {}
    for kind in ("handler", "baseline"):
        result[kind] = {
            "process": Sample(tuple(wall[kind])),
            "import": Sample(tuple(m["import"] for m in inner[kind])),
            "first_event": Sample(tuple(m["first_event"] for m in inner[kind])),
            "total": Sample(tuple(m["import"] + m["first_event"] for m in inner[kind])),
        }
    return result


def import_breakdown(top: int = 8) -> list[tuple[str, float]]:
    """Self import time per top-level package when the webhook handler is imported (`-X importtime`)."""
    err = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import didomi_braze.handlers.webhook"],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    by_package: dict[str, float] = defaultdict(float)
    for line in err.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|(\s*)(\S+)", line)
        if match:
            by_package[match.group(3).split(".")[0]] += int(match.group(1)) / 1e6
    return sorted(by_package.items(), key=lambda kv: -kv[1])[:top]


# -- 2. warm per-event time ------------------------------------------------------------------------------------
def warm(stack: LocalStack, events: int) -> dict:
    """Alternately: the handler serving a fresh event; a pooled POST of the same Braze body; and that POST plus the
    two state-table writes the handler makes (the same work without the framework or our code)."""
    from didomi_braze.handlers.webhook import handler

    http = urllib3.PoolManager(maxsize=4)
    table = stack.stack.table_names["StateTable"]
    braze_url = stack.braze.url + "/users/track"
    body = json.dumps({"attributes": [{"external_id": "bench", "_update_existing_only": True, "email_subscribe": "opted_in"}]})
    headers = {"Authorization": f"Bearer {stack.braze.api_key}", "Content-Type": "application/json"}
    context = LambdaContext("WebhookFunction", 15)

    from didomi_braze.adapters.state_table import StateTable
    from didomi_braze.domain.ordering import Position, StoredInput
    from didomi_braze.domain.ports import NotNewerThan

    state = StateTable(stack.dynamodb, table)

    position = Position("2026-05-04T12:00:00.000000Z", None, "e")
    inputs = {"consents_purposes_newsletter_enabled": StoredInput(True, position)}

    def same_work() -> None:
        key, now = uuid.uuid4().hex, time.time()
        state.claim(key, inputs, "baseline", "e", now, now + 10, NotNewerThan())
        http.request("POST", braze_url, body=body.encode(), headers=headers)

    samples: dict[str, list[float]] = defaultdict(list)
    with open(os.devnull, "w") as sink, function_output_to(sink):
        for i in range(events + 20):
            event = fresh_event()
            timings = {}
            started = time.perf_counter()
            status = handler(event, context)["statusCode"]
            timings["handler"] = time.perf_counter() - started
            started = time.perf_counter()
            http.request("POST", braze_url, body=body.encode(), headers=headers)
            timings["post"] = time.perf_counter() - started
            started = time.perf_counter()
            same_work()
            timings["same_work"] = time.perf_counter() - started
            if status != 200:
                raise RuntimeError(f"warm handler answered {status}")
            if i >= 20:  # the first events warm the pools and caches
                for kind, seconds in timings.items():
                    samples[kind].append(seconds)
    return {kind: Sample(tuple(values)) for kind, values in samples.items()}


# -- 3. worker efficiency --------------------------------------------------------------------------------------
def worker(stack: LocalStack, events: int) -> dict:
    """RetryFunction draining a backlog, batch by batch as Lambda's SQS event source hands it over (100 records per
    invocation, the template's BatchSize). Receiving and deleting are the event source's work, not the function's,
    and moto's SQS slows down quadratically with a 10,000-message queue, so the records are handed over directly."""
    from didomi_braze.handlers.retry import handler

    run = uuid.uuid4().hex[:8]
    bodies = [retry_message(f"w-{run}-{i}") for i in range(events)]
    batch_size = stack.stack.function("RetryFunction").sqs_batch_size
    calls_before = len(stack.braze.track_requests())
    failures = invocations = 0
    started = time.perf_counter()
    with open(os.devnull, "w") as sink, function_output_to(sink):
        for start in range(0, events, batch_size):
            records = [
                {"messageId": str(i), "receiptHandle": str(i), "body": body, "attributes": {"ApproximateReceiveCount": "1"}}
                for i, body in enumerate(bodies[start : start + batch_size], start=start)
            ]
            failures += len(handler({"Records": records}, LambdaContext("RetryFunction", 60))["batchItemFailures"])
            invocations += 1
    ours = time.perf_counter() - started
    calls = len(stack.braze.track_requests()) - calls_before
    if failures:
        raise RuntimeError(f"{failures} retries failed in the worker benchmark")

    http = urllib3.PoolManager(maxsize=4)
    headers = {"Authorization": f"Bearer {stack.braze.api_key}", "Content-Type": "application/json"}
    started = time.perf_counter()
    for body in bodies:
        user = json.loads(body)["identity"]["value"]
        obj = {"external_id": user, "_update_existing_only": True, "email_subscribe": "opted_in"}
        http.request("POST", stack.braze.url + "/users/track", body=json.dumps({"attributes": [obj]}).encode(), headers=headers)
    baseline = time.perf_counter() - started
    return {
        "events": events,
        "handed": events,
        "calls": calls,
        "invocations": invocations,
        "seconds": ours,
        "baseline_calls": events,
        "baseline_seconds": baseline,
    }


# -- 4. memory ---------------------------------------------------------------------------------------------------
def memory(events: int) -> dict:
    out = {}
    for kind in ("webhook", "retry", "baseline"):
        line = (
            subprocess.run(
                [sys.executable, "-m", "benchmarks.memory_child", kind, str(events)],
                cwd=ROOT,
                env=child_env(),
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        out[kind] = json.loads(line)["max_rss_mb"]
    return out


# -- 5. package size ---------------------------------------------------------------------------------------------
def _python313() -> str | None:
    """A Python 3.13 that runs (a pyenv shim for a version that is not selected does not)."""
    candidates = [shutil.which("python3.13"), *map(str, sorted(Path.home().glob(".pyenv/versions/3.13*/bin/python3.13")))]
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "-c", "import sys"], capture_output=True).returncode == 0:
            return candidate
    return None


def package_sizes() -> dict | str:
    sam = ROOT / ".venv-sam" / "bin" / "sam"
    python313 = _python313()
    if not sam.exists():
        return "skipped: the SAM CLI virtualenv (.venv-sam) is missing; run make lint first"
    if python313 is None:
        return "skipped: python3.13 is not on PATH (sam build needs the runtime's Python)"
    with tempfile.TemporaryDirectory() as build_dir:
        env = {**os.environ, "PATH": f"{Path(python313).parent}{os.pathsep}{os.environ['PATH']}", "SAM_CLI_TELEMETRY": "0"}
        subprocess.run(
            [str(sam), "build", "--template", str(ROOT / "template.yaml"), "--build-dir", build_dir],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        sizes = {}
        for function in ("WebhookFunction", "RetryFunction"):
            folder = Path(build_dir) / function
            unzipped = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            archive = Path(build_dir) / f"{function}.zip"
            with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
                for f in folder.rglob("*"):
                    if f.is_file():
                        zf.write(f, f.relative_to(folder))
            sizes[function] = {"unzipped_mb": unzipped / 1e6, "zipped_mb": archive.stat().st_size / 1e6}
        return sizes


# -- report ------------------------------------------------------------------------------------------------------
def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    if Path("/proc/cpuinfo").exists():
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            cpu,
        )
    return f"{platform.machine()}, {os.cpu_count()} cores, {cpu}; Python {platform.python_version()}; {platform.system()}"


def _row(figure: str, ours: str, baseline: str, ratio: float | None, target: str) -> str:
    return f"| {figure} | {ours} | {baseline} | {f'{ratio:.2f}×' if ratio is not None else ''} | {target} |"


def report(results: dict, memory_events: int) -> str:
    cold, warm_, work, mem, package, imports = (results[k] for k in ("cold", "warm", "worker", "memory", "package", "imports"))
    h, b = cold["handler"], cold["baseline"]
    ms = lambda sample: describe(sample, "ms", 1000)  # noqa: E731
    ours_rate, base_rate = work["events"] / work["seconds"], work["events"] / work["baseline_seconds"]
    lines = [
        "# Benchmark results",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `make bench` on {machine()}.",
        "A moto server and the Braze emulator run on 127.0.0.1; every figure sits beside its baseline, measured",
        "alternately in the same run. Medians, with min and max; the machine is shared, so compare ratios, not seconds.",
        "",
        "| figure | ours | baseline | ratio | target |",
        "| --- | --- | --- | --- | --- |",
        _row(
            "cold start: import + first event in a fresh process (timed inside it)",
            ms(h["total"]),
            ms(b["total"]),
            h["total"].median / b["total"].median,
            "≤ 1.25×",
        ),
        _row(
            "… the same, whole-process wall time (interpreter start and exit included)",
            ms(h["process"]),
            ms(b["process"]),
            h["process"].median / b["process"].median,
            "report",
        ),
        _row(
            "… of which init (imports; ours also creates its SDK clients here)",
            ms(h["import"]),
            ms(b["import"]),
            h["import"].median / b["import"].median,
            "",
        ),
        _row(
            "… of which first event",
            ms(h["first_event"]),
            ms(b["first_event"]),
            h["first_event"].median / b["first_event"].median,
            "",
        ),
        _row(
            "warm event, median, vs one pooled POST",
            f"{warm_['handler'].median * 1000:.2f} ms",
            f"{warm_['post'].median * 1000:.2f} ms",
            warm_["handler"].median / warm_["post"].median,
            "≤ 1.5×",
        ),
        _row(
            "warm event, p99, vs one pooled POST",
            f"{warm_['handler'].percentile(99) * 1000:.2f} ms",
            f"{warm_['post'].percentile(99) * 1000:.2f} ms",
            warm_["handler"].percentile(99) / warm_["post"].percentile(99),
            "report",
        ),
        _row(
            "warm event, median, vs the POST + the two state-table writes",
            f"{warm_['handler'].median * 1000:.2f} ms",
            f"{warm_['same_work'].median * 1000:.2f} ms",
            warm_["handler"].median / warm_["same_work"].median,
            "report",
        ),
        _row(
            f"worker: Braze calls for {work['events']:,} queued events",
            f"{work['calls']:,}",
            f"{work['baseline_calls']:,} (one per event)",
            work["calls"] / work["baseline_calls"],
            f"≤ {-(-work['events'] // 50) * 1.02:.0f} calls",
        ),
        _row("worker: events per second", f"{ours_rate:.0f}", f"{base_rate:.0f}", ours_rate / base_rate, "report"),
        _row(
            f"peak RSS after {memory_events:,} events: WebhookFunction",
            f"{mem['webhook']:.1f} MB",
            f"{mem['baseline']:.1f} MB",
            mem["webhook"] / mem["baseline"],
            "≤ 100 MB",
        ),
        _row(
            f"peak RSS after {memory_events:,} events: RetryFunction",
            f"{mem['retry']:.1f} MB",
            f"{mem['baseline']:.1f} MB",
            mem["retry"] / mem["baseline"],
            "≤ 100 MB",
        ),
    ]
    if isinstance(package, dict):
        for function, size in package.items():
            lines.append(
                _row(
                    f"`sam build` artifact: {function}",
                    f"{size['unzipped_mb']:.1f} MB unzipped, {size['zipped_mb']:.2f} MB zipped",
                    "",
                    None,
                    "report",
                )
            )
    else:
        lines.append(_row("`sam build` artifacts", package, "", None, "report"))
    lines += [
        "",
        "Baselines: cold start, a fresh process doing the same work (both secrets, the two state-table writes, one",
        "Braze call) with only boto3 and urllib3; warm event, one pooled urllib3 POST of the same Braze body, and that",
        "POST plus the two DynamoDB writes the ordering guard makes per event; worker, one Braze call per event with a",
        "pooled urllib3 client (no SQS, no DynamoDB); memory, a process that imports boto3 and urllib3, reads the two",
        "secrets and posts the same number of events.",
        "",
        f"Worker: {work['handed']:,} messages in {work['invocations']} RetryFunction invocations (batch size from the template).",
        "",
        "Self import time of the webhook handler by top-level package (`-X importtime`):",
        "",
        "| package | ms |",
        "| --- | --- |",
        *[f"| {name} | {seconds * 1000:.1f} |" for name, seconds in imports],
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts, to check that the benchmarks run")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args(argv)
    cold_runs, warm_events, worker_events, args.memory_events = (2, 20, 120, 50) if args.quick else (9, 400, 10_000, 1_000)

    results: dict = {}
    with LocalStack(with_gateway=False, with_poller=False) as stack:
        print(f"cold start ({cold_runs} runs each) …", flush=True)
        results["cold"] = cold_start(cold_runs)
        results["imports"] = import_breakdown()
        print(f"warm events ({warm_events}) …", flush=True)
        results["warm"] = warm(stack, warm_events)
        print(f"worker ({worker_events:,} queued events) …", flush=True)
        results["worker"] = worker(stack, worker_events)
        print(f"memory ({args.memory_events:,} events per function) …", flush=True)
        results["memory"] = memory(args.memory_events)
    print("package size (sam build) …", flush=True)
    results["package"] = package_sizes() if not args.quick else "skipped in --quick"
    text = report(results, args.memory_events)
    print(text)
    if not args.no_write:
        (ROOT / "benchmarks" / "RESULTS.md").write_text(text)
    return 0
