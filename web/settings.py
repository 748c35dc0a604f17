"""The ``[web]`` section of ``proxy.toml``, declared as data like the other sections.

Read here rather than in :mod:`proxy.config` so the web layer owns its keys; ``proxy.config``
only calls :func:`web_settings` with the ``[tls]`` files it already checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.configschema import ConfigError, Key, read_table
from web.tokens import load_tokens

MIN_SESSION_SECRET = 32  # bytes: the later console signs cookies with it
DEFAULT_STAFF_FILTER = "(&(objectClass=inetOrgPerson)(employeeType=*)(uid=%s))"


def _check_staff_filter(value: str) -> str:
    # Exactly once: staff sign in by one name, so a second %s is likelier a slip than meant.
    if value.count("%s") != 1:
        raise ValueError("must contain %s exactly once, where the login goes")
    if not (value.startswith("(") and value.endswith(")")):
        raise ValueError("must be an LDAP filter in parentheses")
    return value


def _check_attribute(value: str) -> str:
    if not value or not all(ch.isalnum() or ch in "-;" for ch in value):
        raise ValueError(f"must be an LDAP attribute name, not {value!r}")
    return value


WEB_KEYS = {
    "listen": Key("listen", ()),
    "tls": Key("bool", False),
    "cert": Key("path", None),
    "key": Key("path", None),
    "api_tokens_file": Key("path", None),
    "session_secret_file": Key("path", None),
    "staff_filter": Key("str", DEFAULT_STAFF_FILTER, _check_staff_filter),
    "role_attribute": Key("str", "employeeType", _check_attribute),
    "audit_log": Key("outpath", None),
}

Listen = tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class WebSettings:
    listen: Listen
    tls: bool
    cert: Path | None  # effective: [web]'s own, else [tls]'s when tls = true
    key: Path | None
    api_tokens_file: Path | None
    session_secret_file: Path | None
    staff_filter: str = DEFAULT_STAFF_FILTER  # searched under [directory] base, %s the login
    role_attribute: str = "employeeType"  # its value on a staff entry: one of web.tokens.ROLES
    audit_log: Path | None = None  # JSON lines, appended; None: kept in memory only


def web_settings(
    path: Path, table: Any, tls_cert: Path | None = None, tls_key: Path | None = None
) -> WebSettings:
    """Validate ``[web]``; the tokens file is parsed now so a bad line stops the config."""
    values = read_table(path, "web", table, WEB_KEYS)
    if (values["cert"] is None) != (values["key"] is None):
        missing = "key" if values["key"] is None else "cert"
        raise ConfigError(path, "web", missing, "cert and key must be given together")
    if values["cert"] is not None and not values["tls"]:
        raise ConfigError(path, "web", "cert", "is only used with tls = true")
    if values["tls"] and values["cert"] is None:
        if tls_cert is None or tls_key is None:
            raise ConfigError(path, "web", "tls", "needs cert and key here or in [tls]")
        values["cert"], values["key"] = tls_cert, tls_key
    if values["api_tokens_file"] is not None:
        load_tokens(values["api_tokens_file"], path)
    secret = values["session_secret_file"]
    if secret is not None:
        try:
            size = len(secret.read_bytes().strip())
        except OSError as exc:
            raise ConfigError(path, "web", "session_secret_file", exc.strerror or "") from None
        if size < MIN_SESSION_SECRET:
            raise ConfigError(
                path,
                "web",
                "session_secret_file",
                f"{secret}: needs at least {MIN_SESSION_SECRET} bytes of secret",
            )
    return WebSettings(**values)
