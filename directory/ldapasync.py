"""The LDAP user source on the event loop itself: no threads, no pyasn1.

Searches share one connection bound as the service account (LDAP multiplexes operations by
message id). Binds need a connection each while they run (a bind changes the connection's
identity), so they use a small pool. Servers are tried in the configured order; a broken
connection is dropped and the operation retried once on a fresh one, so an LDAP restart
costs one reconnect, not an error.

A server that *hangs* (accepts, never answers) is the costly failure: every request to it
waits the whole timeout. So a server that times out once is marked down
(:mod:`directory.serverhealth`), skipped by every later request, and probed in the
background until it answers again. Waiters never queue to retry it: concurrent searches share
one connection attempt, and with several URIs each server gets an equal share of
``timeout``, so failing over to the next one still fits within it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import urllib.parse
from collections.abc import Callable

from directory.filters import parse_filter
from directory.ldaptls import ssl_context, uses_starttls
from directory.ldapwire import (
    SCOPES,
    LdapWireError,
    Response,
    bind_request,
    decode_message,
    message_length,
    search_request,
    starttls_request,
    unbind_request,
)
from directory.model import DirectoryUnavailable, Route, route_from_entry
from directory.names import render_filter
from directory.serverhealth import ServerHealth
from directory.settings import DirectorySettings

log = logging.getLogger("mailfarm.directory")

SUCCESS, SIZE_LIMIT_EXCEEDED, NO_SUCH_OBJECT = 0, 4, 32
_BIND_REFUSED = {49, 53}  # invalidCredentials, unwillingToPerform
_DONE_OPS = {0x61, 0x65, 0x78}  # BindResponse, SearchResultDone, ExtendedResponse


class _Broken(Exception):
    """The connection failed mid-operation; the caller may retry on a new one."""


class _Refused(Exception):
    """The server answered, but refused the service bind (or StartTLS): try the next
    server."""


class _Pending:
    __slots__ = ("entries", "future")

    def __init__(self, future: asyncio.Future[tuple[Response, list[Response]]]) -> None:
        self.future = future
        self.entries: list[Response] = []


class LdapConnection(asyncio.Protocol):
    def __init__(self, uri: str = "") -> None:
        self.uri = uri  # which server: a timeout here marks that one down
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._pending: dict[int, _Pending] = {}
        self._next_id = 1
        self.broken = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buf += data
        try:
            while (n := message_length(self._buf)) is not None:
                message = decode_message(bytes(self._buf[:n]))
                del self._buf[:n]
                self._dispatch(message)
        except LdapWireError as exc:
            self.fail(f"bad data from LDAP server: {exc}")

    def _dispatch(self, message: Response) -> None:
        if message.message_id == 0:  # unsolicited: Notice of Disconnection
            self.fail(f"server disconnects: {message.diagnostic or message.result_code}")
            return
        pending = self._pending.get(message.message_id)
        if pending is None:
            return
        if message.op == 0x64:
            pending.entries.append(message)
        elif message.op in _DONE_OPS:
            del self._pending[message.message_id]
            if not pending.future.done():
                pending.future.set_result((message, pending.entries))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail("connection lost")

    def fail(self, why: str) -> None:
        self.broken = True
        pending, self._pending = self._pending, {}
        for p in pending.values():
            if not p.future.done():
                p.future.set_exception(_Broken(why))
        if self.transport is not None:
            self.transport.abort()

    async def request(self, build: Callable[[int], bytes]) -> tuple[Response, list[Response]]:
        if self.broken or self.transport is None:
            raise _Broken("connection closed")
        message_id = self._next_id
        self._next_id = message_id + 1 if message_id < 0x7FFFFFFF else 1
        future: asyncio.Future[tuple[Response, list[Response]]] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending[message_id] = _Pending(future)
        self.transport.write(build(message_id))
        try:
            return await future
        finally:
            # A request given up on (timed out, caller cancelled) must not stay pending on a
            # connection that lives on (the shared search connection does).
            self._pending.pop(message_id, None)

    def close(self) -> None:
        if self.transport is not None and not self.broken:
            self.transport.write(unbind_request(self._next_id))
            self.transport.close()
        self.broken = True


def _endpoint(uri: str) -> tuple[str, str, int, bool]:
    """(kind, host or socket path, port, tls) for an ldap://, ldaps:// or ldapi:// URI."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme == "ldapi":
        path = urllib.parse.unquote(parts.netloc or parts.path) or "/var/run/slapd/ldapi"
        return "unix", path, 0, False
    tls = parts.scheme == "ldaps"
    return "tcp", parts.hostname or "localhost", parts.port or (636 if tls else 389), tls


