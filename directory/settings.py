"""The ``proxy.toml`` sections the directory layer owns: ``[directory]``, ``[provision]`` and
the ``[[backends]]`` table, declared as data and read with :mod:`common.configschema`.

They live here, not with the front end's sections in :mod:`proxy.config`, so that the LDAP
client, the caches and the admin tool depend on nothing above them. ``proxy.config`` reads
the whole file and builds one :class:`proxy.config.Settings`; code in this layer asks only
for what :class:`ToolConfig` names, which that object (or a test's own) provides.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from common.configschema import (
    ConfigError,
    Key,
    one_of,
    port_number,
    positive,
    read_table,
    resolve_secret,
)

DEFAULT_USER_FILTER = "(&(objectClass=inetLocalMailRecipient)(|(uid=%s)(mail=%s)))"
# Not a person: a console domain admin's entry (web.staff) names its domains the same way.
DEFAULT_DOMAIN_FILTER = (
    "(&(objectClass=domainRelatedObject)(!(objectClass=person))(associatedDomain=%s))"
)
BACKEND_KINDS = ("dovecot", "cyrus")


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
    # Where domain_filter looks: empty = "ou=domains,<base>", the branch the admin tool writes.
    "domain_base": Key("str", ""),
    "domain_scope": Key("str", "one", one_of("one", "sub")),
    "host_attribute": Key("str", "mailHost"),
    "port_attribute": Key("str", ""),
    "disabled_attribute": Key("str", ""),
    "quota_attribute": Key("str", ""),
    "cache_ttl": Key("float", 300.0),
    "negative_ttl": Key("float", 30.0),
    "stale_ttl": Key("float", 3600.0),
    "cache_size": Key("int", 100_000),
    "timeout": Key("float", 5.0, positive),
    "pool_size": Key("int", 4),
    "driver": Key("str", "native", one_of("native", "ldap3")),
    "down_backoff": Key("float", 5.0, positive),
    # TLS (directory.ldaptls): ldaps:// is always TLS; "starttls" upgrades ldap:// URIs.
    "tls": Key("str", "none", one_of("none", "starttls")),
    "ca_file": Key("path", None),
    "cert_file": Key("path", None),
    "key_file": Key("path", None),
    "tls_verify": Key("bool", True),
}


def _check_provider_uris(uris: tuple[str, ...]) -> tuple[str, ...]:
    """Empty (write where the proxies read) or LDAP servers; never ldif:, which is read-only."""
    if any(uri.startswith("ldif:") for uri in uris):
        raise ValueError("the admin tool writes to an LDAP server, not ldif:")
    return _check_uris(uris) if uris else uris


def _check_wait(value: float) -> float:
    if value < 0:
        raise ValueError(f"must be zero (no check) or more, not {value!r}")
    return value


def _check_front_door(value: str) -> str:
    name = value.strip().lower().rstrip(".")
    if value and (not name or any(ch.isspace() or ch in "/:@" for ch in name) or "." not in name):
        raise ValueError(f"must be the host name clients connect to, not {value!r}")
    return name


def _port_or_off(value: int) -> int:
    return value if value == 0 else port_number(value)


def _check_txt_default(value: str) -> str:
    if any(ord(ch) < 32 or ord(ch) > 126 for ch in value):
        raise ValueError("must be printable ASCII (it becomes a TXT record)")
    return value


def _check_dkim_dir(value: str) -> Path:
    """A directory (not a file, which the "path" kind wants); it need not exist yet: the
    proxies load the same file on hosts without it, and ``dns dkim`` makes it, mode 0700."""
    path = Path(value)
    if not value or (path.exists() and not path.is_dir()):
        raise ValueError(f"must be a directory for the DKIM keys, not {value!r}")
    return path


def _check_rsa_bits(value: int) -> int:
    if value not in (1024, 2048, 3072, 4096):
        raise ValueError(f"must be 1024, 2048, 3072 or 4096 (RSA key bits), not {value!r}")
    return value


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
    "move_settle": Key("float", 5.0),
    "move_lease": Key("float", 120.0, positive),
    # The provider to write to when [directory] uri lists read-only consumers (syncrepl).
    "uri": Key("strlist", (), _check_provider_uris),
    "replication_wait": Key("float", 5.0, _check_wait),
    # The front door as mail clients reach it: SRV records, autoconfig, Autodiscover.
    "front_door": Key("str", "", _check_front_door),
    "front_door_imap": Key("int", 143, _port_or_off),
    "front_door_imaps": Key("int", 993, _port_or_off),
    "front_door_pop3": Key("int", 110, _port_or_off),
    "front_door_pop3s": Key("int", 995, _port_or_off),
    "front_door_submission": Key("int", 587, _port_or_off),
    "front_door_submissions": Key("int", 465, _port_or_off),
    # Mail's DNS records every new domain gets (%s: the domain); empty: none.
    "default_spf": Key("str", "v=spf1 mx -all", _check_txt_default),
    "default_dmarc": Key("str", "v=DMARC1; p=none; rua=mailto:postmaster@%s", _check_txt_default),
    # DKIM keys (mailfarm dns dkim): <dkim_dir>/<domain>/<selector>.private, mode 0600.
    "dkim_dir": Key("str", None, _check_dkim_dir),
    "dkim_bits": Key("int", 2048, _check_rsa_bits),
}


def _check_host(value: str) -> str:
    if not value or any(ch.isspace() for ch in value):
        raise ValueError(f"must be a mailHost value (a host name or address), not {value!r}")
    return value


BACKEND_KEYS = {
    "host": Key("str", None, _check_host),
    "kind": Key("str", "dovecot", one_of(*BACKEND_KINDS)),
    "proxy_user": Key("str", ""),
    "proxy_password": Key("secret", "", secret=True),
    "proxy_password_file": Key("path", None),
    "admin_user": Key("str", ""),
    "admin_password": Key("secret", "", secret=True),
    "admin_password_file": Key("path", None),
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
    quota_attribute: str
    cache_ttl: float
    negative_ttl: float
    stale_ttl: float
    cache_size: int
    timeout: float
    pool_size: int
    driver: str
    down_backoff: float
    # Defaults: a settings object built in code (a test's) keeps plaintext ldap://.
    tls: str = "none"
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_verify: bool = True
    domain_base: str = ""  # empty: ou=domains,<base>
    domain_scope: str = "one"

    @property
    def domains_base(self) -> str:
        """The DN domain_filter searches under."""
        return self.domain_base or f"ou=domains,{self.base}"


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
    move_settle: float
    move_lease: float
    # Last and with defaults: a settings object built by hand before they existed still works.
    uri: tuple[str, ...] = ()  # empty: write to [directory] uri
    replication_wait: float = 5.0  # read-your-writes bound on the consumers; 0: no check
    front_door: str = ""  # host name clients use; empty: no SRV records, no autoconfig
    front_door_imap: int = 143  # each port as clients see it (0: not offered); STARTTLS
    front_door_imaps: int = 993  # implicit TLS
    front_door_pop3: int = 110
    front_door_pop3s: int = 995
    front_door_submission: int = 587
    front_door_submissions: int = 465
    default_spf: str = "v=spf1 mx -all"
    default_dmarc: str = "v=DMARC1; p=none; rua=mailto:postmaster@%s"
    dkim_dir: Path | None = None
    dkim_bits: int = 2048


@dataclass(frozen=True, slots=True)
class BackendSettings:
    """One backend host (a ``mailHost`` value): what kind of server it is, and the two
    identities mailfarm uses there besides the users' own."""

    host: str
    kind: str
    proxy_user: str  # vouches for users at login (Cyrus proxyservers, Dovecot master user)
    proxy_password: str
    admin_user: str  # creates, empties and deletes mailboxes (Cyrus admins, Dovecot master)
    admin_password: str
    listed: bool = True  # False: not in [[backends]], built from [provision]'s defaults


