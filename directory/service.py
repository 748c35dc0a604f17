"""The directory as the proxies see it: async lookups and authentication with a route cache.

The user source (LDAP or LDIF) is synchronous and runs on a bounded thread pool, so the
event loop never blocks on the directory. Concurrent lookups of one login share a single
query (a burst of logins by one user after an outage costs one search, not hundreds).
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
from proxy.config import DirectorySettings

log = logging.getLogger("mailfarm.directory")


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
        self._inflight: dict[str, asyncio.Future[Route | None]] = {}
        # Told the result of every directory query ("found", "not-found", "stale",
        # "unavailable"), for metrics; cache hits are counted by the cache itself.
        self.on_lookup: Callable[[str], None] | None = None
        # Other caches built on this directory (e.g. hosted domains), emptied by flush().
        self.dependent_flushes: list[Callable[[], object]] = []

    async def _run(self, fn, *args):  # type: ignore[no-untyped-def]
        """Call the source: a coroutine directly, a blocking call on the thread pool."""
        if self._async_source:
            return await fn(*args)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    async def lookup(self, login: str) -> Lookup:
        """Route for a login; raises DirectoryUnavailable only when no answer, not even a
        stale one, can be given."""
        try:
            key = normalise_login(login)
        except BadLogin:
            return Lookup(None, from_cache=False)
        cached = self.cache.get(key)
        if cached is not None:
            return Lookup(cached.route, from_cache=True)
        pending = self._inflight.get(key)
        if pending is not None:
            route = await asyncio.shield(pending)
            return Lookup(route, from_cache=False)
        future: asyncio.Future[Route | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            try:
                route = await self._run(self.source.find, key)
            except DirectoryUnavailable as exc:
                stale = self.cache.get_stale(key)
                future.set_exception(exc)
                future.exception()  # retrieved: followers re-raise it themselves
                if self.on_lookup is not None:
                    self.on_lookup("stale" if stale is not None else "unavailable")
                if stale is not None:
                    log.warning("directory unavailable, serving stale route for %s: %s", key, exc)
                    return Lookup(stale, from_cache=True, stale=True)
                raise
            self.cache.put(key, route)
            future.set_result(route)
            if self.on_lookup is not None:
                self.on_lookup("found" if route is not None else "not-found")
            return Lookup(route, from_cache=False)
        finally:
            del self._inflight[key]
            if not future.done():  # cancelled or a bug: never leave followers waiting
                future.set_exception(DirectoryUnavailable("lookup abandoned"))
                future.exception()

    async def authenticate(self, login: str, password: str) -> AuthResult:
        """Check a login and password; the three failure kinds stay distinct."""
        try:
            found = await self.lookup(login)
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
            ok = await self._run(self.source.bind, route.dn, password)
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
        return bool(await self._run(self.source.find_domain, domain))

    def flush(self, name: str | None = None) -> int:
        if name is None:
            for flush in self.dependent_flushes:
                flush()
        return self.cache.flush(name) + self.auth_cache.flush(name)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.source.close()
