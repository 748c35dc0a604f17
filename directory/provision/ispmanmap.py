"""ISPMan's directory, read from an LDIF export, as a plan of mailfarm entries (pure).

Nothing here touches LDAP: :mod:`.ispman` compares the plan with the directory and writes
it. Keeping the reading apart means every ISPMan oddity below is unit-tested on text alone.

What ISPMan writes (ISPMan 1.x sources: ``install-data/templates/users.ldif.template``,
``domain.common.ldif.template``, ``lib/ISPMan/UserMan.pm``, ``lib/ISPMan/DNSMan*.pm``):

* a domain is ``ispmanDomain=example.com,<suffix>`` (the suffix is usually ``o=ispman``, but
  is taken from each entry), with ``ispmanDomainType`` primary, slave, replica or nodns;
* a user is ``uid=alice_example_com,ou=users,ispmanDomain=example.com,<suffix>``: its uid
  is ``create_uid`` (the login and the domain, dots turned into ``_``), a second ``uid``
  value holds ``alice@example.com``; ``ispmanUserId`` is the local part, ``mailHost`` the
  backend, ``mailLocalAddress`` the address and ``mailAlias`` the aliases,
  ``mailRoutingAddress`` ISPMan's internal ``uid@mailHost`` route, ``mailForwardingAddress``
  forwards (delivered *besides* the mailbox), ``mailQuota`` KiB for the backend,
  ``ispmanStatus`` active or suspended, ``userPassword`` whatever ``userPassHashMethod``
  made (``{crypt}`` DES, ``{md5}``/``{sha}`` unsalted, or cleartext; ``noEntry`` when none);
* DNS data in one of two layouts. ISPMan 0.x kept ``cn=<type>,ou=dnsdata`` under the domain,
  one ``record`` value per record, fields split on commas (``@,10,mx1.example.com`` for
  ``mxrecords``, ``@,ns1.example.com`` for ``nsrecords``, ``www,192.0.2.1`` for ``arecords``,
  ``ftp,www`` for ``cnames``) and the SOA timers as attributes of ``cn=soarecords``.
  ISPMan 1.x writes ``dnsZone`` entries under ``ou=DNS,<suffix>`` carrying ``zoneName``,
  ``relativeDomainName`` and one of ``aRecord``, ``mXRecord`` (``10 mx1.example.com.``),
  ``nSRecord``, ``cNAMERecord`` or ``sOARecord`` (``mname rname serial 3H 30M 1W 1D``: BIND
  time units). Both are read; targets follow ISPMan's ``staticHost`` (a name with a dot is
  absolute), owners its ``make_fqdn`` (``@`` or empty is the apex).

Deliberately not carried over, so nothing is silently wrong afterwards: ``mailRoutingAddress``
(in mailfarm it means "forward everything there", which would send mail away from the
mailbox), ``mailForwardingAddress`` (mailfarm cannot forward and keep a copy: noted per
user), ``mailQuota`` (enforced by the backends, which keep it), AAAA/TXT/PTR records and
per-record TTLs (noted), and replica domains (mailfarm has no domain aliases: skipped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import date

from directory.ldif import LdifError, normalise_dn, parse_ldif
from directory.provision import ProvisionError, UsageError
from directory.provision.dns import (
    APEX,
    Records,
    Soa,
    absolute,
    bump_serial,
    check_domain,
    check_owner,
    initial_soa,
    record_value,
    with_record,
)
from directory.provision.users import check_address

# slapd verifies these natively (the SHA-2 ones with its pw-sha2 module, which the farm loads)
KNOWN_SCHEMES = {"CRYPT", "MD5", "SMD5", "SHA", "SSHA", "SHA256", "SSHA256", "SHA512", "SSHA512"}
NO_PASSWORD = "noentry"  # what users.ldif.template writes when no password was given
ACTIVE = {"", "active", "enabled"}
OLD_TYPES = {"nsrecords": "NS", "mxrecords": "MX", "arecords": "A", "cnames": "CNAME"}
OLD_TYPES["cnamerecords"] = "CNAME"
OLD_FIELDS = {"NS": "OWNER,HOST", "MX": "OWNER,PREF,HOST", "A": "OWNER,IP", "CNAME": "ALIAS,TARGET"}
NEW_TYPES = {"arecord": "A", "mxrecord": "MX", "nsrecord": "NS", "cnamerecord": "CNAME"}
_DURATION = re.compile(r"(\d+)([smhdw]?)", re.IGNORECASE)
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True, slots=True)
class EntryError:
    """One entry (or one record of it) that cannot be imported; the rest go on."""

    dn: str
    message: str


@dataclass(frozen=True, slots=True)
class DomainPlan:
    name: str
    dn: str
    soa: Soa | None  # serial already raised past ISPMan's (see import_serial)
    records: Records
    notes: tuple[str, ...] = ()
    skip: str | None = None  # why it is not imported at all


@dataclass(frozen=True, slots=True)
class UserPlan:
    dn: str
    uid: str  # verbatim: the backends' mailboxes are named after it
    address: str
    domain: str
    host: str
    passwords: tuple[str, ...] = field(repr=False)  # hashes kept verbatim, never shown
    cn: str
    sn: str
    given_name: str | None
    local_addresses: tuple[str, ...]
    suspended: bool
    notes: tuple[str, ...] = ()


@dataclass(slots=True)
class Plan:
    domains: list[DomainPlan] = field(default_factory=list)
    users: list[UserPlan] = field(default_factory=list)
    errors: list[EntryError] = field(default_factory=list)
    suffixes: list[str] = field(default_factory=list)
    ignored: int = 0  # entries that are neither domains, users nor DNS data (admins, conf...)


def seconds(text: str) -> int:
    """``3H``, ``1W``, ``1h30m`` or ``3600`` → seconds: ISPMan's SOA timers use BIND units."""
    value = text.strip()
    parts = _DURATION.findall(value)
    if not value or "".join(n + u for n, u in parts) != value:
        raise UsageError(f"{text!r} is not a time (seconds, or BIND units like 3H, 1W)")
    total = sum(int(n) * _UNIT[u.lower()] for n, u in parts)
    if total >= 2**31:
        raise UsageError(f"{text!r} is too long a time")
    return total


