"""``mailfarm import --ispman FILE.ldif``: an ISPMan directory brought into mailfarm's layout.

:mod:`.ispmanmap` reads the file into a plan; this module compares the plan with the
directory and writes what is missing. Like the CSV import, it is safe to run again: after a
partial failure, re-running finishes the job, and a second run of the same file changes
nothing and reports every item unchanged (or skipped). ``--dry-run`` reads the directory
and reports the same results without writing anything.

No mailbox is created: ISPMan's backends already hold them, named after the ISPMan uid,
which is why that uid (``alice_example_com``) is kept verbatim rather than derived again.
Password hashes are copied verbatim (slapd verifies ``{crypt}``, ``{md5}``, ``{sha}`` and
``{ssha}`` itself) and never printed.

When an item is already in the directory but differs from the file, the rule is:

* attributes only an import writes (``cn``, ``sn``, ``givenName``, the ``mailLocalAddress``
  list of address and aliases) are brought in line with the file: "updated";
* what mailfarm's own commands change after an import is reported and left alone, because
  the directory may well be newer than the file: ``mailHost`` (``user move``),
  ``userPassword`` (``user passwd``), disabled logins (``user disable/enable``), an SOA's
  names and timers and a CNAME's target (``dns set``): "differs";
* DNS records the file has and the zone lacks are added (value by value, serial bumped);
  records the zone has and the file lacks are kept: an import never deletes;
* a user found under another uid or address than the file's is a conflict: "failed".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import date

from ldap3.utils.dn import escape_rdn

from directory.model import means_disabled
from directory.names import escape_filter_value
from directory.provision import ProvisionError, Refused, UsageError
from directory.provision.dns import APEX, ATTRIBUTES, Soa, with_record
from directory.provision.dnsstore import (
    NAME_CLASSES,
    domain_dn,
    name_attributes,
    name_dn,
    read_zone,
    set_record,
)
from directory.provision.domains import DOMAIN_CLASSES
from directory.provision.ispmanmap import DomainPlan, EntryError, UserPlan, plan_import
from directory.provision.ldapwrite import REPLACE, Entry, LdapWriter
from directory.provision.users import DISABLED_VALUE, USER_CLASSES
from directory.settings import ToolConfig

STATUSES = ("created", "updated", "unchanged", "differs", "skipped", "failed")
_COUNTED = ("NS", "MX", "A", "CNAME")


@dataclass(frozen=True, slots=True)
class ItemResult:
    kind: str  # domain, dns, user, entry
    name: str
    status: str  # one of STATUSES
    uid: str | None = None
    host: str | None = None
    details: tuple[str, ...] = ()  # what was (or would be) changed, or what differs
    notes: tuple[str, ...] = ()  # what the file had that mailfarm does not keep
    error: str | None = None
    exit_code: int = 0

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"kind": self.kind, "name": self.name, "status": self.status}
        for key in ("uid", "host", "error"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.details:
            out["details"] = list(self.details)
        if self.notes:
            out["notes"] = list(self.notes)
        return out


@dataclass(slots=True)
class Report:
    dry_run: bool
    suffixes: list[str]
    ignored: int
    results: list[ItemResult] = field(default_factory=list)

    def totals(self) -> dict[str, int]:
        return {s: sum(r.status == s for r in self.results) for s in STATUSES}

    def exit_code(self) -> int:
        return max((r.exit_code for r in self.results), default=0)

    def as_dict(self) -> dict[str, object]:
        return {
            "dry_run": self.dry_run,
            **self.totals(),
            "suffixes": self.suffixes,
            "ignored_entries": self.ignored,
            "items": [r.as_dict() for r in self.results],
        }


def import_ispman(
    settings: ToolConfig,
    writer: LdapWriter,
    text: str,
    *,
    dry_run: bool,
    today: date,
    on_result: Callable[[ItemResult], None] | None = None,
    source: str = "",
) -> Report:
    """Domains first (users need their branch), then users; one result per item."""
    plan = plan_import(text, today, source)
    report = Report(dry_run, plan.suffixes, plan.ignored)

    def add(result: ItemResult) -> None:
        report.results.append(result)
        if on_result is not None:
            on_result(result)

    ready: dict[str, bool] = {}  # domain → whether its users can go in
    for domain in plan.domains:
        results = _domain(writer, domain, dry_run, today)
        ready[domain.name] = results[0].status in ("created", "unchanged")
        for result in results:
            add(result)
    for user in plan.users:
        add(_user(settings, writer, user, ready, dry_run))
    for error in plan.errors:
        add(_entry_error(error))
    return report


def _entry_error(error: EntryError) -> ItemResult:
    return ItemResult("entry", error.dn, "failed", error=error.message, exit_code=2)


def _failed(kind: str, name: str, exc: ProvisionError, **extra: str) -> ItemResult:
    return ItemResult(kind, name, "failed", error=str(exc), exit_code=exc.exit_code, **extra)


# -- domains and their DNS data ---------------------------------------------------------------


def _domain(writer: LdapWriter, plan: DomainPlan, dry_run: bool, today: date) -> list[ItemResult]:
    if plan.skip:
        return [ItemResult("domain", plan.name, "skipped", notes=(plan.skip, *plan.notes))]
    try:
        if writer.get(domain_dn(writer, plan.name), ("1.1",)) is None:
            if not dry_run:
                _create_domain(writer, plan)
            out = [ItemResult("domain", plan.name, "created", notes=plan.notes)]
            if plan.soa is not None:
                out.append(ItemResult("dns", plan.name, "created", details=_summary(plan)))
            return out
        out = [ItemResult("domain", plan.name, "unchanged", notes=plan.notes)]
    except ProvisionError as exc:
        return [_failed("domain", plan.name, exc)]
    if plan.soa is not None:
        try:
            out.append(_merge_dns(writer, plan, dry_run, today))
        except ProvisionError as exc:
            out.append(_failed("dns", plan.name, exc))
    return out


def _summary(plan: DomainPlan) -> tuple[str, ...]:
    counts = {t: sum(len(types.get(t, ())) for types in plan.records.values()) for t in _COUNTED}
    shown = ", ".join(f"{n} {t}" for t, n in counts.items() if n)
    serial = plan.soa.serial if plan.soa else None
    return (f"SOA (serial {serial})" + (f", {shown}" if shown else ""),)


def _create_domain(writer: LdapWriter, plan: DomainPlan) -> None:
    """As ``domain add`` does, but with the file's zone: ``add_domain`` would fill in
    ``[provision] default_mx/default_ns`` and start a new serial, and both must be ISPMan's."""
    dn = domain_dn(writer, plan.name)
    apex: dict[str, list[str]] = {}
    if plan.soa is not None:
        apex[ATTRIBUTES["SOA"]] = [plan.soa.value()]
    for rtype, values in plan.records.get(APEX, {}).items():
        apex[ATTRIBUTES[rtype]] = values
    if writer.get(writer.domains_dn, ("1.1",)) is None:
        writer.add(writer.domains_dn, ["organizationalUnit"], {"ou": "domains"})
    writer.add(dn, DOMAIN_CLASSES, {"dc": plan.name, "associatedDomain": plan.name, **apex})
    try:
        writer.add(f"ou=users,{dn}", ["organizationalUnit"], {"ou": "users"})
        for owner, types in plan.records.items():
            if owner != APEX:
                attrs = {ATTRIBUTES[t]: values for t, values in types.items()}
                names = name_attributes(plan.name, owner)
                writer.add(name_dn(dn, owner), NAME_CLASSES, {**names, **attrs})
    except ProvisionError:
        writer.delete_subtree(dn)  # all or nothing, so a re-run starts the domain afresh
        raise