def _retrieve(task: asyncio.Task[object]) -> None:
    """A shared task whose waiters all gave up must not log "exception never retrieved"."""
    if not task.cancelled():
        task.exception()


class AsyncLdapSource:
    """Implements the directory source interface with coroutines (``is_async``)."""

    is_async = True

    def __init__(self, settings: DirectorySettings) -> None:
        self._settings = settings
        self._attributes = ["uid", "mail", "mailRoutingAddress", settings.host_attribute]
        for extra in (settings.port_attribute, settings.disabled_attribute):
            if extra:
                self._attributes.append(extra)
        # Built once at start: a bad CA or client key fails there, and tls_verify = false
        # is logged there, not at the first login.
        self._tls = ssl_context(settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        # Outlives event loops (unlike connections and tasks): a server found hung stays
        # skipped, and a new loop starts probing it again.
        self._health = ServerHealth(settings.down_backoff)
        self._reset()

    def _reset(self) -> None:
        self._search_conn: LdapConnection | None = None
        self._search_opening: asyncio.Task[LdapConnection] | None = None
        self._idle_auth: list[LdapConnection] = []
        self._auth_slots = asyncio.Semaphore(self._settings.pool_size)
        self._probes: dict[str, asyncio.Task[None]] = {}

    def _bind_loop(self) -> None:
        """Connections belong to one event loop; a caller on another (a CLI calling
        asyncio.run twice, a test) starts afresh instead of touching dead transports."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._reset()

    # -- servers: which to try, and how long each may take --------------------------------

    def _candidates(self) -> list[str]:
        """Servers worth trying now, in order; a down one is left to its background probe."""
        for uri in self._health.down():
            self._ensure_probe(uri)
        return self._health.candidates(self._settings.uri)

    def _request_wait(self) -> float:
        """How long one request may wait for its server: the timeout, shared among the
        servers still worth trying, so a failover after it still fits within the timeout."""
        return self._settings.timeout / max(1, len(self._candidates()))

    def _timed_out(self, uri: str, waited: float) -> None:
        """``uri`` did not answer in time: skip it from now on, and stop using anything
        connected to it (whatever is pending there will not be answered either)."""
        if self._health.mark_down(uri):
            log.warning(
                "LDAP server %s did not answer within %.1fs: skipping it, probing it every "
                "%gs until it answers",
                uri,
                waited,
                self._health.backoff,
            )
        self._ensure_probe(uri)
        if self._search_conn is not None and self._search_conn.uri == uri:
            self._search_conn.fail(f"{uri} does not answer")
        keep = []
        for conn in self._idle_auth:
            if conn.uri == uri:
                conn.fail(f"{uri} does not answer")
            else:
                keep.append(conn)
        self._idle_auth = keep

    def _ensure_probe(self, uri: str) -> None:
        probe = self._probes.get(uri)
        if probe is None or probe.done():
            self._probes[uri] = asyncio.get_running_loop().create_task(
                self._probe(uri), name=f"ldap-probe {uri}"
            )

    async def _probe(self, uri: str) -> None:
        """Until ``uri`` answers again: wait out the back-off, try one bind, repeat."""
        while self._health.is_down(uri):
            await asyncio.sleep(self._health.retry_in(uri))
            if await self._answers(uri):
                took = self._health.down_for(uri)
                if self._health.mark_up(uri):
                    log.warning("LDAP server %s answers again after %.0fs; using it", uri, took)
                return
            self._health.mark_down(uri)  # still hung: another back-off period

    async def _answers(self, uri: str) -> bool:
        """Does ``uri`` answer a bind within the timeout? Any answer counts (even a refusal:
        what made it down was silence); so does a fast error, which costs a login nothing."""
        s = self._settings
        conn: LdapConnection | None = None
        try:
            async with asyncio.timeout(s.timeout):
                conn = await self._connect(uri, service_bind=False)
                await conn.request(self._service_bind)
        except TimeoutError:
            return False
        except (OSError, _Broken, _Refused, ssl.SSLError):
            return True
        finally:
            if conn is not None:
                conn.close()
        return True

    # -- connections ----------------------------------------------------------------------

    async def _connect(self, uri: str, service_bind: bool) -> LdapConnection:
        """A connection to ``uri`` (service-bound if asked); the caller bounds the time."""
        loop = asyncio.get_running_loop()
        kind, host, port, tls = _endpoint(uri)
        conn: LdapConnection | None = None
        try:
            if kind == "unix":
                _, conn = await loop.create_unix_connection(lambda: LdapConnection(uri), host)
            else:
                _, conn = await loop.create_connection(
                    lambda: LdapConnection(uri),
                    host,
                    port,
                    ssl=self._tls if tls else None,
                    server_hostname=host if tls else None,
                )
                if not tls and uses_starttls(self._settings, uri):
                    await self._start_tls(conn, host)
            if service_bind and self._settings.bind_dn:
                done, _ = await conn.request(self._service_bind)
                if done.result_code != SUCCESS:
                    raise _Refused(f"service bind refused ({done.result_code})")
        except BaseException:
            if conn is not None:
                conn.fail("abandoned")  # half-open: never leak it
            raise
        return conn

    async def _start_tls(self, conn: LdapConnection, host: str) -> None:
        """Upgrade ``conn`` in place before anything else is sent on it. A refusal is this
        server failing (:class:`_Refused`), never a reason to go on in plaintext."""
        done, _ = await conn.request(starttls_request)
        if done.result_code != SUCCESS:
            why = f"refused StartTLS: result {done.result_code} {done.diagnostic}".rstrip()
            log.error("LDAP server %s %s", conn.uri, why)
            raise _Refused(why)
        assert conn.transport is not None
        transport = await asyncio.get_running_loop().start_tls(
            conn.transport, conn, self._tls, server_hostname=host
        )
        if transport is None:  # the server closed during the handshake
            raise _Broken("connection lost during the TLS handshake")
        conn.transport = transport  # type: ignore[assignment]

    async def _open(self, service_bind: bool) -> LdapConnection:
        uris = self._candidates()
        if not uris:
            raise DirectoryUnavailable(self._all_down())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.timeout
        errors = []
        for i, uri in enumerate(uris):
            wait = max(0.0, deadline - loop.time()) / (len(uris) - i)
            try:
                async with asyncio.timeout(wait):
                    return await self._connect(uri, service_bind)
            except TimeoutError:
                self._timed_out(uri, wait)
                errors.append(f"{uri}: no answer within {wait:.1f}s")
            except (OSError, _Broken, _Refused, ssl.SSLError) as exc:
                errors.append(f"{uri}: {exc or type(exc).__name__}")
        raise DirectoryUnavailable("; ".join(errors))

    def _all_down(self) -> str:
        down = ", ".join(f"{u} for {self._health.down_for(u):.0f}s" for u in self._health.down())
        return f"every LDAP server is skipped after timing out ({down}); probing them"

    def _service_bind(self, message_id: int) -> bytes:
        s = self._settings
        return bind_request(message_id, s.bind_dn, s.bind_password.encode("utf-8"))

    async def _search_connection(self) -> LdapConnection:
        """The shared search connection; while it is being opened, everyone waits for that
        one attempt (and shares its failure) rather than each trying the servers again."""
        conn = self._search_conn
        if conn is not None and not conn.broken:
            return conn
        opening = self._search_opening
        if opening is None:
            opening = asyncio.get_running_loop().create_task(self._open_search())
            opening.add_done_callback(_retrieve)
            self._search_opening = opening
        return await asyncio.shield(opening)

    async def _open_search(self) -> LdapConnection:
        try:
            self._search_conn = await self._open(service_bind=True)
            return self._search_conn
        finally:
            self._search_opening = None

    async def _search(
        self,
        filter_text: str,
        attributes: list[str],
        size_limit: int,
        base: str | None = None,
        scope: str = "sub",
    ) -> tuple[Response, list[Response]]:
        """One search (by default of the subtree under the base), retried once on a fresh
        connection."""
        self._bind_loop()
        s = self._settings
        tree = parse_filter(filter_text)
        where = s.base if base is None else base

        def build(message_id: int) -> bytes:
            return search_request(
                message_id, where, tree, attributes, size_limit, scope=SCOPES[scope]
            )

        for attempt in (1, 2):
            conn = await self._search_connection()
            wait = self._request_wait()
            try:
                async with asyncio.timeout(wait):
                    return await conn.request(build)
            except TimeoutError:
                conn.fail("abandoned")  # a timed-out connection is not reused
                self._timed_out(conn.uri, wait)
                if attempt == 2:
                    raise DirectoryUnavailable(f"LDAP search: no answer from {conn.uri}") from None
            except _Broken as exc:
                conn.fail("abandoned")
                if attempt == 2:
                    raise DirectoryUnavailable(f"LDAP search failed: {exc}") from None
        raise AssertionError("unreachable")

    async def find_domain(self, domain: str) -> bool:
        """Is ``domain`` hosted: does the domain filter match an entry under the domains base
        (``domain_scope`` "one": a domain entry itself, never a DNS name below it)?"""
        s = self._settings
        done, entries = await self._search(
            render_filter(s.domain_filter, domain),
            ["1.1"],
            1,
            base=s.domains_base,
            scope=s.domain_scope,
        )
        if done.result_code == NO_SUCH_OBJECT:
            return False
        if done.result_code not in (SUCCESS, SIZE_LIMIT_EXCEEDED):
            raise DirectoryUnavailable(f"domain search failed: result {done.result_code}")
        return bool(entries)

    async def find(self, login: str) -> Route | None:
        s = self._settings
        done, entries = await self._search(render_filter(s.user_filter, login), self._attributes, 2)
        code = done.result_code
        if code == SIZE_LIMIT_EXCEEDED or len(entries) > 1:
            dns = [e.dn for e in entries]
            log.warning("login %r matches several entries %s; refusing to guess", login, dns)
            return None
        if code == NO_SUCH_OBJECT:
            log.warning("search base %r does not exist", s.base)
            return None
        if code != SUCCESS:
            raise DirectoryUnavailable(f"search failed: result {code} {done.diagnostic}")
        if not entries:
            return None
        entry = entries[0]
        return route_from_entry(
            entry.dn, entry.attributes, s.host_attribute, s.port_attribute, s.disabled_attribute
        )

    async def bind(self, dn: str, password: str) -> bool:
        if not password:
            return False  # an unauthenticated bind must never count as a login
        raw = password.encode("utf-8")
        self._bind_loop()
        async with self._auth_slots:
            for attempt in (1, 2):
                conn = self._idle_auth_connection() if attempt == 1 else None
                if conn is None:
                    conn = await self._open(False)
                wait = self._request_wait()
                try:
                    async with asyncio.timeout(wait):
                        done, _ = await conn.request(lambda i: bind_request(i, dn, raw))
                except TimeoutError:
                    conn.fail("abandoned")
                    self._timed_out(conn.uri, wait)  # drops its idle siblings too
                    if attempt == 2:
                        raise DirectoryUnavailable(
                            f"LDAP bind: no answer from {conn.uri}"
                        ) from None
                    continue
                except _Broken as exc:
                    conn.fail("abandoned")
                    # The server probably restarted: every idle connection is as dead as
                    # this one, so the retry must use a new connection, not another of them.
                    self._drop_idle_auth()
                    if attempt == 2:
                        raise DirectoryUnavailable(f"LDAP bind failed: {exc}") from None
                    continue
                except BaseException:
                    conn.fail("abandoned")  # given up mid-bind: its identity is unknown
                    raise
                self._idle_auth.append(conn)
                code = done.result_code
                if code == SUCCESS:
                    return True
                if code in _BIND_REFUSED:
                    return False
                raise DirectoryUnavailable(f"bind failed: result {code} {done.diagnostic}")
        raise AssertionError("unreachable")

    def _idle_auth_connection(self) -> LdapConnection | None:
        while self._idle_auth:
            conn = self._idle_auth.pop()
            # The server may have closed it while it sat idle, or since been found hung.
            if not conn.broken and not self._health.is_down(conn.uri):
                return conn
            conn.fail("dropped")
        return None

    def _drop_idle_auth(self) -> None:
        idle, self._idle_auth = self._idle_auth, []
        for conn in idle:
            conn.fail("dropped after a sibling broke")

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            for task in [self._search_opening, *self._probes.values()]:
                if task is not None:
                    task.cancel()
            for conn in [self._search_conn, *self._idle_auth]:
                if conn is not None:
                    conn.close()
        self._reset()
