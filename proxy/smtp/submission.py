"""The submission proxy (ports 587 and 465): authenticated mail in, relayed in lockstep.

Clients authenticate against the directory (SASL PLAIN/LOGIN, as for IMAP and POP3);
nothing else is possible before that, so this can never be an open relay. Each
transaction is then passed to the relay MTA as it happens: MAIL, every RCPT and the
message each get the relay's own reply, so the client is never told "accepted" for
anything the relay did not accept. The relay connection starts with Postfix's XCLIENT
(``LOGIN=<uid>``, the client's address, port and HELO), so the relay logs, checks
(``reject_sender_login_mismatch``) and rate-limits by the real user and client.

Replies worded here, once: AUTH refused without TLS ``538 5.7.11``; bad credentials
``535 5.7.8`` (after ``auth_failure_delay``); directory down ``454 4.7.0``; MAIL before AUTH
``530 5.7.0``; relay unreachable or failing ``451 4.4.1``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

from aiosmtpd.smtp import Envelope, syntax

from common.configschema import parse_listen
from directory.model import Route
from proxy.actions import Failure
from proxy.config import Settings, SubmissionSettings
from proxy.listener import TlsFirst
from proxy.logincheck import check_login
from proxy.sasl import (
    MAX_RESPONSE_CHARS,
    Challenge,
    Credentials,
    SaslCancelled,
    SaslError,
    SaslExchange,
    base64_challenge,
)
from proxy.session import CoreEnv, SessionRecord
from proxy.smtp.base import TrackedSession, resolve_hostname
from proxy.smtp.lmtpclient import SmtpClient, SmtpClientError
from proxy.smtp.wire import reverse_path
from proxy.smtp.xclient import mail_params, open_relay, xclient_attributes
from proxy.tlscerts import requested_name

log = logging.getLogger("mailfarm.submission")

RELAY_DOWN = "451 4.4.1 Relay temporarily unavailable, nothing was accepted; try again later"
AUTH_OK = "235 2.7.0 Authentication successful"
AUTH_BAD = "535 5.7.8 Authentication credentials invalid"
AUTH_TEMP = "454 4.7.0 Temporary authentication failure, try again later"
AUTH_NEEDS_TLS = "538 5.7.11 Encryption required for requested authentication mechanism"
AUTH_DISABLED = "454 4.7.0 Login temporarily disabled (mailbox maintenance), try again later"
TOO_MANY = "421 4.7.0 Too many authentication failures, closing connection"
# An AUTH line may carry a maximal PLAIN initial response (RFC 4954 allows 12288 octets,
# proxy.sasl accepts 1024-octet fields); aiosmtpd's stream limit must let it through.
_AUTH_LINE = MAX_RESPONSE_CHARS + 64


class RelayHandler:
    """aiosmtpd's hooks, ``handle_VERB(server, session, envelope, *verb_args)``, each handed
    to the session that owns the relay connection."""

    async def handle_MAIL(self, server: SubmissionSession, *args: Any) -> str:
        _session, _envelope, address, options = args
        return await server.relay_mail(address, options)

    async def handle_RCPT(self, server: SubmissionSession, *args: Any) -> str:
        _session, _envelope, address, _options = args
        return await server.relay_rcpt(address)

    async def handle_DATA(self, server: SubmissionSession, *args: Any) -> str:
        _session, envelope = args
        return await server.relay_data(envelope)

    async def handle_RSET(self, server: SubmissionSession, *args: Any) -> str:
        # aiosmtpd has already cleared the envelope, so the relay is reset unconditionally.
        await server.relay_reset(always=True)
        return "250 2.0.0 OK"

    async def handle_QUIT(self, server: SubmissionSession, *args: Any) -> str:
        await server.close_relay(polite=True)
        return "221 2.0.0 Bye"


class SubmissionSession(TrackedSession):
    protocol_name = "submission"
    line_length_limit = _AUTH_LINE

    def __init__(
        self,
        env: CoreEnv,
        settings: SubmissionSettings,
        relay: tuple[str, int],
        implicit_tls: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(env, RelayHandler(), **kwargs)
        # aiosmtpd keeps these limits in a class-level dict it mutates per EHLO; ours
        # are per session and fixed.
        self.command_size_limits = collections.defaultdict(
            lambda: 512, {"MAIL": 512 + 26 + 10, "AUTH": _AUTH_LINE}
        )
        self.settings = settings
        self.relay_address = relay
        self.implicit_tls = implicit_tls
        self.route: Route | None = None
        self.relay: SmtpClient | None = None
        self.auth_failures = 0
        self.sent = 0
        self.refused = 0
        self.outcome = ""

    # -- state --------------------------------------------------------------------------

    @property
    def tls_active(self) -> bool:
        return self.implicit_tls or self._tls_protocol is not None

    @property
    def auth_allowed(self) -> bool:
        """Passwords travel only encrypted, unless the client is on a trusted network or
        the operator allowed plaintext (the same rule as for IMAP and POP3)."""
        assert self.client is not None
        return self.tls_active or self.client.trusted or self.env.proxy.plaintext_auth

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.client is not None:
            # After STARTTLS everything learnt before is forgotten (RFC 3207, 4.2), the
            # relay connection included: it carries the old XCLIENT identity.
            self.route = None
            if self.relay is not None:
                self.relay.abort()
                self.relay = None
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self.relay is not None:
            self.relay.abort()
            self.relay = None
        super().connection_lost(error)

    # -- EHLO and AUTH --------------------------------------------------------------------

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        if not hostname:
            await self.push("501 5.5.4 Syntax: EHLO hostname")
            return
        await self.relay_reset()
        self._set_rset_state()
        assert self.session is not None
        self.session.extended_smtp = True
        self.session.host_name = hostname
        lines = [self.hostname, "PIPELINING", f"SIZE {self.settings.max_message_size}"]
        lines += ["8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"]
        if self.tls_context is not None and not self.tls_active:
            lines.append("STARTTLS")
        if self.auth_allowed and not self.session.authenticated:
            lines.append("AUTH " + " ".join(SaslExchange.MECHANISMS))
        for line in lines[:-1]:
            await self.push(f"250-{line}")
        await self.push(f"250 {lines[-1]}")

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str) -> None:
        await self.relay_reset()
        await super().smtp_HELO(hostname)

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        assert self.session is not None and self.envelope is not None
        if await self.check_helo_needed("EHLO"):
            return
        if not self.session.extended_smtp:
            await self.push("503 5.5.1 Error: send EHLO first")
            return
        if self.session.authenticated:
            await self.push("503 5.5.1 Error: already authenticated")
            return
        if self.envelope.mail_from:
            await self.push("503 5.5.1 Error: MAIL transaction in progress")
            return
        if not self.auth_allowed:
            self.outcome = "auth-needs-tls"
            await self.push(AUTH_NEEDS_TLS)
            return
        parts = (arg or "").split()
        if not parts or len(parts) > 2:
            await self.push("501 5.5.4 Syntax: AUTH mechanism [initial-response]")
            return
        initial = parts[1].encode("utf-8", "surrogateescape") if len(parts) == 2 else None
        try:
            exchange = SaslExchange(parts[0], initial)
        except SaslError:
            await self.push("504 5.5.4 Unrecognized authentication type")
            return
        try:
            step = exchange.start()
            while isinstance(step, Challenge):
                await self.push("334 " + base64_challenge(step.data).decode("ascii"))
                line = await self._auth_line()
                if line is None:
                    return
                step = exchange.step(line)
        except SaslCancelled:
            await self.push("501 5.7.0 Authentication cancelled")
            return
        except SaslError as exc:
            await self.push(f"501 5.5.2 {exc}")
            return
        await self._authenticate(step)

    async def _auth_line(self) -> bytes | None:
        """One SASL response line; ``None`` (connection closing) if it is too long."""
        try:
            async with asyncio.timeout(self.env.proxy.preauth_timeout):
                line = await self._reader.readuntil(b"\n")
        except (asyncio.LimitOverrunError, TimeoutError):
            await self.push("500 5.5.6 Authentication exchange line too long or too late")
            assert self.transport is not None
            self.transport.close()
            return None
        except asyncio.IncompleteReadError:  # the client left mid-exchange
            if self.transport is not None:
                self.transport.close()
            return None
        return line.rstrip(b"\r\n")

    async def _authenticate(self, creds: Credentials) -> None:
        assert self.record is not None and self.session is not None
        assert self.client is not None
        self.record.login = creds.authcid
        client = self.client
        verdict = await check_login(
            self.env.directory,
            self.env.limits,
            client.ip,
            client.trusted,
            creds,
            proxy=self.env.proxy,
            server_name=requested_name(self.transport),
        )
        route = verdict.route
        if route is not None:
            self.record.uid = route.uid
        if verdict.failure is Failure.UNAVAILABLE:
            self.outcome = "directory-unavailable"
            await self.push(AUTH_TEMP)
            return
        if verdict.failure is Failure.LOGIN_DISABLED:
            self.outcome = "login-disabled"
            await self.push(AUTH_DISABLED)
            return
        if verdict.failure is None and route is not None:
            self.route = route
            self.logged_in()
            self.session.authenticated = True
            self.outcome = "authenticated"
            await self.push(AUTH_OK)
            return
        # Refused on the same growing schedule as IMAP and POP3 (proxy.logincheck).
        self.auth_failures += 1
        self.outcome = "auth-failed"
        await self.push(AUTH_BAD)
        if self.auth_failures >= self.env.proxy.max_auth_failures:
            self.outcome = "too-many-failures"
            await self.push(TOO_MANY)
            assert self.transport is not None
            self.transport.close()

    # -- the relay ----------------------------------------------------------------------

    async def _open_relay(self) -> SmtpClient:
        assert self.client is not None and self.session is not None and self.route is not None
        assert self.record is not None
        host, port = self.relay_address
        self.record.backend = f"{host}:{port}"
        attributes = xclient_attributes(self.client, self.session.host_name or "", self.route.uid)
        return await open_relay(
            self.relay_address, self.settings.relay_timeout, self.hostname, attributes
        )

    async def _relay_failed(self, exc: SmtpClientError) -> str:
        host, port = self.relay_address
        log.warning("relay %s:%d failed: %s", host, port, exc)
        await self.close_relay(polite=False)
        self._set_rset_state()
        self.outcome = "relay-unavailable"
        return RELAY_DOWN

    async def relay_mail(self, address: str, options: list[str]) -> str:
        assert self.envelope is not None
        try:
            if self.relay is None or self.relay.closed:
                self.relay = await self._open_relay()
            params = mail_params(self.relay.extensions, options)
            sender = reverse_path(address)
            reply = await self.relay.command(f"MAIL FROM:<{sender}>{params}")
        except SmtpClientError as exc:
            return await self._relay_failed(exc)
        if reply.positive:
            self.envelope.mail_from = address
            self.envelope.mail_options.extend(options)
        return reply.wire()

    async def relay_rcpt(self, address: str) -> str:
        assert self.envelope is not None
        if self.relay is None:
            return RELAY_DOWN
        try:
            reply = await self.relay.command(f"RCPT TO:<{address}>")
        except SmtpClientError as exc:
            return await self._relay_failed(exc)
        if reply.positive:
            self.envelope.rcpt_tos.append(address)
        return reply.wire()

    async def relay_data(self, envelope: Envelope) -> str:
        if self.relay is None:
            return RELAY_DOWN
        content = envelope.original_content or b""
        try:
            reply = await self.relay.command("DATA")
            if reply.code == 354:
                await self.relay.send_message(content)
                reply = await self.relay.read_reply()
        except SmtpClientError as exc:
            self.refused += 1
            return await self._relay_failed(exc)
        if reply.positive:
            self.sent += 1
            assert self.record is not None
            self.record.bytes_in += len(content)
        else:
            self.refused += 1
        return reply.wire()

    async def relay_reset(self, always: bool = False) -> None:
        """End the relay's transaction along with ours (RSET, EHLO, HELO)."""
        relay = self.relay
        if relay is None:
            return
        if not always and (self.envelope is None or not self.envelope.mail_from):
            return
        try:
            await relay.command("RSET")
        except SmtpClientError as exc:
            await self._relay_failed(exc)

    async def close_relay(self, polite: bool) -> None:
        relay, self.relay = self.relay, None
        if relay is None:
            return
        if polite:
            await relay.quit()
        else:
            relay.abort()

    def session_finished(self, record: SessionRecord) -> None:
        if self.sent or self.refused:
            record.outcome = f"ok:sent={self.sent},refused={self.refused}"
        else:
            record.outcome = self.outcome or "no-auth"


