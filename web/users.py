"""A domain's users one page at a time, ordered by address, searched in LDAP with a filter.

At 100,000 users, reading every entry to sort them costs seconds, nearly all of it ldap3
decoding the entries (``python -m bench.userspage``; BENCHMARKS.md). So the page is asked of
the server when it can sort: one search with the server-side sort (RFC 2891) and virtual
list view (draft-ietf-ldapext-ldapv3-vlv) controls returns the page's 50 entries and the
total, and slapd sorts in C. OpenLDAP does this with the ``sssvlv`` overlay::

    moduleload sssvlv       # global section
    overlay sssvlv          # after the users' database

A server without it refuses the critical controls (or any other way: busy, size limit) and
the page is made here as before: every matching entry's ``mail``, sorted, then the page's
50 entries in full. In a large domain that sorted list is kept for a few seconds per
(domain, search), so turning pages does not read the domain again; :func:`forget_domain`
drops it when a user is added or deleted, so a change shows at once on this process (other
processes, the CLI, see it within :data:`CACHE_SECONDS`).
"""

from __future__ import annotations

import threading
from typing import Any

from cachetools import TTLCache
from ldap3.core.exceptions import LDAPException

from directory.names import escape_filter_value
from directory.provision import NotFound, Unavailable
from directory.provision.dnsstore import domain_dn
from directory.provision.ldapwrite import Entry, LdapWriter
from directory.provision.users import user_attributes, user_from_entry
from directory.settings import ToolConfig

PAGE_SIZE = 50
_USERS = "(objectClass=inetLocalMailRecipient)"

SORT_OID = "1.2.840.113556.1.4.473"
VLV_REQUEST_OID = "2.16.840.1.113730.3.4.9"
VLV_RESPONSE_OID = "2.16.840.1.113730.3.4.10"
# mail (IA5String) has no ORDERING rule in core.schema; slapd accepts this one for it
# (caseIgnoreIA5Match, its EQUALITY rule, is refused or sorts nonsense).
SORT_RULE = "caseIgnoreOrderingMatch"
_NO_SUCH_OBJECT = 32
_VLV_ERROR = 76  # virtualListViewError

CACHE_SECONDS = 10.0
CACHE_MIN_USERS = 2_000  # below this the search is cheap: no cache, nothing to go stale
CACHE_MAX_USERS = 500_000  # addresses held over all cached lists (~100 MB at most)
_sorted: TTLCache[tuple[str, str], list[tuple[str, str]]] = TTLCache(
    maxsize=CACHE_MAX_USERS, ttl=CACHE_SECONDS, getsizeof=len
)
_lock = threading.Lock()


def user_dict(user: Any) -> dict[str, Any]:
    return {**user.as_dict(), "quota_kb": user.quota_kb}


def forget_domain(domain: str) -> None:
    """Drop the cached lists of ``domain``: call after adding or deleting one of its users."""
    name = domain.lower()
    with _lock:
        for key in [k for k in _sorted if k[0] == name]:
            _sorted.pop(key, None)


def forget_all() -> None:
    with _lock:
        _sorted.clear()


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
    served = _server_page(settings, writer, base, search, page) if page >= 1 else None
    if served is not None:
        total, users = served
    else:
        total, users = _client_page(
            settings, writer, (domain.lower(), q.lower()), base, search, page
        )
    return {
        "domain": domain,
        "q": q,
        "page": page,
        "page_size": PAGE_SIZE,
        "total": total,
        "users": [user_dict(u) for u in users],
    }


# -- sorted and cut by the server ----------------------------------------------------------


def _server_page(
    settings: ToolConfig, writer: LdapWriter, base: str, search: str, page: int
) -> tuple[int, list[Any]] | None:
    """(total, the page's users) from one sorted VLV search; ``None`` if the server won't."""
    offset = (page - 1) * PAGE_SIZE + 1
    try:
        found = _vlv_search(settings, writer, base, search, offset, PAGE_SIZE - 1)
    except _PastTheEnd:  # slapd's answer to an offset past the end: ask for the total alone
        found = _vlv_search(settings, writer, base, search, 1, 0)
        return None if found is None else (found[1], [])
    if found is None:
        return None
    position, total, entries = found
    if offset > total:
        return total, []  # past the end a server may show its last entry; the page is empty
    if position != offset:
        return None
    return total, [user_from_entry(e, settings) for e in entries]


class _PastTheEnd(Exception):
    pass


