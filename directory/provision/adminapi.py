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
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from directory.provision import Unavailable

TIMEOUT = 5.0
MAX_PARALLEL = 8  # instances told at once: one that does not answer costs TIMEOUT, not N x


def action_url(base: str, action: str, uid: str) -> str:
    """``http://h:p/admin`` + ``kick`` + uid → ``http://h:p/admin/kick?user=<uid>``."""
    query = urllib.parse.urlencode({"user": uid})
    return f"{base.rstrip('/')}/{action}?{query}"


def _refused(exc: urllib.error.URLError) -> bool:
    return isinstance(exc.reason, ConnectionRefusedError)


class _Failed(Exception):
    """One POST that did not succeed; ``refused`` when nothing listens there."""

    def __init__(self, problem: str, refused: bool = False) -> None:
        super().__init__(problem)
        self.problem = problem
        self.refused = refused


def _post(base: str, token: str, action: str, uid: str) -> None:
    """POST ``action`` for ``uid`` to one instance; raises :class:`_Failed` naming it."""
    request = urllib.request.Request(action_url(base, action, uid), data=b"", method="POST")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
            answer.read()
    except urllib.error.HTTPError as exc:
        raise _Failed(f"{action} on {base}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise _Failed(f"{action} on {base}: {exc.reason}", _refused(exc)) from None
    except (TimeoutError, OSError) as exc:
        raise _Failed(f"{action} on {base}: {exc or type(exc).__name__}") from None


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
    what went wrong), in the order of ``[provision] admin_urls``."""

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
    reached = tuple(url for url, problem in zip(unique, problems, strict=True) if problem is None)
    missed = tuple((url, problem) for url, problem in zip(unique, problems, strict=True) if problem)
    return Notified(reached, missed)


def gather_sessions(
    urls: Sequence[str], token: str, user: str | None = None
) -> tuple[list[dict[str, object]], tuple[tuple[str, str], ...]]:
    """Every instance's logged-in sessions (of ``user`` when given), each tagged with the
    instance it is on; and the instances that could not say (URL, what went wrong)."""

    def one(base: str) -> list[dict[str, object]] | str:
        query = "?" + urllib.parse.urlencode({"user": user}) if user else ""
        request = urllib.request.Request(f"{base.rstrip('/')}/sessions{query}")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
                listed = json.loads(answer.read(1 << 24))["sessions"]
        except urllib.error.HTTPError as exc:
            return f"sessions on {base}: HTTP {exc.code} {exc.reason}"
        except urllib.error.URLError as exc:
            return f"sessions on {base}: {exc.reason}"
        except (TimeoutError, OSError, ValueError, KeyError, TypeError) as exc:
            return f"sessions on {base}: {exc or type(exc).__name__}"
        return [{**entry, "instance": base} for entry in listed]

    unique = list(dict.fromkeys(urls))
    if not unique:
        return [], ()
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(unique))) as pool:
        answers = list(pool.map(one, unique))
    found = [entry for answer in answers if isinstance(answer, list) for entry in answer]
    pairs = zip(unique, answers, strict=True)
    missed = tuple((url, answer) for url, answer in pairs if isinstance(answer, str))
    return found, missed