@dataclass(frozen=True, slots=True)
class Backends:
    """The ``[[backends]]`` table, with the defaults for hosts it does not list."""

    listed: tuple[BackendSettings, ...]
    default: BackendSettings

    @classmethod
    def none(cls) -> Backends:
        """No table and no default credentials: every host a Dovecot reached by password."""
        return cls((), BackendSettings("*", "dovecot", "", "", "", "", listed=False))

    def get(self, host: str) -> BackendSettings:
        """The settings of ``host`` (compared case-insensitively, as DNS names are)."""
        key = host.lower()
        for backend in self.listed:
            if backend.host.lower() == key:
                return backend
        return BackendSettings(
            host,
            self.default.kind,
            self.default.proxy_user,
            self.default.proxy_password,
            self.default.admin_user,
            self.default.admin_password,
            listed=False,
        )

    def of_kind(self, kind: str) -> tuple[str, ...]:
        """The listed hosts of one kind (an unlisted host is always the default kind)."""
        return tuple(b.host for b in self.listed if b.kind == kind)


class SieveBackendConfig(Protocol):
    """What the admin tool reads of ``[sieve]`` (the proxy's section, whose backend keys say
    how the farm's backends speak ManageSieve): a move copies users' Sieve scripts there."""

    @property
    def backend_port(self) -> int: ...
    @property
    def backend_tls(self) -> str: ...  # none, starttls, tls
    @property
    def backend_tls_verify(self) -> bool: ...
    @property
    def backend_ca(self) -> Path | None: ...
    @property
    def backend_timeout(self) -> float: ...


