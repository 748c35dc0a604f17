"""The figures behind the console's dashboard, gathered from every instance's admin endpoint.

What is shown and where it comes from:

- sessions now, by protocol: each instance's ``mailfarm_sessions{protocol,state}`` gauge;
- sessions now, by backend: ``GET /sessions``, because no metric carries a backend label;
  it needs ``[admin] token``, without which this one figure is missing and the rest is not
  (an instance with a token wants it for ``/metrics`` too: only ``/healthz`` is open then);
- logins and failed logins per minute: the increase of ``mailfarm_logins_total`` between
  this scrape and the previous one kept in memory (counters, so a restarted instance, which
  starts again from zero, is recognised and its new count taken as the increase);
- backends up or down: a TCP connect to each backend's IMAP port, timed.

"Failed" is ``outcome="auth-failed"`` (a wrong password or no such user) only. The session
core counts ``too-many-failures`` *in addition* to the failure that reached the limit, so
adding it would count that attempt twice; the other outcomes (directory or backend down,
login disabled, timeout) are the farm's trouble, not a client's, and are given per outcome
in ``login_outcomes_per_minute`` for the console to show apart.

:meth:`Dashboard.snapshot` blocks (HTTP and TCP with short timeouts, in threads, no
asyncio), so the web layer runs it in its thread pool; it is safe to call from several
threads, and callers within ``max_age`` seconds of each other share one snapshot, so a
dozen open browser tabs do not multiply the scrapes, nor shrink the rates' window to noise.
"""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, TypeVar

from directory.provision import adminapi, adminhttp
from directory.provision.adminhttp import Unreachable, public_url
from directory.provision.adminhttp import os_problem as _os_problem
from directory.settings import ToolConfig
from web.promtext import Sample, finite, parse

HTTP_TIMEOUT = 2.0  # connect, and each read
HTTP_DEADLINE = 4.0  # a whole answer: an endpoint dripping bytes is given up
PROBE_TIMEOUT = 1.0  # a backend's TCP connect
MAX_METRICS = 4 << 20  # a mailfarm /metrics page is some ten KiB
MAX_SESSIONS = 16 << 20  # /sessions names every logged-in user (as adminapi reads it)
MAX_PARALLEL = 16
MAX_INSTANCES = 256  # instances whose previous scrape is remembered
MAX_AGE = 2.0  # seconds a snapshot is shared between callers
OK = "ok"
FAILED = "auth-failed"
LOGINS = "mailfarm_logins_total"
SESSIONS = "mailfarm_sessions"
STARTED = "process_start_time_seconds"

LoginKey = tuple[str, str]  # (protocol, outcome)
T = TypeVar("T")



# -- pure parts ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Counters:
    """What one scrape of an instance leaves for the next: only the counters rates need."""

    at: float  # the dashboard's clock
    started: float | None  # process_start_time_seconds: a change means a restart
    logins: Mapping[LoginKey, float] = field(default_factory=dict)


def counters_of(samples: Iterable[Sample], at: float) -> Counters:
    """The login counters and the process start time of one page."""
    logins: dict[LoginKey, float] = {}
    started = None
    for s in samples:
        if s.name == LOGINS and finite(s.value) and s.value >= 0:
            key = (s.label("protocol"), s.label("outcome"))
            logins[key] = logins.get(key, 0.0) + s.value
        elif s.name == STARTED and finite(s.value):
            started = s.value
    return Counters(at, started, logins)


def increase(
    before: Mapping[LoginKey, float], after: Mapping[LoginKey, float], restarted: bool = False
) -> dict[LoginKey, float]:
    """How much each counter grew. A counter that went down was reset (the process started
    again from zero), so all of its current value is new, as Prometheus's ``increase()``
    reads it; so is all of a series the previous scrape did not have (series start at 0)."""
    out: dict[LoginKey, float] = {}
    for key, now in after.items():
        then = before.get(key)
        out[key] = now if restarted or then is None or now < then else now - then
    return out


def restarted(previous: Counters, current: Counters) -> bool:
    """A different start time: restarted, even if its counters have since passed the old
    values (which a comparison of the counters alone would miss)."""
    if previous.started is None or current.started is None:
        return False
    return abs(previous.started - current.started) > 1.0  # computed from ticks: jitter


