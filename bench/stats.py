"""Small statistics for latency samples: nearest-rank percentiles and a bounded summary for JSON.

Nearest-rank (no interpolation) so a reported p99 is a latency that was actually observed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], p: float) -> float | None:
    """The nearest-rank `p`-th percentile (0 < p <= 100) of `values`; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: Sequence[float]) -> dict[str, float | int | None]:
    """Count, mean, p50, p90, p99, max of `values` (rounded to 3 decimals)."""
    if not values:
        return {"n": 0, "mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "mean": round(sum(ordered) / len(ordered), 3),
        "p50": _r(percentile(ordered, 50)),
        "p90": _r(percentile(ordered, 90)),
        "p99": _r(percentile(ordered, 99)),
        "max": _r(ordered[-1]),
    }


def downsample(values: Sequence[float], points: int = 1000) -> list[float]:
    """At most `points` evenly spaced order statistics: enough to redraw a CDF from the JSON."""
    ordered = sorted(values)
    if len(ordered) <= points:
        return [round(v, 3) for v in ordered]
    step = (len(ordered) - 1) / (points - 1)
    return [round(ordered[round(i * step)], 3) for i in range(points)]


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