def _relay_target(settings: SubmissionSettings) -> tuple[str, int]:
    return parse_listen(settings.relay)


async def start(settings: Settings, env: CoreEnv) -> list[asyncio.AbstractServer]:
    """Listen on ``[submission] listen`` (STARTTLS offered) and ``tls_listen`` (TLS)."""
    s = settings.submission
    if not (s.listen or s.tls_listen):
        return []
    relay = _relay_target(s)
    hostname = await resolve_hostname(s.hostname)
    loop = asyncio.get_running_loop()

    def factory(implicit_tls: bool) -> SubmissionSession:
        return SubmissionSession(
            env,
            s,
            relay,
            implicit_tls,
            hostname=hostname,
            ident="ESMTP mailfarm",
            data_size_limit=s.max_message_size,
            enable_SMTPUTF8=True,
            tls_context=None if implicit_tls else env.server_tls,
            auth_required=True,
            auth_require_tls=True,
            timeout=min(env.proxy.idle_timeout, 600.0),
            loop=loop,
        )

    servers = []
    for host, port in s.listen:
        servers.append(await loop.create_server(lambda: factory(False), host, port))
        log.info(
            "submission on %s:%d (STARTTLS: %s), relay %s",
            host,
            port,
            "yes" if env.server_tls else "no",
            s.relay,
        )
    if s.tls_listen and env.server_tls is None:
        raise ValueError("submission tls_listen needs [tls] cert and key")
    tls = env.server_tls
    for host, port in s.tls_listen:
        # The handshake comes after admission under the limits (proxy.listener.TlsFirst).
        servers.append(
            await loop.create_server(
                lambda: TlsFirst(env, "submission", lambda: factory(True), tls), host, port
            )
        )
        log.info("submission (implicit TLS) on %s:%d, relay %s", host, port, s.relay)
    return servers