def per_minute(amount: float, seconds: float) -> float | None:
    """``amount`` over ``seconds`` as a rate per minute; None when no time passed."""
    if seconds <= 0:
        return None
    return round(amount * 60.0 / seconds, 3)


def login_rates(previous: Counters | None, current: Counters) -> dict[str, Any] | None:
    """Logins, failed logins and each outcome per minute since ``previous``; None while
    there is nothing to compare with ("measuring")."""
    if previous is None:
        return None
    seconds = current.at - previous.at
    if seconds <= 0:
        return None
    grown = increase(previous.logins, current.logins, restarted(previous, current))
    outcomes: dict[str, float] = {}
    for (_, outcome), amount in grown.items():
        outcomes[outcome] = outcomes.get(outcome, 0.0) + amount
    return {
        "seconds": round(seconds, 3),
        "logins_per_minute": per_minute(outcomes.get(OK, 0.0), seconds),
        "failed_logins_per_minute": per_minute(outcomes.get(FAILED, 0.0), seconds),
        "login_outcomes_per_minute": {
            name: per_minute(amount, seconds) for name, amount in sorted(outcomes.items())
        },
    }


def login_totals(counters: Counters) -> tuple[int, int]:
    """Successful and failed logins since the instance started."""
    ok = sum(v for (_, outcome), v in counters.logins.items() if outcome == OK)
    failed = sum(v for (_, outcome), v in counters.logins.items() if outcome == FAILED)
    return int(ok), int(failed)


def sessions_by_protocol(samples: Iterable[Sample]) -> dict[str, dict[str, int]]:
    """``mailfarm_sessions`` as {protocol: {state: count}}."""
    out: dict[str, dict[str, int]] = {}
    for s in samples:
        if s.name == SESSIONS and finite(s.value):
            states = out.setdefault(s.label("protocol", "-"), {})
            state = s.label("state", "-")
            states[state] = states.get(state, 0) + int(s.value)
    return out


def backend_host(backend: str) -> str:
    """``127.0.0.2:143`` → ``127.0.0.2`` (``[::1]:143`` → ``::1``): dashboards list hosts."""
    host, sep, port = backend.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return backend
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def sessions_by_backend(listed: object) -> dict[str, int] | None:
    """The ``/sessions`` answer counted by backend host; None if it is not that answer."""
    if not isinstance(listed, dict) or not isinstance(listed.get("sessions"), list):
        return None
    out: dict[str, int] = {}
    for entry in listed["sessions"]:
        if isinstance(entry, dict) and isinstance(entry.get("backend"), str):
            host = backend_host(entry["backend"])
            out[host] = out.get(host, 0) + 1
    return out


def add_counts(into: dict[str, Any], more: Mapping[str, Any]) -> None:
    """Sum nested {name: count} (or {name: {name: count}}) maps, for the totals."""
    for key, value in more.items():
        if isinstance(value, Mapping):
            add_counts(into.setdefault(key, {}), value)
        else:
            into[key] = into.get(key, 0) + value


# -- I/O ----------------------------------------------------------------------------------


def fetch(url: str, cap: int, token: str = "", timeout: float = HTTP_TIMEOUT) -> bytes:
    """GET ``url``: at most ``cap`` bytes within :data:`HTTP_DEADLINE`; raises
    :class:`Unreachable` with a message that names neither the URL nor the token.

    Through :mod:`directory.provision.adminhttp`, shared with the provisioning tool: no
    redirect followed, no proxy from the environment, so the token reaches the instance only.
    """
    return adminhttp.fetch(
        url,
        token,
        limit=cap,
        timeout=timeout,
        deadline=HTTP_DEADLINE,
        accept="text/plain, application/json",
    )


