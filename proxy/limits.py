"""Connection limits, eviction, and the growing delay after failed logins (Dovecot's anvil).

Counted per process (each worker enforces its share), from the moment a connection is
accepted, before any TLS handshake: a handshake costs memory and CPU, so a client that
never finishes one must hold a slot like any other. Clients in ``trusted_networks``
(webmail, the LAN) are exempt from the per-address limit and the growing penalty, since many
users share their address; they still get the base ``auth_failure_delay``.

IPv6 clients are counted per network of ``ipv6_prefix`` bits: one subscriber usually holds a
whole /64 and could otherwise take a fresh address for every connection.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from collections.abc import Callable

from cachetools import TTLCache

from proxy.config import ProxySettings

PENALTY_CAP = 15.0  # seconds, as Dovecot's auth_penalty
PENALTY_MEMORY = 3600.0  # failures are forgotten after an hour without a new one
_MAX_TRACKED = 100_000


@functools.lru_cache(maxsize=65536)
def address_group(ip: str, ipv6_prefix: int = 64) -> str:
    """The key one client is counted under: an IPv4 address, or its IPv6 network."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        if ipv6_prefix < 128:
            return str(ipaddress.IPv6Network((addr, ipv6_prefix), strict=False))
    return str(addr)


class Slot:
    """One admitted connection: released exactly once, evictable until it logs in."""

    __slots__ = ("_limits", "evict", "key", "released")

    def __init__(self, limits: Limits, key: str) -> None:
        self._limits = limits
        self.key = key
        self.released = False
        # Set by the connection's owner: close with the protocol's goodbye (it must release
        # the slot itself, or leave that to eviction, which releases it at once).
        self.evict: Callable[[], None] | None = None

    def logged_in(self) -> None:
        """A logged-in session is never evicted to make room for a newcomer, so its evict
        callback goes too: that closure holds the whole login phase (its connection
        object, task and dialogue), which an idle session must not keep alive."""
        self._limits._preauth.pop(self, None)
        self.evict = None

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._limits._release(self)


class Limits:
    __slots__ = ("_failures", "_per_ip", "_preauth", "evicted", "settings", "total")

    def __init__(self, settings: ProxySettings, timer: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.total = 0
        self.evicted = 0
        self._per_ip: dict[str, int] = {}
        # Connections not yet logged in, oldest first (dicts keep insertion order).
        self._preauth: dict[Slot, None] = {}
        self._failures: TTLCache[str, int] = TTLCache(_MAX_TRACKED, PENALTY_MEMORY, timer=timer)

    def group(self, ip: str) -> str:
        return address_group(ip, self.settings.ipv6_prefix)

    # connections ------------------------------------------------------------------------
    def admit(self, ip: str, trusted: bool) -> Slot | None:
        """Count a new connection, or refuse it (then nothing is counted).

        An address over its own limit is refused; when only the total is reached, the
        oldest connection that has not logged in makes room (Dovecot kills the oldest
        pre-login client too), so a few addresses holding many idle connections cannot
        lock out everybody else.
        """
        key = self.group(ip)
        count = self._per_ip.get(key, 0)
        if not trusted and count >= self.settings.max_connections_per_ip:
            return None
        if self.total >= self.settings.max_connections and not self._evict_oldest():
            return None
        self.total += 1
        self._per_ip[key] = self._per_ip.get(key, 0) + 1
        slot = Slot(self, key)
        self._preauth[slot] = None
        return slot

    def _evict_oldest(self) -> bool:
        slot = next(iter(self._preauth), None)
        if slot is None:
            return False
        evict = slot.evict
        slot.release()  # the newcomer takes this place now, whatever the old one does next
        self.evicted += 1
        if evict is not None:
            evict()
        return True

    def _release(self, slot: Slot) -> None:
        self._preauth.pop(slot, None)
        self.total -= 1
        count = self._per_ip.get(slot.key, 0) - 1
        if count > 0:
            self._per_ip[slot.key] = count
        else:
            self._per_ip.pop(slot.key, None)

    # failed logins ----------------------------------------------------------------------
    def penalty(self, ip: str, trusted: bool) -> float:
        """How long any login attempt from this address waits before it is checked.

        Applied to the right password too (as Dovecot does before its passdb lookup):
        otherwise a guesser could simply open a new connection for each try and only its
        failures would be slowed, never the attempt that matters."""
        base = self.settings.auth_failure_delay
        if trusted or base <= 0 or not self._failures.currsize:
            return 0.0
        count = self._failures.get("ip:" + self.group(ip), 0)
        return min(PENALTY_CAP, base * 2 ** (count - 1)) if count else 0.0

    def failure_delay(self, ip: str, login: str, trusted: bool) -> float:
        """Record one failed login and say how long after its start to answer it.

        ``login`` is the directory's uid when the login named an entry (so every spelling
        of one user shares a counter), otherwise the normalised login. The delay doubles
        with each recent failure from the address or against the login, whichever has
        more, up to PENALTY_CAP: a password guesser slows down quickly, a user with a typo
        hardly notices.
        """
        base = self.settings.auth_failure_delay
        if trusted:
            return base
        keys = ("ip:" + self.group(ip), "login:" + login.lower())
        worst = 0
        for key in keys:
            count = self._failures.get(key, 0) + 1
            self._failures[key] = count
            worst = max(worst, count)
        return min(PENALTY_CAP, base * 2 ** (worst - 1)) if base > 0 else 0.0

    def login_succeeded(self, ip: str, login: str) -> None:
        if not self._failures.currsize:  # the common case; a TTLCache pop is not free
            return
        self._failures.pop("ip:" + self.group(ip), None)
        self._failures.pop("login:" + login.lower(), None)
