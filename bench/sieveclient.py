"""The load tester's ManageSieve (RFC 5804) client: capabilities, STARTTLS, AUTHENTICATE
"PLAIN" with an initial response, LISTSCRIPTS, LOGOUT.

The ManageSieve twin of :class:`bench.pop3client.Pop3Client`, with the same error kinds.
A ManageSieve reply is any number of data lines (capabilities, script names: quoted
strings, literals) ended by ``OK``, ``NO`` or ``BYE``, each optionally with a response code
in parentheses and a human-readable string. Only the final line is looked at; literals on
the way are skipped by :func:`bench.clients.read_logical_line`, as IMAP's are. There is no
implicit-TLS port for ManageSieve: TLS is STARTTLS after the greeting, which the server
answers with its capabilities again.
"""

from __future__ import annotations

import re
import ssl

from bench.clients import BenchError, Conn, read_logical_line
from bench.patterns import Credential
from bench.smtpclient import auth_plain

_FINAL = re.compile(rb"^(OK|NO|BYE)(?=[ \r\n]|$)", re.IGNORECASE)
_CODE = re.compile(rb"^\S+ \(([A-Za-z0-9/-]+)")
#: Response codes of a refusal that is not the user's fault (RFC 5804 section 1.3).
_UNAVAILABLE = (b"TRYLATER", b"UNAVAILABLE")


def sieve_failure(line: bytes, phase: str) -> BenchError:
    """The error kind of a ``NO`` or ``BYE`` final line (or of a line that is neither)."""
    text = line.decode("utf-8", "replace").strip()[:200]
    final = _FINAL.match(line)
    if final is None:
        return BenchError("protocol-error", f"{phase}: {text}")
    status = final.group(1).upper()
    code = _CODE.match(line)
    code_name = code.group(1).upper().split(b"/")[0] if code else b""
    if code_name in _UNAVAILABLE:
        return BenchError("unavailable", text)
    if status == b"BYE":
        return BenchError("unavailable" if phase == "greeting" else "closed", text)
    if phase == "login":
        return BenchError("auth-failed", text)
    if phase == "starttls":
        return BenchError("tls-error", text)
    return BenchError("rejected", f"{phase}: {text}")


def sieve_quoted(data: bytes) -> bytes:
    """A ManageSieve quoted string (base64 and mechanism names need no escapes)."""
    if any(c in data for c in b'"\\\r\n\0'):
        raise BenchError("client-bug", "only plain quoted strings are sent")
    return b'"' + data + b'"'


class SieveClient:
    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.capabilities: set[bytes] = set()

    async def response(self, phase: str) -> tuple[bytes, list[bytes]]:
        """Read up to the final line; return it and the data lines before it. A ``NO`` or
        ``BYE`` raises :class:`BenchError` of the kind the report counts."""
        lines = []
        while True:
            line, _ = await read_logical_line(self.conn)
            final = _FINAL.match(line)
            if final is None:
                lines.append(line)
                continue
            if final.group(1).upper() != b"OK":
                raise sieve_failure(line, phase)
            return line, lines

    def _note_caps(self, lines: list[bytes]) -> None:
        """The capability names (``"SASL"``, ``"STARTTLS"`` …) of a capability block."""
        names = set()
        for line in lines:
            m = re.match(rb'^"([^"]*)"', line)
            if m:
                names.add(m.group(1).upper())
        self.capabilities = names

    async def command(self, command: bytes, phase: str) -> tuple[bytes, list[bytes]]:
        self.conn.send(command + b"\r\n")
        return await self.response(phase)

    async def greeting(self) -> None:
        """The capabilities the server opens with, up to its ``OK``."""
        _, lines = await self.response("greeting")
        self._note_caps(lines)

    async def starttls(self, context: ssl.SSLContext, server_hostname: str) -> None:
        """STARTTLS, the handshake, then the capabilities the server must send again."""
        if b"STARTTLS" not in self.capabilities:
            raise BenchError("tls-error", "server does not offer STARTTLS")
        await self.command(b"STARTTLS", "starttls")
        await self.conn.start_tls(context, server_hostname)
        _, lines = await self.response("starttls")
        self._note_caps(lines)

    async def login(self, user: Credential) -> None:
        """AUTHENTICATE "PLAIN" with the initial response; skips any capabilities the
        server sends before its ``OK``."""
        await self.command(b'AUTHENTICATE "PLAIN" ' + sieve_quoted(auth_plain(user)), "login")

    async def listscripts(self) -> int:
        """LISTSCRIPTS; the number of scripts listed."""
        _, lines = await self.command(b"LISTSCRIPTS", "list")
        return len(lines)

    async def logout(self) -> None:
        await self.command(b"LOGOUT", "logout")
