"""Connecting to a backend: TCP or implicit TLS, and the TLS context for STARTTLS/STLS.

Protocol-specific backend logins (``imap/backend.py``, ``pop3/backend.py``) build on this.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from dataclasses import dataclass

from proxy.config import ProtocolSettings
from proxy.stream import Conn


class BackendError(Exception):
    """The backend could not be used: refused our login, spoke nonsense, or vanished."""


@dataclass(frozen=True, slots=True)
class BackendTarget:
    host: str
    port: int


@functools.lru_cache(maxsize=16)
def backend_tls_context(settings: ProtocolSettings) -> ssl.SSLContext:
    """One client context per protocol section: building one per login costs milliseconds."""
    ctx = ssl.create_default_context(
        cafile=str(settings.backend_ca) if settings.backend_ca else None
    )
    if not settings.backend_tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def open_backend(target: BackendTarget, settings: ProtocolSettings) -> Conn:
    """The connection (and implicit TLS) without a deadline of its own: the session puts
    the connect and the backend login under one ``backend_timeout``, one timer per login."""
    use_tls = settings.backend_tls == "tls"
    _, conn = await asyncio.get_running_loop().create_connection(
        Conn,
        target.host,
        target.port,
        ssl=backend_tls_context(settings) if use_tls else None,
        server_hostname=target.host if use_tls else None,
    )
    return conn


async def start_backend_tls(conn: Conn, target: BackendTarget, settings: ProtocolSettings) -> None:
    await conn.start_tls(backend_tls_context(settings), server_side=False, hostname=target.host)