def import_serial(serial: int, today: date) -> int:
    """The serial an imported zone starts with: one past ISPMan's, so secondaries that hold
    ISPMan's zone take mailfarm's export as newer; today's first when ISPMan had none."""
    if serial <= 0:
        return bump_serial(0, today)
    return min(serial + 1, 2**32 - 1)


def rname_value(text: str, origin: str) -> str:
    """An SOA RNAME; ``hostmaster@example.com`` (as an admin may have typed it) is mended."""
    local, at, rest = text.strip().partition("@")
    return absolute(f"{local}.{rest}" if at else text, origin)


def parse_soa(text: str, origin: str) -> Soa:
    """ISPMan 1.x ``sOARecord``: ``mname rname serial refresh retry expire minimum``."""
    parts = text.split()
    if len(parts) != 7 or not parts[2].isdigit():
        raise UsageError(
            f"sOARecord {text!r}: expected 'MNAME RNAME SERIAL REFRESH RETRY EXPIRE MINIMUM'"
        )
    refresh, retry, expire, minimum = (seconds(p) for p in parts[3:])
    mname, rname = absolute(parts[0], origin), rname_value(parts[1], origin)
    return Soa(mname, rname, int(parts[2]), refresh, retry, expire, minimum)


def old_record(rtype: str, text: str, origin: str) -> tuple[str, str]:
    """One ISPMan 0.x ``record`` value → (owner, stored value); fields split on commas."""
    fields = [f.strip() for f in text.split(",")]
    if len(fields) != len(OLD_FIELDS[rtype].split(",")) or not all(fields[1:]):
        raise UsageError(f"{rtype} record {text!r}: expected {OLD_FIELDS[rtype]}")
    owner = check_owner(fields[0] or APEX, origin)
    value = f"{fields[1]} {fields[2]}" if rtype == "MX" else fields[1]
    return owner, record_value(rtype, value, origin)


