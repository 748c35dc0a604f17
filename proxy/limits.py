"""Connection limits and the growing delay after failed logins (Dovecot's anvil penalty).

Counted per process (each worker enforces its share). Clients in ``trusted_networks``
(webmail, the LAN) are exempt from the per-address limit and the growing penalty, since many
users share their address; they still get the base ``auth_failure_delay``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cachetools import TTLCache

from proxy.config import ProxySettings

PENALTY_CAP = 15.0  # seconds, as Dovecot's auth_penalty
PENALTY_MEMORY = 3600.0  # failures are forgotten after an hour without a new one
_MAX_TRACKED = 100_000


class Limits:
    __slots__ = ("_failures", "_per_ip", "settings", "total")

    def __init__(self, settings: ProxySettings, timer: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.total = 0
        self._per_ip: dict[str, int] = {}
        self._failures: TTLCache[str, int] = TTLCache(_MAX_TRACKED, PENALTY_MEMORY, timer=timer)

    # connections ------------------------------------------------------------------------
    def admit(self, ip: str, trusted: bool) -> bool:
        """Count a new connection, or refuse it (then nothing is counted)."""
        if self.total >= self.settings.max_connections:
            return False
        count = self._per_ip.get(ip, 0)
        if not trusted and count >= self.settings.max_connections_per_ip:
            return False
        self.total += 1
        self._per_ip[ip] = count + 1
        return True

    def release(self, ip: str) -> None:
        self.total -= 1
        count = self._per_ip.get(ip, 0) - 1
        if count > 0:
            self._per_ip[ip] = count
        else:
            self._per_ip.pop(ip, None)

    # failed logins ----------------------------------------------------------------------
    def failure_delay(self, ip: str, login: str, trusted: bool) -> float:
        """Record one failed login and say how long to wait before answering it.

        The delay doubles with each recent failure from the address or against the login,
        whichever has more, up to PENALTY_CAP: a password guesser slows down quickly, a
        user with a typo hardly notices.
        """
        base = self.settings.auth_failure_delay
        if trusted:
            return base
        keys = ("ip:" + ip, "login:" + login.lower())
        worst = 0
        for key in keys:
            count = self._failures.get(key, 0) + 1
            self._failures[key] = count
            worst = max(worst, count)
        return min(PENALTY_CAP, base * 2 ** (worst - 1)) if base > 0 else 0.0

    def login_succeeded(self, ip: str, login: str) -> None:
        if not self._failures.currsize:  # the common case; a TTLCache pop is not free
            return
        self._failures.pop("ip:" + ip, None)
        self._failures.pop("login:" + login.lower(), None)
