"""Reading and editing a domain's DNS data in LDAP (the layout is in :mod:`.dns`).

Edits are made value by value (LDAP add/delete of one value, never read-modify-replace of a
list), so two operators adding records at once both win; the SOA serial is bumped with a
compare-and-swap (delete the old value, add the new, in one modify) and retried if another
edit got there first. An apex edit and its serial bump are one modify, hence atomic.

Every edit first brings the name's entry up to what PowerDNS needs (:func:`ensure_entry`):
``domainRelatedObject`` with ``associatedDomain: <full name>``, and the structural class
``dNSDomain2`` before a record type only that class allows. New entries are made so from the
start (:data:`NAME_CLASSES`); ``mailfarm dns repair`` (:func:`repair_domain`) fixes old ones.

Why the structural class needs care: OpenLDAP (2.5) refuses to change an entry's structural
class, even to a subclass (``dNSDomain`` → ``dNSDomain2``: objectClassModsProhibited), with
or without dNSDomain removed in the same modify. It does allow it under the Relax Rules
control (``1.3.6.1.4.1.4203.666.5.12``) to a writer with ``manage`` access (the rootdn has
it): that is tried first, one atomic modify, and serves the apex too, which has children
(``ou=users``) and so cannot be re-created. Without that right a leaf name entry is re-created
(delete, then add as dNSDomain2 with the same values: the name is missing for a moment), and
the apex gets the auxiliary class ``extensibleObject`` (RFC 4512), which allows any attribute;
PowerDNS looks only at attributes, never at object classes.
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
    CASE_KEPT,
    DNSDOMAIN2_TYPES,
    Records,
    Soa,
    bump_serial,
    check_owner,
    check_type,
    fqdn,
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
    Control,
    Entry,
    LdapResultError,
    LdapWriter,
)

RECORD_ATTRS = tuple(ATTRIBUTES.values())
_CAS_ATTEMPTS = 8
# Object classes of every entry made here, a domain's apex and each name below it.
NAME_CLASSES = ("dNSDomain2", "domainRelatedObject")
RELAX_RULES: Control = ("1.3.6.1.4.1.4203.666.5.12", True, None)
# Refusals of the Relax Rules route: not OpenLDAP, or no manage access.
_NO_RELAX = {12, 50, 53, 69}  # unavailableCriticalExtension, insufficientAccess, ...
_STATE_ATTRS = ("objectClass", "associatedDomain")


def name_attributes(domain: str, owner: str) -> dict[str, str]:
    """The naming attributes of a new name entry (``dc``, ``associatedDomain``)."""
    return {"dc": owner, "associatedDomain": fqdn(owner, domain)}


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
            out[rtype] = values if rtype in CASE_KEPT else [v.lower() for v in values]
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
    needs_v2 = rtype in DNSDOMAIN2_TYPES
    if owner == APEX:
        ensure_entry(writer, domain, APEX, needs_v2)
        soa = bump_soa(writer, domain, today, extra={attr: [op]})
        return Change(domain, owner, rtype, new_values, True, soa.serial)
    child = name_dn(zone_dn, owner)
    try:
        if owner not in zone.records:
            writer.add(child, NAME_CLASSES, {**name_attributes(domain, owner), attr: [value]})
        else:
            ensure_entry(writer, domain, owner, needs_v2)
            writer.modify(child, {attr: [op]})
    except LdapResultError as exc:
        if exc.code == VALUE_EXISTS:
            return Change(domain, owner, rtype, new_values, False, None)
        if exc.code != ALREADY_EXISTS:
            raise
        # An entry without records (made by hand, or by a concurrent edit): use it.
        ensure_entry(writer, domain, owner, needs_v2)
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
    if value is not None:  # LDAP matches record values case-insensitively
        value = next((v for v in current if v.lower() == value.lower()), value)
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


# -- bringing entries up to what PowerDNS needs ----------------------------------------------


def entry_fixes(domain: str, owner: str, entry: Entry) -> Changes:
    """The modify that gives ``entry`` (``owner`` of ``domain``) ``domainRelatedObject`` and
    its ``associatedDomain`` (pure). The apex keeps any other associatedDomain values it has
    (a site may list more there); a name entry has exactly its own full name, so a stale one
    is replaced."""
    classes = {c.lower() for c in entry.values("objectClass")}
    name = fqdn(owner, domain)
    have = [v.lower() for v in entry.values("associatedDomain")]
    changes: dict[str, list[tuple[str, Sequence[str]]]] = {}
    if "domainrelatedobject" not in classes:
        changes["objectClass"] = [(ADD, ["domainRelatedObject"])]
    if owner == APEX and name not in have:
        changes["associatedDomain"] = [(ADD, [name])]
    elif owner != APEX and have != [name]:
        changes["associatedDomain"] = [(REPLACE, [name])]
    return changes


def _has_v2(owner: str, entry: Entry) -> bool:
    classes = {c.lower() for c in entry.values("objectClass")}
    return "dnsdomain2" in classes or (owner == APEX and "extensibleobject" in classes)


def ensure_entry(writer: LdapWriter, domain: str, owner: str, needs_v2: bool) -> list[str]:
    """Fix the entry of ``owner`` as the module docstring says; returns what was done."""
    dn = name_dn(domain_dn(writer, domain), owner)
    entry = writer.get(dn, _STATE_ATTRS)
    if entry is None:
        raise NotFound(f"{dn}: no such entry")
    done: list[str] = []
    changes = entry_fixes(domain, owner, entry)
    if changes:
        writer.modify(dn, changes)
        for attr, ops in changes.items():
            done.extend(f"{attr} {' '.join(vals)}" for _, vals in ops)
    if needs_v2 and not _has_v2(owner, entry):
        done.append(_upgrade(writer, domain, owner, dn))
    return done


def _upgrade(writer: LdapWriter, domain: str, owner: str, dn: str) -> str:
    """Make ``dn`` able to hold dnsdomain2 attributes; returns how (for the report)."""
    try:
        writer.modify(dn, {"objectClass": [(ADD, ["dNSDomain2"])]}, controls=[RELAX_RULES])
        return "objectClass dNSDomain2"
    except LdapResultError as exc:
        if exc.code not in _NO_RELAX:
            raise
    if owner == APEX:
        writer.modify(dn, {"objectClass": [(ADD, ["extensibleObject"])]})
        return "objectClass extensibleObject (no manage right for dNSDomain2)"
    recreate_leaf(writer, domain, owner, dn)
    return "re-created as dNSDomain2"


def recreate_leaf(writer: LdapWriter, domain: str, owner: str, dn: str) -> None:
    """Delete and re-add the name entry ``dn`` as dNSDomain2, keeping its values."""
    entry = writer.get(dn, ("*",))
    if entry is None:
        raise NotFound(f"{dn}: no such entry")
    keep = {a: v for a, v in entry.attrs.items() if a not in ("objectclass", "dc")}
    keep.update(name_attributes(domain, owner))
    writer.delete(dn)
    try:
        writer.add(dn, NAME_CLASSES, keep)
    except LdapResultError:
        old = {a: v for a, v in entry.attrs.items() if a != "objectclass"}
        writer.add(dn, entry.values("objectClass"), old)  # put it back as it was
        raise


def repair_domain(writer: LdapWriter, domain: str) -> dict[str, list[str]]:
    """Bring the apex and every name entry of ``domain`` up to date (idempotent).

    Returns owner → what was fixed, only for owners where something was.
    """
    dn = domain_dn(writer, domain)
    if writer.get(dn, ("1.1",)) is None:
        raise NotFound(f"domain {domain}: no such domain")
    fixed: dict[str, list[str]] = {}
    owners = [APEX]
    for child in writer.search(dn, "(objectClass=dNSDomain)", "one", ("dc",)):
        owner = (child.first("dc") or "").lower()
        if owner:
            owners.append(owner)
    for owner in owners:
        done = ensure_entry(writer, domain, owner, needs_v2=True)
        if done:
            fixed[owner] = done
    return fixed
