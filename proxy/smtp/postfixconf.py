"""Postfix ``ldap_table`` files equivalent to mailfarm's lookup maps, from ``[directory]``.

For sites where Postfix should ask LDAP itself rather than mailfarm's socketmap: the
same filter, base, service account and transport template, written the way
ldap_table(5) wants them, so both paths give the same answers. Two things ldap_table
cannot do stay Postfix's job and appear in the ``main.cf`` lines: stripping the
``+extension`` (``recipient_delimiter``; Postfix then retries without it) and folding
case (LDAP matching is case-insensitive anyway). What mailfarm adds and LDAP cannot
express: the route cache with stale-if-error, and deferring mail for a mailbox that is
being moved (``disabled_attribute``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from directory.mailstores import aliasing_hosts
from proxy.config import ConfigError, Settings

DEFAULT_DIR = Path("/etc/postfix/mailfarm")
#: Second aliases table: ``address -> uid@domain`` for users on Cyrus-like backends.
UID_ALIASES = "uid-aliases"

# main.cf parameter → (map, file name), in the order they are printed
PARAMETERS = (
    ("virtual_mailbox_domains", "domains"),
    ("virtual_mailbox_maps", "mailboxes"),
    ("virtual_alias_maps", "aliases"),
    ("transport_maps", "transport"),
)


@dataclass(frozen=True, slots=True)
class PostfixConfig:
    tables: dict[str, str]  # file name → content
    main_cf: str


def table_file(name: str) -> str:
    return f"ldap-{name}.cf"


def _literal_percent(text: str) -> str:
    """Double every ``%`` that is not the ``%s`` placeholder: ldap_table(5) also expands
    ``%u``, ``%d``, ``%1``... which must not appear by accident."""
    return re.sub(r"%(?!s)", "%%", text)


def user_filter(settings: Settings, *required: str) -> str:
    """The proxies' user filter, limited to routable entries (and to ``required``
    attributes being present), exactly like :func:`directory.model.route_from_entry`."""
    d = settings.directory
    present = "".join(f"({attr}=*)" for attr in (d.host_attribute, "uid", *required))
    return f"(&{_literal_percent(d.user_filter)}{present})"


def transport_format(template: str) -> str:
    """``lmtp:inet:{host}:24`` → ``lmtp:inet:%s:24`` (result_format syntax)."""
    return template.replace("%", "%%").replace("{host}", "%s")


def _common(settings: Settings) -> list[str]:
    d = settings.directory
    if d.uri[0].startswith("ldif:"):
        raise ConfigError(
            settings.path,
            "directory",
            "uri",
            "Postfix's ldap_table needs an LDAP server, not an ldif: file"
            " (use the socketmap in [lookup] instead)",
        )
    lines = [
        f"server_host = {' '.join(d.uri)}",
        "version = 3",
        f"search_base = {d.base}",
        "scope = sub",
        f"timeout = {max(1, math.ceil(d.timeout))}",
    ]
    if d.bind_dn:
        lines += ["bind = yes", f"bind_dn = {d.bind_dn}", f"bind_pw = {d.bind_password}"]
    else:
        lines.append("bind = no")
    return lines


def _override(line: str, values: dict[str, str]) -> str:
    """``key = value`` with the value from ``values`` if the key is there (one per file:
    ldap_table(5) keeps the first of duplicate parameters)."""
    key = line.partition(" = ")[0]
    return f"{key} = {values[key]}" if key in values else line


def _on_hosts(attribute: str, hosts: tuple[str, ...]) -> str:
    inner = "".join(f"({attribute}={_ldap_value(h)})" for h in hosts)
    return inner if len(hosts) == 1 else f"(|{inner})"


def _ldap_value(text: str) -> str:
    """An assertion value (RFC 4515 escapes), with ``%`` doubled for ldap_table."""
    for ch, esc in (("\\", "\\5c"), ("*", "\\2a"), ("(", "\\28"), (")", "\\29")):
        text = text.replace(ch, esc)
    return _literal_percent(text)


def recipient_filter(settings: Settings) -> str:
    """The user filter for keys that name a mailbox: the address, and on backends whose
    kind files mail by uid (:func:`directory.mailstores.postfix_alias`) also
    ``uid@domain``, the name the aliases map hands Postfix for them; the entry must then
    be of that domain and on such a host, as the socketmap's check is."""
    plain = user_filter(settings)
    hosts = aliasing_hosts(settings.backends)
    if not hosts:
        return plain
    by_uid = user_filter(settings).replace("%s", "%u")
    on = _on_hosts(settings.directory.host_attribute, hosts)
    return f"(|{plain}(&{by_uid[2:-1]}(mail=*@%d){on}))"


