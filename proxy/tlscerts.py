"""Certificates per server name (SNI): which certificate a handshake gets, and the set of
server contexts every TLS listener and STARTTLS share.

One *default* context is what every listener hands to the handshake; its ``sni_callback``
switches the connection to the context of the certificate whose subjectAltName matches the
name the client asked for (exact names before wildcards, across all certificates), and
records that name on the connection's ``SSLObject``: server side, ``server_hostname`` is
always None, and the login code needs the name (``[proxy] default_domain_from_sni``).

The SAN names are read with ``ssl._ssl._test_decode_cert``, CPython's own certificate
decoder (the one ``getpeercert()`` uses), because the ``cryptography`` package is not a
dependency and the ``openssl`` CLI would mean a subprocess per reload. It is private API but
has been stable since Python 3.0; should it ever go, only :func:`read_cert_info` changes.

The name matching is pure (:class:`NameTable`), the rest loads files.
"""

from __future__ import annotations

import logging
import ssl
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

log = logging.getLogger("mailfarm.tls")

#: ``check-config`` warns, and the server logs a warning, this many days before a
#: certificate expires: enough for a renewal to go wrong and be fixed.
EXPIRY_WARNING_DAYS = 14

#: Where the name the client asked for is kept on the connection's SSLObject.
_SNI_ATTRIBUTE = "mailfarm_server_name"

T = TypeVar("T")


def normalise_name(name: str | None) -> str | None:
    """DNS names compare case-insensitively and may end in a root dot; no IDNA here: both
    SNI and certificates carry the ASCII (``xn--``) form."""
    if not name:
        return None
    value = name.strip().rstrip(".").lower()
    return value or None


def name_matches(pattern: str, name: str) -> bool:
    """RFC 6125 matching, wildcard only as the whole leftmost label: ``*.example.com``
    covers ``mail.example.com`` but neither ``a.b.example.com`` nor ``example.com``."""
    pattern_n, name_n = normalise_name(pattern), normalise_name(name)
    if pattern_n is None or name_n is None:
        return False
    if pattern_n.startswith("*."):
        first, dot, rest = name_n.partition(".")
        return bool(first) and bool(dot) and rest == pattern_n[2:]
    return "*" not in pattern_n and pattern_n == name_n


class NameTable(Generic[T]):
    """Server names → the value (a context) of the first certificate naming them; every
    exact name wins over every wildcard, so ``mail.example.com`` in one certificate beats
    ``*.example.com`` in another whatever their order."""

    def __init__(self, entries: Iterable[tuple[Iterable[str], T]]) -> None:
        self._exact: dict[str, T] = {}
        self._wild: dict[str, T] = {}
        for names, value in entries:
            for raw in names:
                name = normalise_name(raw)
                if name is None:
                    continue
                if name.startswith("*."):
                    self._wild.setdefault(name[2:], value)
                elif "*" not in name:  # partial wildcards (f*.example.com) match nothing
                    self._exact.setdefault(name, value)

    def lookup(self, name: str | None) -> T | None:
        wanted = normalise_name(name)
        if wanted is None:
            return None
        found = self._exact.get(wanted)
        if found is not None:
            return found
        first, dot, rest = wanted.partition(".")
        if first and dot and rest:
            return self._wild.get(rest)
        return None


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What ``check-config`` reports and the server logs about one certificate file."""

    cert: Path
    names: tuple[str, ...]
    not_after: float  # epoch seconds

    def days_left(self, now: float | None = None) -> float:
        return (self.not_after - (time.time() if now is None else now)) / 86400

    def expires_soon(self, now: float | None = None) -> bool:
        return self.days_left(now) < EXPIRY_WARNING_DAYS

    @property
    def not_after_text(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.not_after))


def names_of(decoded: dict[str, Any]) -> tuple[str, ...]:
    """The DNS names of a decoded certificate: its subjectAltName, or (for an old
    certificate without one) its subject's commonName, as clients once accepted."""
    sans = tuple(value for kind, value in decoded.get("subjectAltName", ()) if kind == "DNS")
    if sans:
        return sans
    return tuple(
        value for rdn in decoded.get("subject", ()) for key, value in rdn if key == "commonName"
    )


