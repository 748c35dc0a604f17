"""Which LDAP servers to skip: one that timed out is "down" for a back-off period.

A hung server (slapd stopped with SIGSTOP, a host that accepts TCP and never answers) makes
every request sent to it wait the whole timeout. Once one request has paid that, the server
is skipped: logins fail over to the next URI at once, or are told "unavailable" at once,
instead of each queueing up to find out again. A server that *refuses* connections is not
marked: refusing is fast, so trying it again costs nothing and it is back the moment it
restarts.

Only state and the clock live here (the clock is injected, so this is tested without
sleeping). How a down server is tried again is the driver's choice: the native driver
probes it in the background and marks it up when it answers; the ldap3 driver, which has
no event loop of its own, lets one caller per back-off period try it (a half-open circuit).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(slots=True)
class _Down:
    since: float
    retry_at: float


class ServerHealth:
    """Per-URI down/up state shared by every connection a source opens."""

    __slots__ = ("_backoff", "_clock", "_down")

    def __init__(self, backoff: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._backoff = backoff
        self._clock = clock
        self._down: dict[str, _Down] = {}

    @property
    def backoff(self) -> float:
        return self._backoff

    def is_down(self, uri: str) -> bool:
        return uri in self._down

    def down(self) -> list[str]:
        return list(self._down)

    def mark_down(self, uri: str) -> bool:
        """Skip ``uri`` for one back-off period from now; True if it was up until now (so the
        caller logs it once, not once per failed request)."""
        now = self._clock()
        state = self._down.get(uri)
        self._down[uri] = _Down(now if state is None else state.since, now + self._backoff)
        return state is None

    def mark_up(self, uri: str) -> bool:
        """True if ``uri`` had been down (worth a log line: the outage is over)."""
        return self._down.pop(uri, None) is not None

    def down_for(self, uri: str) -> float:
        """Seconds since ``uri`` was marked down (0 when it is up)."""
        state = self._down.get(uri)
        return 0.0 if state is None else self._clock() - state.since

    def retry_in(self, uri: str) -> float:
        """Seconds until ``uri`` is due to be tried again (0 when up or already due)."""
        state = self._down.get(uri)
        return 0.0 if state is None else max(0.0, state.retry_at - self._clock())

    def candidates(self, uris: Iterable[str], trial: bool = False) -> list[str]:
        """The URIs worth trying now, in configured order.

        With ``trial``, a down URI whose back-off has run out is included once and its next
        retry pushed a back-off period ahead, so exactly one caller tries it while the others
        keep skipping it (if that caller gets an answer it marks it up; if not, down again).
        """
        now = self._clock()
        out = []
        for uri in uris:
            state = self._down.get(uri)
            if state is None:
                out.append(uri)
            elif trial and now >= state.retry_at:
                state.retry_at = now + self._backoff
                out.append(uri)
        return out
