"""A domain's DNS data as mailfarm keeps it in LDAP, and the BIND zone made from it (pure).

Layout in the directory, using cosine's ``dNSDomain`` attributes (RFC 1274) and those of
PowerDNS's ``dnsdomain2`` schema (``aAAARecord``, ``tXTRecord``, ``sRVRecord``, ``cAARecord``,
``pTRRecord``; objectClass ``dNSDomain2``, a structural subclass of ``dNSDomain``), which is
exactly what PowerDNS's LDAP backend serves in ``ldap-method=simple``:

* The **apex** lives on the domain entry itself,
  ``dc=example.com,ou=domains,<[directory] base>`` (objectClass ``dNSDomain2`` +
  ``domainRelatedObject``, ``associatedDomain: example.com``): ``sOARecord``, ``nSRecord``,
  ``mXRecord``, ``aRecord``, ...
* Every **other name** is a child entry named by its label(s) relative to the zone, as one
  ``dc`` value: ``dc=www,dc=example.com,...``, ``dc=*,dc=example.com,...`` for the wildcard,
  ``dc=mail.eu,dc=example.com,...`` for ``mail.eu.example.com``; objectClass ``dNSDomain2`` +
  ``domainRelatedObject`` with ``associatedDomain`` its full name (:func:`fqdn`,
  ``www.example.com``), because PowerDNS finds every name by ``(associatedDomain=<name>)``.
  Such an entry exists only while it holds a record. ``ou=users`` (the domain's users) is a
  sibling and is never taken for a name. (That is also why the hosted-domain check searches
  only one level under the domains branch: ``mail.eu.example.com`` is a name, not a domain.)

Stored values are the zone-file RDATA (presentation form, as PowerDNS parses record
content) in canonical form, every host name absolute:

* ``aRecord``: ``192.0.2.10``; ``aAAARecord``: ``2001:db8::10`` (RFC 5952 compressed)
* ``mXRecord``: ``10 mx1.example.com.`` (preference, host)
* ``nSRecord`` / ``cNAMERecord`` / ``pTRRecord``: ``ns1.example.com.``
* ``tXTRecord``: ``"v=spf1 mx -all"``, with its quotes; longer than 255 bytes as several
  quoted strings (``"...255..." "rest"``)
* ``sRVRecord``: ``0 1 993 mail.isp.example.`` (priority, weight, port, target)
* ``cAARecord``: ``0 issue "letsencrypt.org"`` (flags, tag, quoted value)
* ``sOARecord``: ``mname rname serial refresh retry expire minimum``, e.g.
  ``ns1.example.com. hostmaster.example.com. 2024061501 3600 900 1209600 300``

The serial is ``YYYYMMDDnn`` and grows on every change (:func:`bump_serial`), so secondaries
notice. A host given without a trailing dot but with a dot inside is taken as absolute
(``mx1.example.net`` → ``mx1.example.net.``); a single label is taken as relative to the zone
(``mx1`` → ``mx1.example.com.``), which is what an operator typing on a command line means.

Everything in this module is pure: it turns values into values, and the LDAP side
(:mod:`directory.provision.dnsstore`) only reads and writes them.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from datetime import date

from directory.provision import UsageError

APEX = "@"
WILDCARD = "*"
# Zone-file type → cosine attribute (the case LDAP servers report them in varies).
ATTRIBUTES = {
    "SOA": "sOARecord",
    "NS": "nSRecord",
    "MX": "mXRecord",
    "A": "aRecord",
    "CNAME": "cNAMERecord",
    "AAAA": "aAAARecord",
    "TXT": "tXTRecord",
    "SRV": "sRVRecord",
    "CAA": "cAARecord",
    "PTR": "pTRRecord",
}
# The types whose attributes only PowerDNS's dnsdomain2 schema defines (objectClass
# dNSDomain2); cosine's dNSDomain allows the others.
DNSDOMAIN2_TYPES = frozenset({"AAAA", "TXT", "SRV", "CAA", "PTR"})
# Values compared and stored as given (text), not folded to lower case like host names.
CASE_KEPT = frozenset({"TXT", "CAA"})
EDITABLE = ("NS", "MX", "A", "AAAA", "CNAME", "TXT", "SRV", "CAA", "PTR", "SOA")
_ORDER = ("NS", "MX", "A", "AAAA", "CNAME", "TXT", "SRV", "CAA", "PTR")
CAA_TAGS = ("issue", "issuewild", "iodef")
TXT_CHUNK = 255  # bytes in one <character-string> (RFC 1035 3.3)
DEFAULT_TTL = 3600
SOA_TIMERS = {"refresh": 3600, "retry": 900, "expire": 1209600, "minimum": 300}

_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\Z")

# owner ("@", "www", "*") → type ("A", ...) → values in stored form
Records = dict[str, dict[str, list[str]]]


def check_domain(name: str) -> str:
    """A domain name in canonical form (lower case, no trailing dot), or UsageError.

    Underscores are allowed because mail domains like ``under_score.org`` exist (the farm has
    one); their zones need BIND's ``check-names ignore`` (``named-checkzone -k ignore``).
    """
    value = name.strip().lower().rstrip(".")
    labels = value.split(".")
    if len(value) > 253 or len(labels) < 2 or not all(_LABEL.match(lb) for lb in labels):
        raise UsageError(f"{name!r} is not a domain name")
    return value


def check_owner(name: str, origin: str) -> str:
    """An owner name relative to ``origin``: ``@``, ``www``, ``*``, ``mail.eu`` or UsageError.

    A fully qualified name inside the zone (``www.example.com.``) is accepted and made
    relative; a name outside the zone is refused rather than silently put under it.
    """
    value = name.strip().lower()
    if value in (APEX, "", origin, origin + "."):
        return APEX
    if value.endswith("."):
        suffix = "." + origin + "."
        if not value.endswith(suffix):
            raise UsageError(f"{name!r} is not inside the zone {origin}")
        value = value[: -len(suffix)]
    labels = value.split(".")
    for i, label in enumerate(labels):
        if label == WILDCARD and i == 0:
            continue
        if not _LABEL.match(label):
            raise UsageError(f"{name!r} is not a valid name in the zone {origin}")
    return value


def absolute(host: str, origin: str) -> str:
    """A host name with its trailing dot; a single label is relative to ``origin``."""
    value = host.strip().lower()
    if not value:
        raise UsageError("empty host name")
    if not value.endswith("."):
        value = value + "." if "." in value else f"{value}.{origin}."
    labels = value[:-1].split(".")
    if len(value) > 254 or not all(_LABEL.match(lb) for lb in labels):
        raise UsageError(f"{host!r} is not a host name")
    return value


def mx_value(text: str, origin: str) -> str:
    """``"10 mx1.example.com"`` or ``"mx1.example.com:10"`` → ``"10 mx1.example.com."``."""
    text = text.strip()
    if " " in text:
        prio, _, host = text.partition(" ")
    else:
        host, sep, prio = text.rpartition(":")
        if not sep:
            raise UsageError(f"MX {text!r}: give HOST:PRIORITY or 'PRIORITY HOST'")
    prio = prio.strip()
    if not prio.isdigit() or int(prio) > 65535:
        raise UsageError(f"MX {text!r}: the priority must be a number 0-65535")
    return f"{int(prio)} {absolute(host.strip(), origin)}"


def a_value(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text.strip()))
    except ValueError:
        raise UsageError(f"A {text!r}: not an IPv4 address") from None


def a_option(text: str, origin: str) -> tuple[str, str]:
    """``--a NAME:IP`` → (owner, address); ``@`` or an empty NAME is the apex."""
    name, sep, ip = text.rpartition(":")
    if not sep:
        raise UsageError(f"--a {text!r}: give NAME:IP, e.g. www:192.0.2.10 or @:192.0.2.10")
    return check_owner(name or APEX, origin), a_value(ip)


@dataclass(frozen=True, slots=True)
class Soa:
    mname: str
    rname: str
    serial: int
    refresh: int = SOA_TIMERS["refresh"]
    retry: int = SOA_TIMERS["retry"]
    expire: int = SOA_TIMERS["expire"]
    minimum: int = SOA_TIMERS["minimum"]

    def value(self) -> str:
        return (
            f"{self.mname} {self.rname} {self.serial} {self.refresh} {self.retry} "
            f"{self.expire} {self.minimum}"
        )

    @classmethod
    def parse(cls, text: str, origin: str) -> Soa:
        parts = text.split()
        if len(parts) != 7 or not all(p.isdigit() for p in parts[2:]):
            raise UsageError(
                f"SOA {text!r}: give 'MNAME RNAME SERIAL REFRESH RETRY EXPIRE MINIMUM'"
            )
        numbers = [int(p) for p in parts[2:]]
        if any(n >= 2**32 for n in numbers):
            raise UsageError(f"SOA {text!r}: numbers must fit in 32 bits")
        serial, refresh, retry, expire, minimum = numbers
        mname, rname = absolute(parts[0], origin), absolute(parts[1], origin)
        return cls(mname, rname, serial, refresh, retry, expire, minimum)


def bump_serial(old: int, today: date) -> int:
    """The next ``YYYYMMDDnn`` serial: today's first (``nn`` = 01) or one more than ``old``.

    Always strictly greater than ``old``, so a hundredth change in one day simply runs
    into tomorrow's numbers rather than going backwards.
    """
    first_today = int(today.strftime("%Y%m%d")) * 100 + 1
    return max(old + 1, first_today)


def initial_soa(origin: str, ns: list[str], today: date) -> Soa:
    """The SOA of a new zone: the first name server as MNAME, hostmaster@ the domain."""
    mname = ns[0] if ns else f"{origin}."
    return Soa(mname, f"hostmaster.{origin}.", bump_serial(0, today))


def fqdn(owner: str, origin: str) -> str:
    """The full name of ``owner`` in ``origin``, as ``associatedDomain`` holds it (lower case,
    no trailing dot): PowerDNS's LDAP backend finds each name by ``(associatedDomain=fqdn)``."""
    return origin if owner == APEX else f"{owner}.{origin}"


