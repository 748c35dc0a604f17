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

from proxy.configschema import ConfigError, Key, one_of, port_number, positive, read_table

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Listen = tuple[tuple[str, int], ...]

DEFAULT_USER_FILTER = "(&(objectClass=inetLocalMailRecipient)(|(uid=%s)(mail=%s)))"
DEFAULT_DOMAIN_FILTER = "(&(objectClass=domainRelatedObject)(associatedDomain=%s))"


def _check_uris(uris: tuple[str, ...]) -> tuple[str, ...]:
    if not uris:
        raise ValueError("at least one URI is needed")
    for uri in uris:
        if uri.startswith("ldif:"):
            if len(uris) != 1:
                raise ValueError("ldif: cannot be combined with other URIs")
            path = Path(uri[5:])
            if not path.is_file():
                raise ValueError(f"{uri}: no such file")
        elif not uri.startswith(("ldap://", "ldaps://", "ldapi://")):
            raise ValueError(f"{uri!r}: must start with ldap://, ldaps://, ldapi:// or ldif:")
    return uris


def _check_filter(value: str) -> str:
    if "%s" not in value:
        raise ValueError("must contain %s where the login goes")
    if not (value.startswith("(") and value.endswith(")")):
        raise ValueError("must be an LDAP filter in parentheses")
    return value


DIRECTORY_KEYS = {
    "uri": Key("strlist", None, _check_uris),
    "base": Key("str", None),
    "bind_dn": Key("str", ""),
    "bind_password": Key("secret", "", secret=True),
    "bind_password_file": Key("path", None),
    "user_filter": Key("str", DEFAULT_USER_FILTER, _check_filter),
    "domain_filter": Key("str", DEFAULT_DOMAIN_FILTER, _check_filter),
    "host_attribute": Key("str", "mailHost"),
    "port_attribute": Key("str", ""),
    "disabled_attribute": Key("str", ""),
    "cache_ttl": Key("float", 300.0),
    "negative_ttl": Key("float", 30.0),
    "stale_ttl": Key("float", 3600.0),
    "cache_size": Key("int", 100_000),
    "timeout": Key("float", 5.0, positive),
    "pool_size": Key("int", 4),
    "driver": Key("str", "native", one_of("native", "ldap3")),
    "down_backoff": Key("float", 5.0, positive),
}


def _check_workers(value: object) -> int | str:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value  # type: ignore[return-value]
    raise ValueError(f'must be a whole number of processes (1 or more) or "auto", not {value!r}')


def _check_prefix(value: int) -> int:
    if not 1 <= value <= 128:
        raise ValueError(f"must be an IPv6 prefix length from 1 to 128, not {value}")
    return value


def _check_hostport(value: str) -> str:
    from proxy.configschema import parse_listen

    host, _ = parse_listen(value)
    if not host:
        raise ValueError(f"{value!r} needs a host")
    return value


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
}

TLS_KEYS = {"cert": Key("path", None), "key": Key("path", None)}

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

PROVISION_KEYS = {
    "bind_dn": Key("str", ""),
    "bind_password": Key("secret", "", secret=True),
    "bind_password_file": Key("path", None),
    "hosts": Key("strlist", ()),
    "backend_imap_port": Key("int", 143, port_number),
    "master_user": Key("str", ""),
    "master_password": Key("secret", "", secret=True),
    "master_password_file": Key("path", None),
    "master_separator": Key("str", "*"),
    "default_ns": Key("strlist", ()),
    "default_mx": Key("strlist", ()),
    "password_scheme": Key("str", "{SSHA512}"),
    "admin_urls": Key("strlist", ()),
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
    }


@dataclass(frozen=True, slots=True)
class DirectorySettings:
    uri: tuple[str, ...]
    base: str
    bind_dn: str
    bind_password: str
    bind_password_file: Path | None
    user_filter: str
    domain_filter: str
    host_attribute: str
    port_attribute: str
    disabled_attribute: str
    cache_ttl: float
    negative_ttl: float
    stale_ttl: float
    cache_size: int
    timeout: float
    pool_size: int
    driver: str
    down_backoff: float


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


