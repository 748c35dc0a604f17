"""Accepting clients: plaintext and implicit-TLS listeners, the server TLS context.

Each accepted connection becomes a :class:`~proxy.stream.Conn` and one login-phase task;
the task ends when the session is handed to the relay (or refused), so idle logged-in
sessions hold no task.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import ssl
from collections.abc import Callable
from typing import Protocol

from proxy import proxyproto, tlscerts
from proxy.actions import Failure
from proxy.config import Network, TlsSettings
from proxy.limits import Slot
from proxy.proxyproto import ProxyHeader
from proxy.session import ClientInfo, CoreEnv, Dialect, SessionRecord, run_session
from proxy.stream import Conn, ConnectionClosed, TlsFailed

log = logging.getLogger("mailfarm.listener")


def _pairs(tls: TlsSettings) -> tuple[tlscerts.Pair, list[tlscerts.Pair]]:
    assert tls.cert is not None and tls.key is not None
    return (tls.cert, tls.key), [(c.cert, c.key) for c in tls.certificates]


def server_tls_context(tls: TlsSettings) -> ssl.SSLContext | None:
    """The one server context of every TLS listener and STARTTLS (IMAP, POP3, submission,
    ManageSieve): the ``[tls]`` certificate, switched per SNI name to one of
    ``[[tls.certificates]]`` (:mod:`proxy.tlscerts`); reload it with :func:`reload_tls`."""
    if not tls.enabled:
        return None
    default, extra = _pairs(tls)
    return tlscerts.server_context(default, extra)


def reload_tls(ctx: ssl.SSLContext, tls: TlsSettings) -> None:
    """Reloading the live context affects every later handshake on every listener that
    shares it, with no listener restart; a bad file keeps every old certificate
    (:class:`~proxy.tlscerts.PairError`, a ValueError)."""
    default, extra = _pairs(tls)
    tlscerts.reload(ctx, default, extra)


@functools.lru_cache(maxsize=65536)
def is_trusted(ip: str, networks: tuple[Network, ...]) -> bool:
    """Cached: parsing an address costs more than the rest of accepting a connection."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in net for net in networks)


class _Accepted(Conn):
    __slots__ = ("_on_made",)

    def __init__(self, on_made: Callable[[_Accepted], None], tls_first: bool) -> None:
        super().__init__()
        self._on_made = on_made
        # Implicit TLS: the ClientHello is held for the handshake the session starts once
        # the connection is admitted.
        self.hold_for_tls = tls_first

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._on_made(self)


def transport_address(transport: asyncio.BaseTransport, key: str) -> tuple[str, int]:
    """(ip, port) of ``peername`` or ``sockname``; ``("unknown", 0)`` if it has none."""
    value = transport.get_extra_info(key)
    if isinstance(value, tuple) and len(value) >= 2:
        return str(value[0]), int(value[1])
    return "unknown", 0


def client_info(transport: asyncio.BaseTransport, trusted: tuple[Network, ...]) -> ClientInfo:
    """Who is on the other end of a directly accepted connection (no PROXY header)."""
    ip, port = transport_address(transport, "peername")
    lip, lport = transport_address(transport, "sockname")
    return ClientInfo(ip, port, lip, lport, is_trusted(ip, trusted))


def admit(env: CoreEnv, protocol: str, client: ClientInfo) -> Slot | None:
    """A place under ``[proxy]`` max_connections(_per_ip), or None, logged and counted; the
    caller closes a refused connection (with a goodbye where its protocol allows one)."""
    slot = env.limits.admit(client.ip, client.trusted)
    if slot is None:
        log.warning("%s connection from %s refused: connection limit", protocol, client.ip)
        env.metrics.connection_refused(protocol, Failure.CONNECTION_LIMIT.value)
    return slot


class _Admitted(Protocol):
    """What TlsFirst hands its TLS transport to: an ordinary protocol that accepts the
    slot taken for it."""

    slot: Slot | None

    def connection_made(self, transport: asyncio.BaseTransport) -> None: ...

    def data_received(self, data: bytes) -> None: ...


class TlsFirst(Conn):
    """Implicit TLS for a protocol object that cannot run its own handshake (aiosmtpd's):
    admit the connection under the limits, handshake (:meth:`Conn.start_tls`, which holds
    an early ClientHello), then hand the TLS transport over.

    A failed or abandoned handshake is one INFO session line (``tls-failed``, ``timeout``
    or ``evicted``) and a metric, like the IMAP and POP3 listeners' handshakes."""

    __slots__ = ("_context", "_env", "_inner", "_protocol")

    def __init__(
        self,
        env: CoreEnv,
        protocol: str,
        inner: Callable[[], _Admitted],
        context: ssl.SSLContext,
    ) -> None:
        super().__init__()
        self._env = env
        self._protocol = protocol
        self._inner = inner
        self._context = context
        self.hold_for_tls = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        env = self._env
        client = client_info(transport, env.proxy.trusted_networks)
        slot = admit(env, self._protocol, client)
        if slot is None:
            transport.close()
            return
        task = asyncio.get_running_loop().create_task(self._handshake(client, slot))
        env.sessions.preauth.add(task)
        task.add_done_callback(env.sessions.preauth.discard)

    async def _handshake(self, client: ClientInfo, slot: Slot) -> None:
        env = self._env
        record = SessionRecord(self._protocol, client)
        task = asyncio.current_task()

        def evict() -> None:
            record.outcome = "evicted"
            env.metrics.evicted(self._protocol)
            self.abort()
            if task is not None:
                task.cancel()

        slot.evict = evict
        try:
            async with asyncio.timeout(env.proxy.preauth_timeout):
                await self.start_tls(self._context, server_side=True)
        except asyncio.CancelledError:
            if record.outcome != "evicted":
                record.outcome = "shutdown"
        except TimeoutError:
            record.outcome = "timeout"
        except TlsFailed as exc:
            record.outcome = "tls-failed"
            env.metrics.tls_failed(self._protocol)
            log.debug("%s TLS handshake with %s failed: %s", self._protocol, client.ip, exc)
        else:
            inner = self._inner()
            inner.slot = slot
            transport, early = self.detach()
            transport.set_protocol(inner)  # type: ignore[arg-type]
            inner.connection_made(transport)
            if early:
                inner.data_received(early)
            return
        self.abort()
        slot.release()
        log.info(record.line())


