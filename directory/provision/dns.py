"""A domain's DNS data as mailfarm keeps it in LDAP, and the BIND zone made from it (pure).

Layout in the directory, using only cosine's standard attributes of ``dNSDomain`` (RFC 1274),
so any LDAP-backed DNS tool that knows cosine can read it too:

* The **apex** lives on the domain entry itself,
  ``dc=example.com,ou=domains,<[directory] base>`` (objectClass ``dNSDomain`` +
  ``domainRelatedObject``): ``sOARecord``, ``nSRecord``, ``mXRecord``, ``aRecord``.
* Every **other name** is a child ``dNSDomain`` entry named by its label(s) relative to the
  zone, as one ``dc`` value: ``dc=www,dc=example.com,...``, ``dc=*,dc=example.com,...`` for
  the wildcard, ``dc=mail.eu,dc=example.com,...`` for ``mail.eu.example.com``. Such an entry
  exists only while it holds a record. ``ou=users`` (the domain's users) is a sibling and is
  never taken for a name.

Stored values are the zone-file RDATA in canonical form, every host name absolute:

* ``aRecord``: ``192.0.2.10``
* ``mXRecord``: ``10 mx1.example.com.`` (preference, host)
* ``nSRecord`` / ``cNAMERecord``: ``ns1.example.com.``
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
}
EDITABLE = ("NS", "MX", "A", "CNAME", "SOA")
_ORDER = ("NS", "MX", "A", "CNAME")
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


def record_value(rtype: str, text: str, origin: str) -> str:
    """The stored form of one record value of type ``rtype`` (SOA excluded)."""
    if rtype == "A":
        return a_value(text)
    if rtype == "MX":
        return mx_value(text, origin)
    if rtype in ("NS", "CNAME"):
        return absolute(text, origin)
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
    if value not in current:
        current.append(value)
    return current


def _sort_key(rtype: str, value: str) -> tuple[int, str]:
    if rtype == "MX":
        prio, _, host = value.partition(" ")
        return (int(prio) if prio.isdigit() else 0, host)
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
