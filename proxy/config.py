"""``proxy.toml`` → frozen, typed settings, parsed once and passed down explicitly.

Every section and key mailfarm knows is declared here as data; ``proxy.toml`` at the
repository root documents each one. Unknown keys are errors (a typo must not silently fall
back to a default).
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from common.configschema import (
    ConfigError,
    Key,
    one_of,
    port_number,
    positive,
    read_table,
    resolve_secret,
)
from directory.settings import (
    BACKEND_KEYS,
    DIRECTORY_KEYS,
    PROVISION_KEYS,
    Backends,
    BackendSettings,
    DirectorySettings,
    ProvisionSettings,
    backends_settings,
    directory_settings,
    provision_settings,
)
from proxy.tlscerts import PairError, check_pair
from web.settings import WEB_KEYS, WebSettings, web_settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Listen = tuple[tuple[str, int], ...]

def _check_workers(value: object) -> int | str:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value  # type: ignore[return-value]
    raise ValueError(f'must be a whole number of processes (1 or more) or "auto", not {value!r}')


def _check_prefix(value: int) -> int:
    if not 1 <= value <= 128:
        raise ValueError(f"must be an IPv6 prefix length from 1 to 128, not {value}")
    return value


def _check_domain(value: str) -> str:
    """A mail domain as logins carry it: lower case, no trailing dot; "" = none."""
    domain = value.strip().rstrip(".").lower()
    if value and (not domain or "@" in domain or any(not label for label in domain.split("."))):
        raise ValueError(f"must be a mail domain such as example.com, not {value!r}")
    if any(ch.isspace() for ch in domain):
        raise ValueError(f"must be a mail domain such as example.com, not {value!r}")
    return domain


def _check_sni_prefixes(value: tuple[str, ...]) -> tuple[str, ...]:
    """Each prefix is whole labels ("mail.", or "" for the name itself), so "mail" cannot
    turn mailexample.com into the domain "example.com"."""
    out = []
    for prefix in value:
        if prefix and not prefix.endswith("."):
            raise ValueError(f"each prefix must end with a dot (or be empty), not {prefix!r}")
        out.append(prefix.lower())
    return tuple(out)


def _check_hostport(value: str) -> str:
    from common.configschema import parse_listen

    host, _ = parse_listen(value)
    if not host:
        raise ValueError(f"{value!r} needs a host")
    return value


SNI_DOMAIN_PREFIXES = ("mail.", "imap.", "pop.", "pop3.", "smtp.", "sieve.")

PROXY_KEYS = {
    "workers": Key("any", 1, _check_workers),
    "trusted_networks": Key("networks", ()),
    "haproxy_trusted_networks": Key("networks", ()),
    "max_connections": Key("int", 10000),
    "max_connections_per_ip": Key("int", 200),
    "ipv6_prefix": Key("int", 64, _check_prefix),
    "auth_cache_ttl": Key("float", 0.0),
    "plaintext_auth": Key("bool", False),
    "auth_failure_delay": Key("float", 2.0),
    "max_auth_failures": Key("int", 3),
    "max_line": Key("int", 8192),
    "max_literal": Key("int", 8192),
    "preauth_timeout": Key("float", 60.0, positive),
    "idle_timeout": Key("float", 3600.0, positive),
    "shutdown_grace": Key("float", 30.0),
    "log_level": Key("str", "info", one_of("debug", "info", "warning", "error")),
    "default_domain": Key("str", "", _check_domain),
    "default_domain_from_sni": Key("bool", False),
    "sni_domain_prefixes": Key("strlist", SNI_DOMAIN_PREFIXES, _check_sni_prefixes),
}

TLS_KEYS = {"cert": Key("path", None), "key": Key("path", None)}
# One [[tls.certificates]] table: a further certificate, served to the names in its SAN.
TLS_CERTIFICATE_KEYS = {"cert": Key("path", None), "key": Key("path", None)}

# Who may connect to the Postfix-facing listeners ([lookup], [lmtp]): they answer anyone's
# questions about every mailbox and take mail for it, so by default only this host.
LOOPBACK: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)

LOOKUP_KEYS = {
    "listen": Key("listen", ()),
    "allowed_networks": Key("networks", LOOPBACK),
    "tcp_listen": Key("listen", ()),
    "transport": Key("str", "lmtp:inet:{host}:24"),
    "tcp_map": Key("str", "transport", one_of("domains", "mailboxes", "transport", "aliases")),
    "recipient_delimiter": Key("str", "+"),
}

LMTP_KEYS = {
    "listen": Key("listen", ()),
    "allowed_networks": Key("networks", LOOPBACK),
    "backend_port": Key("int", 24, port_number),
    "backend_timeout": Key("float", 30.0, positive),
    "hostname": Key("str", ""),
}

SUBMISSION_KEYS = {
    "listen": Key("listen", ()),
    "tls_listen": Key("listen", ()),
    "relay": Key("str", "", lambda v: _check_hostport(v) if v else v),
    "relay_timeout": Key("float", 60.0, positive),
    "max_message_size": Key("int", 50 * 1024 * 1024),
    "hostname": Key("str", ""),
}

ADMIN_KEYS = {
    "listen": Key("listen", ()),
    "token": Key("secret", "", secret=True),
    "token_file": Key("path", None),
}

def _protocol_keys(backend_port: int) -> dict[str, Key]:
    return {
        "listen": Key("listen", ()),
        "tls_listen": Key("listen", ()),
        "proxy_protocol_listen": Key("listen", ()),
        "backend_port": Key("int", backend_port, port_number),
        "backend_tls": Key("str", "none", one_of("none", "starttls", "tls")),
        "backend_tls_verify": Key("bool", True),
        "backend_ca": Key("path", None),
        "backend_timeout": Key("float", 10.0, positive),
        "forward_client_ip": Key("bool", False),
        "backend_auth": Key("str", "password", one_of("password", "proxy")),
    }


@dataclass(frozen=True, slots=True)
class ProxySettings:
    workers: int | str
    trusted_networks: tuple[Network, ...]
    haproxy_trusted_networks: tuple[Network, ...]
    max_connections: int
    max_connections_per_ip: int
    ipv6_prefix: int
    auth_cache_ttl: float
    plaintext_auth: bool
    auth_failure_delay: float
    max_auth_failures: int
    max_line: int
    max_literal: int
    preauth_timeout: float
    idle_timeout: float
    shutdown_grace: float
    log_level: str
    # A bare login (no "@") is tried as login@<domain>: the one the client's SNI names
    # (default_domain_from_sni), else default_domain; "" = none. See proxy.logincheck.
    default_domain: str = ""
    default_domain_from_sni: bool = False
    sni_domain_prefixes: tuple[str, ...] = SNI_DOMAIN_PREFIXES


@dataclass(frozen=True, slots=True)
class CertificatePair:
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class TlsSettings:
    cert: Path | None
    key: Path | None
    certificates: tuple[CertificatePair, ...] = ()  # [[tls.certificates]], chosen by SNI

    @property
    def enabled(self) -> bool:
        return self.cert is not None


@dataclass(frozen=True, slots=True)
class ProtocolSettings:
    listen: Listen
    tls_listen: Listen
    proxy_protocol_listen: Listen
    backend_port: int
    backend_tls: str
    backend_tls_verify: bool
    backend_ca: Path | None
    backend_timeout: float
    forward_client_ip: bool
    backend_auth: str = "password"

    @property
    def enabled(self) -> bool:
        return bool(self.listen or self.tls_listen or self.proxy_protocol_listen)


@dataclass(frozen=True, slots=True)
class LookupSettings:
    listen: Listen
    allowed_networks: tuple[Network, ...]
    tcp_listen: Listen
    transport: str
    tcp_map: str
    recipient_delimiter: str


@dataclass(frozen=True, slots=True)
class LmtpSettings:
    listen: Listen
    allowed_networks: tuple[Network, ...]
    backend_port: int
    backend_timeout: float
    hostname: str


@dataclass(frozen=True, slots=True)
class SubmissionSettings:
    listen: Listen
    tls_listen: Listen
    relay: str
    relay_timeout: float
    max_message_size: int
    hostname: str


@dataclass(frozen=True, slots=True)
class AdminSettings:
    listen: Listen
    token: str
    token_file: Path | None


@dataclass(frozen=True, slots=True)
class Settings:
    path: Path
    directory: DirectorySettings
    proxy: ProxySettings
    tls: TlsSettings
    imap: ProtocolSettings
    pop3: ProtocolSettings
    sieve: ProtocolSettings
    lookup: LookupSettings
    lmtp: LmtpSettings
    submission: SubmissionSettings
    admin: AdminSettings
    provision: ProvisionSettings
    backends: Backends
    web: WebSettings

    @property
    def admin_token(self) -> str:
        """The token the admin tool presents to every instance's admin endpoint."""
        return self.admin.token


