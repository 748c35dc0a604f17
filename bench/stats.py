"""Numbers from a load test: percentiles, histograms, rates over time (pure, no I/O).

Samples are kept whole (an ``array('d')`` of seconds per kind), not in an approximate sketch:
a bounded run of a few minutes produces at most a few million samples, and exact
percentiles are what an operator compares between two runs.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of already sorted values, linearly interpolated.

    Interpolation (numpy's default) rather than nearest rank, so p99 of a small run does not
    jump between samples as the run length changes by one.
    """
    if not ordered:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0-100")
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    frac = pos - lo
    a, b = ordered[lo], ordered[hi]
    value = a + (b - a) * frac
    return min(max(value, a), b)  # guard float rounding: stay between the neighbours


@dataclass(frozen=True, slots=True)
class Summary:
    count: int
    min: float
    mean: float
    p50: float
    p90: float
    p99: float
    max: float

    def scaled(self, factor: float) -> dict[str, float]:
        """As a dict with every value but the count multiplied (seconds → ms)."""
        out = {k: v * factor for k, v in asdict(self).items()}
        out["count"] = self.count
        return out


def summarize(values: Iterable[float]) -> Summary | None:
    ordered = sorted(values)
    if not ordered:
        return None
    return Summary(
        count=len(ordered),
        min=ordered[0],
        mean=math.fsum(ordered) / len(ordered),
        p50=percentile(ordered, 50),
        p90=percentile(ordered, 90),
        p99=percentile(ordered, 99),
        max=ordered[-1],
    )


def rate(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``a / b``, or None when either side is missing or the divisor is zero."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


@dataclass(frozen=True, slots=True)
class Histogram:
    edges: tuple[float, ...]  # len(counts) + 1 bin edges, ascending
    counts: tuple[int, ...]

    @property
    def total(self) -> int:
        return sum(self.counts)


def log_edges(lo: float, hi: float, bins: int) -> tuple[float, ...]:
    """Logarithmic bin edges from ``lo`` to ``hi``: latencies span decades, not a range."""
    if bins < 1:
        raise ValueError("need at least one bin")
    lo = max(lo, 1e-9)
    hi = max(hi, lo * 1.000001)
    step = (math.log(hi) - math.log(lo)) / bins
    edges = [math.exp(math.log(lo) + k * step) for k in range(bins + 1)]
    edges[0], edges[-1] = lo, hi
    return tuple(edges)


def histogram(values: Iterable[float], edges: Sequence[float]) -> Histogram:
    """Count values per bin; values outside the edges go to the first or last bin."""
    if len(edges) < 2:
        raise ValueError("need at least two edges")
    counts = [0] * (len(edges) - 1)
    inner = list(edges[1:-1])
    for v in values:
        counts[_bisect_right(inner, v)] += 1
    return Histogram(tuple(edges), tuple(counts))


def _bisect_right(edges: list[float], value: float) -> int:
    lo, hi = 0, len(edges)
    while lo < hi:
        mid = (lo + hi) // 2
        if value < edges[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


def common_edges(groups: Iterable[Sequence[float]], bins: int = 40) -> tuple[float, ...] | None:
    """Log bin edges spanning every group's values, so two targets' histograms line up."""
    lows, highs = [], []
    for values in groups:
        if len(values):
            lows.append(min(values))
            highs.append(max(values))
    if not lows:
        return None
    lo, hi = min(lows), max(highs)
    return log_edges(lo, hi * 1.0001 if hi > lo else lo * 1.5, bins)


def timeline(times: Iterable[float], width: float, end: float) -> list[int]:
    """Events per bucket of ``width`` seconds from 0 to ``end``: throughput over time."""
    if width <= 0:
        raise ValueError("bucket width must be positive")
    buckets = [0] * max(1, math.ceil(end / width))
    for t in times:
        index = min(max(int(t // width), 0), len(buckets) - 1)
        buckets[index] += 1
    return buckets


def weighted_timeline(
    times: Sequence[float], weights: Sequence[float], width: float, end: float
) -> list[float]:
    """Like :func:`timeline` but summing weights (bytes fetched) instead of counting."""
    if width <= 0:
        raise ValueError("bucket width must be positive")
    buckets = [0.0] * max(1, math.ceil(end / width))
    for t, w in zip(times, weights, strict=True):
        index = min(max(int(t // width), 0), len(buckets) - 1)
        buckets[index] += w
    return buckets


def bucket_width(duration: float, target_buckets: int = 120) -> float:
    """A round bucket width (0.1, 0.2, 0.5, 1, 2, 5 … s) giving about ``target_buckets``."""
    raw = max(duration, 1e-3) / target_buckets
    magnitude = 10 ** math.floor(math.log10(raw))
    for step in (1, 2, 5, 10):
        if raw <= step * magnitude:
            return max(step * magnitude, 0.01)
    return 10 * magnitude


class Samples:
    """A growing list of floats stored compactly (8 bytes each)."""

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: array[float] = array("d")

    def add(self, value: float) -> None:
        self.values.append(value)

    def extend(self, other: Samples) -> None:
        self.values.extend(other.values)

    def __len__(self) -> int:
        return len(self.values)

    def summary(self) -> Summary | None:
        return summarize(self.values)