@dataclass(frozen=True, slots=True)
class TlsSettings:
    cert: Path | None
    key: Path | None

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
class ProvisionSettings:
    bind_dn: str
    bind_password: str
    bind_password_file: Path | None
    hosts: tuple[str, ...]
    backend_imap_port: int
    master_user: str
    master_password: str
    master_password_file: Path | None
    master_separator: str
    default_ns: tuple[str, ...]
    default_mx: tuple[str, ...]
    password_scheme: str
    admin_urls: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Settings:
    path: Path
    directory: DirectorySettings
    proxy: ProxySettings
    tls: TlsSettings
    imap: ProtocolSettings
    pop3: ProtocolSettings
    lookup: LookupSettings
    lmtp: LmtpSettings
    submission: SubmissionSettings
    admin: AdminSettings
    provision: ProvisionSettings


SECTIONS: dict[str, dict[str, Key]] = {
    "directory": DIRECTORY_KEYS,
    "proxy": PROXY_KEYS,
    "tls": TLS_KEYS,
    "imap": _protocol_keys(143),
    "pop3": _protocol_keys(110),
    "lookup": LOOKUP_KEYS,
    "lmtp": LMTP_KEYS,
    "submission": SUBMISSION_KEYS,
    "admin": ADMIN_KEYS,
    "provision": PROVISION_KEYS,
}


def _secret(path: Path, section: str, values: dict[str, Any], key: str) -> dict[str, Any]:
    """Resolve ``key`` / ``key_file`` (one, not both) into ``key``."""
    file_key = f"{key}_file"
    if values[key] and values[file_key]:
        raise ConfigError(path, section, file_key, f"give {key} or {file_key}, not both")
    if values[file_key] is not None:
        text = values[file_key].read_text(encoding="utf-8")
        values = {**values, key: text.rstrip("\r\n")}
    return values


def _directory(path: Path, values: dict[str, Any]) -> DirectorySettings:
    if values["uri"] is None:
        raise ConfigError(path, "directory", "uri", "is required")
    ldif = values["uri"][0].startswith("ldif:")
    if values["base"] is None:
        raise ConfigError(path, "directory", "base", "is required")
    if values["bind_password"] and values["bind_password_file"]:
        raise ConfigError(
            path,
            "directory",
            "bind_password_file",
            "give bind_password or bind_password_file, not both",
        )
    if values["bind_password_file"] is not None:
        text = values["bind_password_file"].read_text(encoding="utf-8")
        values = {**values, "bind_password": text.rstrip("\r\n")}
    if values["bind_dn"] and not values["bind_password"] and not ldif:
        raise ConfigError(path, "directory", "bind_password", "is required when bind_dn is set")
    if values["pool_size"] < 1:
        raise ConfigError(path, "directory", "pool_size", "must be at least 1")
    return DirectorySettings(**values)


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
        if name not in SECTIONS:
            known = ", ".join(SECTIONS)
            raise ConfigError(path, name, None, f"unknown section (known sections: {known})")
    if "directory" not in doc:
        raise ConfigError(path, "directory", None, "section is required")
    tables = {name: read_table(path, name, doc.get(name), keys) for name, keys in SECTIONS.items()}
    tls = TlsSettings(**tables["tls"])
    if (tls.cert is None) != (tls.key is None):
        missing = "key" if tls.key is None else "cert"
        raise ConfigError(path, "tls", missing, "cert and key must be given together")
    protocols = {name: ProtocolSettings(**tables[name]) for name in ("imap", "pop3")}
    for name, proto in protocols.items():
        if proto.tls_listen and not tls.enabled:
            raise ConfigError(path, name, "tls_listen", "needs [tls] cert and key")
    submission = SubmissionSettings(**tables["submission"])
    if (submission.listen or submission.tls_listen) and not submission.relay:
        raise ConfigError(path, "submission", "relay", "is required when submission listens")
    if submission.tls_listen and not tls.enabled:
        raise ConfigError(path, "submission", "tls_listen", "needs [tls] cert and key")
    provision = _secret(path, "provision", tables["provision"], "bind_password")
    provision = _secret(path, "provision", provision, "master_password")
    return Settings(
        path=path,
        directory=_directory(path, tables["directory"]),
        proxy=ProxySettings(**tables["proxy"]),
        tls=tls,
        imap=protocols["imap"],
        pop3=protocols["pop3"],
        lookup=LookupSettings(**tables["lookup"]),
        lmtp=LmtpSettings(**tables["lmtp"]),
        submission=submission,
        admin=AdminSettings(**_secret(path, "admin", tables["admin"], "token")),
        provision=ProvisionSettings(**provision),
    )


def _show(value: Any) -> Any:
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
    return out
