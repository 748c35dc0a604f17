"""The LDAP user source: ldap3, pooled connections, URIs tried in order.

ldap3's synchronous strategy is used from a bounded thread pool (see
:mod:`directory.service`), so the event loop never waits on LDAP. Connections are kept and
reused: a login costs one search (often skipped by the route cache) and one bind on an
already-open connection, not a TCP handshake each time.

Two pools, because they hold different identities: search connections stay bound as the
service account; auth connections are re-bound as each user in turn.

A server that times out is marked down (:mod:`directory.serverhealth`) and skipped, so the
threads do not each wait for a hung server in turn; with no event loop to probe it from, one
caller per back-off period tries it again. Every wait is bounded: for a pool slot, for each
server (an equal share of ``timeout`` when there are several, so failover fits within it).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from ldap3 import LEVEL, NONE, SIMPLE, SUBTREE, Connection, Server
from ldap3.core.exceptions import LDAPException, LDAPResponseTimeoutError, LDAPSocketOpenError

from directory.ldaptls import ldap3_start_tls, ldap3_tls, ldap3_tls_intact
from directory.model import DirectoryUnavailable, Route, route_from_entry
from directory.names import render_filter
from directory.serverhealth import ServerHealth
from directory.settings import DirectorySettings

log = logging.getLogger("mailfarm.directory")

INVALID_CREDENTIALS = 49
SIZE_LIMIT_EXCEEDED = 4
NO_SUCH_OBJECT = 32
# Results that mean "this user cannot bind with that password", not "directory broken".
_BIND_REFUSED = {INVALID_CREDENTIALS, 53}  # 53: unwillingToPerform (e.g. locked, empty pw)

T = TypeVar("T")

_URI = "mailfarm_uri"  # attribute naming the server a connection was opened to


def _is_timeout(exc: BaseException) -> bool:
    """ldap3 merges the socket's own exception into its own class, so a timeout stays one;
    several candidate addresses come back as a list of them."""
    if isinstance(exc, TimeoutError | LDAPResponseTimeoutError):
        return True
    history = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], list) else []
    return bool(history) and all(isinstance(e, TimeoutError) for e, *_ in history)


class _HealthSink(Protocol):
    def usable(self, conn: Connection) -> bool: ...
    def answered(self, conn: Connection) -> None: ...
    def timed_out(self, conn: Connection) -> None: ...


class _Pool:
    """A small pool of open ldap3 connections; a broken one is dropped, never reused."""

    def __init__(
        self,
        size: int,
        opener: Callable[[], Connection],
        slot_timeout: float,
        health: _HealthSink,
    ) -> None:
        self._idle: queue.LifoQueue[Connection] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)
        self._opener = opener
        self._slot_timeout = slot_timeout
        self._health = health

    def _idle_connection(self) -> Connection | None:
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                return None
            if self._health.usable(conn):
                return conn
            _close_quietly(conn)  # its server was found hung since

    def run(self, job: Callable[[Connection], T]) -> T:
        """Run ``job`` on a pooled connection, retrying once on a fresh one if it broke.

        One retry covers the common case of a server that restarted or closed an idle
        connection; a second failure means the directory is really unreachable.
        """
        # Bounded: a thread must not sit here for a login that has long been answered.
        if not self._slots.acquire(timeout=self._slot_timeout):
            raise DirectoryUnavailable("every LDAP connection is busy")
        try:
            for attempt in (1, 2):
                conn = self._idle_connection() if attempt == 1 else None
                if conn is None:
                    conn = self._opener()
                try:
                    result = job(conn)
                except DirectoryUnavailable:
                    _close_quietly(conn)  # in an unknown state: not back into the pool
                    raise
                except LDAPException as exc:
                    _close_quietly(conn)
                    if _is_timeout(exc):
                        self._health.timed_out(conn)  # the retry then skips that server
                    if attempt == 2:
                        raise DirectoryUnavailable(f"LDAP error: {exc}") from None
                    continue
                self._health.answered(conn)
                self._idle.put(conn)
                return result
        finally:
            self._slots.release()
        raise AssertionError("unreachable")

    def close(self) -> None:
        while True:
            try:
                _close_quietly(self._idle.get_nowait())
            except queue.Empty:
                return


def _close_quietly(conn: Connection) -> None:
    try:
        conn.unbind()
    except Exception:
        pass


class LdapSource:
    """Implements :class:`directory.model.UserSource` over one or more LDAP servers."""

    def __init__(self, settings: DirectorySettings) -> None:
        self._settings = settings
        # One per URI (each checks its own host name); built now so that tls_verify = false
        # is logged at start.
        self._tls = {uri: ldap3_tls(settings, uri) for uri in settings.uri}
        self._attributes = ["uid", "mail", "mailRoutingAddress", settings.host_attribute]
        for extra in (settings.port_attribute, settings.disabled_attribute):
            if extra:
                self._attributes.append(extra)
        self._health = ServerHealth(settings.down_backoff)
        self._health_lock = threading.Lock()
        # Each server's share of the timeout (several URIs: failover must fit within it).
        self._share = settings.timeout / len(settings.uri)

        self._search = _Pool(settings.pool_size, self._open_search, settings.timeout, self)
        self._auth = _Pool(settings.pool_size, self._open_auth, settings.timeout, self)

    # What the pools tell us about the server behind a connection (the _HealthSink).

    def usable(self, conn: Connection) -> bool:
        """An idle connection to a server found hung since would only wait again."""
        return not self._health.is_down(getattr(conn, _URI, ""))

    def answered(self, conn: Connection) -> None:
        self._answered(getattr(conn, _URI, ""))

    def timed_out(self, conn: Connection) -> None:
        self._timed_out(getattr(conn, _URI, ""))

    def _timed_out(self, uri: str) -> None:
        with self._health_lock:
            newly = self._health.mark_down(uri)
        if newly:
            log.warning(
                "LDAP server %s did not answer within the timeout: skipping it, letting one "
                "login try it every %gs",
                uri,
                self._health.backoff,
            )

    def _answered(self, uri: str) -> None:
        if not self._health.is_down(uri):
            return  # the usual case, after every job: no lock
        with self._health_lock:
            took = self._health.down_for(uri)
            back = self._health.mark_up(uri)
        if back:
            log.warning("LDAP server %s answers again after %.0fs; using it", uri, took)

    def _open(self, user: str | None, password: str | None) -> Connection:
        """Open a connection to the first server that answers, in configured order,
        skipping servers found hung (but letting one caller per back-off try each again)."""
        with self._health_lock:
            uris = self._health.candidates(self._settings.uri, trial=True)
        if not uris:
            raise DirectoryUnavailable("every LDAP server is skipped after timing out")
        deadline = time.monotonic() + self._settings.timeout
        errors = []
        for i, uri in enumerate(uris):
            wait = max(self._share, (deadline - time.monotonic()) / (len(uris) - i))
            # A new Server each time: ldap3 remembers a failed address and skips it for
            # seconds, which would delay recovery after an LDAP restart.
            server = Server(uri, get_info=NONE, connect_timeout=wait, tls=self._tls.get(uri))
            conn = Connection(
                server,
                user=user or None,
                password=password or None,
                authentication=SIMPLE if user else None,
                receive_timeout=max(1, math.ceil(self._share)),  # ldap3 packs an int
                raise_exceptions=False,
                read_only=True,
                auto_referrals=False,
                check_names=False,
            )
            setattr(conn, _URI, uri)
            try:
                conn.open()
                ldap3_start_tls(self._settings, uri, conn)  # before any bind, or not at all
                if user and not conn.bind():
                    code = conn.result.get("result")
                    _close_quietly(conn)
                    self._answered(uri)
                    errors.append(f"{server.name}: service bind refused (result {code})")
                    continue
                if user:
                    self._answered(uri)  # a trial that got an answer ends the outage
                return conn  # connected only: the job's answer (or timeout) tells
            except LDAPException as exc:
                _close_quietly(conn)
                if _is_timeout(exc):
                    self._timed_out(uri)
                else:
                    self._answered(uri)  # a fast refusal is not a hang
                errors.append(f"{server.name}: {exc}")
        raise DirectoryUnavailable("; ".join(errors) or "no LDAP server configured")

    def _open_search(self) -> Connection:
        s = self._settings
        return self._open(s.bind_dn, s.bind_password)

    def _open_auth(self) -> Connection:
        return self._open(None, None)

    def find(self, login: str) -> Route | None:
        s = self._settings
        search_filter = render_filter(s.user_filter, login)

        def job(conn: Connection) -> Route | None:
            conn.search(
                s.base,
                search_filter,
                search_scope=SUBTREE,
                attributes=self._attributes,
                size_limit=2,
            )
            code = conn.result.get("result")
            if code == SIZE_LIMIT_EXCEEDED or len(conn.response or []) > 1:
                entries = [
                    e.get("dn") for e in conn.response or [] if e.get("type") == "searchResEntry"
                ]
                log.warning(
                    "login %r matches several entries %s; refusing to guess", login, entries
                )
                return None
            if code == NO_SUCH_OBJECT:
                log.warning("search base %r does not exist", s.base)
                return None
            if code != 0:
                raise DirectoryUnavailable(
                    f"search failed: result {code} {conn.result.get('description')}"
                )
            for entry in conn.response or []:
                if entry.get("type") != "searchResEntry":
                    continue
                raw = entry.get("raw_attributes", {})
                attrs = {k.lower(): _decode_values(v) for k, v in raw.items()}
                return route_from_entry(
                    entry["dn"], attrs, s.host_attribute, s.port_attribute, s.disabled_attribute
                )
            return None

        return self._search.run(job)

    def find_domain(self, domain: str) -> bool:
        """Is ``domain`` hosted: does the domain filter match an entry under the domains base
        (``domain_scope`` "one": a domain entry itself, never a DNS name below it)?"""
        s = self._settings
        search_filter = render_filter(s.domain_filter, domain)
        scope = LEVEL if s.domain_scope == "one" else SUBTREE

        def job(conn: Connection) -> bool:
            conn.search(
                s.domains_base, search_filter, search_scope=scope, attributes=["1.1"], size_limit=1
            )
            code = conn.result.get("result")
            if code == NO_SUCH_OBJECT:
                return False
            if code not in (0, SIZE_LIMIT_EXCEEDED):
                raise DirectoryUnavailable(f"domain search failed: result {code}")
            return any(e.get("type") == "searchResEntry" for e in conn.response or [])

        return self._search.run(job)

    def bind(self, dn: str, password: str) -> bool:
        if not password:
            return False  # an unauthenticated bind must never count as a login

        def job(conn: Connection) -> bool:
            if not ldap3_tls_intact(self._settings, getattr(conn, _URI, ""), conn):
                # ldap3's bind() would re-open a closed connection without StartTLS.
                raise LDAPSocketOpenError("connection lost its TLS layer")
            conn.user = dn
            # Bytes skip ldap3's SASLprep, which rejects control characters and rewrites some
            # spaces: slapd and the backends compare the raw octets, so we must send those.
            conn.password = password.encode("utf-8")
            conn.authentication = SIMPLE
            ok = conn.bind()
            if ok:
                return True
            code = conn.result.get("result")
            if code in _BIND_REFUSED:
                return False
            if code is None:
                raise DirectoryUnavailable("bind got no answer")
            raise DirectoryUnavailable(
                f"bind failed: result {code} {conn.result.get('description')}"
            )

        return self._auth.run(job)

    def close(self) -> None:
        self._search.close()
        self._auth.close()


def _decode_values(values: object) -> list[str]:
    items = values if isinstance(values, list) else [values]
    out = []
    for v in items:
        out.append(v.decode("utf-8", "replace") if isinstance(v, bytes | bytearray) else str(v))
    return out