#: Tables read by their own functions (which also resolve secrets and cross-check keys).
OWN_READERS = ("directory", "provision", "web")

SECTIONS: dict[str, dict[str, Key]] = {
    "directory": DIRECTORY_KEYS,
    "proxy": PROXY_KEYS,
    "tls": TLS_KEYS,
    "imap": _protocol_keys(143),
    "pop3": _protocol_keys(110),
    "sieve": _protocol_keys(4190),  # ManageSieve, RFC 5804
    "lookup": LOOKUP_KEYS,
    "lmtp": LMTP_KEYS,
    "submission": SUBMISSION_KEYS,
    "admin": ADMIN_KEYS,
    "provision": PROVISION_KEYS,
    "web": WEB_KEYS,
}


def load_config(path: str | Path) -> Settings:
    """Read and validate ``path``; raises :class:`ConfigError` naming file, section and key."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(path, None, None, "no such file") from None
    except OSError as exc:
        raise ConfigError(path, None, None, f"cannot read: {exc.strerror}") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(path, None, None, f"not valid TOML: {exc}") from None
    for name in doc:
        if name not in SECTIONS and name != "backends":
            known = ", ".join([*SECTIONS, "[[backends]]"])
            raise ConfigError(path, name, None, f"unknown section (known sections: {known})")
    if "directory" not in doc:
        raise ConfigError(path, "directory", None, "section is required")
    tls_table = doc.get("tls")
    if isinstance(tls_table, dict) and "certificates" in tls_table:
        tls_table = dict(tls_table)
        certificates = _tls_certificates(path, tls_table.pop("certificates"))
        doc["tls"] = tls_table
    else:
        certificates = ()
    tables = {
        name: read_table(path, name, doc.get(name), keys)
        for name, keys in SECTIONS.items()
        if name not in OWN_READERS
    }
    tls = TlsSettings(**tables["tls"], certificates=certificates)
    if (tls.cert is None) != (tls.key is None):
        missing = "key" if tls.key is None else "cert"
        raise ConfigError(path, "tls", missing, "cert and key must be given together")
    if certificates and not tls.enabled:
        problem = "needs [tls] cert and key (the certificate for names no other one covers)"
        raise ConfigError(path, "tls", "certificates", problem)
    protocols = {name: ProtocolSettings(**tables[name]) for name in ("imap", "pop3", "sieve")}
    for name, proto in protocols.items():
        if proto.tls_listen and not tls.enabled:
            raise ConfigError(path, name, "tls_listen", "needs [tls] cert and key")
    submission = SubmissionSettings(**tables["submission"])
    if (submission.listen or submission.tls_listen) and not submission.relay:
        raise ConfigError(path, "submission", "relay", "is required when submission listens")
    if submission.tls_listen and not tls.enabled:
        raise ConfigError(path, "submission", "tls_listen", "needs [tls] cert and key")
    provision = provision_settings(path, doc.get("provision"))
    return Settings(
        path=path,
        directory=directory_settings(path, doc.get("directory")),
        proxy=ProxySettings(**tables["proxy"]),
        tls=tls,
        imap=protocols["imap"],
        pop3=protocols["pop3"],
        sieve=protocols["sieve"],
        lookup=LookupSettings(**tables["lookup"]),
        lmtp=LmtpSettings(**tables["lmtp"]),
        submission=submission,
        admin=AdminSettings(**resolve_secret(path, "admin", tables["admin"], "token")),
        provision=provision,
        backends=backends_settings(path, doc.get("backends"), provision),
        web=web_settings(path, doc.get("web"), tls.cert, tls.key),
    )


def _tls_certificates(path: Path, value: Any) -> tuple[CertificatePair, ...]:
    """``[[tls.certificates]]``: each pair is loaded once here, so a key that does not match
    its certificate is a config error (exit 2) and not a failure at the first handshake."""
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(path, "tls", "certificates", "must be [[tls.certificates]] tables")
    out = []
    for index, table in enumerate(value):
        section = f"tls.certificates[{index}]"
        pair = read_table(path, section, table, TLS_CERTIFICATE_KEYS)
        for name in ("cert", "key"):
            if pair[name] is None:
                raise ConfigError(path, section, name, "is required")
        _check_pair(path, section, pair["cert"], pair["key"])
        out.append(CertificatePair(pair["cert"], pair["key"]))
    return tuple(out)


def _check_pair(path: Path, section: str, cert: Path, key: Path) -> None:
    try:
        check_pair(cert, key)
    except PairError as exc:
        raise ConfigError(path, section, exc.key, str(exc)) from None


def _show(value: Any) -> Any:
    if isinstance(value, CertificatePair):
        return {"cert": str(value.cert), "key": str(value.key)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        items = [_show(v) for v in value]
        if value and isinstance(value[0], tuple) and len(value[0]) == 2:
            items = [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in value]
        return items
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value)
    return value


def effective_settings(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every setting with its effective value, secrets masked, for ``check-config``."""
    out: dict[str, dict[str, Any]] = {}
    for name, keys in SECTIONS.items():
        section = getattr(settings, name)
        table: dict[str, Any] = {}
        for field in fields(section):
            value = getattr(section, field.name)
            key = keys.get(field.name)
            if key is not None and key.secret and value:
                value = "********"
            table[field.name] = _show(value)
        out[name] = table
    out["backends"] = [_backend_shown(b) for b in settings.backends.listed]  # type: ignore[assignment]
    return out


def _backend_shown(backend: BackendSettings) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    for field in fields(backend):
        value = getattr(backend, field.name)
        key = BACKEND_KEYS.get(field.name)
        if key is not None and key.secret and value:
            value = "********"
        if field.name != "listed":
            shown[field.name] = value
    return shown
