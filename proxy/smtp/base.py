"""What the aiosmtpd-based front ends (LMTP, submission) share: session bookkeeping.

aiosmtpd supplies the SMTP dialogue; this adds what every mailfarm front end has: the
one log line per session (:class:`proxy.session.SessionRecord`, same format as IMAP and
POP3), registration with :class:`proxy.session.Sessions` so a SIGTERM drain waits for
sessions in progress, and a host name resolved once, off the event loop (aiosmtpd would
otherwise call the blocking ``socket.getfqdn()`` for every connection).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from aiosmtpd.smtp import SMTP, TLSSetupException

from proxy.limits import Slot
from proxy.listener import admit, client_info
from proxy.session import ClientInfo, CoreEnv, SessionRecord

log = logging.getLogger("mailfarm.smtp")

# aiosmtpd logs every command line at INFO on "mail.log"; our one line per session says
# what matters, and its per-line logging would drown it (and log addresses).
logging.getLogger("mail.log").setLevel(logging.WARNING)


async def resolve_hostname(configured: str) -> str:
    """The name we greet with: ``hostname`` from the config, else this host's FQDN."""
    if configured:
        return configured
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, socket.getfqdn)


# Outcomes the session's own bookkeeping must not overwrite at its end.
_DECIDED = ("evicted", "tls-failed")


class TrackedSession(SMTP):
    """An aiosmtpd session that leaves one log line and can be drained at shutdown."""

    protocol_name = "smtp"
    # Until it authenticates, a session may be closed to make room for a newcomer when
    # max_connections is reached; one with nothing to authenticate (LMTP) never is.
    evictable = True
    BUSY = b"421 4.7.0 Too many connections, try again later\r\n"

    def __init__(self, env: CoreEnv, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.env = env
        self.record: SessionRecord | None = None
        self.client: ClientInfo | None = None
        # Taken at accept; an implicit-TLS listener (proxy.listener.TlsFirst) takes it
        # before the handshake and sets it here.
        self.slot: Slot | None = None
        self._logged = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.client is None  # connection_made runs again after STARTTLS
        super().connection_made(transport)
        if not first:
            return
        self.client = client_info(transport, self.env.proxy.trusted_networks)
        # Counted against [proxy] max_connections(_per_ip) like the IMAP/POP3 listeners.
        if self.slot is None:
            self.slot = admit(self.env, self.protocol_name, self.client)
        if self.slot is None:
            transport.write(self.BUSY)
            transport.close()
            return
        self.slot.evict = self._evict
        if not self.evictable:
            self.slot.logged_in()
        self.record = SessionRecord(self.protocol_name, self.client)
        task = self._handler_coroutine
        if task is not None:
            self.env.sessions.preauth.add(task)
            task.add_done_callback(self.env.sessions.preauth.discard)

    def _evict(self) -> None:
        if self.record is not None:
            self.record.outcome = "evicted"
        self.env.metrics.evicted(self.protocol_name)
        if self.transport is not None:
            self.count_out(len(self.BUSY))
            self.transport.write(self.BUSY)
            self.transport.close()

    def logged_in(self) -> None:
        """Authenticated: from now on this session is never evicted for a newcomer."""
        if self.slot is not None:
            self.slot.logged_in()

    def data_received(self, data: bytes) -> None:
        if self.record is not None:
            self.record.bytes_in += len(data)
        super().data_received(data)

    def count_out(self, n: int) -> None:
        if self.record is not None:
            self.record.bytes_out += n

    async def push(self, status: str | bytes) -> None:
        """Every reply goes through here: count it for the session's log line."""
        self.count_out(len(status.encode() if isinstance(status, str) else status) + 2)
        await super().push(status)

    async def handle_exception(self, error: Exception) -> str:
        """A failed STARTTLS handshake is the client's doing: one INFO session line
        (``tls-failed``) and a metric, as for IMAP and POP3, not aiosmtpd's traceback."""
        if isinstance(error, TLSSetupException):
            if self.record is not None:
                self.record.outcome = "tls-failed"
            self.env.metrics.tls_failed(self.protocol_name)
            cause = error.__cause__
            log.debug("%s STARTTLS handshake failed: %s", self.protocol_name, cause or error)
            return "421 4.7.0 TLS handshake failed"  # not sent: aiosmtpd closes the connection
        return await super().handle_exception(error)

    def eof_received(self) -> bool | None:
        """The client closed its side: end the session. aiosmtpd cancels its handler but,
        as a StreamReaderProtocol, keeps the transport half-open, so without this close
        the socket, the session's log line and its connection-limit slot would linger."""
        super().eof_received()
        if self.transport is not None:
            self.transport.close()
        return False

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        if self.slot is not None:
            self.slot.release()
        self.log_session()

    def session_finished(self, record: SessionRecord) -> None:
        """Fill in the record's outcome just before it is logged."""

    def log_session(self) -> None:
        if self._logged or self.record is None:
            return
        self._logged = True
        if self.record.outcome not in _DECIDED:
            self.session_finished(self.record)
        log.info(self.record.line())
