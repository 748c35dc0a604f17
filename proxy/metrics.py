"""Prometheus metrics of one mailfarm process, served by :mod:`proxy.admin` at ``/metrics``.

Why a registry per :class:`Metrics` and not prometheus-client's global one: tests (and a
process that reloads) can build several side by side without "duplicated timeseries" errors,
and nothing imported by accident can add series to what operators scrape.

The session core calls the small methods below on every connection, so each is a dict
lookup and an integer add on plain Python objects; the Prometheus families are built from
those numbers at scrape time (:class:`_Collector`). What can be read instead of counted
(route cache hits and misses) is read at scrape time too, so the hot path pays nothing
for it.

Metric families (the contract with dashboards and alerts; OPERATIONS.md explains each):

- ``mailfarm_connections_total{protocol}``         connections accepted
- ``mailfarm_connections_refused_total{protocol,reason}``  dropped before any dialogue
- ``mailfarm_connections_evicted_total{protocol}``  pre-login connections closed to make room
- ``mailfarm_tls_failures_total{protocol}``         TLS handshakes (implicit or STARTTLS) failed
- ``mailfarm_sessions{protocol,state}``            live sessions, state preauth|proxied
- ``mailfarm_logins_total{protocol,outcome}``      login attempts by outcome
- ``mailfarm_backend_connect_seconds{protocol}``   time to connect to a backend (histogram)
- ``mailfarm_directory_lookups_total{result}``     found|not-found|unavailable|stale
- ``mailfarm_route_cache_hits_total``, ``..._misses_total``, ``mailfarm_route_cache_entries``
- ``mailfarm_bytes_total{protocol,direction}``     client bytes, direction in|out
- ``process_*``                                   CPU, memory, open file descriptors
"""

from __future__ import annotations

import enum
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

PROTOCOLS = ("imap", "pop3", "sieve")
STATES = ("preauth", "proxied")
LOGIN_OUTCOMES = (
    "ok",
    "auth-failed",
    "directory-unavailable",
    "backend-unavailable",
    "login-disabled",
    "too-many-failures",
    "timeout",
)
LOOKUP_RESULTS = ("found", "not-found", "unavailable", "stale")
# Failure.CONNECTION_LIMIT's value, then the two ways a PROXY-protocol listener refuses.
REFUSALS = ("connection-limit", "proxy-header", "untrusted-proxy")
DIRECTIONS = ("in", "out")
# 1 ms (a backend on the same switch) … 10 s (the default backend_timeout).
CONNECT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _CacheStats(Protocol):
    hits: int
    misses: int

    def __len__(self) -> int: ...


class _HasCache(Protocol):
    cache: _CacheStats


class _CacheCollector(Collector):
    """Reads the route cache's own counters at scrape time (the cache already counts)."""

    def __init__(self, directory: _HasCache) -> None:
        self._directory = directory

    def collect(self) -> Iterator[Metric]:
        cache = self._directory.cache
        hits = CounterMetricFamily(
            "mailfarm_route_cache_hits", "Logins answered from the route cache."
        )
        hits.add_metric([], cache.hits)
        misses = CounterMetricFamily(
            "mailfarm_route_cache_misses", "Logins the route cache could not answer."
        )
        misses.add_metric([], cache.misses)
        entries = GaugeMetricFamily(
            "mailfarm_route_cache_entries", "Fresh routes held in the route cache."
        )
        entries.add_metric([], len(cache))
        yield from (hits, misses, entries)

    def describe(self) -> Iterable[Metric]:
        return []  # nothing to check for name clashes beyond our own registry


def _label(value: str | enum.Enum) -> str:
    return str(value.value) if isinstance(value, enum.Enum) else value