def _same_soa(a: Soa, b: Soa) -> bool:
    """The serial aside: it is mailfarm's to raise after the import."""
    return replace(a, serial=0) == replace(b, serial=0)


def _merge_dns(writer: LdapWriter, plan: DomainPlan, dry_run: bool, today: date) -> ItemResult:
    zone = read_zone(writer, plan.name)
    records = {
        owner: {t: list(v) for t, v in types.items()} for owner, types in zone.records.items()
    }
    to_add: list[tuple[str, str, str]] = []
    differs: list[str] = []
    for owner, types in plan.records.items():
        for rtype, values in types.items():
            for value in values:
                current = records.setdefault(owner, {})
                if value in current.get(rtype, []):
                    continue
                if rtype == "CNAME" and current.get("CNAME"):
                    differs.append(
                        f"{owner} CNAME is {current['CNAME'][0]} here, {value} in the file: kept"
                    )
                    continue
                try:
                    current[rtype] = with_record(current, owner, rtype, value)
                except UsageError as exc:
                    differs.append(f"{owner} {rtype} {value} not added: {exc}")
                    continue
                to_add.append((owner, rtype, value))
    set_soa = zone.soa is None and plan.soa is not None
    if plan.soa is not None and zone.soa is not None and not _same_soa(zone.soa, plan.soa):
        differs.append(
            f"SOA is '{_soa_text(zone.soa)}' here, '{_soa_text(plan.soa)}' in the file: kept"
        )
    if not dry_run:
        for owner, rtype, value in to_add:
            set_record(writer, plan.name, owner, rtype, value, today)
        if set_soa and plan.soa is not None:
            set_record(writer, plan.name, APEX, "SOA", plan.soa.value(), today)
    added = [f"added {rtype} {value} at {owner}" for owner, rtype, value in to_add]
    if set_soa:
        added.append("added the SOA")
    status = "differs" if differs else "updated" if added else "unchanged"
    return ItemResult("dns", plan.name, status, details=(*added, *differs))


