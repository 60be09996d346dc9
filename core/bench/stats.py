"""Percentile summaries for benchmark timings (no numpy needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ("percentile", "summarize")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation, as numpy's default; NaN if empty."""
    if not values:
        return math.nan
    data = sorted(values)
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def summarize(values: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """mean, p50, p90, p99 and max of ``values``, each multiplied by ``scale`` (e.g. 1000 for ms)."""
    if not values:
        return {k: math.nan for k in ("mean", "p50", "p90", "p99", "max")}
    return {
        "mean": sum(values) / len(values) * scale,
        "p50": percentile(values, 50) * scale,
        "p90": percentile(values, 90) * scale,
        "p99": percentile(values, 99) * scale,
        "max": max(values) * scale,
    }