class ToolConfig(Protocol):
    """What the directory layer and the admin tool read of a whole configuration."""

    @property
    def path(self) -> Path: ...
    @property
    def directory(self) -> DirectorySettings: ...
    @property
    def provision(self) -> ProvisionSettings: ...
    @property
    def backends(self) -> Backends: ...
    @property
    def admin_token(self) -> str: ...
    @property
    def sieve(self) -> SieveBackendConfig: ...  # [sieve]; moves only (Sieve scripts)


def directory_settings(path: Path, table: Any) -> DirectorySettings:
    values = read_table(path, "directory", table, DIRECTORY_KEYS)
    if values["uri"] is None:
        raise ConfigError(path, "directory", "uri", "is required")
    ldif = values["uri"][0].startswith("ldif:")
    if values["base"] is None:
        raise ConfigError(path, "directory", "base", "is required")
    values = resolve_secret(path, "directory", values, "bind_password")
    if values["bind_dn"] and not values["bind_password"] and not ldif:
        raise ConfigError(path, "directory", "bind_password", "is required when bind_dn is set")
    if values["pool_size"] < 1:
        raise ConfigError(path, "directory", "pool_size", "must be at least 1")
    _check_tls(path, values)
    return DirectorySettings(**values)


def _check_tls(path: Path, values: dict[str, Any]) -> None:
    """Load the TLS files once now, so a bad one is a config error naming its key, not a
    directory that is "unavailable" at the first login."""
    cert, key = values["cert_file"], values["key_file"]
    if (cert is None) != (key is None):
        missing = "key_file" if key is None else "cert_file"
        raise ConfigError(
            path, "directory", missing, "cert_file and key_file go together (client certificate)"
        )
    context = ssl.create_default_context()
    if values["ca_file"] is not None:
        try:
            context.load_verify_locations(cafile=str(values["ca_file"]))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                path, "directory", "ca_file", f"not a PEM CA certificate file: {exc}"
            ) from None
    if cert is not None:
        try:
            context.load_cert_chain(str(cert), str(key))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                path, "directory", "cert_file", f"certificate and key_file do not load: {exc}"
            ) from None


def provision_settings(path: Path, table: Any) -> ProvisionSettings:
    values = read_table(path, "provision", table, PROVISION_KEYS)
    values = resolve_secret(path, "provision", values, "bind_password")
    values = resolve_secret(path, "provision", values, "master_password")
    return ProvisionSettings(**values)


def backends_settings(path: Path, tables: Any, provision: ProvisionSettings) -> Backends:
    """``[[backends]]`` → :class:`Backends`; a host listed twice is an error (which entry
    would win is exactly what an operator must not have to guess)."""
    if tables is None:
        tables = []
    if not isinstance(tables, list):
        raise ConfigError(path, "backends", None, "must be an array of tables: [[backends]]")
    listed: list[BackendSettings] = []
    seen: set[str] = set()
    for i, table in enumerate(tables):
        section = f"backends[{i}]"
        values = read_table(path, section, table, BACKEND_KEYS)
        if values["host"] is None:
            raise ConfigError(path, section, "host", "is required (the mailHost value)")
        if values["host"].lower() in seen:
            raise ConfigError(path, section, "host", f"{values['host']} is listed twice")
        seen.add(values["host"].lower())
        values = resolve_secret(path, section, values, "proxy_password")
        values = resolve_secret(path, section, values, "admin_password")
        for who in ("proxy", "admin"):
            if values[f"{who}_user"] and not values[f"{who}_password"]:
                raise ConfigError(
                    path, section, f"{who}_password", f"is required when {who}_user is set"
                )
        del values["proxy_password_file"], values["admin_password_file"]
        listed.append(BackendSettings(**values))
    default = BackendSettings(
        host="*",
        kind="dovecot",
        proxy_user=provision.master_user,
        proxy_password=provision.master_password,
        admin_user=provision.master_user,
        admin_password=provision.master_password,
        listed=False,
    )
    return Backends(tuple(listed), default)
