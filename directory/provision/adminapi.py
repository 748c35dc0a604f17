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
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from directory.provision import Unavailable
from directory.provision.adminhttp import Unreachable, fetch, public_url

TIMEOUT = 5.0  # connect, and each read
DEADLINE = 15.0  # a whole answer: an instance dripping bytes is given up
MAX_PARALLEL = 8  # instances told at once: one that does not answer costs TIMEOUT, not N x
MAX_ACTION_ANSWER = 1 << 16  # /flush and /kick answer a line of JSON
MAX_SESSIONS = 1 << 24  # /sessions names every logged-in user


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


def _post(base: str, token: str, action: str, uid: str) -> None:
    """POST ``action`` for ``uid`` to one instance; raises :class:`_Failed` naming it.

    Through :func:`~directory.provision.adminhttp.fetch`, so the token goes to this URL
    only: no redirect is followed (one is a failure) and no proxy from the environment used.
    """
    url = action_url(base, action, uid)
    try:
        fetch(
            url, token, method="POST", limit=MAX_ACTION_ANSWER, timeout=TIMEOUT, deadline=DEADLINE
        )
    except Unreachable as exc:
        raise _Failed(f"{action} on {public_url(base)}: {exc}", exc.refused) from None


def call(urls: Sequence[str], token: str, action: str, uid: str, strict: bool = True) -> list[str]:
    """POST ``action`` for ``uid`` to every admin URL; the warnings to show the operator.

    With ``strict``, an instance that answers an error (or not at all, a timeout) raises
    :class:`Unavailable`; without, every failure is a warning (used after the point where a
    move can no longer be undone).
    """
    warnings: list[str] = []
    for base in urls:
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


def tell_every_instance(
    urls: Sequence[str], token: str, uids: Sequence[str], actions: Sequence[str]
) -> Notified:
    """POST each of ``actions`` (in order) for each uid to every instance; never raises.

    An instance is "reached" only when every request succeeded; at its first failure the rest
    for that instance are skipped (the next would most likely fail the same way).
    """

    def one(base: str) -> str | None:
        try:
            for uid in uids:
                for action in actions:
                    _post(base, token, action, uid)
        except _Failed as exc:
            return exc.problem
        return None

    unique = list(dict.fromkeys(urls))
    if not unique:
        return Notified((), ())
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(unique))) as pool:
        problems = list(pool.map(one, unique))
    shown = [public_url(url) for url in unique]
    reached = tuple(url for url, problem in zip(shown, problems, strict=True) if problem is None)
    missed = tuple((url, problem) for url, problem in zip(shown, problems, strict=True) if problem)
    return Notified(reached, missed)


def gather_sessions(
    urls: Sequence[str], token: str, user: str | None = None
) -> tuple[list[dict[str, object]], tuple[tuple[str, str], ...]]:
    """Every instance's logged-in sessions (of ``user`` when given), each tagged with the
    instance it is on; and the instances that could not say (URL, what went wrong). URLs are
    as shown (no ``user:password@``): these answers end up on screens and in logs."""

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

    unique = list(dict.fromkeys(urls))
    if not unique:
        return [], ()
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(unique))) as pool:
        answers = list(pool.map(one, unique))
    found = [entry for answer in answers if isinstance(answer, list) for entry in answer]
    pairs = zip(map(public_url, unique), answers, strict=True)
    missed = tuple((url, answer) for url, answer in pairs if isinstance(answer, str))
    return found, missed
