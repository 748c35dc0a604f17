"""Logging in to an IMAP backend as the user: with the password the client gave (LOGIN), or
vouched for by a proxy user (AUTHENTICATE PLAIN with an authorization identity).

The password always travels as a quoted string or a literal built by
:func:`common.imapformat.login_command`, so no client byte can become a backend command.
Our own commands are written together where the protocol allows (ID and LOGIN in one
write), saving a round trip per login.
"""

from __future__ import annotations

import functools

from common.imapformat import capability_code, login_command, parse_capability, quote, tagged_status
from proxy.actions import BackendInfo
from proxy.backend import BackendError, BackendTarget, start_backend_tls
from proxy.config import ProtocolSettings
from proxy.sasl import Credentials, SaslError, encode_plain
from proxy.session import ClientInfo
from proxy.stream import Conn

MAX_LINE = 64 * 1024


@functools.lru_cache(maxsize=256)  # backends repeat the same strings on every login
def _capabilities(text: bytes) -> tuple[str, ...]:
    """The backend's capabilities as it spells them: the client's login reply shows them."""
    return parse_capability(text, keep_case=True)


@functools.lru_cache(maxsize=256)  # the same few tuples, asked on every login
def _upper(caps: tuple[str, ...]) -> frozenset[str]:
    return frozenset(cap.upper() for cap in caps)


def _has(caps: tuple[str, ...], name: str) -> bool:
    return name in _upper(caps)


async def _until_tagged(conn: Conn, tag: bytes) -> tuple[str, bytes, tuple[str, ...]]:
    """Read to the tagged reply; returns its status, the line, and any CAPABILITY seen."""
    caps: tuple[str, ...] = ()
    while True:
        line = await conn.readline(MAX_LINE)
        status = tagged_status(line, tag)
        if status is not None:
            return status, line, caps
        if line[:13].upper() == b"* CAPABILITY ":
            caps = parse_capability(line, keep_case=True)
        elif line.startswith(b"* BYE"):
            raise BackendError(f"backend said {line.strip()[:200]!r}")


def _id_command(tag: bytes, client: ClientInfo) -> bytes:
    fields = [
        (b"x-originating-ip", client.ip),
        (b"x-originating-port", str(client.port)),
        (b"x-connected-ip", client.local_ip),
        (b"x-connected-port", str(client.local_port)),
    ]
    parts = []
    for key, value in fields:
        quoted = quote(value.encode("ascii", "replace"))
        parts.append(b'"' + key + b'" ' + (quoted or b"NIL"))
    return tag + b" ID (" + b" ".join(parts) + b")\r\n"


def _authenticate_plain(tag: bytes, creds: Credentials, caps: tuple[str, ...]) -> list[bytes]:
    """``AUTHENTICATE PLAIN`` pieces for a login that names an authorization identity (a
    proxy or master user vouching for ``creds.authzid``), which LOGIN cannot carry.

    With SASL-IR (RFC 4959) the response rides on the command, saving a round trip;
    otherwise it follows the server's ``+`` continuation.
    """
    if not _has(caps, "AUTH=PLAIN"):
        raise BackendError("backend does not offer AUTH=PLAIN, which backend_auth = proxy needs")
    try:
        token = encode_plain(creds.authcid, creds.password, creds.authzid)
    except SaslError as exc:
        raise BackendError(f"cannot send these credentials with PLAIN: {exc}") from None
    if _has(caps, "SASL-IR"):
        return [tag + b" AUTHENTICATE PLAIN " + token + b"\r\n"]
    return [tag + b" AUTHENTICATE PLAIN\r\n", token + b"\r\n"]


async def imap_backend_login(
    conn: Conn,
    creds: Credentials,
    client: ClientInfo,
    settings: ProtocolSettings,
    target: BackendTarget,
) -> BackendInfo:
    greeting = await conn.readline(MAX_LINE)
    if not greeting.startswith(b"* OK"):
        raise BackendError(f"unexpected greeting {greeting.strip()[:200]!r}")
    code = capability_code(greeting)
    caps = _capabilities(code) if code else ()
    if settings.backend_tls == "starttls":
        conn.write(b"M0 STARTTLS\r\n")
        status, line, _ = await _until_tagged(conn, b"M0")
        if status != "OK":
            raise BackendError(f"STARTTLS refused: {line.strip()[:200]!r}")
        await start_backend_tls(conn, target, settings)
        caps = ()
    user = creds.authcid.encode("utf-8")
    password = creds.password.encode("utf-8")
    if not caps and (creds.authzid or quote(user) is None or quote(password) is None):
        conn.write(b"M1 CAPABILITY\r\n")
        _, _, caps = await _until_tagged(conn, b"M1")
    first = _id_command(b"M2", client) if settings.forward_client_ip else b""
    if creds.authzid:
        pieces = _authenticate_plain(b"M3", creds, caps)
    else:
        pieces = login_command(b"M3", user, password, literal_plus=_has(caps, "LITERAL+"))
    conn.write(first + pieces[0])
    if first:
        await _until_tagged(conn, b"M2")  # an ID refusal is not fatal: the login decides
    for piece in pieces[1:]:
        line = await conn.readline(MAX_LINE)
        if not line.startswith(b"+"):
            raise BackendError(f"backend sent no continuation: {line.strip()[:200]!r}")
        conn.write(piece)
    status, line, seen = await _until_tagged(conn, b"M3")
    if status != "OK":
        # The directory accepted this password, so a refusal here is the backend's fault.
        raise BackendError(f"backend refused login: {line.strip()[:200]!r}")
    code = capability_code(line)
    caps = _capabilities(code) if code else seen
    if not caps:
        conn.write(b"M4 CAPABILITY\r\n")
        _, _, caps = await _until_tagged(conn, b"M4")
    return BackendInfo(capabilities=caps)
