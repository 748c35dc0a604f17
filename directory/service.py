"""The directory as the proxies see it: async lookups and authentication with a route cache.

The user source (LDAP or LDIF) is synchronous and runs on a bounded thread pool, so the
event loop never blocks on the directory (the native LDAP driver is a coroutine instead).
Concurrent lookups of one login share a single query (a burst of logins by one user after an
outage costs one search, not hundreds).

Every answer is bounded: a login's directory work (lookup and bind together, waiting for a
thread, a pooled connection or a shared search included) has one deadline of ``timeout`` plus
:data:`DEADLINE_MARGIN`; past it the login is "unavailable", however many others wait.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from directory.authcache import AuthCache
from directory.cache import RouteCache
from directory.model import (
    AuthOutcome,
    AuthResult,
    DirectoryUnavailable,
    Route,
    UserSource,
)
from directory.names import BadLogin, normalise_login
from directory.settings import DirectorySettings

log = logging.getLogger("mailfarm.directory")

#: Seconds added to ``[directory] timeout`` for the whole of one login's directory work: the
#: driver gives up on a silent server within ``timeout``, and the margin leaves room for the
#: step after it (a bind after a slow search) without letting queued logins wait unbounded.
DEADLINE_MARGIN = 1.0


@dataclass(frozen=True, slots=True)
class Lookup:
    """A lookup's answer: ``route`` is ``None`` for "no such user"."""

    route: Route | None
    from_cache: bool
    stale: bool = False


def open_source(settings: DirectorySettings) -> UserSource:
    """The source named by ``uri``: an ``ldif:`` file or LDAP servers."""
    first = settings.uri[0]
    if first.startswith("ldif:"):
        from pathlib import Path

        from directory.ldif import LdifSource

        return LdifSource(
            Path(first[5:]),
            settings.base,
            settings.user_filter,
            settings.host_attribute,
            settings.port_attribute or None,
            settings.disabled_attribute or None,
            settings.domain_filter,
            settings.domains_base,
            settings.domain_scope,
        )
    if settings.driver == "ldap3":
        from directory.ldap import LdapSource

        return LdapSource(settings)
    from directory.ldapasync import AsyncLdapSource

    return AsyncLdapSource(settings)  # type: ignore[return-value]


