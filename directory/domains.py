"""Is a mail domain hosted here? Asked by Postfix (through mailfarm's lookup maps) per
recipient domain, so the answer is cached like routes are.

A domain is hosted when the directory holds an entry for it: by the farm's convention
``dc=<domain>,ou=domains,<base>`` with objectClass ``domainRelatedObject`` and
``associatedDomain: <domain>``. The query is a filter on ``associatedDomain`` under the
configured base (not a DN built from the name), so a site with another layout only needs
another filter.

The question goes to the user source's ``find_domain`` (on its own service-bound search
connection, with the ``[directory] domain_filter``); this module only caches the answers.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable

from cachetools import TTLCache

from directory.model import DirectoryUnavailable
from directory.service import Directory
from directory.settings import DEFAULT_DOMAIN_FILTER

log = logging.getLogger("mailfarm.directory")

DOMAIN_FILTER = DEFAULT_DOMAIN_FILTER

SyncProbe = Callable[[str], bool]
AsyncProbe = Callable[[str], Awaitable[bool]]
Probe = SyncProbe | AsyncProbe


def make_probe(directory: Directory) -> AsyncProbe:
    """The directory's ``find_domain``: raises DirectoryUnavailable when it cannot answer."""
    return directory.find_domain


class DomainCheck:
    """Async, cached "is this domain hosted?" on top of a :class:`Directory`.

    The cache ages like the route cache (``cache_ttl`` for yes, ``negative_ttl`` for no, and
    a "yes" is still served for ``stale_ttl`` while LDAP is down), so an LDAP outage does not
    make Postfix defer mail for domains it asked about recently.
    """

    def __init__(
        self,
        directory: Directory,
        probe: Probe | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        s = directory.settings
        self._probe = probe or make_probe(directory)
        size = max(1, min(s.cache_size, 10_000))  # domains are few; bound the cache anyway
        self._fresh: TTLCache[str, bool] | None = (
            TTLCache(size, s.cache_ttl, timer=timer) if s.cache_ttl > 0 else None
        )
        self._negative: TTLCache[str, bool] | None = (
            TTLCache(size, s.negative_ttl, timer=timer) if s.negative_ttl > 0 else None
        )
        self._stale: TTLCache[str, bool] | None = (
            TTLCache(size, s.cache_ttl + s.stale_ttl, timer=timer) if s.stale_ttl > 0 else None
        )
        self._inflight: dict[str, asyncio.Future[bool]] = {}
        directory.dependent_flushes.append(self.flush)  # SIGHUP and POST /flush empty us too

    async def hosted(self, domain: str) -> bool:
        """``domain`` must be normalised (lower case, no trailing dot).

        Raises :class:`DirectoryUnavailable` only when no answer, not even a stale
        one, exists. Concurrent questions about one domain share one query.
        """
        if self._fresh is not None and domain in self._fresh:
            return True
        if self._negative is not None and domain in self._negative:
            return False
        pending = self._inflight.get(domain)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._inflight[domain] = future
        try:
            try:
                found = await self._ask(domain)
            except DirectoryUnavailable as exc:
                future.set_exception(exc)
                future.exception()
                if self._stale is not None and domain in self._stale:
                    log.warning("directory unavailable, serving stale domain %s: %s", domain, exc)
                    return True
                raise
            self._remember(domain, found)
            future.set_result(found)
            return found
        finally:
            del self._inflight[domain]
            if not future.done():
                future.set_exception(DirectoryUnavailable("domain lookup abandoned"))
                future.exception()

    async def _ask(self, domain: str) -> bool:
        if inspect.iscoroutinefunction(self._probe):
            return bool(await self._probe(domain))
        # A blocking source: the loop's default executor, since domain questions are
        # rare (cached) and the source's own pool bounds its LDAP connections anyway.
        loop = asyncio.get_running_loop()
        return bool(await loop.run_in_executor(None, self._probe, domain))

    def _remember(self, domain: str, found: bool) -> None:
        if found:
            if self._negative is not None:
                self._negative.pop(domain, None)
            for table in (self._fresh, self._stale):
                if table is not None:
                    table[domain] = True
        else:
            for table in (self._fresh, self._stale):
                if table is not None:
                    table.pop(domain, None)
            if self._negative is not None:
                self._negative[domain] = True

    def flush(self) -> None:
        for table in (self._fresh, self._negative, self._stale):
            if table is not None:
                table.clear()
