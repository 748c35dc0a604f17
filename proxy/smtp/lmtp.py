"""The LMTP proxy: one LMTP endpoint for Postfix in front of every backend's LMTP.

Postfix delivers with ``virtual_transport = lmtp:inet:<mailfarm>:<port>`` and need not
know where mailboxes live. Each recipient is checked at RCPT against the same route
cache as logins (unknown: ``550 5.1.1``; directory down: ``451 4.3.0``, so Postfix keeps
the mail). After DATA the recipients are grouped by backend, each group delivered over
that backend's LMTP concurrently, each recipient in the form its kind of backend files
(:mod:`directory.mailstores`: Dovecot the address, Cyrus the uid), and Postfix gets one
reply per recipient, in RCPT order, carrying what the backend itself answered. Nothing is
acknowledged that a backend did not accept: a backend that is down or fails mid-way
yields 4xx for its recipients only, and Postfix retries just those.

Only ``[lmtp] allowed_networks`` (by default this host, loopback) may deliver: anyone who
can speak LMTP here can put mail into any mailbox, bypassing Postfix's checks. Others get
``421`` at accept and one warning, before aiosmtpd starts a session.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import Envelope, Session

from directory.mailstores import kind_class
from directory.model import DirectoryUnavailable, Route
from proxy.config import Network, Settings
from proxy.session import CoreEnv, SessionRecord
from proxy.smtp.base import TrackedSession, resolve_hostname
from proxy.smtp.lmtpclient import Envelope as Outgoing
from proxy.smtp.lmtpclient import deliver_lmtp
from proxy.smtp.lookup import admit_peer, route_for_recipient, warn_if_unreachable
from proxy.smtp.wire import Reply, local_reply, reverse_path

log = logging.getLogger("mailfarm.lmtp")

MAX_RECIPIENTS = 1000  # per transaction; Postfix's lmtp_destination_recipient_limit is 50
# No [lmtp] key bounds a message yet; Postfix's own message_size_limit (10 MB by default)
# applies first, so this only stops a misbehaving client from filling our memory.
MAX_MESSAGE_SIZE = 64 * 1024 * 1024
NOT_ALLOWED = b"421 4.7.1 Not authorised to deliver here, closing\r\n"


class RoutedEnvelope(Envelope):
    """aiosmtpd's envelope plus the route found at RCPT time for each recipient."""

    def __init__(self) -> None:
        super().__init__()
        self.routes: list[Route] = []