def _soa_text(soa: Soa) -> str:
    return f"{soa.mname} {soa.rname} {soa.refresh} {soa.retry} {soa.expire} {soa.minimum}"


# -- users --------------------------------------------------------------------------------------


def _user(
    settings: ToolConfig, writer: LdapWriter, plan: UserPlan, ready: dict[str, bool], dry_run: bool
) -> ItemResult:
    extra = {"uid": plan.uid, "host": plan.host}
    try:
        found = _existing(settings, writer, plan)
        if not found:
            return _create_user(settings, writer, plan, ready, dry_run)
        if len(found) > 1:
            shown = "; ".join(f"{e.first('uid')} ({e.first('mail')})" for e in found)
            raise Refused(
                f"uid {plan.uid} and address {plan.address} name different users: {shown}"
            )
        entry = found[0]
        uid, mail = entry.first("uid") or "", (entry.first("mail") or "").lower()
        if uid.lower() != plan.uid.lower() or mail != plan.address:
            raise Refused(
                f"exists as {uid} ({mail}), not as the file's {plan.uid} ({plan.address}): "
                "left alone"
            )
        changes, updated, differs = _compare(settings, plan, entry)
        if changes and not dry_run:
            writer.modify(entry.dn, changes)
    except ProvisionError as exc:
        return _failed("user", plan.address, exc, **extra)
    status = "differs" if differs else "updated" if updated else "unchanged"
    return ItemResult("user", plan.address, status, details=(*updated, *differs), **extra)


def _attributes(settings: ToolConfig) -> tuple[str, ...]:
    d = settings.directory
    names = ("uid", "mail", "cn", "sn", "givenName", "mailLocalAddress", "userPassword")
    return tuple(a for a in (*names, d.host_attribute, d.disabled_attribute) if a)


def _existing(settings: ToolConfig, writer: LdapWriter, plan: UserPlan) -> list[Entry]:
    """Entries holding the file's uid or address: one, the user itself, or a conflict."""
    found: dict[str, Entry] = {}
    for attr, value in (("uid", plan.uid), ("mail", plan.address)):
        wanted = f"(&(objectClass=inetLocalMailRecipient)({attr}={escape_filter_value(value)}))"
        for entry in writer.search(writer.base, wanted, "sub", _attributes(settings)):
            found.setdefault(entry.dn.lower(), entry)
    return list(found.values())


