"""The state of a running or interrupted ``user move``, kept in the user's own entry.

A move must survive the death of the command that runs it, so nothing it needs afterwards
lives on the machine that ran it. It writes one value into ``[directory]
disabled_attribute`` next to whatever values were there (which it never touches):

* ``mailfarm-move to=<host> until=<unix time>`` while mail is copied: a *lease*. The
  proxies refuse logins while it runs, and the mover renews it every quarter of its
  length (``[provision] move_lease``, 120 s by default); a mover that was killed stops
  renewing, so once ``until`` has passed logins work again on the old backend, which
  still has everything.
* ``mailfarm-move-cleanup from=<host>`` once ``mailHost`` points at the new backend: the
  old backend still holds a copy that a later run must catch up from and delete. It does
  not refuse logins.

Running the same move again reads these to finish or undo what was left (see
:mod:`directory.provision.move`). The attribute must take strings (``description`` does);
a BOOLEAN attribute cannot hold them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

LEASE = "mailfarm-move"
CLEANUP = "mailfarm-move-cleanup"
#: Seconds one lease lasts by default ([provision] move_lease); a running move renews it
#: every quarter of that.
LEASE_SECONDS = 120.0


@dataclass(frozen=True, slots=True)
class MoveState:
    kind: str  # LEASE or CLEANUP
    host: str  # the target of a lease, the old backend of a cleanup
    until: float = 0.0  # leases only

    def live(self, now: float | None = None) -> bool:
        """A lease still in force (its mover may be running); cleanups never are."""
        return self.kind == LEASE and (time.time() if now is None else now) < self.until

    def value(self) -> str:
        if self.kind == LEASE:
            return f"{LEASE} to={self.host} until={int(self.until)}"
        return f"{CLEANUP} from={self.host}"


def lease(target: str, seconds: float = LEASE_SECONDS, now: float | None = None) -> MoveState:
    return MoveState(LEASE, target, (time.time() if now is None else now) + seconds)


def cleanup(source: str) -> MoveState:
    return MoveState(CLEANUP, source)


def parse(value: str) -> MoveState | None:
    """The move state a value holds, or ``None`` for any other value (kept as it is)."""
    kind, _, rest = value.strip().partition(" ")
    if kind not in (LEASE, CLEANUP):
        return None
    fields = dict(part.partition("=")[::2] for part in rest.split())
    host = fields.get("to" if kind == LEASE else "from", "")
    if not host:
        return None
    if kind == CLEANUP:
        return MoveState(CLEANUP, host)
    try:
        return MoveState(LEASE, host, float(fields.get("until", "")))
    except ValueError:
        return None


def states(values: list[str]) -> list[MoveState]:
    return [s for s in map(parse, values) if s is not None]
