"""The one percentile helper of the project's reports and benchmarks."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100, linear interpolation) of `values`; NaN when there are none."""
    arr = np.fromiter(values, dtype=np.float64)
    return float(np.percentile(arr, q)) if arr.size else math.nan


def summary(values: Iterable[float], digits: int = 1) -> dict[str, float] | None:
    """{"n", "p50", "p95", "max"} of `values` rounded to `digits`, or None when there are none."""
    arr = np.fromiter(values, dtype=np.float64)
    if not arr.size:
        return None
    p50, p95 = np.percentile(arr, [50, 95])
    return {"n": int(arr.size), "p50": round(float(p50), digits), "p95": round(float(p95), digits),
            "max": round(float(arr.max()), digits)}
