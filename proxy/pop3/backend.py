"""Logging in to a POP3 backend as the user, with the password the client gave or vouched
for by a proxy user (the PLAIN authorization identity, ``backend_auth = "proxy"``).

AUTH PLAIN (RFC 5034) carries the credentials base64-encoded, so no byte of a password,
not even CR or LF, can end the command early and become a second backend command; that is
why it is preferred over USER/PASS. USER/PASS remains only for credentials PLAIN cannot
hold (a NUL, or over :data:`proxy.sasl.MAX_FIELD_OCTETS`; the POP3 dialogue never lets such
credentials through, but a login may come from elsewhere), and then refuses CR, LF or NUL.

Round trips: our commands after the greeting are written together (XCLIENT and the login),
as Dovecot reads pipelined commands in order; only STLS must wait for its answer.
"""

from __future__ import annotations

import functools
import logging
import re

from proxy.actions import BackendInfo
from proxy.backend import BackendError, BackendTarget, start_backend_tls
from proxy.config import ProtocolSettings
from proxy.sasl import Credentials, SaslError, encode_plain
from proxy.session import ClientInfo
from proxy.stream import Conn

MAX_LINE = 64 * 1024
#: RFC 5034 section 4: a longer AUTH line must not carry its initial response.
MAX_AUTH_LINE = 255
# What may appear in XCLIENT ADDR (IPv4 or IPv6 text); anything else is not forwarded.
_ADDRESS = re.compile(r"[0-9A-Fa-f:.]{2,45}")

log = logging.getLogger("mailfarm.pop3")


async def _ok(conn: Conn, what: str) -> bytes:
    """The next reply line, which must be +OK; the backend's words go into the error."""
    line = await conn.readline(MAX_LINE)
    if not line.startswith(b"+OK"):
        raise BackendError(f"{what}: {line.strip()[:200]!r}")
    return line


def _xclient(client: ClientInfo, greeting: bytes, target: BackendTarget) -> bytes:
    """Dovecot's XCLIENT, so its logs and per-IP limits see the real client.

    Dovecot offers it in its greeting (``+OK [XCLIENT] ...``) only to login_trusted_networks,
    and its own POP3 proxy sends it only then; so do we, rather than have every login
    carry a command the backend will refuse.
    """
    if not greeting.startswith(b"+OK [XCLIENT]"):
        _warn_no_xclient(target.host)
        return b""
    if _ADDRESS.fullmatch(client.ip) is None:
        return b""
    return f"XCLIENT ADDR={client.ip} PORT={client.port}\r\n".encode("ascii")


@functools.lru_cache(maxsize=256)
def _warn_no_xclient(host: str) -> None:
    """Once per backend: a misconfiguration, not something to log on every login."""
    log.warning(
        "forward_client_ip: backend %s does not offer XCLIENT (is the proxy in its"
        " login_trusted_networks?); client addresses are not forwarded",
        host,
    )


def _user_pass(creds: Credentials) -> bytes:
    """USER/PASS for credentials PLAIN cannot carry; a line break would end the command."""
    for value in (creds.authcid, creds.password):
        if any(ch in value for ch in "\r\n\x00"):
            raise BackendError("credentials contain CR, LF or NUL: USER/PASS cannot carry them")
    return (
        b"USER " + creds.authcid.encode("utf-8") + b"\r\n"
        b"PASS " + creds.password.encode("utf-8") + b"\r\n"
    )


async def pop3_backend_login(
    conn: Conn,
    creds: Credentials,
    client: ClientInfo,
    settings: ProtocolSettings,
    target: BackendTarget,
) -> BackendInfo:
    greeting = await _ok(conn, "unexpected greeting")
    if settings.backend_tls == "starttls":
        conn.write(b"STLS\r\n")
        await _ok(conn, "STLS refused")
        await start_backend_tls(conn, target, settings)  # POP3 sends no second greeting
    first = _xclient(client, greeting, target) if settings.forward_client_ip else b""
    try:
        token: bytes | None = encode_plain(creds.authcid, creds.password, creds.authzid)
    except SaslError as exc:
        if creds.authzid:  # only PLAIN carries an authorization identity
            raise BackendError(f"cannot send these credentials with PLAIN: {exc}") from None
        token = None
    later: bytes | None = None  # the PLAIN response, when it must wait for "+ "
    if token is None:
        login = _user_pass(creds)
    elif len(b"AUTH PLAIN " + token + b"\r\n") <= MAX_AUTH_LINE:
        login = b"AUTH PLAIN " + token + b"\r\n"
    else:
        login, later = b"AUTH PLAIN\r\n", token + b"\r\n"
    conn.write(first + login)
    if first:
        await conn.readline(MAX_LINE)  # a refused XCLIENT is not fatal: the login decides
    if token is None:
        await _ok(conn, "backend refused USER")
    if later is not None:
        line = await conn.readline(MAX_LINE)
        if not line.startswith(b"+ ") and line.rstrip(b"\r\n") != b"+":
            raise BackendError(f"backend refused AUTH PLAIN: {line.strip()[:200]!r}")
        conn.write(later)
    # The directory accepted this password, so a refusal here is the backend's fault.
    await _ok(conn, "backend refused login")
    return BackendInfo()
