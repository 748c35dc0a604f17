"""Post-login copying: two asyncio.Protocols joined back to back.

No task and no coroutine exist while a session is idle: a proxied session is two transports,
two small protocol objects and one timer. Back-pressure is the transports' own: when one
side's write buffer passes its high-water mark we stop reading the other side, and resume
when it drains, so a slow client never makes the proxy buffer a fast backend's mailbox.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

# The tail of each direction is kept (64 bytes, copied) so that when the backend vanishes
# the protocol can tell a normal LOGOUT/QUIT from a lost server and say goodbye accordingly.
TAIL = 64

Farewell = Callable[[bytes, bytes], bytes]  # (client tail, backend tail) -> goodbye or b""


class _Side(asyncio.Protocol):
    __slots__ = ("peer", "relay", "tail", "transport")

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.tail = b""

    def data_received(self, data: bytes) -> None:
        relay = self.relay
        relay.last_activity = relay.clock()
        self.tail = data[-TAIL:]
        peer = self.peer
        if peer is not None and peer.transport is not None:
            if self is relay.client:
                relay.bytes_up += len(data)
            else:
                relay.bytes_down += len(data)
            peer.transport.write(data)

    def eof_received(self) -> bool:
        # Half-close is not meaningful for IMAP/POP3: either side ending ends the session.
        self._ended()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._ended()

    def _ended(self) -> None:
        relay = self.relay
        if self is relay.client:
            relay.finish("client-closed")
            return
        if relay.reason is None and relay.farewell is not None:
            goodbye = relay.farewell(relay.client.tail, self.tail)
            if goodbye and relay.client.transport is not None:
                relay.bytes_down += len(goodbye)
                relay.client.transport.write(goodbye)
        relay.finish("backend-closed")

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class Relay:
    """Joins a client and a backend transport until one side closes or idles out."""

    __slots__ = (
        "_on_done",
        "_timer",
        "backend",
        "bytes_down",
        "bytes_up",
        "client",
        "clock",
        "farewell",
        "idle_goodbye",
        "idle_timeout",
        "last_activity",
        "reason",
    )

    def __init__(
        self,
        client: asyncio.Transport,
        backend: asyncio.Transport,
        idle_timeout: float,
        on_done: Callable[[Relay], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        farewell: Farewell | None = None,
        idle_goodbye: bytes = b"",
    ) -> None:
        self.clock = clock
        self.farewell = farewell
        self.idle_goodbye = idle_goodbye
        self.last_activity = clock()
        self.idle_timeout = idle_timeout
        self.bytes_up = 0
        self.bytes_down = 0
        self.reason: str | None = None
        self._on_done = on_done
        self.client = _Side(self)
        self.backend = _Side(self)
        self.client.peer, self.backend.peer = self.backend, self.client
        self.client.transport, self.backend.transport = client, backend
        client.set_protocol(self.client)
        backend.set_protocol(self.backend)
        self._timer: asyncio.TimerHandle | None = None
        self._arm()

    def start(self, to_backend: bytes = b"", to_client: bytes = b"") -> None:
        """Flush what either side sent before the relay took over, in order, then read.

        Those bytes count as each side's last words too: a LOGOUT pipelined behind the
        LOGIN, or the backend's BYE, must not be taken for a lost server."""
        if to_backend:
            self.client.tail = to_backend[-TAIL:]
            if self.backend.transport is not None:
                self.bytes_up += len(to_backend)
                self.backend.transport.write(to_backend)
        if to_client:
            self.backend.tail = to_client[-TAIL:]
            if self.client.transport is not None:
                self.bytes_down += len(to_client)
                self.client.transport.write(to_client)
        # A client that stopped reading before the handover has a full write buffer already,
        # and the loop will not call pause_writing again for it: stop reading the backend
        # now, or a mailbox streams into memory (resume_writing undoes it as usual).
        for side in (self.client, self.backend):
            transport = side.transport
            if transport is not None and (
                transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]
            ):
                side.pause_writing()
        for side in (self.client, self.backend):
            if side.transport is not None and side.transport.is_closing():
                self.finish("client-closed" if side is self.client else "backend-closed")
                return

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self.last_activity + self.idle_timeout - self.clock()
        self._timer = loop.call_later(max(delay, 0.0), self._check_idle)

    def _check_idle(self) -> None:
        if self.reason is not None:
            return
        if self.clock() - self.last_activity >= self.idle_timeout:
            if self.idle_goodbye and self.client.transport is not None:
                self.client.transport.write(self.idle_goodbye)
            self.finish("idle-timeout")
        else:
            self._arm()

    def finish(self, reason: str) -> None:
        """End the session: close both sides (letting queued bytes flush) exactly once."""
        if self.reason is not None:
            return
        self.reason = reason
        if self._timer is not None:
            self._timer.cancel()
        for side in (self.client, self.backend):
            if side.transport is not None:
                side.transport.close()
        if self._on_done is not None:
            self._on_done(self)

    def kick(self, to_client: bytes = b"") -> None:
        """Close the session from outside (admin kick, shutdown), telling the client why."""
        if self.client.transport is not None and to_client:
            self.client.transport.write(to_client)
        self.finish("kicked")
