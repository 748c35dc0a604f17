"""TLS for every LDAP connection mailfarm makes, from the ``[directory]`` TLS keys.

One place, so the proxies' two drivers, the admin tool's writer and the console's staff
sign-in cannot disagree on what "verified" means: the CA (``ca_file`` or the system's), the
optional client certificate, certificate *and* host-name verification unless an operator
explicitly set ``tls_verify = false``. Which URIs get TLS is decided here too: ``ldaps://``
always (implicit TLS), ``ldap://`` when ``tls = "starttls"``, ``ldapi://`` never (a local
socket the kernel already authenticates).

A StartTLS that the server refuses is an error for the caller to report, never a reason to
carry on in plaintext: the next thing on the connection would be a password.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
import urllib.parse
from typing import TYPE_CHECKING, Any

from directory.settings import DirectorySettings

if TYPE_CHECKING:  # ldap3 is imported lazily: the native driver never needs it
    from ldap3 import Connection, Tls

log = logging.getLogger("mailfarm.directory")

STARTTLS_OID = "1.3.6.1.4.1.1466.20037"
_warned: set[tuple[str, ...]] = set()


def uses_starttls(settings: DirectorySettings, uri: str) -> bool:
    """Must a connection to ``uri`` be upgraded with StartTLS before anything else?"""
    return settings.tls == "starttls" and uri.lower().startswith("ldap://")


def uri_host(uri: str) -> str:
    """The host part of an ``ldap[s]://`` URI: what the server certificate must name."""
    return urllib.parse.urlsplit(uri).hostname or "localhost"


def _warn_unverified(settings: DirectorySettings) -> None:
    """Once per URI list: turning verification off must be visible in the log at start."""
    if settings.tls_verify or settings.uri in _warned:
        return
    _warned.add(settings.uri)
    log.warning(
        "[directory] tls_verify = false: LDAP server certificates are NOT verified; anyone "
        "on the path to %s can read the bind passwords",
        ", ".join(settings.uri),
    )


def ssl_context(settings: DirectorySettings) -> ssl.SSLContext:
    """The client context for ``ldaps://`` and StartTLS (the native driver's)."""
    context = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
    if settings.cert_file is not None:
        context.load_cert_chain(str(settings.cert_file), str(settings.key_file))
    if not settings.tls_verify:
        _warn_unverified(settings)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def ldap3_tls(settings: DirectorySettings, uri: str = "") -> Tls:
    """The same policy as :func:`ssl_context`, as an ``ldap3.Tls`` (ldap3 checks the host
    name itself, against the URI's host, whenever it validates)."""
    from ldap3 import Tls

    if not settings.tls_verify:
        _warn_unverified(settings)
    host = uri_host(uri) if uri else None
    sni = host if host and not _is_ip(host) else None
    return Tls(
        validate=ssl.CERT_REQUIRED if settings.tls_verify else ssl.CERT_NONE,
        ca_certs_file=str(settings.ca_file) if settings.ca_file else None,
        local_certificate_file=str(settings.cert_file) if settings.cert_file else None,
        local_private_key_file=str(settings.key_file) if settings.key_file else None,
        sni=sni,
    )


def ldap3_start_tls(settings: DirectorySettings, uri: str, conn: Connection) -> None:
    """Upgrade an open ldap3 connection to ``uri`` if the settings say so.

    Raises an ``LDAPException`` (what every caller already handles as "this server failed")
    when the server refuses ("refused StartTLS: …") or the handshake or verification fails.
    """
    if not uses_starttls(settings, uri):
        return
    from ldap3.core.exceptions import LDAPStartTLSError

    try:
        ok = conn.start_tls(read_server_info=False)
    except LDAPStartTLSError as exc:
        result: dict[str, Any] = conn.result or {}
        if not conn.tls_started and result.get("result") not in (0, None):
            raise LDAPStartTLSError(f"refused StartTLS: {_describe(result)}") from None
        raise LDAPStartTLSError(f"StartTLS failed: {exc}") from None
    if not ok or not conn.tls_started:
        raise LDAPStartTLSError(f"refused StartTLS: {_describe(conn.result or {})}")


def ldap3_tls_intact(settings: DirectorySettings, uri: str, conn: Connection) -> bool:
    """Is a pooled connection still encrypted? ldap3 re-opens a closed connection in
    plaintext on ``bind()``, so a StartTLS connection that lost its TLS must be dropped."""
    if not uses_starttls(settings, uri):
        return True
    return bool(not conn.closed and conn.tls_started)


def _describe(result: dict[str, Any]) -> str:
    code = result.get("result")
    text = result.get("description") or ""
    message = result.get("message") or ""
    return " ".join(str(p) for p in (f"result {code}", text, message) if p)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
