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

from proxy import proxyproto
from proxy.actions import Failure
from proxy.config import Network, TlsSettings
from proxy.proxyproto import ProxyHeader
from proxy.session import ClientInfo, CoreEnv, Dialect, run_session
from proxy.stream import Conn, ConnectionClosed

log = logging.getLogger("mailfarm.listener")


def server_tls_context(tls: TlsSettings) -> ssl.SSLContext | None:
    """The server context; reload it in place with :func:`reload_tls` on SIGHUP."""
    if not tls.enabled:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(tls.cert), str(tls.key))
    return ctx


def reload_tls(ctx: ssl.SSLContext, tls: TlsSettings) -> None:
    """Loading a chain into the live context affects every later handshake on every
    listener that shares it, with no listener restart."""
    ctx.load_cert_chain(str(tls.cert), str(tls.key))


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

    def __init__(self, on_made: Callable[[_Accepted], None]) -> None:
        super().__init__()
        self._on_made = on_made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._on_made(self)


def transport_address(transport: asyncio.BaseTransport, key: str) -> tuple[str, int]:
    """(ip, port) of ``peername`` or ``sockname``; ``("unknown", 0)`` if it has none."""
    value = transport.get_extra_info(key)
    if isinstance(value, tuple) and len(value) >= 2:
        return str(value[0]), int(value[1])
    return "unknown", 0


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
    conn: Conn, dialect: Dialect, env: CoreEnv, implicit_tls: bool, proxied: bool
) -> None:
    assert conn.transport is not None
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
        # HAProxy that ended TLS itself (send-proxy-v2-ssl) vouches that the client used it.
        implicit_tls = implicit_tls or header.tls
    client = ClientInfo(ip, cport, lip, lport, is_trusted(ip, env.proxy.trusted_networks))
    if not env.limits.admit(ip, client.trusted):
        conn.write(dialect.bye(Failure.CONNECTION_LIMIT))
        conn.close()
        log.warning("%s connection from %s refused: connection limit", dialect.name, ip)
        env.metrics.connection_refused(dialect.name, Failure.CONNECTION_LIMIT.value)
        return
    await run_session(conn, dialect, env, client, implicit_tls)


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

    ssl_ctx = env.server_tls if implicit_tls else None
    server = await loop.create_server(
        lambda: _Accepted(on_made),
        host or None,
        port,
        ssl=ssl_ctx,
        reuse_address=True,
        reuse_port=env.workers > 1 or None,
        backlog=1024,
        ssl_handshake_timeout=env.proxy.preauth_timeout if ssl_ctx else None,
    )
    names = ", ".join(str(s.getsockname()[:2]) for s in server.sockets)
    kind = " (implicit TLS)" if implicit_tls else " (PROXY protocol)" if proxy_protocol else ""
    log.info("%s listening on %s%s", dialect.name, names, kind)
    return server