def aaaa_value(text: str) -> str:
    """An IPv6 address in canonical compressed form (RFC 5952), as ``2001:db8::1``."""
    try:
        return ipaddress.IPv6Address(text.strip()).compressed
    except ValueError:
        raise UsageError(f"AAAA {text!r}: not an IPv6 address") from None


def _printable(what: str, text: str) -> None:
    bad = next((ch for ch in text if not " " <= ch <= "~"), None)
    if bad is not None:
        raise UsageError(f"{what} {text!r}: {bad!r} is not a printable ASCII character")


def _txt_strings(text: str) -> list[str]:
    """The strings of a quoted TXT value (``"a" "b\\"c"``), unescaped; UsageError if malformed."""
    strings: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] == " ":
            i += 1
            continue
        if text[i] != '"':
            raise UsageError(f"TXT {text!r}: text outside the quoted strings at {text[i:]!r}")
        i += 1
        chars: list[str] = []
        while True:
            if i >= n:
                raise UsageError(f"TXT {text!r}: a quoted string is not closed")
            ch = text[i]
            if ch == "\\" and text[i + 1 : i + 4].isdigit() and len(text[i + 1 : i + 4]) == 3:
                chars.append(chr(int(text[i + 1 : i + 4])))  # \DDD, a decimal byte
                i += 4
                continue
            if ch == "\\" and i + 1 < n:
                chars.append(text[i + 1])
                i += 2
                continue
            i += 1
            if ch == '"':
                break
            chars.append(ch)
        strings.append("".join(chars))
    return strings


