"""Reading and editing a domain's DNS data in LDAP (the layout is in :mod:`.dns`).

Edits are made value by value (LDAP add/delete of one value, never read-modify-replace of a
list), so two operators adding records at once both win; the SOA serial is bumped with a
compare-and-swap (delete the old value, add the new, in one modify) and retried if another
edit got there first. An apex edit and its serial bump are one modify, hence atomic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date

from ldap3.utils.dn import escape_rdn

from directory.provision import NotFound, Unavailable, UsageError
from directory.provision.dns import (
    APEX,
    ATTRIBUTES,
    Records,
    Soa,
    bump_serial,
    check_owner,
    check_type,
    initial_soa,
    record_value,
    with_record,
)
from directory.provision.ldapwrite import (
    ADD,
    ALREADY_EXISTS,
    DELETE,
    NO_SUCH_ATTRIBUTE,
    REPLACE,
    VALUE_EXISTS,
    Changes,
    LdapResultError,
    LdapWriter,
)

RECORD_ATTRS = tuple(ATTRIBUTES.values())
_CAS_ATTEMPTS = 8


def domain_dn(writer: LdapWriter, domain: str) -> str:
    return f"dc={escape_rdn(domain)},{writer.domains_dn}"


def name_dn(zone_dn: str, owner: str) -> str:
    return zone_dn if owner == APEX else f"dc={escape_rdn(owner)},{zone_dn}"


@dataclass(frozen=True, slots=True)
class Zone:
    origin: str
    soa: Soa | None
    records: Records


def _types(attrs: dict[str, list[str]]) -> dict[str, list[str]]:
    out = {}
    for rtype, attr in ATTRIBUTES.items():
        values = attrs.get(attr.lower())
        if values and rtype != "SOA":
            out[rtype] = [v.lower() for v in values]
    return out


def read_zone(writer: LdapWriter, domain: str) -> Zone:
    """Every record of ``domain``; NotFound if the domain does not exist."""
    dn = domain_dn(writer, domain)
    entry = writer.get(dn, RECORD_ATTRS)
    if entry is None:
        raise NotFound(f"domain {domain}: no such domain")
    soa_text = entry.first("soarecord")
    soa = Soa.parse(soa_text, domain) if soa_text else None
    records: Records = {}
    apex = _types(entry.attrs)
    if apex:
        records[APEX] = apex
    for child in writer.search(dn, "(objectClass=dNSDomain)", "one", ("dc", *RECORD_ATTRS)):
        owner = (child.first("dc") or "").lower()
        types = _types(child.attrs)
        if owner and types:
            records[owner] = types
    return Zone(domain, soa, records)


def bump_soa(
    writer: LdapWriter,
    domain: str,
    today: date,
    extra: Changes | None = None,
    wanted: Soa | None = None,
) -> Soa:
    """Raise the serial (and apply ``extra`` apex changes in the same modify); return the SOA.

    ``wanted`` replaces the SOA's names and timers (``dns set @ SOA``); its serial is only
    honoured if it is higher than the bumped one.
    """
    dn = domain_dn(writer, domain)
    for _ in range(_CAS_ATTEMPTS):
        entry = writer.get(dn, ("sOARecord", "nSRecord"))
        if entry is None:
            raise NotFound(f"domain {domain}: no such domain")
        old_text = entry.first("soarecord")
        if old_text:
            old = Soa.parse(old_text, domain)
        else:  # a domain made without DNS data: its first edit starts the zone
            old = replace(initial_soa(domain, entry.values("nsrecord"), today), serial=0)
        base = wanted if wanted is not None else old
        new = replace(base, serial=max(bump_serial(old.serial, today), base.serial))
        soa_ops: list[tuple[str, Sequence[str]]] = [(ADD, [new.value()])]
        if old_text:
            soa_ops.insert(0, (DELETE, [old_text]))
        changes = {**(extra or {}), "sOARecord": soa_ops}
        try:
            writer.modify(dn, changes)
            return new
        except LdapResultError as exc:
            # The SOA changed since we read it (another edit won the race): read again.
            # An apex record change that conflicts is reported by the caller's own check.
            if exc.code in (NO_SUCH_ATTRIBUTE, VALUE_EXISTS) and not _extra_conflict(
                writer, dn, extra
            ):
                continue
            raise
    raise Unavailable(f"domain {domain}: the SOA kept changing under us; try again")


def _extra_conflict(writer: LdapWriter, dn: str, extra: Changes | None) -> bool:
    """Whether the apex part of a failed modify is what failed, not the SOA swap."""
    if not extra:
        return False
    entry = writer.get(dn, tuple(extra))
    if entry is None:
        return True
    for attr, ops in extra.items():
        present = {v.lower() for v in entry.values(attr)}
        for op, values in ops:
            if op == ADD and any(v.lower() in present for v in values):
                return True
            if op == DELETE and values and not all(v.lower() in present for v in values):
                return True
            if op == DELETE and not values and not present:
                return True
    return False


@dataclass(frozen=True, slots=True)
class Change:
    """What an edit did: ``changed`` is False when the record was already so."""

    domain: str
    owner: str
    rtype: str
    values: list[str]
    changed: bool
    serial: int | None

    def as_dict(self) -> dict[str, object]:
        """The CLI's --json and the API's answer alike."""
        return {
            "domain": self.domain,
            "name": self.owner,
            "type": self.rtype,
            "values": self.values,
            "changed": self.changed,
            "serial": self.serial,
        }


def set_record(
    writer: LdapWriter, domain: str, name: str, rtype: str, text: str, today: date
) -> Change:
    """Add one record (a CNAME replaces the old target; SOA sets names and timers)."""
    owner, rtype = check_owner(name, domain), check_type(rtype)
    zone = read_zone(writer, domain)
    if rtype == "SOA":
        if owner != APEX:
            raise UsageError("the SOA belongs at the zone apex (@)")
        soa = bump_soa(writer, domain, today, wanted=Soa.parse(text, domain))
        return Change(domain, owner, rtype, [soa.value()], True, soa.serial)
    value = record_value(rtype, text, domain)
    types = zone.records.get(owner, {})
    new_values = with_record(types, owner, rtype, value)
    if new_values == types.get(rtype):
        return Change(
            domain, owner, rtype, new_values, False, zone.soa.serial if zone.soa else None
        )
    attr = ATTRIBUTES[rtype]
    op: tuple[str, Sequence[str]] = (REPLACE, [value]) if rtype == "CNAME" else (ADD, [value])
    zone_dn = domain_dn(writer, domain)
    if owner == APEX:
        soa = bump_soa(writer, domain, today, extra={attr: [op]})
        return Change(domain, owner, rtype, new_values, True, soa.serial)
    child = name_dn(zone_dn, owner)
    if owner in zone.records:
        try:
            writer.modify(child, {attr: [op]})
        except LdapResultError as exc:
            if exc.code != VALUE_EXISTS:
                raise
            return Change(domain, owner, rtype, new_values, False, None)
    else:
        try:
            writer.add(child, ["dNSDomain"], {"dc": owner, attr: [value]})
        except LdapResultError as exc:  # an entry without records (made by hand): use it
            if exc.code != ALREADY_EXISTS:
                raise
            writer.modify(child, {attr: [op]})
    soa = bump_soa(writer, domain, today)
    return Change(domain, owner, rtype, new_values, True, soa.serial)


def delete_record(
    writer: LdapWriter, domain: str, name: str, rtype: str, text: str | None, today: date
) -> Change:
    """Delete one value, or every value of ``rtype`` at ``name`` when ``text`` is None."""
    owner, rtype = check_owner(name, domain), check_type(rtype)
    if rtype == "SOA":
        raise UsageError("the SOA cannot be deleted; delete the domain instead")
    zone = read_zone(writer, domain)
    current = zone.records.get(owner, {}).get(rtype, [])
    value = None if text is None else record_value(rtype, text, domain)
    if not current or (value is not None and value not in current):
        shown = f" {value}" if value is not None else ""
        raise NotFound(f"{domain}: no {rtype}{shown} record at {owner}")
    left = [] if value is None else [v for v in current if v != value]
    attr = ATTRIBUTES[rtype]
    op: tuple[str, Sequence[str]] = (DELETE, [] if value is None else [value])
    zone_dn = domain_dn(writer, domain)
    if owner == APEX:
        soa = bump_soa(writer, domain, today, extra={attr: [op]})
        return Change(domain, owner, rtype, left, True, soa.serial)
    child = name_dn(zone_dn, owner)
    others = {t for t, vals in zone.records[owner].items() if vals and t != rtype}
    if not left and not others:
        writer.delete(child)  # a name with no records left has no entry either
    else:
        writer.modify(child, {attr: [op]})
    soa = bump_soa(writer, domain, today)
    return Change(domain, owner, rtype, left, True, soa.serial)