def _known_hosts(settings: ToolConfig) -> set[str]:
    listed = (b.host for b in settings.backends.listed)
    return {h.lower() for h in (*settings.provision.hosts, *listed)}


def _create_user(
    settings: ToolConfig, writer: LdapWriter, plan: UserPlan, ready: dict[str, bool], dry_run: bool
) -> ItemResult:
    extra = {"uid": plan.uid, "host": plan.host}
    notes = list(plan.notes)
    zone_dn = domain_dn(writer, plan.domain)
    if plan.domain in ready:
        if not ready[plan.domain]:
            raise Refused(f"its domain {plan.domain} was not imported")
    elif writer.get(zone_dn, ("1.1",)) is None:
        raise Refused(f"domain {plan.domain} is neither in the file nor in the directory")
    disabled = settings.directory.disabled_attribute
    if plan.suspended and not disabled:
        raise UsageError(
            "suspended in ISPMan, but [directory] disabled_attribute is not set, so its logins "
            "could not be refused: not imported"
        )
    if plan.host.lower() not in _known_hosts(settings):
        notes.append(f"mailHost {plan.host} is not in [provision] hosts nor [[backends]]")
    attrs: dict[str, object] = {
        "uid": plan.uid,
        "mail": plan.address,
        "cn": plan.cn,
        "sn": plan.sn,
        settings.directory.host_attribute: plan.host,
    }
    if plan.given_name:
        attrs["givenName"] = plan.given_name
    if plan.local_addresses:
        attrs["mailLocalAddress"] = list(plan.local_addresses)
    if plan.passwords:  # the octets as ISPMan stored them
        attrs["userPassword"] = [p.encode("utf-8", "surrogateescape") for p in plan.passwords]
    if plan.suspended:
        attrs[disabled] = DISABLED_VALUE
    if not dry_run:
        writer.add(f"uid={escape_rdn(plan.uid)},ou=users,{zone_dn}", USER_CLASSES, attrs)
    return ItemResult("user", plan.address, "created", notes=tuple(notes), **extra)


def _folded(values: Iterable[str]) -> set[str]:
    return {v.strip().casefold() for v in values}


def _compare(
    settings: ToolConfig, plan: UserPlan, entry: Entry
) -> tuple[dict[str, list[tuple[str, list[str]]]], list[str], list[str]]:
    """(modify changes, what they update, what differs and is kept) for an existing user."""
    changes: dict[str, list[tuple[str, list[str]]]] = {}
    wanted = {"cn": [plan.cn], "sn": [plan.sn]}
    if plan.given_name:
        wanted["givenName"] = [plan.given_name]
    if plan.local_addresses:
        wanted["mailLocalAddress"] = list(plan.local_addresses)
    for attr, values in wanted.items():
        if _folded(entry.values(attr)) != _folded(values):
            changes[attr] = [(REPLACE, values)]
    updated = [f"{attr} set from the file" for attr in changes]
    differs = []
    d = settings.directory
    host = entry.first(d.host_attribute) or ""
    if host.lower() != plan.host.lower():
        differs.append(
            f"mailHost is {host or 'unset'} here, {plan.host} in the file: kept "
            "(a user move may have moved the mailbox since)"
        )
    stored = entry.values("userPassword")  # absent when the bind DN may not read it
    if stored and set(stored) != set(plan.passwords):
        differs.append("userPassword differs from the file: kept (user passwd may have set it)")
    if d.disabled_attribute:
        disabled = any(means_disabled(v) for v in entry.values(d.disabled_attribute))
        if disabled != plan.suspended:
            here, there = ("disabled", "active") if disabled else ("active", "suspended")
            differs.append(f"logins are {here} here, {there} in the file: kept")
    return changes, updated, differs
