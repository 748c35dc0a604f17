"""Telling every mailfarm instance about a user change: ``POST /flush`` and ``POST /kick``.

A move only keeps its promise ("nothing lost") if no session keeps writing to the old
backend, so a proxy that answers with an error stops the move. A proxy that refuses the
connection is a warning only: an instance that is down holds no sessions, and once it starts
it has an empty route cache.

A password change, a deletion or a disabled login is different: the change is made in LDAP
first and cannot wait, and what matters afterwards is which instances may still answer from
their caches (a remembered login, a route saying "enabled"). :func:`tell_every_instance`
therefore tries every instance and reports each one it could not tell, whatever the reason:
from here, "refused" cannot be told apart from "listening elsewhere" or "a firewall".

One URL per instance is enough, whatever its ``[proxy] workers``: each worker process has
its own sessions and caches on its own admin port (worker i on port + i), and ``/healthz``
says which worker answered and how many there are, so :func:`worker_urls` turns
``http://h:9143`` of a 3-worker instance into ports 9143, 9144 and 9145 (listing every
worker port, as older configs do, comes to the same). Every result is then per worker URL.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from directory.provision import Unavailable
from directory.provision.adminhttp import Unreachable, fetch, public_url

TIMEOUT = 5.0  # connect, and each read
DEADLINE = 15.0  # a whole answer: an instance dripping bytes is given up
MAX_PARALLEL = 8  # instances told at once: one that does not answer costs TIMEOUT, not N x
MAX_ACTION_ANSWER = 1 << 16  # /flush and /kick answer a line of JSON
MAX_SESSIONS = 1 << 24  # /sessions names every logged-in user
MAX_HEALTHZ = 1 << 12  # /healthz answers a few counters
MAX_WORKERS = 256  # more than any host has cores: a larger figure is not believed
WORKERS_TTL = 60.0  # how long an instance's worker count is remembered (the web service
# lives for days; a CLI run is one use): a restart with other [proxy] workers is seen soon


_workers_lock = threading.Lock()
_workers_seen: dict[str, tuple[float, tuple[str, ...]]] = {}  # URL -> (when, worker URLs)


def _with_port(base: str, port: int) -> str:
    parts = urllib.parse.urlsplit(base)
    host = parts.netloc.rsplit(":", 1)[0]  # keeps user:password@ and an IPv6 [literal]
    return parts._replace(netloc=f"{host}:{port}").geturl()


def _worker_port(base: str) -> int | None:
    """The port worker arithmetic applies to, or None: worker i is at port + i of the
    instance itself, but a URL with a path is likely a reverse proxy's, whose port means
    nothing of the kind, so it is used as it is."""
    try:
        parts = urllib.parse.urlsplit(base)
        port = parts.port
    except ValueError:
        return None
    if port is None or parts.path not in ("", "/") or parts.query:
        return None
    return port


def siblings(base: str, worker: object, workers: object) -> tuple[str, ...] | None:
    """Every worker URL of the instance whose worker ``worker`` of ``workers`` answered at
    ``base`` (pure); ``None`` when those are not a worker's numbers or ``base`` cannot be
    counted from."""
    port = _worker_port(base)
    if port is None or type(workers) is not int or type(worker) is not int:
        return None
    if not 0 <= worker < workers:
        return None
    first = port - worker
    if workers == 1 or workers > MAX_WORKERS or first < 1 or first + workers > 65536:
        return (base,)
    return tuple(_with_port(base, first + i) for i in range(workers))


def _probe_workers(base: str) -> tuple[str, ...] | None:
    """Every worker URL of the instance at ``base``, from its ``/healthz``; ``None`` when
    it could not say (down, an error, an answer without the fields)."""
    if _worker_port(base) is None:
        return None
    try:
        # No token: /healthz is open, and the token need go nowhere it is not needed.
        body = fetch(
            f"{base.rstrip('/')}/healthz", limit=MAX_HEALTHZ, timeout=TIMEOUT, deadline=DEADLINE
        )
        health = json.loads(body)
        workers, worker = health.get("workers", 1), health.get("worker", 0)
    except (Unreachable, ValueError, AttributeError, RecursionError):
        return None
    return siblings(base, worker, workers)


def worker_urls(base: str) -> tuple[str, ...]:
    """The admin URL of every worker of the instance at ``base`` (``base`` alone when it
    runs one worker or cannot say; a failure then shows in the request that follows).

    What an instance says is remembered for :data:`WORKERS_TTL` seconds, so one command
    probes each instance once however many requests it then makes.
    """
    now = time.monotonic()
    with _workers_lock:
        seen = _workers_seen.get(base)
    if seen is not None and now - seen[0] < WORKERS_TTL:
        return seen[1]
    found = _probe_workers(base)
    if found is None:
        return (base,)
    with _workers_lock:
        _workers_seen[base] = (now, found)
    return found


def expand(urls: Sequence[str]) -> list[str]:
    """``[provision] admin_urls`` with every instance expanded to all its worker URLs, in
    order and each once (a config may list the worker ports itself)."""
    unique = list(dict.fromkeys(urls))
    if not unique:
        return []
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(unique))) as pool:
        expanded = list(pool.map(worker_urls, unique))
    return list(dict.fromkeys(url for urls_of in expanded for url in urls_of))


def action_url(base: str, action: str, uid: str) -> str:
    """``http://h:p/admin`` + ``kick`` + uid → ``http://h:p/admin/kick?user=<uid>``."""
    query = urllib.parse.urlencode({"user": uid})
    return f"{base.rstrip('/')}/{action}?{query}"


