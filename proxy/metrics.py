"""Prometheus metrics of one mailfarm process, served by :mod:`proxy.admin` at ``/metrics``.

Why a registry per :class:`Metrics` and not prometheus-client's global one: tests (and a
process that reloads) can build several side by side without "duplicated timeseries" errors,
and nothing imported by accident can add series to what operators scrape.

The session core calls the small methods below on every connection, so each is one dict
lookup and one in-memory add: label children are bound once and cached. What can be read
instead of counted (route cache hits and misses) is read at scrape time by a collector, so
the hot path pays nothing for it.

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
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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


class _Bound:
    """A metric family with its label children cached: the hot path is one dict lookup."""

    __slots__ = ("children", "family")

    def __init__(self, family: Counter | Gauge | Histogram) -> None:
        self.family = family
        self.children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *labels: str) -> Any:
        child = self.children.get(labels)
        if child is None:
            child = self.children[labels] = self.family.labels(*labels)
        return child


class Metrics:
    """Everything one process counts; call the methods from the session core."""

    def __init__(
        self,
        directory: _HasCache | None = None,
        protocols: Iterable[str] = PROTOCOLS,
        *,
        process: bool = True,
    ) -> None:
        # ``*_created`` series double the scrape and nobody graphs them. The switch is
        # process-wide, which is fine: this process exports no other metrics.
        disable_created_metrics()
        self.registry = r = CollectorRegistry(auto_describe=True)
        self._connections = _Bound(
            Counter(
                "mailfarm_connections", "Client connections accepted.", ["protocol"], registry=r
            )
        )
        self._refused = _Bound(
            Counter(
                "mailfarm_connections_refused",
                "Client connections closed before any dialogue (limits, bad PROXY header).",
                ["protocol", "reason"],
                registry=r,
            )
        )
        self._evicted = _Bound(
            Counter(
                "mailfarm_connections_evicted",
                "Connections not yet logged in, closed to make room when max_connections"
                " was reached.",
                ["protocol"],
                registry=r,
            )
        )
        self._tls_failures = _Bound(
            Counter(
                "mailfarm_tls_failures",
                "Client TLS handshakes that failed (implicit TLS, STARTTLS or STLS).",
                ["protocol"],
                registry=r,
            )
        )
        self._sessions = _Bound(
            Gauge(
                "mailfarm_sessions",
                "Live client sessions: logging in (preauth) or relayed to a backend (proxied).",
                ["protocol", "state"],
                registry=r,
            )
        )
        self._logins = _Bound(
            Counter(
                "mailfarm_logins", "Login attempts by outcome.", ["protocol", "outcome"], registry=r
            )
        )
        self._connect = _Bound(
            Histogram(
                "mailfarm_backend_connect_seconds",
                "Time to open the connection to a backend (TCP and TLS, before its login).",
                ["protocol"],
                buckets=CONNECT_BUCKETS,
                registry=r,
            )
        )
        self._lookups = _Bound(
            Counter(
                "mailfarm_directory_lookups",
                "Directory queries for a route, by result (stale: served from the stale"
                " cache while the directory was unreachable).",
                ["result"],
                registry=r,
            )
        )
        self._bytes = _Bound(
            Counter(
                "mailfarm_bytes",
                "Bytes between clients and mailfarm (in: from clients), counted at session end.",
                ["protocol", "direction"],
                registry=r,
            )
        )
        self._worker = Gauge(
            "mailfarm_worker",
            "This process's index among the instance's workers (worker i answers on the admin"
            " port + i), labelled with how many there are: a scraper given one URL per"
            " instance finds every worker from it.",
            ["workers"],
            registry=r,
        )
        self._worker.labels("1").set(0)
        # Pre-created children make every series visible at zero from the first scrape, so
        # rate() and absent() work before the first event.
        for result in LOOKUP_RESULTS:
            self._lookups(result)
        for protocol in protocols:
            self.add_protocol(protocol)
        if directory is not None:
            r.register(_CacheCollector(directory))
        if process:
            ProcessCollector(registry=r)

    def add_protocol(self, protocol: str) -> None:
        """Show a protocol's series at zero (done at its first session if not listed)."""
        self._connections(protocol)
        self._evicted(protocol)
        self._tls_failures(protocol)
        self._connect(protocol)
        for state in STATES:
            self._sessions(protocol, state)
        for outcome in LOGIN_OUTCOMES:
            self._logins(protocol, outcome)
        for direction in DIRECTIONS:
            self._bytes(protocol, direction)
        for reason in REFUSALS:
            self._refused(protocol, reason)

    def set_worker(self, worker: int, workers: int) -> None:
        self._worker.clear()
        self._worker.labels(str(workers)).set(worker)

    # -- called by the session core and the listeners ------------------------------------

    def session_started(self, protocol: str) -> None:
        """A client connected and its login dialogue begins."""
        if (protocol,) not in self._connections.children:
            self.add_protocol(protocol)  # e.g. submission: all its series from now on
        self._connections(protocol).inc()
        self._sessions(protocol, "preauth").inc()

    def session_proxied(self, protocol: str) -> None:
        """The session was handed to the relay."""
        self._sessions(protocol, "preauth").dec()
        self._sessions(protocol, "proxied").inc()

    def session_ended(self, protocol: str, state: str, bytes_in: int, bytes_out: int) -> None:
        """A session ended in ``state`` (preauth or proxied), having moved these bytes."""
        self._sessions(protocol, state).dec()
        if bytes_in:
            self._bytes(protocol, "in").inc(bytes_in)
        if bytes_out:
            self._bytes(protocol, "out").inc(bytes_out)

    def login(self, protocol: str, outcome: str | enum.Enum) -> None:
        """One login attempt; ``outcome`` is "ok" or a ``proxy.actions.Failure``."""
        self._logins(protocol, _label(outcome)).inc()

    def backend_connect(self, protocol: str, seconds: float) -> None:
        self._connect(protocol).observe(seconds)

    def lookup(self, result: str) -> None:
        """A route query that went past the cache: found, not-found, unavailable, stale."""
        self._lookups(result).inc()

    def connection_refused(self, protocol: str, reason: str) -> None:
        """A connection closed by a limit or a bad PROXY header, before any greeting."""
        self._refused(protocol, reason).inc()

    def evicted(self, protocol: str) -> None:
        self._evicted(protocol).inc()

    def tls_failed(self, protocol: str) -> None:
        self._tls_failures(protocol).inc()

    # -- read by the admin endpoint ------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
