"""The load tester's SMTP submission client: EHLO, STARTTLS, AUTH PLAIN, one message, QUIT.

The SMTP twin of :class:`bench.clients.ImapClient`, with the same error kinds, so the
submission front end is measured by the same rounds, recorders and reports as IMAP and
POP3. Our own rather than smtplib (blocking) or aiosmtplib (a dependency for ~100 lines);
it speaks only what one authenticated submission needs, with PIPELINING of MAIL/RCPT/DATA
when asked and offered. The reply parsing and dot-stuffing are pure functions, tested alone.
"""

from __future__ import annotations

import base64
import re

from bench.clients import BenchError, Conn
from bench.patterns import Credential

_REPLY_LINE = re.compile(rb"^(\d{3})([ -])(.*?)\r?\n?$", re.DOTALL)


def parse_reply_line(line: bytes) -> tuple[int, bool, bytes]:
    """(code, is_last, text) of one reply line; ``250-…`` continues, ``250 …`` ends it.

    A bare ``250`` (no text) is a last line too (RFC 5321 allows it).
    """
    stripped = line.rstrip(b"\r\n")
    if re.fullmatch(rb"\d{3}", stripped):
        return int(stripped), True, b""
    m = _REPLY_LINE.match(line)
    if m is None:
        raise BenchError("protocol-error", f"SMTP reply line {line[:80]!r}")
    return int(m.group(1)), m.group(2) == b" ", m.group(3)


def ehlo_keywords(lines: list[bytes]) -> set[bytes]:
    """The extension keywords of an EHLO reply (upper case), the first line being the name."""
    return {text.split()[0].upper() for text in lines[1:] if text.split()}


def dot_stuff(message: bytes) -> bytes:
    """The DATA payload: CRLF line ends, leading dots doubled, ``.`` line at the end."""
    text = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not text.endswith(b"\r\n"):
        text += b"\r\n"
    if text.startswith(b"."):
        text = b"." + text
    return text.replace(b"\r\n.", b"\r\n..") + b".\r\n"


def auth_plain(user: Credential) -> bytes:
    """The AUTH PLAIN initial response (RFC 4616: empty authzid, authcid, password)."""
    return base64.b64encode(b"\0" + user.login.encode() + b"\0" + user.password.encode())


def smtp_failure(code: int, text: bytes, phase: str) -> BenchError:
    """The error kind of a refusal, as an operator reads it: wrong password, busy, rejected."""
    shown = f"{code} {text.decode('utf-8', 'replace').strip()}"[:200]
    if code == 421 or (phase == "login" and code in (454, 432)):
        return BenchError("unavailable", shown)
    if phase == "login" and code in (535, 534, 530, 538):
        return BenchError("auth-failed", shown)
    if phase == "greeting" and code == 554:
        return BenchError("unavailable", shown)
    if code in (500, 501, 502, 503, 504):
        return BenchError("protocol-error", f"{phase}: {shown}")
    if 400 <= code < 500:
        return BenchError("deferred", f"{phase}: {shown}")
    return BenchError("rejected", f"{phase}: {shown}")


class SmtpClient:
    def __init__(self, conn: Conn, helo_name: str = "bench.mailfarm.test") -> None:
        self.conn = conn
        self.helo_name = helo_name.encode()
        self.extensions: set[bytes] = set()

    async def reply(self, phase: str, expect: int) -> list[bytes]:
        """Read one (multi-line) reply; BenchError unless its code is ``expect``."""
        lines = []
        while True:
            code, last, text = parse_reply_line(await self.conn.line())
            lines.append(text)
            if last:
                break
        if code != expect:
            raise smtp_failure(code, b" / ".join(lines), phase)
        return lines

    async def command(self, command: bytes, phase: str, expect: int) -> list[bytes]:
        self.conn.send(command + b"\r\n")
        return await self.reply(phase, expect)

    async def greeting(self) -> None:
        await self.reply("greeting", 220)

    async def ehlo(self) -> None:
        self.extensions = ehlo_keywords(await self.command(b"EHLO " + self.helo_name, "ehlo", 250))

    async def starttls_command(self) -> None:
        """STARTTLS up to the 220; the caller then runs the handshake and EHLOs again."""
        if b"STARTTLS" not in self.extensions:
            raise BenchError("tls-error", "server does not offer STARTTLS")
        try:
            await self.command(b"STARTTLS", "starttls", 220)
        except BenchError as exc:
            raise BenchError("tls-error", exc.detail) from None

    async def login(self, user: Credential) -> None:
        await self.command(b"AUTH PLAIN " + auth_plain(user), "login", 235)

    async def send(self, sender: str, recipient: str, message: bytes, pipeline: bool) -> None:
        """One transaction; with ``pipeline`` (and PIPELINING offered) MAIL/RCPT/DATA in one
        write, so the round trips measured are the server's, not the network's."""
        mail = b"MAIL FROM:<" + sender.encode() + b">"
        if b"SIZE" in self.extensions:
            mail += b" SIZE=%d" % len(message)
        rcpt = b"RCPT TO:<" + recipient.encode() + b">"
        if pipeline and b"PIPELINING" in self.extensions:
            self.conn.send(mail + b"\r\n" + rcpt + b"\r\nDATA\r\n")
            await self.reply("mail", 250)
            await self.reply("rcpt", 250)
            await self.reply("data", 354)
        else:
            await self.command(mail, "mail", 250)
            await self.command(rcpt, "rcpt", 250)
            await self.command(b"DATA", "data", 354)
        self.conn.send(dot_stuff(message))
        await self.reply("data", 250)

    async def quit(self) -> None:
        await self.command(b"QUIT", "logout", 221)