def _old_soa(attrs: dict[str, list[str]], origin: str, ns: list[str]) -> Soa:
    """ISPMan 0.x ``cn=soarecords``: timers as attributes; names default as mailfarm's do."""

    def first(name: str) -> str | None:
        values = attrs.get(name) or []
        return values[0].strip() if values and values[0].strip() else None

    timers = {}
    for name in ("refresh", "retry", "expire", "minimum"):
        text = first(name)
        if text is None:
            raise UsageError(f"cn=soarecords has no {name}")
        timers[name] = seconds(text)
    serial = first("serial") or "0"
    if not serial.isdigit():
        raise UsageError(f"cn=soarecords serial {serial!r} is not a number")
    primary = first("primary") or (sorted(ns)[0] if ns else f"{origin}.")
    rname = first("rootmail") or f"hostmaster.{origin}."
    return Soa(absolute(primary, origin), rname_value(rname, origin), int(serial), **timers)


@dataclass(slots=True)
class _Zone:
    """What was gathered for one domain before its records are checked together."""

    dn: str
    kind: str
    master: str | None
    # dn, owner (None: a 0.x record value, owner inside), type, value
    raw: list[tuple[str, str | None, str, str]] = field(default_factory=list)
    soa: tuple[str, Soa] | None = None
    old_soa: tuple[str, dict[str, list[str]]] | None = None
    notes: list[str] = field(default_factory=list)


def plan_import(text: str, today: date, source: str = "") -> Plan:
    """The plan for an ISPMan LDIF export; malformed LDIF as a whole is a UsageError (naming
    ``source`` and the line), a bad entry only an :class:`EntryError` in the plan."""
    try:
        entries = parse_ldif(text)
    except LdifError as exc:
        raise UsageError(str(LdifError(exc.message, exc.line, source or None))) from None
    plan = Plan()
    zones: dict[str, _Zone] = {}
    users: list[tuple[str, dict[str, list[str]], tuple[str, ...]]] = []
    dns_entries: list[tuple[str, dict[str, list[str]], tuple[str, ...]]] = []
    for dn, attrs in entries:
        key = normalise_dn(dn)  # parse_ldif has checked it parses
        classes = {c.lower() for c in attrs.get("objectClass", [])}
        at = next((i for i, rdn in enumerate(key) if rdn.startswith("ispmandomain=")), None)
        if at == 0:
            _domain_entry(plan, zones, dn, attrs, key)
        elif at == 2 and key[1] == "ou=users" and key[0].startswith("uid="):
            users.append((dn, attrs, key))
        elif (at == 2 and key[1] == "ou=dnsdata") or "dnszone" in classes:
            dns_entries.append((dn, attrs, key))
        elif classes & {"ispmandomainuser", "ispmanmailuser", "ispmanuser"}:
            plan.errors.append(EntryError(dn, "an ISPMan user outside ou=users,ispmanDomain=..."))
        else:
            plan.ignored += 1
    for dn, attrs, key in dns_entries:
        _dns_entry(plan, zones, dn, attrs, key)
    for name, zone in zones.items():
        plan.domains.append(_domain_plan(plan, name, zone, today))
    seen: dict[str, str] = {}
    for dn, attrs, key in users:
        try:
            user = user_plan(dn, attrs, key)
            for name in (user.uid.lower(), user.address):
                if name in seen:
                    raise UsageError(f"{name} appears twice (first in {seen[name]})")
            seen[user.uid.lower()] = seen[user.address] = dn
            plan.users.append(user)
        except ProvisionError as exc:
            plan.errors.append(EntryError(dn, str(exc)))
    return plan


def _domain_entry(
    plan: Plan, zones: dict[str, _Zone], dn: str, attrs: dict[str, list[str]], key: tuple[str, ...]
) -> None:
    try:
        rdn_name = key[0].partition("=")[2]
        named = (attrs.get("ispmanDomain") or [rdn_name])[0]
        name = check_domain(named)
        if name != check_domain(rdn_name):
            raise UsageError(f"ispmanDomain {named!r} differs from the DN")
        if name in zones:
            raise UsageError(f"domain {name} appears twice")
    except ProvisionError as exc:
        plan.errors.append(EntryError(dn, str(exc)))
        return
    suffix = ",".join(key[1:])
    if suffix not in plan.suffixes:
        plan.suffixes.append(suffix)
    kind = (attrs.get("ispmanDomainType") or ["primary"])[0].strip().lower() or "primary"
    master = (attrs.get("ispmanReplicaMaster") or [None])[0]
    zones[name] = _Zone(dn, kind, master)


