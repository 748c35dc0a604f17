"""Logging in to a ManageSieve backend (Pigeonhole's managesieve, Cyrus timsieved) as the
user: ``AUTHENTICATE "PLAIN"`` with the credentials as one base64 string, so no byte of a
password can end the command early; an authorization identity when a proxy user vouches
(``backend_auth = "proxy"``).

The backend's greeting is a capability block; its SIEVE list is learnt for the next
clients' pre-login capabilities (:class:`proxy.sieve.capabilities.KnownCapabilities`).
Capabilities the backend sends with its AUTHENTICATE answer are handed on to the client.
"""

from __future__ import annotations

import re

from proxy.actions import BackendInfo
from proxy.backend import BackendError, BackendTarget, start_backend_tls
from proxy.config import ProtocolSettings
from proxy.sasl import Credentials, SaslError, encode_plain
from proxy.session import BackendLogin, ClientInfo
from proxy.sieve.capabilities import KnownCapabilities, parse_capability_line
from proxy.sieve.parser import quote
from proxy.stream import Conn

MAX_LINE = 64 * 1024
MAX_LITERAL = 64 * 1024
MAX_LINES = 200  # a capability block or an answer longer than this is not a backend's
_LITERAL_END = re.compile(rb"\{(\d{1,10})\+?\}\r?\n\Z")
_ADDRESS = re.compile(r"[0-9A-Fa-f:.]{2,45}")
_FINAL = re.compile(rb"(?i)(OK|NO|BYE)(?=[ (\r\n]|\Z)")


async def _read_exactly(conn: Conn, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        out += await conn.read()
    if len(out) > n:
        conn.unread(bytes(out[n:]))
    return bytes(out[:n])


async def read_response(conn: Conn) -> tuple[list[bytes], bytes]:
    """(the lines before it, the final OK/NO/BYE line); a line ending in a literal header
    is joined with the literal's octets and what follows them."""
    lines: list[bytes] = []
    while len(lines) < MAX_LINES:
        line = await conn.readline(MAX_LINE)
        literal = _LITERAL_END.search(line)
        while literal is not None:
            size = int(literal.group(1))
            if size > MAX_LITERAL:
                raise BackendError(f"backend sent a {size}-octet literal")
            line += await _read_exactly(conn, size)
            rest = await conn.readline(MAX_LINE)
            line += rest
            literal = _LITERAL_END.search(rest)
        if _FINAL.match(line):
            return lines, line
        lines.append(line)
    raise BackendError("backend answer too long")


def _status(line: bytes) -> str:
    return line.split(None, 1)[0].upper().decode("ascii", "replace") if line.strip() else ""


async def _capabilities(conn: Conn, what: str) -> list[bytes]:
    lines, final = await read_response(conn)
    if _status(final) != "OK":
        raise BackendError(f"{what}: {final.strip()[:200]!r}")
    return lines


def _names(lines: list[bytes]) -> set[bytes]:
    return {parsed[0] for parsed in map(parse_capability_line, lines) if parsed is not None}


def _sasl(lines: list[bytes]) -> bytes:
    for parsed in map(parse_capability_line, lines):
        if parsed is not None and parsed[0] == b"SASL":
            return (parsed[1] or b"").upper()
    return b""


def make_sieve_backend_login(known: KnownCapabilities) -> BackendLogin:
    """The dialect's backend login, learning each greeting into ``known``."""

    async def sieve_backend_login(
        conn: Conn,
        creds: Credentials,
        client: ClientInfo,
        settings: ProtocolSettings,
        target: BackendTarget,
    ) -> BackendInfo:
        caps = await _capabilities(conn, "unexpected greeting")
        if settings.backend_tls == "starttls":
            if b"STARTTLS" not in _names(caps):
                raise BackendError("backend does not offer STARTTLS")
            conn.write(b"STARTTLS\r\n")
            await _capabilities(conn, "STARTTLS refused")
            await start_backend_tls(conn, target, settings)
            caps = await _capabilities(conn, "no capabilities after STARTTLS")
        known.learn(caps)
        if b"PLAIN" not in _sasl(caps).split():
            raise BackendError("backend does not offer SASL PLAIN")
        try:
            token = encode_plain(creds.authcid, creds.password, creds.authzid)
        except SaslError as exc:
            raise BackendError(f"cannot send these credentials with PLAIN: {exc}") from None
        first = b""
        if settings.forward_client_ip and b"XCLIENT" in _names(caps):
            if _ADDRESS.fullmatch(client.ip):
                first = f"XCLIENT ADDR={client.ip} PORT={client.port}\r\n".encode("ascii")
        conn.write(first + b'AUTHENTICATE "PLAIN" ' + quote(token) + b"\r\n")
        if first:
            await read_response(conn)  # a refused XCLIENT is not fatal: the login decides
        lines, final = await read_response(conn)
        if _status(final) != "OK":
            # The directory accepted this password, so a refusal here is the backend's fault.
            raise BackendError(f"backend refused login: {final.strip()[:200]!r}")
        resent = [line for line in lines if parse_capability_line(line) is not None]
        return BackendInfo(greeting=b"".join(resent))

    return sieve_backend_login
