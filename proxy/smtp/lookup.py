"""Postfix lookup tables served from the directory: socketmap and tcp_table listeners.

Postfix asks here instead of LDAP when ``main.cf`` says, for instance::

    virtual_mailbox_domains = socketmap:inet:127.0.0.1:10025:domains
    virtual_mailbox_maps    = socketmap:inet:127.0.0.1:10025:mailboxes
    transport_maps          = socketmap:inet:127.0.0.1:10025:transport
    virtual_alias_maps      = socketmap:inet:127.0.0.1:10025:aliases

so recipient checks and routing use the same route cache (and the same stale-if-error
rule) as the IMAP and POP3 proxies: a user moved with ``flush`` is re-routed for mail at
the same moment as for logins. When the directory cannot answer, the reply is a temporary
error, so Postfix defers and keeps the mail rather than bouncing it.

tcp_table(5) has no map name in its requests, so a ``tcp_listen`` socket serves one map:
``[lookup] tcp_map``, by default ``transport``, the one sites most often point at a TCP table.

Each connection is an :class:`asyncio.Protocol`; a task exists only while requests are
being answered, so thousands of idle Postfix connections cost no tasks. Requests on one
connection are answered in order (Postfix waits for each reply anyway).

Both listeners tell whoever asks which addresses exist and where they live, so only
``[lookup] allowed_networks`` (by default this host, loopback) may connect; anyone else is
closed at accept, before a byte is read, with one warning (the LMTP proxy does the same
with :func:`admit_peer`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import deque
from typing import Protocol

from directory.domains import DomainCheck
from directory.mailstores import aliasing_hosts, postfix_alias
from directory.model import DirectoryUnavailable, Route
from directory.service import Directory
from directory.settings import Backends
from proxy.config import LookupSettings, Network, Settings
from proxy.listener import is_trusted, transport_address
from proxy.session import CoreEnv
from proxy.smtp import netstring, tcptable
from proxy.smtp.maps import (
    MAP_NAMES,
    NOT_FOUND,
    Answer,
    BadRequest,
    Status,
    address_candidates,
    decode_key,
    normalise_domain,
    parse_socketmap,
    render,
    route_answer,
)

log = logging.getLogger("mailfarm.lookup")

_MAX_PENDING = 16  # requests queued on one connection before we stop reading from it


class MapService:
    """Answers map questions for every connection of one process."""

    def __init__(
        self,
        settings: LookupSettings,
        directory: Directory,
        domains: DomainCheck,
        backends: Backends | None = None,
    ) -> None:
        self.backends = backends or Backends.none()
        self.settings = settings
        self.directory = directory
        self.domains = domains

    async def answer(self, name: str, raw_key: bytes) -> Answer:
        """The answer to "``name`` ``key``"; never raises for anything the peer sends."""
        if name not in MAP_NAMES:
            return Answer(Status.PERM, f"unknown map {name}")
        key = decode_key(raw_key)
        if key is None:
            return NOT_FOUND
        try:
            if name == "domains":
                domain = normalise_domain(key)
                if domain is None or not await self.domains.hosted(domain):
                    return NOT_FOUND
                return Answer(Status.FOUND, domain)
            route = await self.route(key)
        except DirectoryUnavailable:
            return Answer(Status.TEMP, "directory unavailable")
        alias = postfix_alias(self.backends, route) if route is not None else None
        if alias is not None and alias.lower() in address_candidates(key, ""):
            alias = None  # the key is that name already: delivered as it is
        return route_answer(name, route, self.settings.transport, alias)

    async def route(self, key: str) -> Route | None:
        return await route_for_recipient(
            self.directory, key, self.settings.recipient_delimiter, self.backends
        )


async def route_for_recipient(
    directory: Directory, key: str, delimiters: str, backends: Backends | None = None
) -> Route | None:
    """Route of a recipient address: as given, then without its ``+extension``.

    Shared by the maps and the LMTP proxy so that Postfix's recipient check and the final
    delivery can never disagree about who an address belongs to.

    With ``backends`` listing a kind that files mail under another name (Cyrus's
    ``uid@domain``, which the aliases map hands Postfix), that name is a recipient too:
    its local part is looked up as a uid, and taken only if the entry found has exactly
    that alias, so the directory, not the spelling, decides.
    """
    candidates = address_candidates(key, delimiters)
    for address in candidates:
        found = await directory.lookup(address)
        if found.route is not None:
            return found.route
    if backends is None or not aliasing_hosts(backends):
        return None
    for address in candidates:
        found = await directory.lookup(address.rpartition("@")[0])
        route = found.route
        if route is not None and (postfix_alias(backends, route) or "").lower() == address:
            return route
    return None


class Codec(Protocol):
    """One wire protocol: how requests are framed and how answers are written."""

    kind: str

    def feed(self, data: bytes) -> list[bytes]:
        """Whole requests in ``data``; raises ValueError when the stream is unusable."""
        ...

    async def reply(self, service: MapService, request: bytes) -> tuple[bytes, Status]: ...

    def framing_error(self, exc: ValueError) -> bytes:
        """A last reply before closing on a framing error (may be empty)."""
        ...


class SocketmapCodec:
    kind = "socketmap"

    def __init__(self) -> None:
        self._decoder = netstring.NetstringDecoder()

    def feed(self, data: bytes) -> list[bytes]:
        return self._decoder.feed(data)

    async def reply(self, service: MapService, request: bytes) -> tuple[bytes, Status]:
        try:
            name, key = parse_socketmap(request)
        except BadRequest as exc:
            answer = Answer(Status.PERM, str(exc))
        else:
            answer = await service.answer(name, key)
        payload, _ = render(answer)
        return netstring.encode(payload), answer.status

    def framing_error(self, exc: ValueError) -> bytes:
        return netstring.encode(b"PERM " + str(exc).encode())


class TcpTableCodec:
    kind = "tcp"

    def __init__(self, map_name: str = "transport") -> None:
        self._decoder = tcptable.LineDecoder()
        self._map = map_name

    def feed(self, data: bytes) -> list[bytes]:
        return self._decoder.feed(data)

    async def reply(self, service: MapService, request: bytes) -> tuple[bytes, Status]:
        try:
            get = tcptable.parse_request(request)
        except tcptable.TcpTableError as exc:
            return tcptable.reply(400, str(exc).encode()), Status.PERM
        answer = await service.answer(self._map, get.key)
        _, status = render(answer)
        text = answer.text.encode("utf-8", "replace")
        return tcptable.reply(status, text or b"not found"), answer.status

    def framing_error(self, exc: ValueError) -> bytes:
        return tcptable.reply(400, str(exc).encode())


def admit_peer(
    transport: asyncio.BaseTransport, allowed: tuple[Network, ...], section: str
) -> bool:
    """Whether the peer is in ``[section] allowed_networks``; if not, say so once.

    Checked at accept rather than left to a firewall alone: a listener moved to a public
    address by a config change must not start answering the world.
    """
    ip, port = transport_address(transport, "peername")
    if is_trusted(ip, allowed):
        return True
    logging.getLogger(f"mailfarm.{section}").warning(
        "%s connection from %s:%d refused: not in [%s] allowed_networks",
        section,
        ip,
        port,
        section,
    )
    return False


class MapProtocol(asyncio.Protocol):
    """One Postfix connection: many requests, answered in order, closed when idle."""

    def __init__(
        self,
        service: MapService,
        codec: Codec,
        idle_timeout: float,
        allowed: tuple[Network, ...] | None = None,
    ) -> None:
        """``allowed``: the networks whose peers are served; ``None`` serves anyone
        (for tests with fake transports; :func:`start` always passes the setting)."""
        self._service = service
        self._codec = codec
        self._idle_timeout = idle_timeout
        self._allowed = allowed
        self._transport: asyncio.Transport | None = None
        self._pending: deque[bytes] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._paused = False
        self._eof = False
        self._peer = "-"
        self._started = time.monotonic()
        self._counts = {status: 0 for status in Status}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._allowed is not None and not admit_peer(transport, self._allowed, "lookup"):
            transport.abort()  # nothing read, nothing to answer: no need for a clean close
            return
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self._peer = f"{peer[0]}:{peer[1]}"
        self._touch()

    def _touch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._idle_timeout, self._idle)

    def _idle(self) -> None:
        if self._transport is not None and self._worker is None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        self._touch()
        try:
            requests = self._codec.feed(data)
        except ValueError as exc:
            log.warning("%s client %s: %s; closing", self._codec.kind, self._peer, exc)
            self._pending.clear()
            if self._worker is not None:
                self._worker.cancel()
            assert self._transport is not None
            self._transport.write(self._codec.framing_error(exc))
            self._transport.close()
            return
        self._pending.extend(requests)
        if len(self._pending) >= _MAX_PENDING and not self._paused and self._transport:
            self._paused = True
            self._transport.pause_reading()
        if self._pending and self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work())

    def eof_received(self) -> bool:
        # Postfix never half-closes, but answer what was asked before closing if one does.
        self._eof = True
        return self._worker is not None

    async def _work(self) -> None:
        try:
            while self._pending:
                request = self._pending.popleft()
                reply, status = await self._codec.reply(self._service, request)
                self._counts[status] += 1
                transport = self._transport
                if transport is None or transport.is_closing():
                    return
                transport.write(reply)
                if self._paused and len(self._pending) < _MAX_PENDING // 2:
                    self._paused = False
                    transport.resume_reading()
        except Exception:
            log.exception("%s client %s: internal error", self._codec.kind, self._peer)
            if self._transport is not None:
                self._transport.abort()
        finally:
            self._worker = None
            if self._transport is not None:
                if self._eof:
                    self._transport.close()
                else:
                    self._touch()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is None:  # refused at accept: nothing was started
            return
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
        if self._worker is not None:
            self._worker.cancel()
        counts = " ".join(f"{s.value}={n}" for s, n in self._counts.items() if n)
        log.debug(
            "lookup proto=%s client=%s %s duration=%.3fs",
            self._codec.kind,
            self._peer,
            counts or "requests=0",
            time.monotonic() - self._started,
        )


async def start(settings: Settings, env: CoreEnv) -> list[asyncio.AbstractServer]:
    """Listen on ``[lookup] listen`` (socketmap) and ``tcp_listen`` (tcp_table)."""
    s = settings.lookup
    if not (s.listen or s.tcp_listen):
        return []
    service = MapService(s, env.directory, DomainCheck(env.directory), env.backends)
    idle = env.proxy.idle_timeout
    allowed = s.allowed_networks
    loop = asyncio.get_running_loop()
    servers: list[asyncio.AbstractServer] = []
    for host, port in s.listen:
        servers.append(
            await loop.create_server(
                lambda: MapProtocol(service, SocketmapCodec(), idle, allowed), host, port
            )
        )
        log.info("socketmap lookup service on %s:%d", host, port)
    for host, port in s.tcp_listen:
        servers.append(
            await loop.create_server(
                lambda: MapProtocol(service, TcpTableCodec(s.tcp_map), idle, allowed), host, port
            )
        )
        log.info("tcp_table lookup service (%s map) on %s:%d", s.tcp_map, host, port)
    warn_if_unreachable("lookup", (*s.listen, *s.tcp_listen), allowed)
    return servers


def warn_if_unreachable(
    section: str, listen: tuple[tuple[str, int], ...], allowed: tuple[Network, ...]
) -> None:
    """A listener beyond loopback with loopback-only ``allowed_networks`` (the default)
    refuses every remote Postfix: say so at start, not at the first refused delivery."""
    if allowed and not all(net.is_loopback for net in allowed):
        return
    public = [f"{host or '*'}:{port}" for host, port in listen if not _is_loopback(host)]
    if public:
        shown = ", ".join(str(net) for net in allowed) or "nobody"
        logging.getLogger(f"mailfarm.{section}").warning(
            "[%s] listens on %s but allowed_networks admits only %s: set allowed_networks "
            "to the Postfix hosts' addresses",
            section,
            ", ".join(public),
            shown,
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "" (every address) or a name