class Directory:
    def __init__(
        self,
        settings: DirectorySettings,
        source: UserSource | None = None,
        auth_cache_ttl: float = 0.0,
    ) -> None:
        self.settings = settings
        self.auth_cache = AuthCache(auth_cache_ttl, settings.stale_ttl, settings.cache_size)
        self.source = source if source is not None else open_source(settings)
        self._async_source = bool(getattr(self.source, "is_async", False))
        self.cache = RouteCache(
            settings.cache_ttl, settings.negative_ttl, settings.stale_ttl, settings.cache_size
        )
        # Two threads per pooled connection: searches and binds use separate pools.
        self._executor = ThreadPoolExecutor(
            max_workers=max(2, settings.pool_size * 2), thread_name_prefix="directory"
        )
        self._inflight: dict[str, asyncio.Task[Route | None]] = {}
        # Told the result of every directory query ("found", "not-found", "stale",
        # "unavailable"), for metrics; cache hits are counted by the cache itself.
        self.on_lookup: Callable[[str], None] | None = None
        # Other caches built on this directory (e.g. hosted domains), emptied by flush().
        self.dependent_flushes: list[Callable[[], object]] = []

    def deadline(self) -> float:
        """The event-loop time by which directory work started now must be answered."""
        return asyncio.get_running_loop().time() + self.settings.timeout + DEADLINE_MARGIN

    async def _run(self, deadline: float, fn, *args):  # type: ignore[no-untyped-def]
        """Call the source, a coroutine directly, a blocking call on the thread pool; give
        up at ``deadline`` (a job still queued for a thread is then never started)."""
        try:
            async with asyncio.timeout_at(deadline):
                if self._async_source:
                    return await fn(*args)
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._executor, fn, *args)
        except TimeoutError:
            waited = self.settings.timeout + DEADLINE_MARGIN
            raise DirectoryUnavailable(f"no answer from the directory within {waited:g}s") from None

    async def lookup(self, login: str, deadline: float | None = None) -> Lookup:
        """Route for a login; raises DirectoryUnavailable only when no answer, not even a
        stale one, can be given by ``deadline`` (event-loop time; default: from now)."""
        try:
            key = normalise_login(login)
        except BadLogin:
            return Lookup(None, from_cache=False)
        cached = self.cache.get(key)
        if cached is not None:
            return Lookup(cached.route, from_cache=True)
        if deadline is None:
            deadline = self.deadline()
        query = self._inflight.get(key)
        if query is None:
            query = asyncio.get_running_loop().create_task(self._query(key))
            self._inflight[key] = query
            query.add_done_callback(lambda done: self._query_done(key, done))
        try:
            async with asyncio.timeout_at(deadline):
                # Shielded: a caller that gives up (its client left) leaves the query to the
                # others waiting for it, and to the cache.
                route = await asyncio.shield(query)
        except (DirectoryUnavailable, TimeoutError) as exc:
            stale = self.cache.get_stale(key)
            if stale is not None:
                why = exc if isinstance(exc, DirectoryUnavailable) else "no answer in time"
                log.warning("directory unavailable, serving stale route for %s: %s", key, why)
                return Lookup(stale, from_cache=True, stale=True)
            if isinstance(exc, TimeoutError):
                raise DirectoryUnavailable("no answer from the directory in time") from None
            raise
        return Lookup(route, from_cache=False)

    async def _query(self, key: str) -> Route | None:
        """One search for ``key``, shared by everyone asking at the same time, with its own
        deadline so that it ends even if every caller has gone."""
        try:
            route = await self._run(self.deadline(), self.source.find, key)
        except DirectoryUnavailable:
            if self.on_lookup is not None:
                self.on_lookup("stale" if self.cache.get_stale(key) is not None else "unavailable")
            raise
        self.cache.put(key, route)
        if self.on_lookup is not None:
            self.on_lookup("found" if route is not None else "not-found")
        return route

    def _query_done(self, key: str, query: asyncio.Task[Route | None]) -> None:
        if self._inflight.get(key) is query:
            del self._inflight[key]
        if not query.cancelled():
            query.exception()  # retrieved: the callers re-raise it themselves

    async def authenticate(self, login: str, password: str) -> AuthResult:
        """Check a login and password; the three failure kinds stay distinct, and the answer
        comes by one deadline for the lookup and the bind together."""
        deadline = self.deadline()
        try:
            found = await self.lookup(login, deadline)
        except DirectoryUnavailable as exc:
            log.warning("directory unavailable during lookup: %s", exc)
            return AuthResult(AuthOutcome.UNAVAILABLE)
        route = found.route
        if route is None:
            return AuthResult(AuthOutcome.NO_USER)
        if not password:
            return AuthResult(AuthOutcome.BAD_PASSWORD, route, found.from_cache)
        if self.auth_cache.check(route, password, stale_ok=found.stale):
            return AuthResult(AuthOutcome.OK, route, from_cache=True)
        try:
            ok = await self._run(deadline, self.source.bind, route.dn, password)
        except DirectoryUnavailable as exc:
            if self.auth_cache.check(route, password, stale_ok=True):
                log.warning("directory unavailable, login of %s vouched by auth cache", route.uid)
                return AuthResult(AuthOutcome.OK, route, from_cache=True)
            log.warning("directory unavailable during bind: %s", exc)
            return AuthResult(AuthOutcome.UNAVAILABLE, route, found.from_cache)
        if ok:
            self.auth_cache.remember(route, password)
            return AuthResult(AuthOutcome.OK, route, found.from_cache)
        return AuthResult(AuthOutcome.BAD_PASSWORD, route, found.from_cache)

    async def find_domain(self, domain: str) -> bool:
        """Ask the source (uncached; see directory.domains for the cached check)."""
        return bool(await self._run(self.deadline(), self.source.find_domain, domain))

    def flush(self, name: str | None = None) -> int:
        if name is None:
            for flush in self.dependent_flushes:
                flush()
        return self.cache.flush(name) + self.auth_cache.flush(name)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.source.close()
