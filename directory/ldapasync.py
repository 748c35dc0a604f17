"""The LDAP user source on the event loop itself: no threads, no pyasn1.

Searches share one connection bound as the service account (LDAP multiplexes operations by
message id). Binds need a connection each while they run (a bind changes the connection's
identity), so they use a small pool. Servers are tried in the configured order; a broken
connection is dropped and the operation retried once on a fresh one, so an LDAP restart
costs one reconnect, not an error.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import urllib.parse
from collections.abc import Callable

from directory.filters import parse_filter
from directory.ldapwire import (
    LdapWireError,
    Response,
    bind_request,
    decode_message,
    message_length,
    search_request,
    unbind_request,
)
from directory.model import DirectoryUnavailable, Route, route_from_entry
from directory.names import render_filter
from proxy.config import DirectorySettings

log = logging.getLogger("mailfarm.directory")

SUCCESS, SIZE_LIMIT_EXCEEDED, NO_SUCH_OBJECT = 0, 4, 32
_BIND_REFUSED = {49, 53}  # invalidCredentials, unwillingToPerform
_DONE_OPS = {0x61, 0x65}  # BindResponse, SearchResultDone


class _Broken(Exception):
    """The connection failed mid-operation; the caller may retry on a new one."""


class _Pending:
    __slots__ = ("entries", "future")

    def __init__(self, future: asyncio.Future[tuple[Response, list[Response]]]) -> None:
        self.future = future
        self.entries: list[Response] = []


class LdapConnection(asyncio.Protocol):
    def __init__(self) -> None:
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
        return await future

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


class AsyncLdapSource:
    """Implements the directory source interface with coroutines (``is_async``)."""

    is_async = True

    def __init__(self, settings: DirectorySettings) -> None:
        self._settings = settings
        self._attributes = ["uid", "mail", "mailRoutingAddress", settings.host_attribute]
        for extra in (settings.port_attribute, settings.disabled_attribute):
            if extra:
                self._attributes.append(extra)
        self._tls = ssl.create_default_context()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reset()

    def _reset(self) -> None:
        self._search_conn: LdapConnection | None = None
        self._search_lock = asyncio.Lock()
        self._idle_auth: list[LdapConnection] = []
        self._auth_slots = asyncio.Semaphore(self._settings.pool_size)

    def _bind_loop(self) -> None:
        """Connections belong to one event loop; a caller on another (a CLI calling
        asyncio.run twice, a test) starts afresh instead of touching dead transports."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._reset()

    async def _open(self, service_bind: bool) -> LdapConnection:
        loop = asyncio.get_running_loop()
        errors = []
        for uri in self._settings.uri:
            kind, host, port, tls = _endpoint(uri)
            try:
                async with asyncio.timeout(self._settings.timeout):
                    if kind == "unix":
                        _, conn = await loop.create_unix_connection(LdapConnection, host)
                    else:
                        _, conn = await loop.create_connection(
                            LdapConnection, host, port, ssl=self._tls if tls else None
                        )
                    if service_bind and self._settings.bind_dn:
                        done, _ = await conn.request(self._service_bind)
                        if done.result_code != SUCCESS:
                            conn.close()
                            errors.append(f"{uri}: service bind refused ({done.result_code})")
                            continue
                return conn
            except (OSError, TimeoutError, _Broken, ssl.SSLError) as exc:
                errors.append(f"{uri}: {exc or type(exc).__name__}")
        raise DirectoryUnavailable("; ".join(errors))

    def _service_bind(self, message_id: int) -> bytes:
        s = self._settings
        return bind_request(message_id, s.bind_dn, s.bind_password.encode("utf-8"))

    async def _search_connection(self) -> LdapConnection:
        conn = self._search_conn
        if conn is not None and not conn.broken:
            return conn
        async with self._search_lock:
            if self._search_conn is None or self._search_conn.broken:
                self._search_conn = await self._open(service_bind=True)
            return self._search_conn

    async def _search(
        self, filter_text: str, attributes: list[str], size_limit: int
    ) -> tuple[Response, list[Response]]:
        """One subtree search under the base, retried once on a fresh connection."""
        self._bind_loop()
        s = self._settings
        tree = parse_filter(filter_text)

        def build(message_id: int) -> bytes:
            return search_request(message_id, s.base, tree, attributes, size_limit)

        for attempt in (1, 2):
            conn = await self._search_connection()
            try:
                async with asyncio.timeout(s.timeout):
                    return await conn.request(build)
            except (_Broken, TimeoutError) as exc:
                conn.fail("abandoned")  # a timed-out connection is not reused
                if attempt == 2:
                    raise DirectoryUnavailable(f"LDAP search failed: {exc or 'timeout'}") from None
        raise AssertionError("unreachable")

    async def find_domain(self, domain: str) -> bool:
        """Is ``domain`` hosted: does the domain filter match an entry under the base?"""
        s = self._settings
        done, entries = await self._search(render_filter(s.domain_filter, domain), ["1.1"], 1)
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
                try:
                    async with asyncio.timeout(self._settings.timeout):
                        done, _ = await conn.request(lambda i: bind_request(i, dn, raw))
                except (_Broken, TimeoutError) as exc:
                    conn.fail("abandoned")
                    # The server probably restarted: every idle connection is as dead as
                    # this one, so the retry must use a new connection, not another of them.
                    self._drop_idle_auth()
                    if attempt == 2:
                        raise DirectoryUnavailable(
                            f"LDAP bind failed: {exc or 'timeout'}"
                        ) from None
                    continue
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
            if not conn.broken:  # the server may have closed it while it sat idle
                return conn
        return None

    def _drop_idle_auth(self) -> None:
        idle, self._idle_auth = self._idle_auth, []
        for conn in idle:
            conn.fail("dropped after a sibling broke")

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            for conn in [self._search_conn, *self._idle_auth]:
                if conn is not None:
                    conn.close()
        self._reset()