def probe(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> dict[str, Any]:
    """Whether ``host`` accepts a TCP connection on ``port``, and how long that took."""
    started = time.perf_counter()
    address = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        socket.create_connection((address, port), timeout=timeout).close()
    except OSError as exc:
        problem = _os_problem(exc, timeout)
        return {"up": False, "seconds": None, "problem": problem}
    return {"up": True, "seconds": round(time.perf_counter() - started, 6), "problem": None}


def backend_hosts(settings: ToolConfig) -> list[tuple[str, str]]:
    """Every backend host, ``[provision] hosts`` first then ``[[backends]]``, each once
    (compared case-insensitively, as DNS names are), with its kind."""
    seen: dict[str, tuple[str, str]] = {}
    backends = settings.backends
    for host in (*settings.provision.hosts, *(b.host for b in backends.listed)):
        if host.lower() not in seen:
            seen[host.lower()] = (host, backends.get(host).kind)
    return list(seen.values())


@dataclass(slots=True)
class _Scrape:
    """What one instance said (or why it said nothing)."""

    samples: list[Sample] | None = None
    problem: str | None = None
    by_backend: dict[str, int] | None = None
    sessions_problem: str | None = None


def scrape(base: str, token: str) -> _Scrape:
    """``/metrics`` of one instance, and ``/sessions`` when there is a token."""
    root = base.rstrip("/")
    try:
        samples = parse(fetch(f"{root}/metrics", MAX_METRICS, token))
    except Unreachable as exc:
        return _Scrape(problem=str(exc))
    if not any(s.name.startswith("mailfarm_") for s in samples):
        return _Scrape(problem="answer is not a mailfarm /metrics page")
    result = _Scrape(samples)
    if not token:
        result.sessions_problem = "no [admin] token: sessions by backend need one"
        return result
    try:
        listed = json.loads(fetch(f"{root}/sessions", MAX_SESSIONS, token))
    except Unreachable as exc:
        result.sessions_problem = f"/sessions: {exc}"
        return result
    except (ValueError, RecursionError):  # RecursionError: nested deeper than json goes
        listed = None
    result.by_backend = sessions_by_backend(listed)
    if result.by_backend is None:
        result.sessions_problem = "/sessions: not a sessions list"
    return result


# -- the dashboard ------------------------------------------------------------------------


class Dashboard:
    """One per web process: remembers each instance's previous scrape for the rates."""

    def __init__(
        self,
        settings: ToolConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        max_age: float = MAX_AGE,
        probe_timeout: float = PROBE_TIMEOUT,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._wall = wall
        self._max_age = max_age
        self._probe_timeout = probe_timeout
        self._previous: dict[str, Counters] = {}  # admin URL → last good scrape, bounded
        self._lock = threading.Lock()
        self._last: tuple[float, dict[str, Any]] | None = None

    def snapshot(self) -> dict[str, Any]:
        """The dashboard's data, JSON-able; blocks for up to a few seconds."""
        with self._lock:
            now = self._clock()
            if self._last is not None and 0 <= now - self._last[0] < self._max_age:
                return copy.deepcopy(self._last[1])
            data = self._gather(now)
            self._last = (now, data)
            return copy.deepcopy(data)

    def _gather(self, now: float) -> dict[str, Any]:
        settings = self.settings
        urls = list(dict.fromkeys(settings.provision.admin_urls))
        hosts = backend_hosts(settings)
        port = settings.provision.backend_imap_port
        token = settings.admin_token
        jobs = len(urls) + len(hosts)
        scrapes: list[Future[_Scrape]] = []
        probes: list[Future[dict[str, Any]]] = []
        if jobs:
            pool = ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, jobs))
            # Bounded whatever a host does (a name server that never answers, say): what is
            # not done by then is reported, and its thread left to finish.
            deadline = time.monotonic() + 2 * HTTP_DEADLINE + 2 * HTTP_TIMEOUT + 1
            try:
                scrapes = [pool.submit(scrape, url, token) for url in urls]
                probes = [pool.submit(probe, h, port, self._probe_timeout) for h, _ in hosts]
                wait(scrapes, timeout=max(0.0, deadline - time.monotonic()))
                # An instance with several workers answers for one of them: the others,
                # each with its own sessions and counters, are scraped too.
                more = _other_workers(urls, scrapes)
                urls += more
                scrapes += [pool.submit(scrape, url, token) for url in more]
                wait([*scrapes, *probes], timeout=max(0.0, deadline - time.monotonic()))
            finally:
                pool.shutdown(wait=False, cancel_futures=True)
        at = self._clock()
        instances = [
            self._instance(url, _result(f, _no_scrape), at)
            for url, f in zip(urls, scrapes, strict=True)
        ]
        self._forget(urls)
        backends = [
            {"host": host, "kind": kind, "port": port, **_result(f, _down)}
            for (host, kind), f in zip(hosts, probes, strict=True)
        ]
        return {
            "taken_at": round(self._wall(), 3),
            "instances": instances,
            "totals": _totals(instances),
            "backends": backends,
            "backends_up": sum(1 for b in backends if b["up"]),
            "backends_down": sum(1 for b in backends if not b["up"]),
        }

    def _instance(self, url: str, result: _Scrape, at: float) -> dict[str, Any]:
        shown: dict[str, Any] = {"url": public_url(url), "up": result.samples is not None}
        if result.samples is None:
            self._previous.pop(url, None)  # back up later: "measuring" again, honestly
            return {**shown, "problem": result.problem}
        current = counters_of(result.samples, at)
        rates = login_rates(self._previous.pop(url, None), current)
        self._previous[url] = current  # re-inserted last: the dict's order is by age
        ok, failed = login_totals(current)
        return {
            **shown,
            "problem": None,
            "started": current.started,
            "sessions": sessions_by_protocol(result.samples),
            "sessions_by_backend": result.by_backend,
            "sessions_problem": result.sessions_problem,
            "logins_total": ok,
            "failed_logins_total": failed,
            "rates": rates,
        }

    def _forget(self, urls: list[str]) -> None:
        """Keep only configured instances, and at most :data:`MAX_INSTANCES` of them."""
        wanted = set(urls)
        for url in [u for u in self._previous if u not in wanted]:
            del self._previous[url]
        while len(self._previous) > MAX_INSTANCES:
            del self._previous[next(iter(self._previous))]


