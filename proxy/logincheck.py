"""Checking a login's credentials: the one place every front end (IMAP, POP3, submission)
goes through, so throttling and timing cannot differ between them.

In order: the login is normalised (one spelling per user); the client address's current
penalty is waited out, whatever the password (a guesser gains nothing by reconnecting);
the directory checks the password; a failure is counted against the address and against
the directory's uid for the login (so ``" dave@example.com"`` and ``dave_example_com``
share one counter) and answered on a schedule counted from the check's start, so an unknown
user (no bind) is refused no sooner than a wrong password (a bind).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from directory.model import AuthOutcome, Route
from directory.names import BadLogin, normalise_login
from directory.service import Directory
from proxy.actions import Failure
from proxy.limits import Limits
from proxy.sasl import Credentials


@dataclass(frozen=True, slots=True)
class Verdict:
    """``failure`` is None when the credentials are good; ``route`` is then set."""

    failure: Failure | None
    route: Route | None = None


async def check_login(
    directory: Directory,
    limits: Limits,
    ip: str,
    trusted: bool,
    creds: Credentials,
    clock: Callable[[], float] = time.monotonic,
) -> Verdict:
    """The verdict on one login attempt, answered no sooner than its failure schedule."""
    await _wait(limits.penalty(ip, trusted))
    started = clock()
    login = _normalised(creds.authcid)
    if login is None or (creds.authzid and _normalised(creds.authzid) != login):
        # An unusable login, or acting as another user (proxy authorization is not offered).
        await _fail_at(started, limits.failure_delay(ip, login or "-", trusted), clock)
        return Verdict(Failure.AUTH_FAILED)
    result = await directory.authenticate(login, creds.password)
    if result.outcome is AuthOutcome.UNAVAILABLE:
        return Verdict(Failure.UNAVAILABLE, result.route)
    route = result.route
    if result.outcome is AuthOutcome.OK and route is not None:
        limits.login_succeeded(ip, route.uid)
        if route.login_disabled:
            return Verdict(Failure.LOGIN_DISABLED, route)
        return Verdict(None, route)
    key = route.uid if route is not None else login
    await _fail_at(started, limits.failure_delay(ip, key, trusted), clock)
    return Verdict(Failure.AUTH_FAILED)


def _normalised(login: str) -> str | None:
    try:
        return normalise_login(login)
    except BadLogin:
        return None


async def _wait(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


async def _fail_at(started: float, delay: float, now: Callable[[], float]) -> None:
    """Sleep until ``delay`` after ``started``: the work already done counts towards it."""
    await _wait(started + delay - now())
