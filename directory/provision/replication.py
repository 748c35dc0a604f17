"""Read-your-writes for a replicated directory: wait until the consumers show a change.

With ``[provision] uri`` set, the admin tool writes to the provider while the proxies read
``[directory] uri``: syncrepl consumers that learn of the write a moment later. A ``user
add`` followed at once by a login through a proxy would then fail on a consumer that has
not heard yet, so after each provisioning write the tool polls every consumer, bounded by
``[provision] replication_wait``, until it shows the change.

"Shows the change" is decided by the entry's ``entryCSN``, the change sequence number
slapd stamps on every write and syncrepl copies unchanged: read on the provider right after
the write, a consumer has the change once its copy of the entry carries that CSN or a later
one (CSNs of one format sort as strings). A deletion is seen once the entry is gone.

A consumer that does not catch up in time is reported, never an error: the write happened,
and the consumer will most likely have it by the time anyone notices.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ldap3 import BASE, NONE, SIMPLE, Connection, Server
from ldap3.core.exceptions import LDAPException

from directory.ldaptls import ldap3_start_tls, ldap3_tls
from directory.provision.ldapwrite import LdapWriter
from directory.settings import DirectorySettings, ToolConfig

POLL_INTERVAL = 0.05
NO_SUCH_OBJECT = 32
#: What a probe reports: the entry's entryCSN, "" if it has none, ``None`` if it is absent.
Seen = str | None


class ProbeError(Exception):
    """A consumer could not be asked (down, refused the bind): it counts as not caught up."""


Probe = Callable[[str, str], Seen]  # (consumer URI, DN) -> what it shows


@dataclass(frozen=True, slots=True)
class Replication:
    """Which consumers showed the change within ``[provision] replication_wait``."""

    replicated: tuple[str, ...]
    not_replicated: tuple[str, ...]
    problems: tuple[str, ...] = ()  # why, for each consumer not caught up

    def as_dict(self) -> dict[str, object]:
        return {"replicated": list(self.replicated), "not_replicated": list(self.not_replicated)}

    def warnings(self, what: str) -> tuple[str, ...]:
        if not self.not_replicated:
            return ()
        return (
            f"{what}: not yet on {', '.join(self.not_replicated)} after waiting for replication "
            f"({'; '.join(self.problems)}); proxies reading there see the old state until it "
            f"catches up",
        )


def caught_up(seen: Seen, csn: str | None) -> bool:
    """Does what a consumer shows include the change? ``csn`` None means "deleted"; an
    empty ``csn`` (a server that keeps none) means "present is enough"."""
    if csn is None:
        return seen is None
    return seen is not None and seen >= csn


def wait_for(
    consumers: Sequence[str],
    dn: str,
    csn: str | None,
    wait: float,
    probe: Probe,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Replication:
    """Poll ``consumers`` every :data:`POLL_INTERVAL` until each shows the change or ``wait``
    seconds pass; every consumer is asked at least once, however short ``wait``."""
    deadline = clock() + wait
    pending = list(dict.fromkeys(consumers))
    done: list[str] = []
    last: dict[str, str] = {}
    while True:
        for uri in list(pending):
            try:
                seen = probe(uri, dn)
            except ProbeError as exc:
                last[uri] = f"{uri}: {exc}"
                continue
            if caught_up(seen, csn):
                pending.remove(uri)
                done.append(uri)
            else:
                last[uri] = f"{uri}: " + (
                    "still has the entry"
                    if csn is None
                    else "no such entry yet"
                    if seen is None
                    else f"entryCSN {seen or 'none'} older than {csn}"
                )
        if not pending or clock() >= deadline:
            break
        sleep(min(POLL_INTERVAL, max(0.0, deadline - clock())))
    ordered = [uri for uri in consumers if uri in done]
    return Replication(
        tuple(dict.fromkeys(ordered)), tuple(pending), tuple(last[uri] for uri in pending)
    )


class ConsumerProbe:
    """Reads one entry's ``entryCSN`` on each consumer as the proxies' own identity
    (``[directory] bind_dn``), over one connection per consumer kept for the whole wait."""

    def __init__(self, directory: DirectorySettings) -> None:
        self._settings = directory
        self._conns: dict[str, Connection] = {}

    def _connection(self, uri: str) -> Connection:
        conn = self._conns.get(uri)
        if conn is not None:
            return conn
        d = self._settings
        server = Server(uri, get_info=NONE, connect_timeout=d.timeout, tls=ldap3_tls(d, uri))
        conn = Connection(
            server,
            user=d.bind_dn or None,
            password=d.bind_password.encode("utf-8") if d.bind_dn else None,
            authentication=SIMPLE if d.bind_dn else None,
            receive_timeout=max(1, math.ceil(d.timeout)),
            raise_exceptions=False,
            auto_referrals=False,
            check_names=False,
        )
        try:
            conn.open()
            ldap3_start_tls(d, uri, conn)
            if not conn.bind():
                result = conn.result or {}
                raise ProbeError(f"bind refused ({result.get('description')})")
        except LDAPException as exc:
            _close(conn)
            raise ProbeError(str(exc)) from None
        except ProbeError:
            _close(conn)
            raise
        self._conns[uri] = conn
        return conn

    def __call__(self, uri: str, dn: str) -> Seen:
        conn = self._connection(uri)
        try:
            conn.search(dn, "(objectClass=*)", search_scope=BASE, attributes=["entryCSN"])
        except LDAPException as exc:
            self._drop(uri)
            raise ProbeError(str(exc)) from None
        code = (conn.result or {}).get("result")
        if code == NO_SUCH_OBJECT:
            return None
        if code != 0:
            self._drop(uri)
            raise ProbeError(f"search refused ({(conn.result or {}).get('description')})")
        for item in conn.response or []:
            if item.get("type") == "searchResEntry":
                values = item.get("raw_attributes", {}).get("entryCSN") or [b""]
                value = values[0]
                return value.decode("ascii", "replace") if isinstance(value, bytes) else value
        return None

    def _drop(self, uri: str) -> None:
        conn = self._conns.pop(uri, None)
        if conn is not None:
            _close(conn)

    def close(self) -> None:
        for uri in list(self._conns):
            self._drop(uri)


def _close(conn: Connection) -> None:
    try:
        conn.unbind()
    except Exception:
        pass


def enabled(settings: ToolConfig) -> bool:
    """Only a separate provider makes the check meaningful: writing where the proxies read,
    every read after the write sees it anyway."""
    p = settings.provision
    return bool(p.uri) and p.replication_wait > 0


def after_write(
    settings: ToolConfig, writer: LdapWriter, dn: str, *, deleted: bool = False
) -> Replication | None:
    """Wait until every ``[directory] uri`` shows the write just made to ``dn`` on the
    provider (``deleted``: its removal); ``None`` when there is nothing to check."""
    if not enabled(settings):
        return None
    csn: str | None = None
    if not deleted:
        entry = writer.get(dn, ("entryCSN",))
        csn = (entry.first("entryCSN") or "") if entry is not None else ""
    probe = ConsumerProbe(settings.directory)
    try:
        return wait_for(settings.directory.uri, dn, csn, settings.provision.replication_wait, probe)
    finally:
        probe.close()
