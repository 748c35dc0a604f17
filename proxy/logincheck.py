"""Checking a login's credentials: the one place every front end (IMAP, POP3, submission)
goes through, so throttling and timing cannot differ between them.

In order: the login is normalised (one spelling per user); the client address's current
penalty is waited out, whatever the password (a guesser gains nothing by reconnecting);
the directory checks the password; a failure is counted against the address and against
the directory's uid for the login (so ``" dave@example.com"`` and ``dave_example_com``
share one counter) and answered on a schedule counted from the check's start, so an unknown
user (no bind) is refused no sooner than a wrong password (a bind).

A bare login (no ``@``) may be given a domain (``[proxy] default_domain_from_sni``, from the
name the client used in its TLS handshake, else ``[proxy] default_domain``), as Dovecot's
``auth_default_realm`` appends its realm to every name without one. The domain must be
hosted (the cached check Postfix's domains map uses); ``alice@<domain>`` is tried first and
the login as typed only when that names no user, so uid logins (``alice_example_co_uk``)
keep working, while ``alice`` cannot reach another domain's user whose uid is ``alice`` as
long as the domain has an ``alice``. A login that names a domain is never changed.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from directory.domains import DomainCheck
from directory.model import AuthOutcome, DirectoryUnavailable, Route
from directory.names import BadLogin, normalise_login
from directory.service import Directory
from proxy.actions import Failure
from proxy.config import ProxySettings
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
    *,
    proxy: ProxySettings | None = None,
    server_name: str | None = None,
) -> Verdict:
    """The verdict on one login attempt, answered no sooner than its failure schedule.

    ``proxy``: the ``[proxy]`` settings whose default-domain keys apply (None: none do);
    ``server_name``: the SNI name of the client's TLS handshake, if any."""
    await _wait(limits.penalty(ip, trusted))
    started = clock()
    login = _normalised(creds.authcid)
    if login is None or (creds.authzid and _normalised(creds.authzid) != login):
        # An unusable login, or acting as another user (proxy authorization is not offered).
        await _fail_at(started, limits.failure_delay(ip, login or "-", trusted), clock)
        return Verdict(Failure.AUTH_FAILED)
    try:
        domain = await _default_domain(directory, login, proxy, server_name)
    except DirectoryUnavailable:
        return Verdict(Failure.UNAVAILABLE)
    forms = login_forms(login, domain)
    result = await directory.authenticate(forms[0], creds.password)
    if result.outcome is AuthOutcome.NO_USER and len(forms) > 1:
        result = await directory.authenticate(forms[1], creds.password)
    if result.outcome is AuthOutcome.UNAVAILABLE:
        return Verdict(Failure.UNAVAILABLE, result.route)
    route = result.route
    if result.outcome is AuthOutcome.OK and route is not None:
        limits.login_succeeded(ip, route.uid)
        if route.login_disabled:
            return Verdict(Failure.LOGIN_DISABLED, route)
        return Verdict(None, route)
    key = route.uid if route is not None else forms[0]
    await _fail_at(started, limits.failure_delay(ip, key, trusted), clock)
    return Verdict(Failure.AUTH_FAILED)


def sni_domain(server_name: str | None, prefixes: Sequence[str]) -> str | None:
    """``mail.example.co.uk`` → ``example.co.uk``: the name with the longest listed prefix
    taken off; None when no prefix fits (a name the operator did not list says nothing
    about a mail domain) or nothing would be left."""
    if not server_name:
        return None
    name = server_name.strip().rstrip(".").lower()
    fitting = [p for p in prefixes if name.startswith(p) and len(name) > len(p)]
    if not fitting:
        return None
    return name[len(max(fitting, key=len)) :] or None


def domain_choices(proxy: ProxySettings | None, server_name: str | None) -> tuple[str, ...]:
    """The domains a bare login may get, best first: the SNI one, then the fixed one."""
    if proxy is None:
        return ()
    out: list[str] = []
    if proxy.default_domain_from_sni:
        from_sni = sni_domain(server_name, proxy.sni_domain_prefixes)
        if from_sni:
            out.append(from_sni)
    if proxy.default_domain and proxy.default_domain not in out:
        out.append(proxy.default_domain)
    return tuple(out)


def login_forms(login: str, domain: str | None) -> tuple[str, ...]:
    """The names to try, in order, for a normalised ``login``: ``login@domain`` first, the
    login as typed only if that finds no user; a login with an ``@`` is never changed."""
    if domain is None or "@" in login:
        return (login,)
    return (f"{login}@{domain}", login)


_DOMAIN_CHECKS: weakref.WeakKeyDictionary[Directory, DomainCheck] = weakref.WeakKeyDictionary()


async def _default_domain(
    directory: Directory, login: str, proxy: ProxySettings | None, server_name: str | None
) -> str | None:
    """The first hosted domain of :func:`domain_choices`; an unhosted one is skipped, so a
    bare login under a stranger's name fails exactly as an unknown user does."""
    if "@" in login:
        return None
    choices = domain_choices(proxy, server_name)
    if not choices:
        return None
    check = _DOMAIN_CHECKS.get(directory)
    if check is None:  # one cache per directory, flushed with it (SIGHUP, admin flush)
        check = _DOMAIN_CHECKS[directory] = DomainCheck(directory)
    for domain in choices:
        if await check.hosted(domain):
            return domain
    return None


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
