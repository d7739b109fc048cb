"""The simulation's figures as the `## Simulation` section of benchmarks/RESULTS.md."""

from __future__ import annotations

from pathlib import Path

from .scenario import Figures

MARK = "simulation"  # benchmarks/run.py KEPT_SECTIONS: `make bench` keeps this section as it is


def markdown(f: Figures) -> str:
    s, settings = f.scenario, f.settings
    events = s.events
    dead = sum(f.dead_lettered.values())
    dead_text = ", ".join(f"{v:,} {k}" for k, v in sorted(f.dead_lettered.items())) or "none"
    others = round(s.braze_limit * s.braze_others_share)
    status = ", ".join(f"{code}: {n:,}" for code, n in f.braze_by_status.items())
    answers = ", ".join(f"{code}: {n:,}" for code, n in f.webhook_answers.items())
    applied_after = "not everything was applied" if f.all_applied_after is None else f"{f.all_applied_after:.1f} s"
    misses = f.misses()
    lines = [
        f"<!-- {MARK} -->",
        "## Simulation",
        "",
        '`make simulate` (README "Burst simulation"): the real webhook and worker services on models of Didomi, API',
        "Gateway, Lambda, SQS, DynamoDB and Braze, on a virtual clock.",
        "",
        f"Scenario: {events:,} webhooks in {s.seconds:.0f} s for {s.users:,} users ({events / s.seconds:,.0f}/s); Braze "
        f"`/users/track` limit {s.braze_limit:,} requests per {s.braze_window:.0f} s, {others:,} of each window spent by other "
        f"integrations, {s.braze_5xx:.0%} random 5xx; Lambda account concurrency {s.account_concurrency:,}, "
        f"RetryMaximumConcurrency {settings['retry_concurrency']}, batch {settings['batch_size']} / "
        f"{settings['batching_window']:.0f} s window, {settings['objects_per_request']} objects per request; seed {s.seed}.",
        "",
        "| figure | value | target |",
        "| --- | --- | --- |",
        f"| applied | {f.applied:,} of {events:,} | all |",
        f"| dead-lettered | {dead:,} ({dead_text}) | 0 for rate limiting |",
        f"| lost | {f.lost:,} (never finished: {f.unfinished:,}) | 0 |",
        f"| Braze requests (minimum: events ÷ objects per request) | {f.braze_requests:,} ({f.braze_minimum:,}) | |",
        f"| Braze requests answered 429 | {f.answered_429:,} ({_share(f.answered_429, f.braze_requests)}) | at most 1% |",
        f"| Braze answers | {status} | |",
        f"| last webhook → everything applied | {applied_after} | at most 60 s |",
        f"| delay webhook → Braze, p50 / p99 / max | {f.delay_p50:.2f} s / {f.delay_p99:.2f} s / {f.delay_max:.1f} s | |",
        f"| peak Lambda concurrency (both functions) | {f.peak_concurrency:,} | |",
        f"| webhook answers | {answers} | |",
        f"| Lambda throttles / API Gateway throttles / Didomi redeliveries | {f.lambda_throttled:,} / {f.api_throttled:,} / "
        f"{f.didomi_redeliveries:,} | |",
        f"| events handed to the batched worker | {f.handed_off:,} | |",
        f"| retry-queue messages / peak depth / worker invocations | {f.retry_messages:,} / {f.peak_queue_depth:,} / "
        f"{f.worker_invocations:,} | |",
        f"| invocations that crashed (webhook / worker) | {f.webhook_crashes} / {f.worker_crashes} | 0 |",
        f"| wrong final Braze states | {f.wrong_states:,} of {s.users:,} users | 0 |",
        f"| virtual time / wall time / peak RSS | {f.virtual_seconds:,.0f} s / {f.wall_seconds:,.0f} s / "
        f"{f.peak_rss_mb:,.0f} MB | |",
        "",
        "Targets: " + ("all met." if not misses else "missed: " + "; ".join(misses) + "."),
    ]
    if f.wrong_examples:
        lines += ["", "Wrong final states, first examples:", ""]
        lines += [f"- `{e['user']}`: Didomi calls for `{e['want']}`, Braze has `{e['braze']}`" for e in f.wrong_examples]
    lines.append(f"<!-- /{MARK} -->")
    return "\n".join(lines) + "\n"


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.2%}" if whole else "-"


def write_section(path: Path, section: str) -> None:
    """Replace the marked section of RESULTS.md (or add it at the end), leaving the rest as it is."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start, end = text.find(f"<!-- {MARK} -->"), text.find(f"<!-- /{MARK} -->")
    if 0 <= start < end:
        text = text[:start] + section.rstrip("\n") + text[end + len(f"<!-- /{MARK} -->") :]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text if text.endswith("\n") else text + "\n")