def read_cert_info(cert: Path) -> CertInfo:
    """Raises ValueError (with a reason an operator can act on) for an unreadable file."""
    try:
        decoded = ssl._ssl._test_decode_cert(str(cert))  # type: ignore[attr-defined]
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"{cert}: not a readable PEM certificate ({_reason(exc)})") from None
    try:
        not_after = float(ssl.cert_time_to_seconds(decoded["notAfter"]))
    except (KeyError, ValueError):
        raise ValueError(f"{cert}: certificate has no readable notAfter") from None
    return CertInfo(cert, names_of(decoded), not_after)


def _no_password() -> bytes:
    """An encrypted key must fail, not make OpenSSL prompt on a terminal (or hang a unit)."""
    return b""


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc)


def new_server_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class PairError(ValueError):
    """A certificate/key pair that cannot be served; ``key`` is the config key at fault."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key


def load_pair(ctx: ssl.SSLContext, cert: Path, key: Path) -> CertInfo:
    """Load a chain into ``ctx``; raises :class:`PairError` naming ``cert`` or ``key``."""
    try:
        info = read_cert_info(cert)
    except ValueError as exc:
        raise PairError("cert", str(exc)) from None
    try:
        ctx.load_cert_chain(str(cert), str(key), password=_no_password)
    except (ssl.SSLError, OSError) as exc:
        reason = _reason(exc)
        if "KEY_VALUES_MISMATCH" in reason:
            raise PairError("key", f"{key} does not match the certificate {cert}") from None
        raise PairError("key", f"{key}: cannot load the key for {cert} ({reason})") from None
    return info


def check_pair(cert: Path, key: Path) -> CertInfo:
    """Validate a pair without touching any live context (``check-config``, config load)."""
    return load_pair(new_server_context(), cert, key)


Pair = tuple[Path, Path]


class ServerCerts:
    """The default context and one context per further certificate, switched to by SNI.

    :meth:`reload` replaces the per-name contexts as a whole and loads the default chain
    into the default context in place, so every listener keeps its one context object and
    open sessions keep the certificate they shook hands with.
    """

    def __init__(self, default: Pair, extra: Sequence[Pair] = ()) -> None:
        self.context = new_server_context()
        self._table: NameTable[ssl.SSLContext] = NameTable(())
        self.infos: tuple[CertInfo, ...] = ()
        self.reload(default, extra)
        self.context.sni_callback = self._select

    def reload(self, default: Pair, extra: Sequence[Pair] = ()) -> None:
        """All or nothing: a bad file leaves every certificate as it was (PairError)."""
        check_pair(*default)  # before the live context is touched
        loaded = []
        for cert, key in extra:
            ctx = new_server_context()
            loaded.append((load_pair(ctx, cert, key), ctx))
        default_info = load_pair(self.context, *default)
        self.infos = (default_info, *(info for info, _ in loaded))
        self._table = NameTable(
            [(default_info.names, self.context), *((info.names, ctx) for info, ctx in loaded)]
        )
        for info in self.infos:
            if info.expires_soon():
                log.warning(
                    "TLS certificate %s expires %s (in %.0f days)",
                    info.cert,
                    info.not_after_text,
                    info.days_left(),
                )

    def _select(self, sslobj: Any, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        """The handshake's SNI hook; an exception here would abort the handshake, so it
        only records the name and switches context, nothing that can fail."""
        try:
            setattr(sslobj, _SNI_ATTRIBUTE, normalise_name(server_name))
        except AttributeError:  # an ssl object without a __dict__: lose the name, not the client
            pass
        chosen = self._table.lookup(server_name)
        if chosen is not None and chosen is not self.context:
            sslobj.context = chosen


_SETS: weakref.WeakKeyDictionary[ssl.SSLContext, ServerCerts] = weakref.WeakKeyDictionary()


def server_context(default: Pair, extra: Sequence[Pair] = ()) -> ssl.SSLContext:
    """The one context every listener and STARTTLS use; reload it with :func:`reload`."""
    certs = ServerCerts(default, extra)
    _SETS[certs.context] = certs
    return certs.context


def reload(ctx: ssl.SSLContext, default: Pair, extra: Sequence[Pair] = ()) -> None:
    certs = _SETS.get(ctx)
    if certs is None:  # a context not made here: only its own chain to reload
        load_pair(ctx, *default)
        return
    certs.reload(default, extra)


def requested_name(transport: Any) -> str | None:
    """The server name the client sent in its TLS handshake (lower case), or None: not
    TLS, no SNI, or a handshake not made with :func:`server_context`."""
    if transport is None:
        return None
    obj = transport.get_extra_info("ssl_object")
    if obj is None:
        return None
    return getattr(obj, _SNI_ATTRIBUTE, None)
