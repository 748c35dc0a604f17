"""The API tokens file: one ``ROLE TOKEN`` a line, ``domain-admin TOKEN DOMAIN[,DOMAIN...]``.

Tokens are kept only as SHA-256 digests in memory, and no error message ever repeats one:
a config error or a log line must not become the way a token leaks.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from common.configschema import ConfigError

ADMIN, HELPDESK, DOMAIN_ADMIN = "admin", "helpdesk", "domain-admin"
ROLES = (ADMIN, HELPDESK, DOMAIN_ADMIN)
MIN_TOKEN_LENGTH = 16  # a shorter bearer token is guessable over the network


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is: a role, its domains (domain-admin only) and where it was defined,
    so logs can name the caller without naming its token."""

    role: str
    domains: frozenset[str]
    source: str  # "token:line N" or "staff:UID"

    def owns(self, domain: str) -> bool:
        return self.role != DOMAIN_ADMIN or domain in self.domains


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class Tokens:
    """Token digest → principal."""

    def __init__(self, by_digest: dict[str, Principal]) -> None:
        self._by_digest = by_digest

    def __len__(self) -> int:
        return len(self._by_digest)

    def find(self, token: str) -> Principal | None:
        return self._by_digest.get(digest(token))


def parse_tokens(text: str, file: str | Path, section: str = "web") -> Tokens:
    """Parse the file's text; :class:`ConfigError` names the line, never the token."""
    # Here, not at the top: proxy.config reads [web] too, and the proxies load no admin tool.
    from directory.provision import UsageError
    from directory.provision.dns import check_domain

    key = "api_tokens_file"
    found: dict[str, Principal] = {}

    def bad(number: int, problem: str) -> ConfigError:
        return ConfigError(file, section, key, f"line {number}: {problem}")

    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        role = fields[0]
        if role not in ROLES:
            raise bad(number, f"unknown role {role!r} (roles: {', '.join(ROLES)})")
        if len(fields) < 2:
            raise bad(number, f"{role}: no token")
        token = fields[1]
        if len(token) < MIN_TOKEN_LENGTH:
            raise bad(number, f"token shorter than {MIN_TOKEN_LENGTH} characters")
        domains: set[str] = set()
        if role == DOMAIN_ADMIN:
            if len(fields) != 3:
                raise bad(number, "domain-admin takes TOKEN DOMAIN[,DOMAIN...]")
            for name in fields[2].split(","):
                try:
                    domains.add(check_domain(name))
                except UsageError as exc:
                    raise bad(number, str(exc)) from None
        elif len(fields) != 2:
            raise bad(number, f"{role} takes only a token (domains are for domain-admin)")
        hashed = digest(token)
        if hashed in found:
            raise bad(number, f"the same token as {found[hashed].source}")
        found[hashed] = Principal(role, frozenset(domains), f"token:line {number}")
    return Tokens(found)


def load_tokens(path: Path, file: str | Path) -> Tokens:
    """Read ``path`` (named by config ``file``'s ``[web] api_tokens_file``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problem = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(file, "web", "api_tokens_file", f"{path}: {problem}") from None
    return parse_tokens(text, file)
