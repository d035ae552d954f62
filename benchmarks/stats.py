"""The statistics every benchmark reports, computed one way."""

from __future__ import annotations

import math
from collections.abc import Sequence


def r3(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (p95 of 400 values is the 380th smallest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]