def _vlv_search(
    settings: ToolConfig, writer: LdapWriter, base: str, search: str, offset: int, after: int
) -> tuple[int, int, list[Entry]] | None:
    """(targetPosition, contentCount, entries) of a sorted VLV search, or ``None``."""
    controls = [
        (SORT_OID, True, sort_control("mail", SORT_RULE)),
        (VLV_REQUEST_OID, True, vlv_control(0, after, offset)),
    ]
    conn = writer._connection()  # LdapWriter.search takes no controls
    try:
        conn.search(base, search, attributes=list(user_attributes(settings)), controls=controls)
    except LDAPException as exc:
        writer.close()
        raise Unavailable(f"directory unavailable during search {base}: {exc}") from None
    except KeyError as exc:  # ldap3 2.9 knows no result code 76 and fails decoding it
        writer.close()  # a connection left mid-answer: the next search opens another
        if exc.args == (_VLV_ERROR,) and offset > 1:
            raise _PastTheEnd from None
        return None
    result = conn.result or {}
    if result.get("result") == _NO_SUCH_OBJECT:  # a domain without its ou=users yet
        return offset, 0, []
    if result.get("result") != 0:
        return None  # no sssvlv (unavailableCriticalExtension), busy, a limit: sort here
    control = (result.get("controls") or {}).get(VLV_RESPONSE_OID) or {}
    try:
        position, total, code = parse_vlv_response(control.get("value") or b"")
    except ValueError:
        return None
    if code != 0:
        return None
    entries = [
        Entry(item["dn"], {k.lower(): _texts(v) for k, v in item["raw_attributes"].items()})
        for item in conn.response or []
        if item.get("type") == "searchResEntry"
    ]
    return position, total, entries


def _texts(values: list[bytes]) -> list[str]:
    return [v.decode("utf-8", "replace") for v in values]


def _ber(tag: int, body: bytes) -> bytes:
    size = len(body)
    if size < 0x80:
        return bytes([tag, size]) + body
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + body


def _ber_int(value: int, tag: int = 0x02) -> bytes:
    return _ber(tag, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))


def sort_control(attribute: str, ordering_rule: str = "") -> bytes:
    """RFC 2891 SortKeyList with one ascending key: ``SEQUENCE OF SEQUENCE {attributeType,
    orderingRule [0] OPTIONAL}``."""
    key = _ber(0x04, attribute.encode())
    if ordering_rule:
        key += _ber(0x80, ordering_rule.encode())
    return _ber(0x30, _ber(0x30, key))


def vlv_control(before: int, after: int, offset: int, content_count: int = 0) -> bytes:
    """VirtualListViewRequest by offset: ``SEQUENCE {beforeCount, afterCount, byOffset [0]
    SEQUENCE {offset, contentCount}}`` (offset 1 is the first entry)."""
    target = _ber(0xA0, _ber_int(offset) + _ber_int(content_count))
    return _ber(0x30, _ber_int(before) + _ber_int(after) + target)


def parse_vlv_response(value: bytes) -> tuple[int, int, int]:
    """(targetPosition, contentCount, virtualListViewResult) of a VirtualListViewResponse."""
    body = _ber_body(value, 0, 0x30)[0]
    fields = []
    pos = 0
    for tag in (0x02, 0x02, 0x0A):
        content, pos = _ber_body(body, pos, tag)
        fields.append(int.from_bytes(content, "big", signed=True))
    return fields[0], fields[1], fields[2]


def _ber_body(data: bytes, pos: int, tag: int) -> tuple[bytes, int]:
    """The contents of the element at ``pos`` (which must have ``tag``) and the next pos."""
    if len(data) < pos + 2 or data[pos] != tag:
        raise ValueError(f"expected BER tag {tag:#x} at {pos}")
    size, pos = data[pos + 1], pos + 2
    if size & 0x80:
        count = size & 0x7F
        if count == 0 or count > 4 or len(data) < pos + count:
            raise ValueError("bad BER length")
        size, pos = int.from_bytes(data[pos : pos + count], "big"), pos + count
    if len(data) < pos + size or (tag != 0x30 and size == 0):
        raise ValueError("truncated BER element")
    return data[pos : pos + size], pos + size


# -- sorted here, when the server cannot ---------------------------------------------------


def _client_page(
    settings: ToolConfig,
    writer: LdapWriter,
    key: tuple[str, str],
    base: str,
    search: str,
    page: int,
) -> tuple[int, list[Any]]:
    with _lock:
        found = _sorted.get(key)
    if found is None:
        try:
            found = sorted(
                (e.first("mail") or "", e.dn) for e in writer.search(base, search, "sub", ("mail",))
            )
        except NotFound:  # a domain without its ou=users yet
            found = []
        if CACHE_MIN_USERS <= len(found) <= CACHE_MAX_USERS:
            with _lock:
                _sorted[key] = found
    chosen = found[(page - 1) * PAGE_SIZE : page * PAGE_SIZE] if page >= 1 else []
    users = []
    if chosen:
        wanted = "".join(f"(mail={escape_filter_value(mail)})" for mail, _ in chosen if mail)
        dns = {dn for _, dn in chosen}
        entries = writer.search(base, f"(&{_USERS}(|{wanted}))", "sub", user_attributes(settings))
        page_users = (user_from_entry(e, settings) for e in entries if e.dn in dns)
        users = sorted(page_users, key=lambda u: u.mail)
    return len(found), users
