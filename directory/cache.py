"""Route cache: login → Route, with negative entries and stale-if-error.

Three tables, because the three answers age differently: a fresh route is trusted for
``ttl``; "no such user" only for the shorter ``negative_ttl`` (a new user should not wait
long to be routable); and a route that has expired is still kept for ``stale_ttl`` so that,
while no directory server answers, users who logged in recently still reach their backend.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import TTLCache

from directory.model import Route


@dataclass(frozen=True, slots=True)
class CacheAnswer:
    """A cached answer; ``route`` is ``None`` for a cached "no such user"."""

    route: Route | None


class RouteCache:
    def __init__(
        self,
        ttl: float,
        negative_ttl: float,
        stale_ttl: float,
        maxsize: int = 100_000,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        maxsize = max(1, maxsize)
        self._fresh: TTLCache[str, Route] | None = (
            TTLCache(maxsize, ttl, timer=timer) if ttl > 0 else None
        )
        self._negative: TTLCache[str, bool] | None = (
            TTLCache(maxsize, negative_ttl, timer=timer) if negative_ttl > 0 else None
        )
        stale_for = ttl + stale_ttl
        self._stale: TTLCache[str, Route] | None = (
            TTLCache(maxsize, stale_for, timer=timer) if stale_ttl > 0 else None
        )
        self.hits = 0
        self.misses = 0

    def get(self, login: str) -> CacheAnswer | None:
        """A fresh answer, or ``None`` when the directory must be asked."""
        if self._fresh is not None:
            route = self._fresh.get(login)
            if route is not None:
                self.hits += 1
                return CacheAnswer(route)
        if self._negative is not None and login in self._negative:
            self.hits += 1
            return CacheAnswer(None)
        self.misses += 1
        return None

    def get_stale(self, login: str) -> Route | None:
        """The last known route, for use only while the directory cannot be reached."""
        if self._stale is None:
            return None
        return self._stale.get(login)

    def put(self, login: str, route: Route | None) -> None:
        if route is None:
            if self._negative is not None:
                self._negative[login] = True
            self._drop(login)
            return
        if self._negative is not None:
            self._negative.pop(login, None)
        if self._fresh is not None:
            self._fresh[login] = route
        if self._stale is not None:
            self._stale[login] = route

    def _drop(self, login: str) -> None:
        for table in (self._fresh, self._stale):
            if table is not None:
                table.pop(login, None)

    def flush(self, name: str | None = None) -> int:
        """Forget everything, or every entry for one user (by any login, uid or address).

        Returns how many entries went. A user may sit in the cache under several logins
        (uid and address, any case); all of them go, since after a move each would route to
        the old backend.
        """
        tables = [t for t in (self._fresh, self._negative, self._stale) if t is not None]
        if name is None:
            count = sum(len(t) for t in tables)
            for t in tables:
                t.clear()
            return count
        name = name.lower()
        count = 0
        for table in tables:
            doomed = [
                key
                for key, value in list(table.items())
                if key == name
                or (
                    isinstance(value, Route)
                    and name in (value.uid.lower(), (value.mail or "").lower())
                )
            ]
            for key in doomed:
                table.pop(key, None)
                count += 1
        return count

    def __len__(self) -> int:
        return len(self._fresh) if self._fresh is not None else 0