class _Counts:
    """One protocol's numbers: plain attributes and dicts, so counting is an add."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "connect_buckets",
        "connect_count",
        "connect_sum",
        "connections",
        "evicted",
        "logins",
        "preauth",
        "proxied",
        "refused",
        "tls_failures",
    )

    def __init__(self) -> None:
        self.connections = self.evicted = self.tls_failures = 0
        self.preauth = self.proxied = 0
        self.bytes_in = self.bytes_out = 0
        self.logins: dict[str, int] = dict.fromkeys(LOGIN_OUTCOMES, 0)
        self.refused: dict[str, int] = dict.fromkeys(REFUSALS, 0)
        self.connect_buckets = [0] * len(CONNECT_BUCKETS)  # per bucket, not cumulative
        self.connect_count = 0
        self.connect_sum = 0.0


class _Collector(Collector):
    """The families, built from the plain numbers at scrape time (in this order, with
    every protocol's series present from its first appearance, at zero)."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._m
        rows = list(m._counts.items())
        connections = CounterMetricFamily(
            "mailfarm_connections", "Client connections accepted.", labels=["protocol"]
        )
        refused = CounterMetricFamily(
            "mailfarm_connections_refused",
            "Client connections closed before any dialogue (limits, bad PROXY header).",
            labels=["protocol", "reason"],
        )
        evicted = CounterMetricFamily(
            "mailfarm_connections_evicted",
            "Connections not yet logged in, closed to make room when max_connections was"
            " reached.",
            labels=["protocol"],
        )
        tls = CounterMetricFamily(
            "mailfarm_tls_failures",
            "Client TLS handshakes that failed (implicit TLS, STARTTLS or STLS).",
            labels=["protocol"],
        )
        sessions = GaugeMetricFamily(
            "mailfarm_sessions",
            "Live client sessions: logging in (preauth) or relayed to a backend (proxied).",
            labels=["protocol", "state"],
        )
        logins = CounterMetricFamily(
            "mailfarm_logins", "Login attempts by outcome.", labels=["protocol", "outcome"]
        )
        connect = HistogramMetricFamily(
            "mailfarm_backend_connect_seconds",
            "Time to open the connection to a backend (TCP and TLS, before its login).",
            labels=["protocol"],
        )
        traffic = CounterMetricFamily(
            "mailfarm_bytes",
            "Bytes between clients and mailfarm (in: from clients), counted at session end.",
            labels=["protocol", "direction"],
        )
        for protocol, c in rows:
            connections.add_metric([protocol], c.connections)
            for reason, n in c.refused.items():
                refused.add_metric([protocol, reason], n)
            evicted.add_metric([protocol], c.evicted)
            tls.add_metric([protocol], c.tls_failures)
            sessions.add_metric([protocol, "preauth"], c.preauth)
            sessions.add_metric([protocol, "proxied"], c.proxied)
            for outcome, n in c.logins.items():
                logins.add_metric([protocol, outcome], n)
            cumulative, buckets = 0, []
            for bound, n in zip(CONNECT_BUCKETS, c.connect_buckets, strict=True):
                cumulative += n
                buckets.append((floatToGoString(bound), cumulative))
            buckets.append(("+Inf", c.connect_count))
            connect.add_metric([protocol], buckets, c.connect_sum)
            traffic.add_metric([protocol, "in"], c.bytes_in)
            traffic.add_metric([protocol, "out"], c.bytes_out)
        lookups = CounterMetricFamily(
            "mailfarm_directory_lookups",
            "Directory queries for a route, by result (stale: served from the stale cache"
            " while the directory was unreachable).",
            labels=["result"],
        )
        for result, n in list(m._lookups.items()):
            lookups.add_metric([result], n)
        worker = GaugeMetricFamily(
            "mailfarm_worker",
            "This process's index among the instance's workers (worker i answers on the admin"
            " port + i), labelled with how many there are: a scraper given one URL per"
            " instance finds every worker from it.",
            labels=["workers"],
        )
        worker.add_metric([str(m._workers)], m._worker)
        yield from (connections, refused, evicted, tls, sessions, logins, connect, lookups)
        yield from (traffic, worker)

    def describe(self) -> Iterable[Metric]:
        return []


class Metrics:
    """Everything one process counts; call the methods from the session core.

    Why plain numbers and not prometheus-client's Counter objects: each of those takes a
    lock and checks its type on every increment, and a login makes about ten of them. Here an
    increment is an attribute add on the protocol's :class:`_Counts`, and the exposition is
    built when someone scrapes, which is rare next to logins. The process is one thread (the
    event loop); the directory's lookups arrive on it too.
    """

    def __init__(
        self,
        directory: _HasCache | None = None,
        protocols: Iterable[str] = PROTOCOLS,
        *,
        process: bool = True,
    ) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self._counts: dict[str, _Counts] = {}
        self._lookups: dict[str, int] = dict.fromkeys(LOOKUP_RESULTS, 0)
        self._worker, self._workers = 0, 1
        for protocol in protocols:
            self.add_protocol(protocol)
        r.register(_Collector(self))
        if directory is not None:
            r.register(_CacheCollector(directory))
        if process:
            ProcessCollector(registry=r)

    def add_protocol(self, protocol: str) -> None:
        """Show a protocol's series at zero (done at its first session if not listed)."""
        self._of(protocol)

    def _of(self, protocol: str) -> _Counts:
        counts = self._counts.get(protocol)
        if counts is None:
            counts = self._counts[protocol] = _Counts()
        return counts

    def set_worker(self, worker: int, workers: int) -> None:
        self._worker, self._workers = worker, workers

    # -- called by the session core and the listeners ------------------------------------

    def session_started(self, protocol: str) -> None:
        """A client connected and its login dialogue begins."""
        counts = self._of(protocol)  # e.g. submission: all its series from now on
        counts.connections += 1
        counts.preauth += 1

    def session_proxied(self, protocol: str) -> None:
        """The session was handed to the relay."""
        counts = self._of(protocol)
        counts.preauth -= 1
        counts.proxied += 1

    def session_ended(self, protocol: str, state: str, bytes_in: int, bytes_out: int) -> None:
        """A session ended in ``state`` (preauth or proxied), having moved these bytes."""
        counts = self._of(protocol)
        if state == "proxied":
            counts.proxied -= 1
        else:
            counts.preauth -= 1
        counts.bytes_in += bytes_in
        counts.bytes_out += bytes_out

    def login(self, protocol: str, outcome: str | enum.Enum) -> None:
        """One login attempt; ``outcome`` is "ok" or a ``proxy.actions.Failure``."""
        logins = self._of(protocol).logins
        label = _label(outcome)
        logins[label] = logins.get(label, 0) + 1

    def backend_connect(self, protocol: str, seconds: float) -> None:
        counts = self._of(protocol)
        i = bisect_left(CONNECT_BUCKETS, seconds)  # le: the first bound >= seconds
        if i < len(CONNECT_BUCKETS):
            counts.connect_buckets[i] += 1
        counts.connect_count += 1
        counts.connect_sum += seconds

    def lookup(self, result: str) -> None:
        """A route query that went past the cache: found, not-found, unavailable, stale."""
        self._lookups[result] = self._lookups.get(result, 0) + 1

    def connection_refused(self, protocol: str, reason: str) -> None:
        """A connection closed by a limit or a bad PROXY header, before any greeting."""
        refused = self._of(protocol).refused
        refused[reason] = refused.get(reason, 0) + 1

    def evicted(self, protocol: str) -> None:
        self._of(protocol).evicted += 1

    def tls_failed(self, protocol: str) -> None:
        self._of(protocol).tls_failures += 1

    # -- read by the admin endpoint ------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