def tables(settings: Settings) -> dict[str, str]:
    """The ldap_table files, keyed by map name (``uid-aliases`` only when a backend kind
    files mail by uid)."""
    common = _common(settings)
    d = settings.directory
    specific = {
        "domains": [
            f"query_filter = {d.domain_filter}",
            "result_attribute = associatedDomain",
        ],
        "mailboxes": [f"query_filter = {recipient_filter(settings)}", "result_attribute = uid"],
        "aliases": [
            f"query_filter = {user_filter(settings, 'mailRoutingAddress')}",
            "result_attribute = mailRoutingAddress",
        ],
        "transport": [
            f"query_filter = {recipient_filter(settings)}",
            f"result_attribute = {d.host_attribute}",
            f"result_format = {transport_format(settings.lookup.transport)}",
        ],
    }
    # Only the domain entries themselves, one level under the domains branch: a DNS name
    # below one (mail.eu.example.com) carries associatedDomain too, and is not a domain.
    where = {"search_base": d.domains_base, "scope": d.domain_scope}
    hosts = aliasing_hosts(settings.backends)
    if hosts:
        on = _on_hosts(d.host_attribute, hosts)
        specific[UID_ALIASES] = [
            f"query_filter = (&{user_filter(settings)[2:-1]}{on})",
            "result_attribute = uid",
            "result_format = %s@%D",
        ]
    out = {}
    for name, lines in specific.items():
        header = [
            f"# Postfix ldap_table(5): mailfarm's '{name}' map, generated by",
            f"# 'mailfarm postfix-config' from {settings.path}. Contains the LDAP password:",
            "# keep it readable by root and the postfix group only.",
        ]
        base = [_override(line, where) for line in common] if name == "domains" else common
        out[name] = "\n".join([*header, *base, *lines]) + "\n"
    return out


def main_cf(settings: Settings, directory: Path) -> str:
    lines = [
        f"# mailfarm: recipients and routing straight from LDAP ({settings.path})",
    ]
    extra = {"aliases": UID_ALIASES} if aliasing_hosts(settings.backends) else {}
    for param, name in PARAMETERS:
        names = [name, extra[name]] if name in extra else [name]
        files = ", ".join(f"proxy:ldap:{directory / table_file(n)}" for n in names)
        lines.append(f"{param} = {files}")
    delimiter = settings.lookup.recipient_delimiter
    if delimiter:
        lines.append(f"recipient_delimiter = {delimiter}")
    if settings.lookup.listen:
        host, port = settings.lookup.listen[0]
        where = f"[{host}]" if ":" in host else host or "127.0.0.1"
        lines.append("# or, through mailfarm's route cache instead of LDAP:")
        lines += [f"#{param} = socketmap:inet:{where}:{port}:{name}" for param, name in PARAMETERS]
    return "\n".join(lines) + "\n"


def generate(settings: Settings, directory: Path = DEFAULT_DIR) -> PostfixConfig:
    """Everything ``mailfarm postfix-config`` prints or writes."""
    return PostfixConfig(
        {table_file(name): text for name, text in tables(settings).items()},
        main_cf(settings, directory),
    )
