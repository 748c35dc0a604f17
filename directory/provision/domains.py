"""Mail domains: ``dc=<domain>,ou=domains,<base>`` with ``ou=users`` and DNS data under it.

The domain entry is what the rest of the farm keys on (``associatedDomain`` for Postfix's
"is this domain ours?", the branch for users), so it is created first and removed last;
its DNS data follows the layout in :mod:`.dns`. A new domain gets mail's records too (SPF,
DMARC, SRV, a DKIM key: :mod:`.maildns`), written with the rest in one add per entry; the
SOA comes last, so DNS serves the zone only once it is complete.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from ldap3.utils.dn import parse_dn

from directory.provision import NotFound, ProvisionError, Refused
from directory.provision.dkim import DkimKey, create_key, remove_domain_keys, remove_key
from directory.provision.dns import (
    APEX,
    ATTRIBUTES,
    a_option,
    absolute,
    check_domain,
    initial_soa,
    mx_value,
)
from directory.provision.dnsstore import NAME_CLASSES, domain_dn, name_attributes, name_dn
from directory.provision.ldapwrite import ADD, LdapWriter
from directory.provision.maildns import MailRecord, is_reverse_zone, mail_records
from directory.provision.replication import Replication, after_write
from directory.provision.users import User, announce, list_users, remove_user
from directory.settings import ToolConfig

# dNSDomain2 (PowerDNS's dnsdomain2 schema) from the start: OpenLDAP cannot make a dNSDomain
# entry with children into one later without the Relax Rules control (see .dnsstore).
DOMAIN_CLASSES = NAME_CLASSES


@dataclass(frozen=True, slots=True)
class Domain:
    name: str
    dn: str
    users: int
    # Only on what add_domain returns: the mail records it wrote (empty with mail_dns off).
    mail_dns: tuple[MailRecord, ...] | None = None
    dkim: DkimKey | None = None

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"domain": self.name, "dn": self.dn, "users": self.users}
        if self.mail_dns is not None:
            data["mail_dns"] = [r.as_dict() for r in self.mail_dns]
            data["dkim"] = self.dkim.as_dict() if self.dkim else None
        return data


def dns_attributes(
    domain: str, mx: Sequence[str], ns: Sequence[str], a: Sequence[str], today: date
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(apex attributes, owner → A values of other names) for a new domain (pure)."""
    ns_values = [absolute(host, domain) for host in ns]
    mx_values = [mx_value(text, domain) for text in mx]
    names: dict[str, list[str]] = {}
    for text in a:
        owner, ip = a_option(text, domain)
        if ip not in names.setdefault(owner, []):
            names[owner].append(ip)
    apex: dict[str, list[str]] = {
        ATTRIBUTES["SOA"]: [initial_soa(domain, ns_values, today).value()]
    }
    for rtype, values in (("NS", ns_values), ("MX", mx_values), ("A", names.pop(APEX, []))):
        if values:
            apex[ATTRIBUTES[rtype]] = list(dict.fromkeys(values))
    return apex, names


def add_domain(
    settings: ToolConfig,
    writer: LdapWriter,
    name: str,
    mx: Sequence[str],
    ns: Sequence[str],
    a: Sequence[str],
    today: date,
    mail_dns: bool = True,
) -> Domain:
    """Create the domain branch; ``mx``/``ns`` default to ``[provision] default_mx/_ns``.

    With ``mail_dns`` (the default) the domain also gets :func:`.maildns.mail_records`, and
    a DKIM key when ``[provision] dkim_dir`` is set; a reverse zone (in-addr.arpa, ip6.arpa)
    never does. All or nothing: on a failure the branch
    and the key file are removed again.
    """
    domain = check_domain(name)
    apex, a_names = dns_attributes(
        domain,
        list(mx) or list(settings.provision.default_mx),
        list(ns) or list(settings.provision.default_ns),
        a,
        today,
    )
    dn = domain_dn(writer, domain)
    if writer.get(dn, ("1.1",)) is not None:
        raise Refused(f"domain {domain} exists already")
    key = None
    records: list[MailRecord] = []
    if mail_dns and not is_reverse_zone(domain):
        if settings.provision.dkim_dir is not None:
            key = create_key(settings.provision, domain, today)
        dkim = (key.selector, key.public_der) if key else None
        records = mail_records(settings.provision, domain, dkim)
    names = {owner: {ATTRIBUTES["A"]: ips} for owner, ips in a_names.items()}
    for record in records:
        attrs = apex if record.owner == APEX else names.setdefault(record.owner, {})
        values = attrs.setdefault(ATTRIBUTES[record.rtype], [])
        if record.value not in values:
            values.append(record.value)
    soa = apex.pop(ATTRIBUTES["SOA"])
    try:
        if writer.get(writer.domains_dn, ("1.1",)) is None:
            writer.add(writer.domains_dn, ["organizationalUnit"], {"ou": "domains"})
        writer.add(dn, DOMAIN_CLASSES, {"dc": domain, "associatedDomain": domain, **apex})
    except ProvisionError:
        if key is not None:
            remove_key(key)
        raise
    try:
        writer.add(f"ou=users,{dn}", ["organizationalUnit"], {"ou": "users"})
        for owner, attrs in names.items():
            writer.add(
                name_dn(dn, owner), NAME_CLASSES, {**name_attributes(domain, owner), **attrs}
            )
        writer.modify(dn, {ATTRIBUTES["SOA"]: [(ADD, soa)]})  # now DNS serves the zone
    except ProvisionError:
        writer.delete_subtree(dn)  # all or nothing: no half-made domain
        if key is not None:
            remove_key(key)
        raise
    return Domain(domain, dn, 0, tuple(records), key)


