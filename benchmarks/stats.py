"""Summaries of repeated measurements."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    def percentile(self, p: float) -> float:
        ordered = sorted(self.values)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def describe(sample: Sample, unit: str, scale: float = 1.0) -> str:
    spread = f"min {sample.low * scale:.1f}, max {sample.high * scale:.1f}, n={len(sample.values)}"
    return f"{sample.median * scale:.1f} {unit} ({spread})"