def _dns_entry(
    plan: Plan, zones: dict[str, _Zone], dn: str, attrs: dict[str, list[str]], key: tuple[str, ...]
) -> None:
    if "ou=dnsdata" in key[1:2]:  # ISPMan 0.x: cn=<type>,ou=dnsdata,ispmanDomain=...
        domain = key[2].partition("=")[2]
        kind = key[0].partition("=")[2] if key[0].startswith("cn=") else ""
    else:  # ISPMan 1.x dnsZone entry
        names = attrs.get("zoneName") or []
        if not names:
            plan.ignored += 1  # a branch entry such as ou=mXRecord: holds no record
            return
        domain, kind = names[0].strip().lower().rstrip("."), "dnszone"
    zone = zones.get(domain)
    if zone is None:
        plan.errors.append(
            EntryError(dn, f"DNS data for {domain}, which has no ispmanDomain entry")
        )
        return
    if kind == "soarecords":
        zone.old_soa = (dn, attrs)
    elif kind in OLD_TYPES:
        rtype = OLD_TYPES[kind]
        for value in attrs.get("record") or []:
            zone.raw.append((dn, None, rtype, value))
    elif kind == "dnszone":
        _dnszone_entry(plan, zone, domain, dn, attrs)
    else:
        zone.notes.append(f"{dn}: DNS data of kind {kind!r} not imported")


def _dnszone_entry(
    plan: Plan, zone: _Zone, domain: str, dn: str, attrs: dict[str, list[str]]
) -> None:
    owners = attrs.get("relativeDomainName") or []
    if len(owners) != 1:
        plan.errors.append(EntryError(dn, "a dnsZone record needs one relativeDomainName"))
        return
    owner = owners[0]
    for name, values in attrs.items():
        lowered = name.lower()
        if lowered == "soarecord":
            try:
                zone.soa = (dn, parse_soa(values[0], domain))
            except ProvisionError as exc:
                plan.errors.append(EntryError(dn, str(exc)))
        elif lowered in NEW_TYPES:
            zone.raw.extend((dn, owner, NEW_TYPES[lowered], v) for v in values)
        elif lowered.endswith("record"):
            shown = lowered.removesuffix("record").upper()
            zone.notes.append(
                f"{shown} record at {owner} not imported (mailfarm keeps NS, MX, A and CNAME)"
            )
        elif lowered == "dnsttl":
            zone.notes.append(f"TTL {values[0]} of {owner} not kept (zones use one $TTL)")


def _domain_plan(plan: Plan, name: str, zone: _Zone, today: date) -> DomainPlan:
    notes = list(zone.notes)
    if zone.kind == "replica":
        why = (
            f"replica of {zone.master or '?'} in ISPMan; mailfarm has no domain aliases, "
            "so it is not imported"
        )
        return DomainPlan(name, zone.dn, None, {}, tuple(notes), skip=why)
    if zone.kind in ("slave", "nodns"):
        if zone.raw or zone.soa or zone.old_soa:
            notes.append(f"{zone.kind} domain in ISPMan: its DNS data is not imported")
        else:
            notes.append(f"{zone.kind} domain in ISPMan: no DNS data to import")
        return DomainPlan(name, zone.dn, None, {}, tuple(notes))
    if zone.kind != "primary":
        notes.append(f"ispmanDomainType {zone.kind!r} read as primary")
    records: Records = {}
    for dn, owner, rtype, text in zone.raw:
        try:
            if owner is None:
                where, value = old_record(rtype, text, name)
            else:
                where, value = check_owner(owner or APEX, name), record_value(rtype, text, name)
            types = records.setdefault(where, {})
            types[rtype] = with_record(types, where, rtype, value)
        except ProvisionError as exc:
            plan.errors.append(EntryError(dn, f"{name}: {exc}"))
    soa = zone.soa[1] if zone.soa else None
    if soa is None and zone.old_soa is not None:
        try:
            soa = _old_soa(zone.old_soa[1], name, records.get(APEX, {}).get("NS", []))
        except ProvisionError as exc:
            plan.errors.append(EntryError(zone.old_soa[0], f"{name}: {exc}"))
    if soa is None and records:
        notes.append("no SOA in the file: the zone gets mailfarm's initial one")
        soa = initial_soa(name, sorted(records.get(APEX, {}).get("NS", [])), today)
    elif soa is not None:
        soa = replace(soa, serial=import_serial(soa.serial, today))
    return DomainPlan(name, zone.dn, soa, records, tuple(notes))


