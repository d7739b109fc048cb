"""`make bench`: cold start, warm per-event time, worker efficiency, memory and package size, each beside a
baseline measured in the same run (alternately where both are timed), against a moto server and the Braze
emulator on 127.0.0.1. Prints a table and writes benchmarks/RESULTS.md."""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import urllib3

from sandbox.lambda_runtime import LambdaContext, function_output_to
from sandbox.stack import LocalStack

from .events import fresh_event, retry_message
from .stats import Sample, describe

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Runtime:
    """What the fresh processes run: like Lambda, python3.13 and the `sam build` artifact (the package compiled to
    bytecode, see functions/Makefile) when both are at hand; else this interpreter and functions/ from source."""

    python: str
    code: Path
    label: str

    def env(self) -> dict:
        return {**os.environ, "PYTHONPATH": f"{self.code}{os.pathsep}{ROOT}"}


RUNTIME = Runtime(sys.executable, ROOT / "functions", f"Python {platform.python_version()}, functions/ from source")
BENCH_VENV = ROOT / ".venv-bench"  # python3.13 with boto3, as the Lambda runtime provides it (make bench creates it)


def child_env() -> dict:
    return RUNTIME.env()


# -- 1. cold start ---------------------------------------------------------------------------------------------
def _child(kind: str, event: dict, tool: list[str] | None = None) -> tuple[dict, float, float, str]:
    """One fresh process: (what it measured inside, wall seconds, CPU seconds of the whole process, stderr)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(
        [*(tool or []), RUNTIME.python, "-m", "benchmarks.cold_child", kind, json.dumps(event)],
        cwd=ROOT,
        env={**child_env(), "PYTHONHASHSEED": "0"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = process.communicate()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the child has been waited for: its CPU is in here
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if process.returncode:
        raise RuntimeError(f"cold start child {kind} failed: {err[-2000:]}")
    measured = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    if measured and measured["status"] != 200:
        raise RuntimeError(f"cold start {kind} answered {measured['status']}")
    return measured, wall, cpu, err


def cold_start(runs: int) -> dict:
    """Wall and CPU time, in-process and whole-process, alternately so that both see the same machine load."""
    samples: dict[str, dict[str, list[float]]] = {k: defaultdict(list) for k in ("handler", "baseline")}
    for _ in range(runs):
        for kind in ("handler", "baseline"):
            measured, wall, cpu, _ = _child(kind, fresh_event(), tool=[])
            figures = samples[kind]
            figures["process"].append(wall)
            figures["process_cpu"].append(cpu)
            for name in ("import", "first_event", "import_cpu", "first_event_cpu"):
                figures[name].append(measured[name])
            figures["total"].append(measured["import"] + measured["first_event"])
            figures["total_cpu"].append(measured["import_cpu"] + measured["first_event_cpu"])
    return {kind: {name: Sample(tuple(values)) for name, values in figures.items()} for kind, figures in samples.items()}


def cold_start_instructions() -> dict | str:
    """Instructions executed (valgrind's callgrind counts them: the same on a busy or an idle machine), whole process,
    and without the interpreter's own start and exit (a process that only starts and exits, subtracted)."""
    if shutil.which("valgrind") is None:
        return "skipped: valgrind is not installed"
    counts = {}
    for kind in ("noop", "handler", "baseline"):
        tool = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
        _, _, _, err = _child(kind, fresh_event(), tool=tool)
        match = re.search(r"Collected : (\d+)", err)
        if not match:
            return f"skipped: callgrind printed no count for {kind}"
        counts[kind] = int(match.group(1))
    return counts


def import_breakdown(top: int = 8) -> list[tuple[str, float]]:
    """Self import time per top-level package when the webhook handler is imported (`-X importtime`)."""
    err = subprocess.run(
        [RUNTIME.python, "-X", "importtime", "-c", "import didomi_braze.handlers.webhook"],
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
    """benchmarks/warm_child.py in a fresh process of the runtime (a warm container): the handler against the same
    calls made bare, alternately. Braze calls are counted here, at the emulator."""
    before = len(stack.braze.track_requests())
    out = subprocess.run(
        [RUNTIME.python, "-m", "benchmarks.warm_child", str(events)],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    total = len(stack.braze.track_requests()) - before
    handler_calls = total - (events + result["warmup"]) * 2 + events  # all calls, less the baseline's and warm-up's
    samples = {name: Sample(tuple(values)) for name, values in result["samples"].items()}
    return {**samples, "calls": {**result["calls"], "braze users/track": handler_calls / events}}


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
                [RUNTIME.python, "-m", "benchmarks.memory_child", kind, str(events)],
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


def build(build_dir: str) -> dict | str:
    """`sam build` into build_dir; the artifacts' sizes, or why there are none."""
    sam = ROOT / ".venv-sam" / "bin" / "sam"
    python313 = _python313()
    if not sam.exists():
        return "skipped: the SAM CLI virtualenv (.venv-sam) is missing; run make lint first"
    if python313 is None:
        return "skipped: python3.13 is not on PATH (sam build needs the runtime's Python)"
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
    instructions = results["instructions"]
    h, b = cold["handler"], cold["baseline"]
    ms = lambda sample: describe(sample, "ms", 1000)  # noqa: E731
    ours_rate, base_rate = work["events"] / work["seconds"], work["events"] / work["baseline_seconds"]
    lines = [
        "# Benchmark results",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `make bench` on {machine()};",
        f"the fresh processes ran {results['runtime']}.",
        "A moto server and the Braze emulator run on 127.0.0.1; every figure sits beside its baseline, measured",
        "alternately in the same run. Medians, with min and max; the machine is shared, so compare ratios, not seconds.",
        "Instruction counts (valgrind's callgrind) do not depend on the machine's load: they are the cold-start judge.",
        "",
        "| figure | ours | baseline | ratio | target |",
        "| --- | --- | --- | --- | --- |",
    ]
    if isinstance(instructions, dict):
        noop = instructions["noop"]
        lines += [
            _row(
                "cold start, instructions, whole process (interpreter start and exit included)",
                f"{instructions['handler'] / 1e6:,.0f} M",
                f"{instructions['baseline'] / 1e6:,.0f} M",
                instructions["handler"] / instructions["baseline"],
                "≤ 1.1×",
            ),
            _row(
                "cold start, instructions, in-process (less a process that only starts and exits)",
                f"{(instructions['handler'] - noop) / 1e6:,.0f} M",
                f"{(instructions['baseline'] - noop) / 1e6:,.0f} M",
                (instructions["handler"] - noop) / (instructions["baseline"] - noop),
                "≤ 1.1×",
            ),
        ]
    else:
        lines.append(_row("cold start, instructions", instructions, "", None, "≤ 1.1×"))
    lines += [
        _row(
            "cold start, CPU time, whole process",
            ms(h["process_cpu"]),
            ms(b["process_cpu"]),
            h["process_cpu"].median / b["process_cpu"].median,
            "≤ 1.1×",
        ),
        _row(
            "cold start, CPU time, in-process (import + first event)",
            ms(h["total_cpu"]),
            ms(b["total_cpu"]),
            h["total_cpu"].median / b["total_cpu"].median,
            "≤ 1.1×",
        ),
        _row(
            "cold start, wall time, whole process",
            ms(h["process"]),
            ms(b["process"]),
            h["process"].median / b["process"].median,
            "report",
        ),
        _row(
            "cold start, wall time, in-process", ms(h["total"]), ms(b["total"]), h["total"].median / b["total"].median, "report"
        ),
        _row(
            "… of which init, CPU (imports; ours also creates its SDK clients here)",
            ms(h["import_cpu"]),
            ms(b["import_cpu"]),
            h["import_cpu"].median / b["import_cpu"].median,
            "",
        ),
        _row(
            "… of which first event, CPU",
            ms(h["first_event_cpu"]),
            ms(b["first_event_cpu"]),
            h["first_event_cpu"].median / b["first_event_cpu"].median,
            "",
        ),
        _row(
            "warm event, CPU of the handler's thread, vs the same calls made bare",
            ms(warm_["handler_cpu"]),
            ms(warm_["same_cpu"]),
            warm_["handler_cpu"].median / warm_["same_cpu"].median,
            "≤ 1.2×",
        ),
        _row(
            "warm event, wall time, vs the same calls made bare",
            ms(warm_["handler"]),
            ms(warm_["same"]),
            warm_["handler"].median / warm_["same"].median,
            "report",
        ),
        _row(
            "warm event, p99 wall time, vs the same calls made bare",
            f"{warm_['handler'].percentile(99) * 1000:.2f} ms",
            f"{warm_['same'].percentile(99) * 1000:.2f} ms",
            warm_["handler"].percentile(99) / warm_["same"].percentile(99),
            "report",
        ),
        *[
            _row(
                f"calls per delivered event: {name}",
                f"{per_event:.3f}",
                "",
                None,
                "1 state-table round trip" if "dynamodb" in name else "report",
            )
            for name, per_event in warm_["calls"].items()
        ],
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
        "Baselines: cold start, a fresh process doing the same work (both secrets, the state-table claim, one Braze",
        "call) with only boto3 and urllib3; warm event, the same state-table claim and the pooled urllib3 POST of the",
        "same Braze body; worker, one Braze call per event with a pooled urllib3 client (no SQS, no DynamoDB); memory, a",
        "process that imports boto3 and urllib3, reads the two secrets and posts the same number of events.",
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


KEPT_SECTIONS = ("simulation",)  # written by other commands (`make simulate`): a benchmark run leaves them as they are


def kept_sections(previous: str) -> str:
    """The marked sections (`<!-- name -->` … `<!-- /name -->`) of the previous RESULTS.md that other commands own."""
    kept = []
    for name in KEPT_SECTIONS:
        start, end = previous.find(f"<!-- {name} -->"), previous.find(f"<!-- /{name} -->")
        if 0 <= start < end:
            kept.append(previous[start : end + len(f"<!-- /{name} -->")])
    return "".join(f"\n{section}\n" for section in kept)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts, to check that the benchmarks run")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args(argv)
    cold_runs, warm_events, worker_events, args.memory_events = (2, 20, 120, 50) if args.quick else (9, 400, 10_000, 1_000)

    results: dict = {}
    build_dir = tempfile.TemporaryDirectory()
    print("sam build …", flush=True)
    results["package"] = build(build_dir.name) if not args.quick else "skipped in --quick"
    bench_python = BENCH_VENV / "bin" / "python"
    if isinstance(results["package"], dict) and bench_python.exists():
        global RUNTIME
        RUNTIME = Runtime(str(bench_python), Path(build_dir.name) / "WebhookFunction", "Python 3.13, the sam build artifact")
    results["runtime"] = RUNTIME.label
    with build_dir, LocalStack(with_gateway=False, with_poller=False) as stack:
        print(f"cold start ({cold_runs} runs each) …", flush=True)
        results["cold"] = cold_start(cold_runs)
        print("cold start instructions (callgrind, a few minutes) …", flush=True)
        results["instructions"] = cold_start_instructions() if not args.quick else "skipped in --quick"
        results["imports"] = import_breakdown()
        print(f"warm events ({warm_events}) …", flush=True)
        results["warm"] = warm(stack, warm_events)
        print(f"worker ({worker_events:,} queued events) …", flush=True)
        results["worker"] = worker(stack, worker_events)
        print(f"memory ({args.memory_events:,} events per function) …", flush=True)
        results["memory"] = memory(args.memory_events)
    text = report(results, args.memory_events)
    print(text)
    if not args.no_write:
        results_md = ROOT / "benchmarks" / "RESULTS.md"
        results_md.write_text(text + kept_sections(results_md.read_text() if results_md.exists() else ""))
    return 0
