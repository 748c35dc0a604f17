"""A domain's users one page at a time, searched in LDAP with a filter.

The CLI's ``list_users`` reads every entry of a domain with all its attributes; at 100,000
users that is too slow for a page of 50. Here the search asks for ``mail`` only, sorts,
and reads the page's 50 entries in full with one more search.
"""

from __future__ import annotations

from typing import Any

from directory.names import escape_filter_value
from directory.provision import NotFound
from directory.provision.dnsstore import domain_dn
from directory.provision.ldapwrite import LdapWriter
from directory.provision.users import user_attributes, user_from_entry
from directory.settings import ToolConfig

PAGE_SIZE = 50
_USERS = "(objectClass=inetLocalMailRecipient)"


def user_dict(user: Any) -> dict[str, Any]:
    return {**user.as_dict(), "quota_kb": user.quota_kb}


def users_page(
    settings: ToolConfig, writer: LdapWriter, domain: str, q: str, page: int
) -> dict[str, Any]:
    zone = domain_dn(writer, domain)
    if writer.get(zone, ("1.1",)) is None:
        raise NotFound(f"domain {domain}: no such domain")
    search = _USERS
    if q:
        value = escape_filter_value(q.lower())
        search = f"(&{_USERS}(|(uid=*{value}*)(mail=*{value}*)))"
    base = f"ou=users,{zone}"
    try:
        found = sorted(
            (e.first("mail") or "", e.dn) for e in writer.search(base, search, "sub", ("mail",))
        )
    except NotFound:  # a domain without its ou=users yet
        found = []
    chosen = found[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    users = []
    if chosen:
        wanted = "".join(f"(mail={escape_filter_value(mail)})" for mail, _ in chosen if mail)
        dns = {dn for _, dn in chosen}
        entries = writer.search(base, f"(&{_USERS}(|{wanted}))", "sub", user_attributes(settings))
        page_users = (user_from_entry(e, settings) for e in entries if e.dn in dns)
        users = sorted(page_users, key=lambda u: u.mail)
    return {
        "domain": domain,
        "q": q,
        "page": page,
        "page_size": PAGE_SIZE,
        "total": len(found),
        "users": [user_dict(u) for u in users],
    }
