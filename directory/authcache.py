"""Remembered successful logins, so repeated logins skip the LDAP bind (Dovecot's auth_cache).

Only a salted SHA-256 of the password is kept, in memory, for ``ttl`` seconds: a mail client
that reconnects every few minutes (or a webmail that logs in per request) then costs no LDAP
round trip. A wrong password is never answered from here; it always goes to LDAP, so a
changed password takes effect at once. While LDAP is unreachable, entries up to
``ttl + stale_ttl`` old still vouch for their exact password, so users who logged in
recently keep getting in (stale-if-error, like the route cache).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Callable

from cachetools import TTLCache

from directory.model import Route


def _digest(salt: bytes, password: str) -> bytes:
    return hashlib.sha256(salt + password.encode("utf-8")).digest()


class AuthCache:
    __slots__ = ("_entries", "_timer", "_ttl")

    def __init__(
        self,
        ttl: float,
        stale_ttl: float,
        maxsize: int = 100_000,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        # One table holding (stored_at, salt, digest, route); freshness is checked on use,
        # the TTL of the table itself is the outer stale bound.
        self._entries: TTLCache[str, tuple[float, bytes, bytes, Route]] | None = (
            TTLCache(max(1, maxsize), ttl + max(stale_ttl, 0), timer=timer) if ttl > 0 else None
        )
        self._ttl = ttl
        self._timer = timer

    @property
    def enabled(self) -> bool:
        return self._entries is not None

    def remember(self, route: Route, password: str) -> None:
        if self._entries is None:
            return
        salt = os.urandom(16)
        self._entries[route.dn.lower()] = (self._timer(), salt, _digest(salt, password), route)

    def check(self, route: Route, password: str, stale_ok: bool = False) -> bool:
        """True only for the exact password of a remembered, fresh (or tolerated) login."""
        if self._entries is None:
            return False
        entry = self._entries.get(route.dn.lower())
        if entry is None:
            return False
        stored_at, salt, digest, _ = entry
        if not stale_ok and self._timer() - stored_at > self._ttl:
            return False
        return hmac.compare_digest(digest, _digest(salt, password))

    def flush(self, name: str | None = None) -> int:
        if self._entries is None:
            return 0
        if name is None:
            count = len(self._entries)
            self._entries.clear()
            return count
        name = name.lower()
        doomed = [
            key
            for key, (_, _, _, route) in list(self._entries.items())
            if name in (route.uid.lower(), (route.mail or "").lower(), key)
        ]
        for key in doomed:
            self._entries.pop(key, None)
        return len(doomed)