class LmtpHandler:
    """aiosmtpd hooks: recipient checks at RCPT, fan-out to backends at DATA."""

    def __init__(self, settings: Settings, env: CoreEnv, hostname: str) -> None:
        self.settings = settings
        self.env = env
        self.hostname = hostname

    async def handle_RCPT(
        self,
        server: LmtpSession,
        session: Session,
        envelope: RoutedEnvelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        delimiter = self.settings.lookup.recipient_delimiter
        try:
            route = await route_for_recipient(
                self.env.directory, address, delimiter, self.settings.backends
            )
        except DirectoryUnavailable:
            server.counts["rcpt-deferred"] += 1
            return f"451 4.3.0 <{address}>: directory unavailable, try again later"
        if route is None:
            server.counts["rcpt-unknown"] += 1
            return f"550 5.1.1 <{address}>: no such mailbox here"
        if route.login_disabled:
            server.counts["rcpt-deferred"] += 1
            return f"451 4.2.1 <{address}>: mailbox is being moved, try again later"
        envelope.rcpt_tos.append(address)
        envelope.routes.append(route)
        return "250 2.1.5 OK"

    async def handle_DATA(
        self, server: LmtpSession, session: Session, envelope: RoutedEnvelope
    ) -> str:
        server.replicate_errors = False  # from here on, every reply is per recipient
        content = envelope.original_content or b""
        server.bytes_received += len(content)
        try:
            replies = await self.deliver(envelope, content)
        except Exception:  # a bug: still one reply per recipient, and nothing acknowledged
            log.exception("lmtp delivery failed")
            replies = [local_reply(451, "4.3.0 internal error")] * len(envelope.rcpt_tos)
        for reply in replies:
            kind = "delivered" if reply.positive else "deferred" if reply.transient else "refused"
            server.counts[kind] += 1
        for reply in replies[:-1]:
            await server.push(reply.wire())
        return replies[-1].wire()

    async def deliver(self, envelope: RoutedEnvelope, content: bytes) -> list[Reply]:
        """Group recipients by backend, deliver concurrently, reassemble in RCPT order."""
        port = self.settings.lmtp.backend_port
        groups: dict[str, list[int]] = {}
        for i, route in enumerate(envelope.routes):
            groups.setdefault(route.host, []).append(i)
        options = {opt.upper() for opt in envelope.mail_options}
        body_8bit = "BODY=8BITMIME" in options
        smtputf8 = "SMTPUTF8" in options
        sender = reverse_path(envelope.mail_from)
        jobs = []
        for host, indexes in groups.items():
            # Each kind of backend names a mailbox its own way (Cyrus: only by uid).
            form = kind_class(self.settings.backends.get(host).kind).lmtp_recipient
            outgoing = Outgoing(
                sender=sender,
                recipients=tuple(
                    form(envelope.routes[i].uid, envelope.rcpt_tos[i]) for i in indexes
                ),
                content=content,
                body_8bit=body_8bit,
                smtputf8=smtputf8,
            )
            jobs.append(
                deliver_lmtp(
                    host, port, outgoing, self.hostname, self.settings.lmtp.backend_timeout
                )
            )
        results = await asyncio.gather(*jobs)
        replies: list[Reply | None] = [None] * len(envelope.rcpt_tos)
        for (host, indexes), group_replies in zip(groups.items(), results, strict=True):
            for i, reply in zip(indexes, group_replies, strict=True):
                replies[i] = reply
                if not reply.positive:
                    log.warning(
                        "lmtp rcpt=%s backend=%s:%d: %s",
                        envelope.rcpt_tos[i],
                        host,
                        port,
                        reply.brief(),
                    )
        return [r for r in replies if r is not None]


class LmtpSession(TrackedSession, LMTP):
    """aiosmtpd's LMTP server, with LMTP's one-reply-per-recipient rule kept even for the
    errors aiosmtpd itself raises after ``354`` (message too big, line too long)."""

    protocol_name = "lmtp"
    evictable = False  # a delivery in progress is never closed to make room for a client

    def __init__(
        self,
        env: CoreEnv,
        handler: LmtpHandler,
        allowed: tuple[Network, ...] | None = None,
        **kwargs: Any,
    ) -> None:
        """``allowed``: the networks whose peers are served; ``None`` serves anyone
        (:func:`start` always passes ``[lmtp] allowed_networks``)."""
        super().__init__(env, handler, **kwargs)
        self._allowed = allowed
        self.replicate_errors = False
        self.bytes_received = 0
        self.counts = {
            "delivered": 0,
            "deferred": 0,
            "refused": 0,
            "rcpt-unknown": 0,
            "rcpt-deferred": 0,
        }

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # First call only (aiosmtpd has no session yet; connection_made runs again on
        # STARTTLS): refused before aiosmtpd sets anything up, so no session, no slot and no
        # log line but admit_peer's warning.
        if self.session is None and self._allowed is not None:
            if not admit_peer(transport, self._allowed, "lmtp"):
                transport.write(NOT_ALLOWED)
                transport.close()
                return
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self.session is None:  # refused at accept: aiosmtpd never started
            return
        super().connection_lost(error)

    def _create_envelope(self) -> RoutedEnvelope:
        return RoutedEnvelope()

    async def smtp_DATA(self, arg: str) -> None:
        try:
            await super().smtp_DATA(arg)
        finally:
            self.replicate_errors = False

    async def push(self, status: Any) -> None:
        text = status.decode("ascii", "replace") if isinstance(status, bytes) else str(status)
        if text.startswith("354"):
            self.replicate_errors = True
        elif self.replicate_errors and text[:1] in ("4", "5") and self.envelope is not None:
            for _ in range(len(self.envelope.rcpt_tos) - 1):
                await super().push(status)
        await super().push(status)

    def session_finished(self, record: SessionRecord) -> None:
        record.bytes_in = self.bytes_received
        record.backend = "lmtp"
        done = ",".join(f"{k}={v}" for k, v in self.counts.items() if v)
        record.outcome = done or "no-mail"


async def start(settings: Settings, env: CoreEnv) -> list[asyncio.AbstractServer]:
    """Listen on ``[lmtp] listen``; no listener, no servers."""
    s = settings.lmtp
    if not s.listen:
        return []
    hostname = await resolve_hostname(s.hostname)
    handler = LmtpHandler(settings, env, hostname)
    loop = asyncio.get_running_loop()

    def factory() -> LmtpSession:
        return LmtpSession(
            env,
            handler,
            s.allowed_networks,
            hostname=hostname,
            ident="mailfarm LMTP",
            data_size_limit=MAX_MESSAGE_SIZE,
            enable_SMTPUTF8=True,
            timeout=min(env.proxy.idle_timeout, 600.0),
            loop=loop,
        )

    servers = []
    for host, port in s.listen:
        servers.append(await loop.create_server(factory, host, port))
        log.info("LMTP proxy on %s:%d (backends' port %d)", host, port, s.backend_port)
    warn_if_unreachable("lmtp", s.listen, s.allowed_networks)
    return servers
