"""A minimal awaitable connection for the login phase, built on asyncio.Protocol.

Why not asyncio streams: after login the proxy hands both transports to the relay's
protocols and must take every byte that already arrived with it. A StreamReader keeps such
bytes in a private buffer; this class owns its buffer and gives it back on :meth:`detach`.
It also bounds that buffer: reading pauses when the login phase has not consumed what came.
"""

from __future__ import annotations

import asyncio
import ssl

_HIGH_WATER = 64 * 1024


class ConnectionClosed(Exception):
    """The peer closed the connection (or it broke) while we waited for it."""


class TlsFailed(ConnectionClosed):
    """The TLS handshake failed: the client spoke something else, or gave up half-way."""


class Conn(asyncio.Protocol):
    __slots__ = (
        "_buffer",
        "_closed",
        "_drain_waiter",
        "_paused_reading",
        "_paused_writing",
        "_waiter",
        "bytes_in",
        "bytes_out",
        "handshaking",
        "hold_for_tls",
        "transport",
    )

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._paused_reading = False
        self._paused_writing = False
        self.bytes_in = 0
        self.bytes_out = 0
        self.handshaking = False  # no cleartext may be written while TLS is negotiated
        self.hold_for_tls = False  # keep what arrives for an implicit-TLS handshake to come

    # asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        self._buffer += data
        if self.hold_for_tls:
            # Implicit TLS: the ClientHello waits here for the session's handshake.
            if self.transport is not None:
                self.transport.pause_reading()
            return
        if len(self._buffer) > _HIGH_WATER and not self._paused_reading and self.transport:
            self._paused_reading = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._closed = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._wake()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # awaitable API ----------------------------------------------------------------------
    async def read(self) -> bytes:
        """Whatever has arrived (at least one byte); ConnectionClosed at EOF."""
        while not self._buffer:
            if self._closed:
                raise ConnectionClosed()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = bytes(self._buffer)
        self._buffer.clear()
        if self._paused_reading and self.transport is not None and not self._closed:
            self._paused_reading = False
            self.transport.resume_reading()
        return data

    async def readline(self, limit: int = 65536) -> bytes:
        """One line including its LF (the backend side of a login speaks in lines)."""
        while True:
            pos = self._buffer.find(b"\n")
            if pos >= 0:
                line = bytes(self._buffer[: pos + 1])
                del self._buffer[: pos + 1]
                return line
            if len(self._buffer) > limit:
                raise ConnectionClosed("line too long")
            chunk = await self.read()
            self._buffer[:0] = chunk

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self._closed:
            self.bytes_out += len(data)
            self.transport.write(data)

    async def drain(self) -> None:
        if self._paused_writing and not self._closed:
            self._drain_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None

    @property
    def closed(self) -> bool:
        return self._closed

    def unread(self, data: bytes) -> None:
        """Put bytes back in front of the buffer (a dialogue returns what it did not use)."""
        self._buffer[:0] = data

    def detach(self) -> tuple[asyncio.Transport, bytes]:
        """Give up the transport with every byte received but not yet read."""
        assert self.transport is not None
        pending = bytes(self._buffer)
        self._buffer.clear()
        transport, self.transport = self.transport, None
        if self._paused_reading:
            self._paused_reading = False
            transport.resume_reading()
        return transport, pending

    async def start_tls(
        self, context: ssl.SSLContext, server_side: bool, hostname: str | None = None
    ) -> None:
        """Upgrade in place. After STARTTLS, bytes that arrived in clear before the
        handshake are dropped (they could only be a command injected before STARTTLS,
        CVE-2011-0411); for implicit TLS (``hold_for_tls``) they are the handshake's own."""
        assert self.transport is not None
        held = bytes(self._buffer) if self.hold_for_tls else b""
        self.hold_for_tls = False
        self._buffer.clear()
        self.handshaking = True
        try:
            new = await _start_tls_with(self.transport, self, context, server_side, hostname, held)
        except (ssl.SSLError, OSError, EOFError) as exc:
            self._closed = True
            raise TlsFailed(_tls_reason(exc)) from None
        finally:
            self.handshaking = False
        if new is None:
            self._closed = True
            raise TlsFailed("connection closed during the handshake")
        self.transport = new  # type: ignore[assignment]

    def write_if_clear(self, data: bytes) -> None:
        """Write unless a TLS handshake is under way (cleartext would only corrupt it)."""
        if not self.handshaking:
            self.write(data)

    def peer_certificate_info(self) -> str | None:
        if self.transport is None:
            return None
        obj = self.transport.get_extra_info("ssl_object")
        return obj.version() if obj is not None else None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self._closed = True

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self._closed = True


def _tls_reason(exc: BaseException) -> str:
    """A short reason for the log: OpenSSL's own (``WRONG_VERSION_NUMBER``), not a repr."""
    reason = getattr(exc, "reason", None)
    if reason:
        return str(reason)
    return str(exc) or type(exc).__name__


async def _start_tls_with(
    transport: asyncio.BaseTransport,
    protocol: asyncio.BaseProtocol,
    context: ssl.SSLContext,
    server_side: bool,
    hostname: str | None,
    held: bytes,
) -> asyncio.Transport | None:
    """``loop.start_tls``, first feeding the TLS layer bytes that already arrived.

    Why: the loop starts reading a new connection right after ``connection_made``, so a
    client's ClientHello may be read before the session has been admitted and begun its
    handshake. ``start_tls`` schedules the TLS protocol's ``connection_made`` and the
    transport's ``resume_reading`` with ``call_soon``; a callback scheduled one turn later
    runs right after them and before the loop polls for more input, so the held bytes
    reach the TLS layer first and in order (the ready queue is FIFO in asyncio and uvloop).
    """
    loop = asyncio.get_running_loop()
    if held:

        def feed() -> None:
            tls = transport.get_protocol()
            if hasattr(tls, "get_buffer"):  # both loops' TLS protocols are buffered
                data = memoryview(held)
                while data:
                    buf = tls.get_buffer(len(data))
                    n = min(len(buf), len(data))
                    buf[:n] = data[:n]
                    tls.buffer_updated(n)
                    data = data[n:]
            else:
                tls.data_received(held)  # type: ignore[attr-defined]

        loop.call_soon(loop.call_soon, feed)
    return await loop.start_tls(  # type: ignore[arg-type]
        transport, protocol, context, server_side=server_side, server_hostname=hostname
    )