def user_plan(dn: str, attrs: dict[str, list[str]], key: tuple[str, ...]) -> UserPlan:
    """One ISPMan user; UsageError naming what is missing when it cannot be imported."""
    notes: list[str] = []
    domain = check_domain(key[2].partition("=")[2])
    named_domain = (attrs.get("ispmanDomain") or [domain])[0]
    if check_domain(named_domain) != domain:
        raise UsageError(f"ispmanDomain {named_domain!r} is not the domain of its DN")
    rdn_uid = key[0].partition("=")[2]
    uids = [u.strip() for u in attrs.get("uid") or [] if u.strip()]
    uid = next((u for u in uids if u.casefold() == rdn_uid), rdn_uid)
    local = (attrs.get("ispmanUserId") or [""])[0].strip()
    if not local:  # older entries: the address form of the uid, or the mail address
        candidates = [u for u in uids if "@" in u] + list(attrs.get("mailLocalAddress") or [])
        found = [c for c in candidates if c.lower().endswith("@" + domain)]
        if not found:
            raise UsageError("no ispmanUserId (nor an address in uid or mailLocalAddress)")
        local = found[0].rpartition("@")[0]
    address = "@".join(check_address(f"{local}@{domain}"))
    hosts = {h.strip().lower(): h.strip() for h in attrs.get("mailHost") or [] if h.strip()}
    if not hosts:
        raise UsageError("no mailHost: ISPMan gave it no mailbox, so mailfarm cannot route it")
    if len(hosts) > 1:
        raise UsageError(f"several mailHost values ({', '.join(hosts.values())})")
    passwords = []
    placeholder = False
    for value in attrs.get("userPassword") or []:
        scheme = value[1 : value.find("}")].upper() if value.startswith("{") else None
        if value.strip().lower() == NO_PASSWORD:
            placeholder = True
            notes.append("no password in ISPMan (noEntry): set one with mailfarm user passwd")
            continue
        if scheme is None or scheme == "CLEARTEXT":
            notes.append(
                "userPassword is cleartext in ISPMan: kept, but better replaced "
                "with mailfarm user passwd"
            )
        elif scheme not in KNOWN_SCHEMES:
            notes.append(f"userPassword scheme {{{scheme}}} is not one slapd verifies")
        passwords.append(value)
    if not passwords and not placeholder:
        notes.append("no userPassword: it cannot log in until mailfarm user passwd")
    locals_: dict[str, None] = {}
    for value in [*(attrs.get("mailLocalAddress") or []), *(attrs.get("mailAlias") or [])]:
        try:
            locals_["@".join(check_address(value))] = None
        except ProvisionError:
            notes.append(f"alias {value!r} is not an address: not kept")
    forwards = [v for v in attrs.get("mailForwardingAddress") or [] if v.strip()]
    if forwards:
        notes.append(
            f"{len(forwards)} mailForwardingAddress not imported: mailfarm cannot "
            "forward and keep a copy"
        )
    status = (attrs.get("ispmanStatus") or attrs.get("accountStatus") or [""])[0]
    suspended = status.strip().lower() not in ACTIVE
    if suspended:
        notes.append(f"status {status!r} in ISPMan: imported with logins disabled")
    return UserPlan(
        dn=dn,
        uid=uid,
        address=address,
        domain=domain,
        host=next(iter(hosts.values())),
        passwords=tuple(passwords),
        cn=(attrs.get("cn") or [address])[0],
        sn=(attrs.get("sn") or [local])[0],
        given_name=(attrs.get("givenName") or [None])[0],
        local_addresses=tuple(locals_),
        suspended=suspended,
        notes=tuple(notes),
    )
