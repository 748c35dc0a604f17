"""bench.stats: percentiles, summaries, histograms and timelines (pure)."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.stats import (
    Samples,
    bucket_width,
    common_edges,
    histogram,
    log_edges,
    percentile,
    rate,
    ratio,
    summarize,
    timeline,
    weighted_timeline,
)

finite = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
samples = st.lists(finite, min_size=1, max_size=300)


def test_known_percentiles() -> None:
    values = sorted([1.0, 2.0, 3.0, 4.0, 5.0])
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 3.0
    assert percentile(values, 100) == 5.0
    assert percentile(values, 25) == 2.0
    assert percentile([10.0, 20.0], 50) == 15.0
    assert percentile([7.0], 99) == 7.0


def test_percentile_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


@given(samples, st.floats(0, 100), st.floats(0, 100))
def test_percentiles_monotone_and_within_range(values: list[float], q1: float, q2: float) -> None:
    ordered = sorted(values)
    lo, hi = sorted((q1, q2))
    a, b = percentile(ordered, lo), percentile(ordered, hi)
    assert ordered[0] <= a <= b <= ordered[-1]


@given(samples)
def test_summary_is_ordered(values: list[float]) -> None:
    s = summarize(values)
    assert s is not None
    assert s.count == len(values)
    assert s.min <= s.p50 <= s.p90 <= s.p99 <= s.max
    assert s.min <= s.mean * (1 + 1e-9) + 1e-9
    assert s.mean <= s.max * (1 + 1e-9) + 1e-9


def test_summary_of_nothing_and_scaling() -> None:
    assert summarize([]) is None
    s = summarize([0.001, 0.002, 0.003])
    assert s is not None
    ms = s.scaled(1000)
    assert ms["count"] == 3
    assert ms["p50"] == pytest.approx(2.0)
    assert ms["max"] == pytest.approx(3.0)


def test_samples_container() -> None:
    a, b = Samples(), Samples()
    a.add(1.0)
    b.add(3.0)
    a.extend(b)
    assert len(a) == 2
    summary = a.summary()
    assert summary is not None and summary.max == 3.0
    assert Samples().summary() is None


def test_rate_and_ratio() -> None:
    assert rate(100, 4) == 25
    assert rate(5, 0) == 0.0
    assert ratio(1.0, 2.0) == 0.5
    assert ratio(1.0, 0) is None
    assert ratio(None, 2.0) is None


@given(st.floats(1e-6, 10), st.floats(1.0001, 1000), st.integers(1, 60))
def test_log_edges_ascend_and_span(lo: float, factor: float, bins: int) -> None:
    edges = log_edges(lo, lo * factor, bins)
    assert len(edges) == bins + 1
    assert edges[0] == lo and edges[-1] == lo * factor
    assert all(a < b for a, b in itertools.pairwise(edges))


@given(samples, st.integers(1, 50))
def test_histogram_counts_every_value(values: list[float], bins: int) -> None:
    edges = common_edges([values], bins)
    assert edges is not None
    h = histogram(values, edges)
    assert h.total == len(values)
    assert len(h.counts) == bins


def test_histogram_bins_and_outliers() -> None:
    h = histogram([0.5, 1.0, 1.5, 2.5, 99.0], [1.0, 2.0, 3.0])
    assert h.counts == (3, 2)  # below the first edge → first bin, above the last → last bin


def test_common_edges_span_both_groups() -> None:
    edges = common_edges([[0.01, 0.02], [], [0.5]])
    assert edges is not None
    assert edges[0] <= 0.01 and edges[-1] >= 0.5
    assert common_edges([[], []]) is None
    single = common_edges([[0.2, 0.2]])
    assert single is not None and single[0] <= 0.2 < single[-1]


@given(st.lists(st.floats(0, 100), max_size=200), st.floats(0.01, 10))
def test_timeline_counts_every_event(times: list[float], width: float) -> None:
    buckets = timeline(times, width, 100)
    assert sum(buckets) == len(times)
    assert len(buckets) == math.ceil(100 / width)


def test_weighted_timeline_sums_weights() -> None:
    assert weighted_timeline([0.1, 0.2, 1.5], [10, 20, 5], 1.0, 2.0) == [30.0, 5.0]
    with pytest.raises(ValueError):
        timeline([], 0, 1)


@pytest.mark.parametrize(
    ("duration", "expected"), [(20, 0.2), (60, 0.5), (1, 0.01), (600, 5), (0.1, 0.01)]
)
def test_bucket_width_is_round(duration: float, expected: float) -> None:
    assert bucket_width(duration) == pytest.approx(expected)