def txt_text(value: str) -> str:
    """The text a stored TXT value carries: its strings joined, as a DKIM or SPF reader
    joins them (RFC 6376 3.6.2.2, RFC 7208 3.3); UsageError if malformed."""
    return "".join(_txt_strings(value.strip()))


def _quote(string: str) -> str:
    return '"' + string.replace("\\", "\\\\").replace('"', '\\"') + '"'


def txt_value(text: str) -> str:
    """Zone-file TXT RDATA: quoted strings of at most 255 bytes each, as PowerDNS wants them.

    ``v=spf1 mx -all`` (what an operator types) becomes ``"v=spf1 mx -all"``; a value that
    starts with a quote is taken as quoted strings already and kept, only re-split where one
    is longer than 255 (a DKIM key); ``"`` and ``\\`` inside are escaped with a backslash.
    Only printable ASCII is accepted: the attribute is IA5, and a zone file has no encoding.
    """
    value = text.strip()
    _printable("TXT", value)
    strings = _txt_strings(value) if value.startswith('"') else [value]
    if not value or not strings:
        raise UsageError("TXT: empty value (give '\"\"' for an empty string)")
    for string in strings:
        _printable("TXT", string)
    chunks = [s[i : i + TXT_CHUNK] for s in strings for i in range(0, max(len(s), 1), TXT_CHUNK)]
    return " ".join(_quote(chunk) for chunk in chunks)


def _u16(rtype: str, text: str, field: str, value: str) -> int:
    if not value.isdigit() or int(value) > 65535:
        raise UsageError(f"{rtype} {text!r}: the {field} must be a number 0-65535")
    return int(value)


def srv_value(text: str, origin: str) -> str:
    """``PRIORITY WEIGHT PORT TARGET`` (RFC 2782); TARGET ``.`` means "no such service"."""
    parts = text.split()
    if len(parts) != 4:
        raise UsageError(f"SRV {text!r}: give 'PRIORITY WEIGHT PORT TARGET'")
    fields = ("priority", "weight", "port")
    numbers = [_u16("SRV", text, f, v) for f, v in zip(fields, parts[:3], strict=True)]
    target = "." if parts[3] == "." else absolute(parts[3], origin)
    return f"{numbers[0]} {numbers[1]} {numbers[2]} {target}"