def worker_of(samples: Iterable[Sample]) -> tuple[int, int] | None:
    """(worker, workers) from an instance's ``mailfarm_worker`` gauge, if it has one."""
    for sample in samples:
        if sample.name == "mailfarm_worker":
            workers = sample.label("workers")
            if workers.isdigit() and finite(sample.value) and sample.value.is_integer():
                return int(sample.value), int(workers)
    return None


def _other_workers(urls: list[str], scrapes: list[Future[_Scrape]]) -> list[str]:
    """The worker URLs of answering instances not listed already, each once."""
    known, more = set(urls), []
    for url, future in zip(urls, scrapes, strict=True):
        if not future.done() or future.cancelled() or future.exception() is not None:
            continue
        samples = future.result().samples
        found = worker_of(samples) if samples is not None else None
        if found is None:
            continue
        for sibling in adminapi.siblings(url, *found) or ():
            if sibling not in known:
                known.add(sibling)
                more.append(sibling)
    return more


def _result(future: Future[T], late: Callable[[str], T]) -> T:
    """A job's result, or ``late(problem)`` for one that did not finish or failed."""
    if not future.done() or future.cancelled():
        return late("no answer in time")
    exc = future.exception()
    if exc is not None:  # a bug of ours: this one entry says so, the rest stands
        return late(f"internal error ({type(exc).__name__})")
    return future.result()


def _down(problem: str) -> dict[str, Any]:
    return {"up": False, "seconds": None, "problem": problem}


def _no_scrape(problem: str) -> _Scrape:
    return _Scrape(problem=problem)


def _totals(instances: list[dict[str, Any]]) -> dict[str, Any]:
    """The farm's figures: sums over the instances that answered."""
    up = [i for i in instances if i["up"]]
    sessions: dict[str, Any] = {}
    by_backend: dict[str, Any] = {}
    outcomes: dict[str, Any] = {}
    logins = failed = 0.0
    rated = 0
    complete = bool(up)
    answered = False
    for instance in up:
        add_counts(sessions, instance["sessions"])
        if instance["sessions_by_backend"] is None:
            complete = False
        else:
            answered = True
            add_counts(by_backend, instance["sessions_by_backend"])
        rates = instance["rates"]
        if rates is not None:
            rated += 1
            logins += rates["logins_per_minute"]
            failed += rates["failed_logins_per_minute"]
            add_counts(outcomes, rates["login_outcomes_per_minute"])
    return {
        "instances": len(instances),
        "instances_up": len(up),
        "sessions": sessions,
        # None: no instance could say; not complete when some could not (see each one)
        "sessions_by_backend": by_backend if answered else None,
        "sessions_by_backend_complete": complete,
        "logins_per_minute": round(logins, 3) if rated else None,
        "failed_logins_per_minute": round(failed, 3) if rated else None,
        "login_outcomes_per_minute": (
            {k: round(v, 3) for k, v in sorted(outcomes.items())} if rated else None
        ),
        "measuring": len(up) - rated,  # up, but no previous scrape to compare with yet
        "failed_logins_total": sum(i["failed_logins_total"] for i in up),
        "logins_total": sum(i["logins_total"] for i in up),
    }
