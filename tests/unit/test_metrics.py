"""Metrics: every method moves the series it should, and the exposition parses back."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from directory.cache import RouteCache
from directory.model import Route
from proxy.actions import Failure
from proxy.metrics import CONNECT_BUCKETS, LOGIN_OUTCOMES, LOOKUP_RESULTS, Metrics


class _Dir:
    """Only what the cache collector reads: a real RouteCache under ``.cache``."""

    def __init__(self) -> None:
        self.cache = RouteCache(300, 30, 3600)


def scrape(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[name, tuple(sorted(labels.items()))]


def test_every_series_exists_at_zero_before_any_event() -> None:
    samples = scrape(Metrics(process=False))
    for protocol in ("imap", "pop3"):
        for state in ("preauth", "proxied"):
            assert value(samples, "mailfarm_sessions", protocol=protocol, state=state) == 0
        for outcome in LOGIN_OUTCOMES:
            assert value(samples, "mailfarm_logins_total", protocol=protocol, outcome=outcome) == 0
        for direction in ("in", "out"):
            assert (
                value(samples, "mailfarm_bytes_total", protocol=protocol, direction=direction) == 0
            )
        assert value(samples, "mailfarm_backend_connect_seconds_count", protocol=protocol) == 0
        assert value(samples, "mailfarm_connections_total", protocol=protocol) == 0
    for result in LOOKUP_RESULTS:
        assert value(samples, "mailfarm_directory_lookups_total", result=result) == 0
    assert not any(name.endswith("_created") for name, _ in samples)


def test_session_lifecycle_moves_the_gauge_and_counts_bytes() -> None:
    m = Metrics(process=False)
    m.session_started("imap")
    m.session_started("imap")
    m.session_started("pop3")
    m.session_proxied("imap")
    s = scrape(m)
    assert value(s, "mailfarm_sessions", protocol="imap", state="preauth") == 1
    assert value(s, "mailfarm_sessions", protocol="imap", state="proxied") == 1
    assert value(s, "mailfarm_sessions", protocol="pop3", state="preauth") == 1
    assert value(s, "mailfarm_connections_total", protocol="imap") == 2
    m.session_ended("imap", "proxied", 100, 5000)
    m.session_ended("imap", "preauth", 20, 0)
    m.session_ended("pop3", "preauth", 0, 30)
    s = scrape(m)
    for protocol in ("imap", "pop3"):
        for state in ("preauth", "proxied"):
            assert value(s, "mailfarm_sessions", protocol=protocol, state=state) == 0
    assert value(s, "mailfarm_bytes_total", protocol="imap", direction="in") == 120
    assert value(s, "mailfarm_bytes_total", protocol="imap", direction="out") == 5000
    assert value(s, "mailfarm_bytes_total", protocol="pop3", direction="out") == 30
    assert value(s, "mailfarm_connections_total", protocol="imap") == 2  # a counter stays


def test_logins_accept_strings_and_failures() -> None:
    m = Metrics(process=False)
    m.login("imap", "ok")
    m.login("imap", Failure.AUTH_FAILED)
    m.login("imap", Failure.AUTH_FAILED)
    m.login("pop3", Failure.UNAVAILABLE)
    m.login("pop3", "timeout")
    s = scrape(m)
    assert value(s, "mailfarm_logins_total", protocol="imap", outcome="ok") == 1
    assert value(s, "mailfarm_logins_total", protocol="imap", outcome="auth-failed") == 2
    assert value(s, "mailfarm_logins_total", protocol="pop3", outcome="directory-unavailable") == 1
    assert value(s, "mailfarm_logins_total", protocol="pop3", outcome="timeout") == 1


def test_failure_values_are_the_documented_outcomes() -> None:
    """The outcome labels are Failure's values: the log line and the metric agree."""
    documented = set(LOGIN_OUTCOMES) - {"ok"}
    assert documented <= {f.value for f in Failure}


def test_backend_connect_histogram() -> None:
    m = Metrics(process=False)
    for seconds in (0.0005, 0.004, 0.004, 3.0, 60.0):
        m.backend_connect("pop3", seconds)
    s = scrape(m)
    bucket = "mailfarm_backend_connect_seconds_bucket"
    assert value(s, bucket, protocol="pop3", le="0.001") == 1
    assert value(s, bucket, protocol="pop3", le="0.005") == 3
    assert value(s, bucket, protocol="pop3", le="5.0") == 4
    assert value(s, bucket, protocol="pop3", le="+Inf") == 5
    assert value(s, "mailfarm_backend_connect_seconds_count", protocol="pop3") == 5
    assert value(s, "mailfarm_backend_connect_seconds_sum", protocol="pop3") == pytest.approx(
        63.0085
    )
    assert CONNECT_BUCKETS[0] == 0.001 and CONNECT_BUCKETS[-1] == 10.0


def test_lookups_and_refusals() -> None:
    m = Metrics(process=False)
    for result in ("found", "found", "not-found", "unavailable", "stale"):
        m.lookup(result)
    m.connection_refused("imap", Failure.CONNECTION_LIMIT.value)
    m.connection_refused("imap", "proxy-header")
    s = scrape(m)
    assert value(s, "mailfarm_directory_lookups_total", result="found") == 2
    assert value(s, "mailfarm_directory_lookups_total", result="stale") == 1
    assert (
        value(
            s,
            "mailfarm_connections_refused_total",
            protocol="imap",
            reason="connection-limit",
        )
        == 1
    )
    assert (
        value(s, "mailfarm_connections_refused_total", protocol="imap", reason="proxy-header") == 1
    )


def test_other_protocols_appear_on_first_use() -> None:
    m = Metrics(process=False)
    m.session_started("submission")
    m.login("submission", "ok")
    s = scrape(m)
    assert value(s, "mailfarm_sessions", protocol="submission", state="preauth") == 1
    assert value(s, "mailfarm_logins_total", protocol="submission", outcome="ok") == 1
    assert value(s, "mailfarm_logins_total", protocol="submission", outcome="timeout") == 0


def test_route_cache_is_read_at_scrape_time() -> None:
    directory = _Dir()
    m = Metrics(directory, process=False)
    route = Route(uid="a", dn="uid=a,dc=t", host="10.0.0.1")
    cache = directory.cache
    assert cache.get("a") is None  # miss
    cache.put("a", route)
    assert cache.get("a") is not None  # hit
    cache.put("ghost", None)
    assert cache.get("ghost") is not None  # negative hit
    s = scrape(m)
    assert value(s, "mailfarm_route_cache_hits_total") == 2
    assert value(s, "mailfarm_route_cache_misses_total") == 1
    assert value(s, "mailfarm_route_cache_entries") == 1
    directory.cache.flush()
    assert value(scrape(m), "mailfarm_route_cache_entries") == 0


def test_registries_are_independent() -> None:
    a, b = Metrics(process=False), Metrics(process=False)
    a.login("imap", "ok")
    assert value(scrape(a), "mailfarm_logins_total", protocol="imap", outcome="ok") == 1
    assert value(scrape(b), "mailfarm_logins_total", protocol="imap", outcome="ok") == 0


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process metrics need /proc")
def test_process_metrics() -> None:
    s = scrape(Metrics())
    assert value(s, "process_open_fds") > 0
    assert value(s, "process_max_fds") > 0