def caa_value(text: str) -> str:
    """``FLAGS TAG VALUE`` (RFC 8659) → ``0 issue "letsencrypt.org"`` (the value quoted)."""
    flags, _, rest = text.strip().partition(" ")
    tag, _, value = rest.strip().partition(" ")
    tag, value = tag.lower(), value.strip()
    if not flags.isdigit() or int(flags) > 255:
        raise UsageError(f"CAA {text!r}: give 'FLAGS TAG VALUE', FLAGS a number 0-255")
    if tag not in CAA_TAGS:
        raise UsageError(f"CAA {text!r}: the tag must be one of {', '.join(CAA_TAGS)}")
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    _printable("CAA", value)
    if not value or '"' in value or "\\" in value:
        raise UsageError(f"CAA {text!r}: the value must be non-empty, without quotes or \\")
    return f'{int(flags)} {tag} "{value}"'


def record_value(rtype: str, text: str, origin: str) -> str:
    """The stored form of one record value of type ``rtype`` (SOA excluded)."""
    if rtype == "A":
        return a_value(text)
    if rtype == "AAAA":
        return aaaa_value(text)
    if rtype == "MX":
        return mx_value(text, origin)
    if rtype in ("NS", "CNAME", "PTR"):
        return absolute(text, origin)
    if rtype == "TXT":
        return txt_value(text)
    if rtype == "SRV":
        return srv_value(text, origin)
    if rtype == "CAA":
        return caa_value(text)
    raise UsageError(f"record type {rtype!r} cannot be set here; use one of {', '.join(EDITABLE)}")


def check_type(rtype: str) -> str:
    value = rtype.strip().upper()
    if value not in EDITABLE:
        raise UsageError(f"record type {rtype!r}: use one of {', '.join(EDITABLE)}")
    return value


def with_record(types: dict[str, list[str]], owner: str, rtype: str, value: str) -> list[str]:
    """The values of ``rtype`` at ``owner`` after adding ``value``, or UsageError on conflict.

    A CNAME cannot share its name with any other data (RFC 1034 3.6.2) nor sit at the apex,
    where SOA and NS must be: named-checkzone would refuse the zone, so we refuse the edit.
    A CNAME is single-valued, so setting it replaces the old target.
    """
    others = {t for t, vals in types.items() if vals and t != rtype}
    if rtype == "CNAME":
        if owner == APEX:
            raise UsageError("a CNAME cannot be at the zone apex (@)")
        if others:
            raise UsageError(f"{owner} already has {', '.join(sorted(others))} records: no CNAME")
        return [value]
    if types.get("CNAME"):
        raise UsageError(f"{owner} is a CNAME: it cannot have {rtype} records too")
    current = list(types.get(rtype, []))
    # The record attributes match caseIgnoreIA5: LDAP holds "a" and "A" as one value.
    if value.lower() not in {v.lower() for v in current}:
        current.append(value)
    return current


def _sort_key(rtype: str, value: str) -> tuple[int, str]:
    if rtype in ("MX", "SRV"):
        prio, _, rest = value.partition(" ")
        return (int(prio) if prio.isdigit() else 0, rest)
    return (0, value)


def render_zone(origin: str, soa: Soa, records: Records, ttl: int = DEFAULT_TTL) -> str:
    """A BIND master file for ``origin``: $ORIGIN/$TTL, SOA, then the apex, then other names.

    Deterministic (sorted names and values) so two exports of unchanged data are identical
    and a diff of two exports shows only what changed.
    """
    lines = [
        f"; zone {origin}, generated by mailfarm dns export from LDAP",
        f"$ORIGIN {origin}.",
        f"$TTL {ttl}",
        f"@\tIN\tSOA\t{soa.mname} {soa.rname} (",
        f"\t\t\t{soa.serial}\t; serial",
        f"\t\t\t{soa.refresh}\t; refresh",
        f"\t\t\t{soa.retry}\t; retry",
        f"\t\t\t{soa.expire}\t; expire",
        f"\t\t\t{soa.minimum} )\t; minimum",
    ]
    owners = sorted(records, key=lambda o: (o != APEX, o.split(".")[::-1]))
    for owner in owners:
        types = records[owner]
        for rtype in _ORDER:
            for value in sorted(types.get(rtype, []), key=lambda v, t=rtype: _sort_key(t, v)):
                lines.append(f"{owner}\tIN\t{rtype}\t{value}")
    return "\n".join(lines) + "\n"


def soa_with_serial(soa: Soa, today: date) -> Soa:
    return replace(soa, serial=bump_serial(soa.serial, today))
