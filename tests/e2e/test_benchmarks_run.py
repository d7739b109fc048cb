"""The benchmark command runs (with small counts); its figures are read from its output, never asserted on."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
def test_the_benchmarks_run_and_print_every_figure():
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'functions'}{os.pathsep}{ROOT}"}
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--no-write"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for figure in (
        "cold start",
        "warm event, CPU",
        "calls per delivered event: dynamodb",
        "worker: Braze calls",
        "peak RSS",
        "sam build",
    ):
        assert figure in result.stdout


def test_a_benchmark_run_keeps_the_simulation_s_section_of_results_md():
    from benchmarks.run import kept_sections

    section = "<!-- simulation -->\n## Simulation\n1,000,000 events\n<!-- /simulation -->"
    assert kept_sections(f"# Benchmark results\n| old | table |\n{section}\n") == f"\n{section}\n"
    assert kept_sections("# Benchmark results\n| old | table |\n") == ""
    assert kept_sections("<!-- /simulation --> <!-- simulation -->") == ""  # markers out of order: nothing kept