class _Failed(Exception):
    """One POST that did not succeed; ``refused`` when nothing listens there."""

    def __init__(self, problem: str, refused: bool = False) -> None:
        super().__init__(problem)
        self.problem = problem
        self.refused = refused


def _post(base: str, token: str, action: str, uid: str | None) -> dict[str, Any]:
    """POST ``action`` (for ``uid``; ``None``: everyone, /flush only) to one instance; its
    JSON answer (``{}`` if it is not JSON). Raises :class:`_Failed` naming the instance.

    Through :func:`~directory.provision.adminhttp.fetch`, so the token goes to this URL
    only: no redirect is followed (one is a failure) and no proxy from the environment used.
    """
    url = action_url(base, action, uid) if uid is not None else f"{base.rstrip('/')}/{action}"
    try:
        body = fetch(
            url, token, method="POST", limit=MAX_ACTION_ANSWER, timeout=TIMEOUT, deadline=DEADLINE
        )
    except Unreachable as exc:
        raise _Failed(f"{action} on {public_url(base)}: {exc}", exc.refused) from None
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    return answer if isinstance(answer, dict) else {}


def call(urls: Sequence[str], token: str, action: str, uid: str, strict: bool = True) -> list[str]:
    """POST ``action`` for ``uid`` to every admin URL; the warnings to show the operator.

    With ``strict``, an instance that answers an error (or not at all, a timeout) raises
    :class:`Unavailable`; without, every failure is a warning (used after the point where a
    move can no longer be undone).
    """
    warnings: list[str] = []
    for base in expand(urls):
        try:
            _post(base, token, action, uid)
        except _Failed as exc:
            if strict and not exc.refused:
                raise Unavailable(exc.problem) from None
            note = " (instance down: nothing to do there)" if exc.refused else ""
            warnings.append(exc.problem + note)
    return warnings


@dataclass(frozen=True, slots=True)
class Notified:
    """Which instances took the news (``reached``) and which did not (``missed``: URL →
    what went wrong), in the order of ``[provision] admin_urls``; URLs as shown, without any
    ``user:password@``."""

    reached: tuple[str, ...]
    missed: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Told:
    """One worker URL's outcome (shown without ``user:password@``): ``problem`` is what went
    wrong (``None``: every request succeeded), ``answers`` the JSON answers it gave."""

    url: str
    problem: str | None = None
    answers: tuple[dict[str, Any], ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.problem is None

    def total(self, key: str) -> int | None:
        """The sum of ``key`` (``kicked``, ``flushed``) over the answers; ``None`` when no
        answer has it (an instance that does not count)."""
        counts = [a[key] for a in self.answers if type(a.get(key)) is int]
        return sum(counts) if counts else None

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"instance": self.url, "ok": self.ok}
        if self.problem is not None:
            out["problem"] = self.problem
        for key in ("flushed", "kicked"):
            if (count := self.total(key)) is not None:
                out[key] = count
        return out


def tell_each(
    urls: Sequence[str], token: str, uids: Sequence[str | None], actions: Sequence[str]
) -> list[Told]:
    """POST each of ``actions`` (in order) for each uid (``None``: everyone) to every worker
    of every instance; one :class:`Told` per worker URL, in order. Never raises.

    A URL counts as told only when every request succeeded; at its first failure the rest
    for that URL are skipped (the next would most likely fail the same way).
    """

    def one(base: str) -> Told:
        answers = []
        try:
            for uid in uids:
                for action in actions:
                    answers.append(_post(base, token, action, uid))
        except _Failed as exc:
            return Told(public_url(base), exc.problem, tuple(answers))
        return Told(public_url(base), None, tuple(answers))

    targets = expand(urls)
    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(targets))) as pool:
        return list(pool.map(one, targets))


def tell_every_instance(
    urls: Sequence[str], token: str, uids: Sequence[str], actions: Sequence[str]
) -> Notified:
    """:func:`tell_each`, summed up as who was reached and who missed (worker URLs)."""
    told = tell_each(urls, token, uids, actions)
    reached = tuple(t.url for t in told if t.problem is None)
    missed = tuple((t.url, t.problem) for t in told if t.problem is not None)
    return Notified(reached, missed)


def gather_sessions(
    urls: Sequence[str], token: str, user: str | None = None
) -> tuple[list[dict[str, object]], tuple[tuple[str, str], ...]]:
    """Every instance's logged-in sessions (of ``user`` when given), each tagged with the
    worker URL it is on (``instance``; the answer's own ``worker`` says which worker); and
    the worker URLs that could not say (URL, what went wrong). URLs are as shown (no
    ``user:password@``): these answers end up on screens and in logs."""

    def one(base: str) -> list[dict[str, object]] | str:
        query = "?" + urllib.parse.urlencode({"user": user}) if user else ""
        url = f"{base.rstrip('/')}/sessions{query}"
        try:
            body = fetch(url, token, limit=MAX_SESSIONS, timeout=TIMEOUT, deadline=DEADLINE)
        except Unreachable as exc:
            return f"sessions on {public_url(base)}: {exc}"
        try:
            listed = json.loads(body)["sessions"]
            tagged = [{**entry, "instance": public_url(base)} for entry in listed]
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            return f"sessions on {public_url(base)}: not a sessions list ({type(exc).__name__})"
        return tagged

    unique = expand(urls)
    if not unique:
        return [], ()
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(unique))) as pool:
        answers = list(pool.map(one, unique))
    found = [entry for answer in answers if isinstance(answer, list) for entry in answer]
    pairs = zip(map(public_url, unique), answers, strict=True)
    missed = tuple((url, answer) for url, answer in pairs if isinstance(answer, str))
    return found, missed