PROXY_HEADER_TIMEOUT = 10.0


async def _read_proxy_header(conn: Conn) -> ProxyHeader:
    """Read the PROXY header the load balancer sends first; keep what follows it."""
    buf = b""
    while True:
        buf += await conn.read()
        result = proxyproto.parse(buf)
        if isinstance(result, ProxyHeader):
            conn.unread(buf[result.consumed :])
            return result


async def _accept(
    conn: Conn, dialect: Dialect, env: CoreEnv, tls_first: bool, proxied: bool
) -> None:
    """``tls_first``: an implicit-TLS listener, whose handshake the session runs once the
    connection is admitted."""
    assert conn.transport is not None
    tls_active = False
    sni: str | None = None
    ip, cport = transport_address(conn.transport, "peername")
    lip, lport = transport_address(conn.transport, "sockname")
    if proxied:
        # Only our own load balancers may say who the client is; anyone else could forge it.
        if not is_trusted(ip, env.proxy.haproxy_trusted_networks):
            log.warning("%s: PROXY header from untrusted %s refused", dialect.name, ip)
            env.metrics.connection_refused(dialect.name, "untrusted-proxy")
            conn.abort()
            return
        try:
            async with asyncio.timeout(min(PROXY_HEADER_TIMEOUT, env.proxy.preauth_timeout)):
                header = await _read_proxy_header(conn)
        except (proxyproto.ProxyProtocolError, TimeoutError, ConnectionClosed) as exc:
            log.warning("%s: bad PROXY header from %s: %s", dialect.name, ip, exc or "timeout")
            env.metrics.connection_refused(dialect.name, "proxy-header")
            conn.abort()
            return
        if header.source is not None:
            ip, cport = header.source
        if header.destination is not None:
            lip, lport = header.destination
        # HAProxy that ended TLS itself (send-proxy-v2-ssl) vouches that the client used it,
        # and may pass on the name it asked for (proxy-v2-options authority).
        tls_active = header.tls
        sni = header.authority if header.tls else None
    client = ClientInfo(
        ip, cport, lip, lport, is_trusted(ip, env.proxy.trusted_networks), balancer_sni=sni
    )
    slot = admit(env, dialect.name, client)
    if slot is None:
        if not tls_first:  # a goodbye in clear would only garble a TLS client's handshake
            conn.write(dialect.bye(Failure.CONNECTION_LIMIT))
        conn.close()
        return
    handshake = env.server_tls if tls_first else None
    await run_session(conn, dialect, env, client, slot, tls_active, handshake)


async def start_listener(
    dialect: Dialect,
    env: CoreEnv,
    host: str,
    port: int,
    implicit_tls: bool,
    proxy_protocol: bool = False,
) -> asyncio.Server:
    """Listen for one protocol; with several workers each binds its own SO_REUSEPORT socket
    and the kernel spreads connections over them (no accept lock, no thundering herd).

    A ``proxy_protocol`` listener expects a PROXY v1/v2 header first (from HAProxy) and is
    otherwise a plaintext listener (STARTTLS is offered when TLS is configured)."""
    loop = asyncio.get_running_loop()

    def on_made(conn: _Accepted) -> None:
        task = loop.create_task(_accept(conn, dialect, env, implicit_tls, proxy_protocol))
        env.sessions.preauth.add(task)
        task.add_done_callback(env.sessions.preauth.discard)

    if implicit_tls and env.server_tls is None:
        raise ValueError(f"{dialect.name} tls_listen needs [tls] cert and key")
    # Implicit TLS is not the server's: the handshake runs in the session, after the limits
    # have counted the connection, so silent or half-open TLS clients are bounded too.
    server = await loop.create_server(
        lambda: _Accepted(on_made, implicit_tls),
        host or None,
        port,
        reuse_address=True,
        reuse_port=env.workers > 1 or None,
        backlog=1024,
    )
    names = ", ".join(str(s.getsockname()[:2]) for s in server.sockets)
    kind = " (implicit TLS)" if implicit_tls else " (PROXY protocol)" if proxy_protocol else ""
    log.info("%s listening on %s%s", dialect.name, names, kind)
    return server