def _domain_of(dn: str) -> str | None:
    """The domain a user DN sits in: the ``dc`` just above ``ou=domains``."""
    parts = parse_dn(dn)
    for i in range(1, len(parts)):
        attr, value, _ = parts[i]
        if attr.lower() == "ou" and value.lower() == "domains":
            prev = parts[i - 1]
            return prev[1].lower() if prev[0].lower() == "dc" else None
    return None


def list_domains(writer: LdapWriter) -> list[Domain]:
    """Every domain with its number of users (one search for all users, not one per domain)."""
    base = writer.domains_dn
    try:
        entries = list(writer.search(base, "(objectClass=domainRelatedObject)", "one", ("dc",)))
        users = writer.search(base, "(objectClass=inetLocalMailRecipient)", "sub", ("1.1",))
        counts: dict[str, int] = {}
        for user in users:
            domain = _domain_of(user.dn)
            if domain:
                counts[domain] = counts.get(domain, 0) + 1
    except NotFound:  # no ou=domains yet: no domains
        return []
    domains = []
    for entry in entries:
        name = (entry.first("dc") or "").lower()
        domains.append(Domain(name, entry.dn, counts.get(name, 0)))
    return sorted(domains, key=lambda d: d.name)


@dataclass(frozen=True, slots=True)
class DomainDeletion:
    """What ``domain del`` removed, and what the rest of the farm has seen of it."""

    domain: Domain
    users: tuple[User, ...]
    warnings: tuple[str, ...]
    replication: Replication | None  # the branch's removal, with a separate provider
    dkim_keys_removed: tuple[str, ...]  # private key files taken from [provision] dkim_dir

    def as_dict(self) -> dict[str, object]:
        return {
            **self.domain.as_dict(),
            "deleted_users": [u.mail for u in self.users],
            **(self.replication.as_dict() if self.replication is not None else {}),
            "dkim_keys_removed": list(self.dkim_keys_removed),
            "warnings": list(self.warnings),
        }


def delete_domain(
    settings: ToolConfig, writer: LdapWriter, name: str, force: bool
) -> DomainDeletion:
    """Remove the domain branch; with ``force`` its users (mailboxes first) before it.

    Without ``force`` a domain with users is refused: deleting mail is never a side effect.
    Then, as for a user's change: the consumers are waited for (read-your-writes, so the
    proxies stop answering for the domain), the deleted users are flushed and kicked on every
    instance (:func:`~directory.provision.users.announce`; PartlyApplied if one is missed),
    and the domain's DKIM private keys are removed: with its DNS gone nothing can verify
    them, and a signing key left on disk for a domain the farm no longer hosts is one more
    secret to leak.
    """
    domain = check_domain(name)
    dn = domain_dn(writer, domain)
    users = list_users(settings, writer, domain)  # NotFound if there is no such domain
    if users and not force:
        raise Refused(
            f"domain {domain} has {len(users)} users; delete them first, "
            "or use --force to delete them with their mailboxes"
        )
    unremoved: list[str] = []  # Sieve scripts a backend did not let us delete
    for user in users:
        unremoved += remove_user(settings, writer, user).warnings
    writer.delete_subtree(dn)
    deleted = Domain(domain, dn, len(users))
    done = f"domain {domain} deleted with {len(users)} users"
    replication = after_write(settings, writer, dn, deleted=True)
    lagging = replication.warnings(done) if replication is not None else ()
    keys = remove_domain_keys(settings.provision, domain)
    warnings: tuple[str, ...] = ()
    if users:
        _, warnings = announce(
            settings,
            [u.uid for u in users],
            kick=True,
            done=done,
            data={**deleted.as_dict(), "deleted_users": [u.mail for u in users]},
        )
    return DomainDeletion(
        deleted, tuple(users), (*unremoved, *lagging, *warnings), replication, keys
    )
