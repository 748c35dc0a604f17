"""A small asyncio SMTP/LMTP client: the LMTP proxy's way to its backends and the
submission proxy's way to its relay.

smtplib would block the event loop, and aiosmtplib hides what LMTP needs most: one reply
per accepted recipient after the message. This client is a reply reader and a few
commands, each bounded in time (``timeout`` per exchange) and in size (see
:mod:`proxy.smtp.wire`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from proxy.smtp.wire import (
    MAX_REPLY_LINE,
    Reply,
    ReplyError,
    ReplyParser,
    extensions,
    local_reply,
    wire_data,
)

_WRITE_CHUNK = 64 * 1024


class SmtpClientError(Exception):
    """The peer cannot be talked to (refused, timed out, closed, garbled); say why."""


class SmtpClient:
    """One connection; every method raises :class:`SmtpClientError` on any failure."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.timeout = timeout
        self.extensions: dict[str, str] = {}
        self.greeting: Reply | None = None

    @classmethod
    async def connect(
        cls, host: str, port: int, step_timeout: float, tls: ssl.SSLContext | None = None
    ) -> SmtpClient:
        """Connect and read the greeting (which must be 220).

        ``step_timeout`` bounds each exchange (connect, every reply), not the whole
        conversation: a large message may take long, a silent peer may not.
        """
        try:
            async with asyncio.timeout(step_timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=tls, limit=MAX_REPLY_LINE + 2
                )
        except (OSError, TimeoutError) as exc:
            raise SmtpClientError(f"connect to {host}:{port}: {exc or 'timeout'}") from None
        client = cls(reader, writer, step_timeout)
        try:
            client.greeting = await client.read_reply()
        except SmtpClientError:
            client.abort()
            raise
        if client.greeting.code != 220:
            client.abort()
            raise SmtpClientError(f"{host}:{port} greeted {client.greeting.brief()}")
        return client

    async def read_reply(self) -> Reply:
        parser = ReplyParser()
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    line = await self._reader.readline()
                    if not line:
                        raise SmtpClientError("connection closed by peer")
                    reply = parser.feed_line(line)
                    if reply is not None:
                        return reply
        except TimeoutError:
            raise SmtpClientError("timed out waiting for a reply") from None
        except (ValueError, ReplyError) as exc:  # ValueError: line over the reader's limit
            raise SmtpClientError(f"bad reply: {exc}") from None
        except OSError as exc:
            raise SmtpClientError(f"connection broken: {exc}") from None

    async def send(self, data: bytes) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                for start in range(0, len(data), _WRITE_CHUNK):
                    self._writer.write(data[start : start + _WRITE_CHUNK])
                    await self._writer.drain()
        except TimeoutError:
            raise SmtpClientError("timed out sending") from None
        except OSError as exc:
            raise SmtpClientError(f"connection broken: {exc}") from None

    async def command(self, line: str) -> Reply:
        if "\r" in line or "\n" in line:
            raise ValueError("a command is one line")  # a bug, never client data
        await self.send(line.encode("utf-8") + b"\r\n")
        return await self.read_reply()

    async def hello(self, name: str, lmtp: bool = False) -> Reply:
        """EHLO (or LHLO); remembers the peer's extensions."""
        reply = await self.command(f"{'LHLO' if lmtp else 'EHLO'} {name}")
        self.extensions = extensions(reply) if reply.code == 250 else {}
        return reply

    async def send_message(self, content: bytes) -> None:
        """The body after a 354: dot-stuffed, normalised, terminated (see wire_data)."""
        await self.send(wire_data(content))

    async def quit(self) -> None:
        try:
            async with asyncio.timeout(min(self.timeout, 5.0)):
                self._writer.write(b"QUIT\r\n")
                await self._writer.drain()
                await self.read_reply()
        except (SmtpClientError, OSError, TimeoutError):
            pass
        self.abort()

    def abort(self) -> None:
        transport = self._writer.transport
        if not transport.is_closing():
            transport.abort()

    @property
    def closed(self) -> bool:
        return self._writer.transport.is_closing()


@dataclass(frozen=True, slots=True)
class Envelope:
    sender: str
    recipients: tuple[str, ...]
    content: bytes
    body_8bit: bool = False
    smtputf8: bool = False


def _mail_params(client: SmtpClient, envelope: Envelope) -> str:
    params = []
    if envelope.body_8bit and "8BITMIME" in client.extensions:
        params.append("BODY=8BITMIME")
    if envelope.smtputf8 and "SMTPUTF8" in client.extensions:
        params.append("SMTPUTF8")
    if "SIZE" in client.extensions:
        params.append(f"SIZE={len(envelope.content)}")
    return "".join(" " + p for p in params)


async def deliver_lmtp(
    host: str, port: int, envelope: Envelope, lhlo_name: str, step_timeout: float
) -> list[Reply]:
    """Deliver to one LMTP server; one reply per recipient, in order, never raises.

    A recipient the server refused keeps its RCPT reply; an accepted one gets its own
    post-DATA reply. Whatever goes wrong before the server gave a recipient its final
    answer becomes a 4xx for that recipient, so the mail stays queued upstream rather
    than being acknowledged or bounced on a guess.
    """
    count = len(envelope.recipients)
    where = f"{host}:{port}"
    try:
        client = await SmtpClient.connect(host, port, step_timeout)
    except SmtpClientError as exc:
        return [local_reply(451, f"4.4.1 mailbox server {where} unavailable ({exc})")] * count
    replies: list[Reply | None] = [None] * count
    try:
        reply = await client.hello(lhlo_name, lmtp=True)
        if reply.code != 250:
            return _fill(replies, reply)
        params = _mail_params(client, envelope)
        reply = await client.command(f"MAIL FROM:<{envelope.sender}>{params}")
        if not reply.positive:
            return _fill(replies, reply)
        accepted: list[int] = []
        for i, rcpt in enumerate(envelope.recipients):
            reply = await client.command(f"RCPT TO:<{rcpt}>")
            if reply.positive:
                accepted.append(i)
            else:
                replies[i] = reply
        if not accepted:
            return _fill(replies, local_reply(554, "5.5.1 no valid recipients"))
        reply = await client.command("DATA")
        if reply.code != 354:
            return _fill(replies, reply)
        await client.send_message(envelope.content)
        for i in accepted:
            replies[i] = await client.read_reply()
        return _fill(replies, local_reply(451, "4.3.0 internal error"))
    except SmtpClientError as exc:
        return _fill(replies, local_reply(451, f"4.4.2 mailbox server {where} failed ({exc})"))
    finally:
        await client.quit()


def _fill(replies: Sequence[Reply | None], default: Reply) -> list[Reply]:
    """Every recipient without its own reply yet gets ``default``."""
    return [default if r is None else r for r in replies]
