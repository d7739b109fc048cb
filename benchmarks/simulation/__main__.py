"""`make simulate`: the burst simulation at full scale (or scaled down), its figures printed and written to
benchmarks/RESULTS.md between the `<!-- simulation -->` marks (which `make bench` keeps)."""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

from .report import markdown, write_section
from .scenario import Scenario, simulate

RESULTS = Path(__file__).resolve().parent.parent / "RESULTS.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.simulation", description=__doc__)
    parser.add_argument("--scale", type=int, default=1, help="divide events, users and every limit by this (50: the CI run)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args(argv)
    # No cyclic collection in this one-shot process (Simulation.run says why); before and after the run too, where a
    # full collection would walk the run's millions of objects again.
    gc.disable()
    scenario = Scenario(seed=args.seed)
    if args.scale > 1:
        scenario = scenario.scaled(args.scale)
    print(f"simulating {scenario.events:,} webhooks in {scenario.seconds:.0f} s for {scenario.users:,} users …", flush=True)
    figures = simulate(scenario)
    text = markdown(figures)
    print(text)
    if not args.no_write:
        write_section(RESULTS, text)
        print(f"written to {RESULTS}")
    misses = figures.misses()
    for miss in misses:
        print(f"MISSED: {miss}", file=sys.stderr)
    # The run's millions of objects are left to the operating system: the interpreter's last collection would walk
    # and free them one by one on the way out.
    gc.freeze()
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
