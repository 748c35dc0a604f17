"""Mail users: their LDAP entry and their mailbox, created and removed together.

An entry is ``uid=<uid>,ou=users,dc=<domain>,ou=domains,<base>`` (inetOrgPerson +
inetLocalMailRecipient). The uid is derived from the address once, at creation
(:func:`uid_for_address`); afterwards a user is always found by searching ``uid`` or
``mail``, never by taking a uid apart (see ARCHITECTURE.md, "Identity of a user").

A changed password, a deleted user or a disabled login must hold at once on every proxy,
although each caches routes (``[directory] cache_ttl``) and logins (``[proxy]
auth_cache_ttl``): after the LDAP change, :func:`announce` flushes the user on every
``[provision] admin_urls`` instance (and kicks the user's sessions when the user may no
longer log in at all). An instance that cannot be told is named in a
:class:`~directory.provision.PartlyApplied` error; the LDAP change stays made.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from ldap3.utils.dn import escape_rdn

from common.configschema import ConfigError
from directory import movestate
from directory.mailstores import Mailstore, Removal, mailstore_for
from directory.model import means_disabled, route_from_entry
from directory.names import escape_filter_value
from directory.passwords import hash_password
from directory.provision import NotFound, PartlyApplied, ProvisionError, Refused, UsageError
from directory.provision.adminapi import Notified, tell_every_instance
from directory.provision.dns import check_domain
from directory.provision.dnsstore import domain_dn
from directory.provision.ldapwrite import DELETE, REPLACE, Entry, LdapWriter
from directory.provision.replication import Replication, after_write
from directory.provision.sieveclient import SieveUnreachable
from directory.provision.sievemove import delete_scripts, endpoint
from directory.settings import ToolConfig

USER_CLASSES = ("inetOrgPerson", "inetLocalMailRecipient")
USER_FILTER = "(&(objectClass=inetLocalMailRecipient)(|(uid={0})(mail={0})))"
_LOCAL = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")
DISABLED_VALUE = "TRUE"  # what disabling writes into [directory] disabled_attribute


def check_address(address: str) -> tuple[str, str]:
    """A normalised address split at its last ``@``: (local part, domain); UsageError if bad.

    Addresses are folded to lower case: ``mail`` and ``uid`` match case-insensitively in
    LDAP anyway, and two users differing only in case would be one user to every client.
    """
    value = address.strip().lower()
    local, sep, domain = value.rpartition("@")
    if not sep or not _LOCAL.match(local) or len(local) > 64:
        raise UsageError(f"{address!r} is not a mail address")
    return local, check_domain(domain)


def uid_for_address(address: str) -> str:
    """``alice@example.co.uk`` → ``alice_example_co_uk`` (the farm's uid scheme)."""
    return address.lower().replace("@", "_").replace(".", "_")


def choose_host(counts: Mapping[str, int], hosts: Sequence[str]) -> str:
    """The configured host with the fewest users; ties go to the one listed first."""
    if not hosts:
        raise UsageError("no backend: give --host or set [provision] hosts")
    return min(hosts, key=lambda h: (counts.get(h, 0), hosts.index(h)))


@dataclass(frozen=True, slots=True)
class User:
    dn: str
    uid: str
    mail: str
    host: str
    login_disabled: bool
    quota_kb: int | None = None  # from [directory] quota_attribute, when set and present
    replication: Replication | None = None  # after add_user with a separate provider

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "uid": self.uid,
            "mail": self.mail,
            "mailHost": self.host,
            "dn": self.dn,
            "login_disabled": self.login_disabled,
        }
        if self.replication is not None:
            data.update(self.replication.as_dict())
            data["warnings"] = list(self.replication.warnings(f"{self.mail} added"))
        return data


def user_from_entry(entry: Entry, settings: ToolConfig) -> User:
    d = settings.directory
    route = route_from_entry(entry.dn, entry.attrs, d.host_attribute, "", d.disabled_attribute)
    return User(
        dn=entry.dn,
        uid=entry.first("uid") or "",
        mail=entry.first("mail") or "",
        host=route.host if route else "",
        login_disabled=route.login_disabled if route else False,
        quota_kb=_quota(entry.first(d.quota_attribute) if d.quota_attribute else None),
    )


def _quota(value: str | None) -> int | None:
    """A quota in KiB, or ``None`` when absent or not a whole number (no quota then)."""
    return int(value) if value is not None and value.strip().isdigit() else None


#: The largest quota accepted (KiB): 2**53 - 1, exact in every JSON reader, far past any disk.
MAX_QUOTA_KB = 2**53 - 1


def quota_attribute(settings: ToolConfig) -> str:
    """``[directory] quota_attribute``, or a UsageError: a quota was given with nowhere to go."""
    attr = settings.directory.quota_attribute
    if not attr:
        raise UsageError(
            "a quota needs [directory] quota_attribute: the LDAP attribute (KiB) the backends "
            "read it from; none is set"
        )
    return attr


def check_quota(quota_kb: int | None) -> int | None:
    """A quota in whole KiB, at least 1 (``None``: no quota); UsageError otherwise.

    0 is refused: Cyrus would take it as "no mail at all" and Dovecot as "unlimited".
    """
    if quota_kb is None:
        return None
    if isinstance(quota_kb, bool) or not isinstance(quota_kb, int):
        raise UsageError(f"quota: {quota_kb!r} is not a whole number of KiB")
    if not 1 <= quota_kb <= MAX_QUOTA_KB:
        raise UsageError(
            f"quota: {quota_kb} KiB: must be from 1 to {MAX_QUOTA_KB} (none removes the quota)"
        )
    return quota_kb


def user_attributes(settings: ToolConfig) -> tuple[str, ...]:
    d = settings.directory
    names = ("uid", "mail", d.host_attribute, d.disabled_attribute, d.quota_attribute)
    return tuple(a for a in names if a)


def find_user(settings: ToolConfig, writer: LdapWriter, login: str) -> User:
    """The one user a uid or address names; NotFound, or Refused if it is ambiguous."""
    value = escape_filter_value(login.strip().lower())
    found = list(
        writer.search(writer.base, USER_FILTER.format(value), "sub", user_attributes(settings))
    )
    if not found:
        raise NotFound(f"{login}: no such user")
    if len(found) > 1:
        raise Refused(f"{login} names {len(found)} entries: {', '.join(e.dn for e in found)}")
    return user_from_entry(found[0], settings)


def user_exists(settings: ToolConfig, writer: LdapWriter, *logins: str) -> User | None:
    for login in logins:
        try:
            return find_user(settings, writer, login)
        except NotFound:
            continue
    return None


def host_counts(settings: ToolConfig, writer: LdapWriter, hosts: Sequence[str]) -> dict[str, int]:
    attr = settings.directory.host_attribute
    return {
        host: writer.count(
            writer.base,
            f"(&(objectClass=inetLocalMailRecipient)({attr}={escape_filter_value(host)}))",
        )
        for host in hosts
    }


def list_users(settings: ToolConfig, writer: LdapWriter, domain: str | None = None) -> list[User]:
    if domain is not None:
        domain = check_domain(domain)
        base = f"ou=users,{domain_dn(writer, domain)}"
        if writer.get(domain_dn(writer, domain), ("1.1",)) is None:
            raise NotFound(f"domain {domain}: no such domain")
    else:
        base = writer.base
    try:
        entries = writer.search(
            base, "(objectClass=inetLocalMailRecipient)", "sub", user_attributes(settings)
        )
        users = [user_from_entry(e, settings) for e in entries]
    except NotFound:
        users = []
    return sorted(users, key=lambda u: u.mail)


def _remove_entry_after(writer: LdapWriter, dn: str, cause: ProvisionError) -> ProvisionError:
    try:
        writer.delete(dn)
    except ProvisionError as exc:
        return cause.amended(f"{cause}; removing the new entry failed too: {exc}")
    return cause.amended(f"{cause}; the entry was removed again")


def add_user(
    settings: ToolConfig,
    writer: LdapWriter,
    address: str,
    password: str,
    host: str | None = None,
    counts: dict[str, int] | None = None,
    replicate: bool = True,
    quota_kb: int | None = None,
) -> User:
    """Create the entry, then the mailbox on its host; undo the entry if the mailbox fails.

    ``counts`` (host → users) lets a bulk import place users without counting again.
    ``replicate`` waits until the consumers show the new entry (``[provision] uri``).
    ``quota_kb`` goes into ``[directory] quota_attribute`` and to the mailbox's backend.
    """
    quota_kb = check_quota(quota_kb)
    attr = quota_attribute(settings) if quota_kb is not None else ""
    local, domain = check_address(address)
    address = f"{local}@{domain}"
    uid = uid_for_address(address)
    try:
        hashed = hash_password(password, settings.provision.password_scheme)
    except ValueError as exc:
        raise UsageError(f"password: {exc}") from None
    zone_dn = domain_dn(writer, domain)
    if writer.get(zone_dn, ("1.1",)) is None:
        raise NotFound(f"domain {domain} does not exist (add it with: mailfarm domain add)")
    existing = user_exists(settings, writer, address, uid)
    if existing is not None:
        raise Refused(f"{address}: exists already as {existing.uid} ({existing.mail})")
    if host is None:
        hosts = settings.provision.hosts
        if counts is None:
            counts = host_counts(settings, writer, hosts)
        host = choose_host(counts, hosts)
    users_dn = f"ou=users,{zone_dn}"
    if writer.get(users_dn, ("1.1",)) is None:
        writer.add(users_dn, ["organizationalUnit"], {"ou": "users"})
    dn = f"uid={escape_rdn(uid)},{users_dn}"
    attrs = {
        "uid": uid,
        "mail": address,
        "cn": address,
        "sn": local,
        settings.directory.host_attribute: host,
        "userPassword": hashed,
    }
    if quota_kb is not None:
        attrs[attr] = str(quota_kb)
    writer.add(dn, USER_CLASSES, attrs)
    try:
        mailstore_for(settings, host).create(uid, quota_kb)
    except ProvisionError as exc:
        raise _remove_entry_after(writer, dn, exc) from None
    except BaseException:
        writer.delete(dn)
        raise
    if counts is not None:
        counts[host] = counts.get(host, 0) + 1
    replication = after_write(settings, writer, dn) if replicate else None
    return User(dn, uid, address, host, False, quota_kb, replication)


# -- changes every proxy must see at once -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """A user change made in LDAP, and which mailfarm instances dropped their cache of it."""

    user: User
    notified: Notified
    extra: Mapping[str, object] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    replication: Replication | None = None  # None: no separate provider to wait for

    def as_dict(self) -> dict[str, object]:
        shown = self.replication.as_dict() if self.replication is not None else {}
        notified = _notified_dict(self.notified, self.warnings)
        return {**self.user.as_dict(), **self.extra, **shown, **notified}


def _notified_dict(notified: Notified, warnings: Sequence[str] = ()) -> dict[str, object]:
    return {
        "flushed": list(notified.reached),
        "unreachable": [url for url, _ in notified.missed],
        "warnings": list(warnings),
    }


def announce(
    settings: ToolConfig,
    uids: Sequence[str],
    *,
    kick: bool,
    done: str,
    data: Mapping[str, object],
) -> tuple[Notified, tuple[str, ...]]:
    """Flush ``uids`` (routes and remembered logins; with ``kick`` their sessions too) on
    every ``[provision] admin_urls`` instance, after the LDAP change described by ``done``.

    Returns who was reached and any warnings; raises :class:`PartlyApplied` (exit 3), naming
    every instance missed and carrying ``data`` plus the outcome, if one could not be told.
    """
    urls = settings.provision.admin_urls
    shown = ", ".join(uids) if len(uids) <= 3 else f"{len(uids)} users"
    if not urls:
        return Notified((), ()), (
            f"no [provision] admin_urls: running mailfarm instances may answer from what "
            f"they cache of {shown} until their cache TTLs pass",
        )
    actions = ("flush", "kick") if kick else ("flush",)
    notified = tell_every_instance(urls, settings.admin_token, uids, actions)
    if notified.missed:
        problems = "; ".join(problem for _, problem in notified.missed)
        what = "flush and kick" if kick else "flush"
        name = uids[0] if len(uids) == 1 else "UID"
        remedy = f"POST /flush?user={name}" + (f" and /kick?user={name}" if kick else "")
        message = (
            f"{done}, but {len(notified.missed)} of {len(set(urls))} mailfarm instances could "
            f"not be reached to {what} {shown}: {problems}. Until they are told, "
            f"they may answer from their caches: {remedy} there once they answer"
        )
        raise PartlyApplied(message, {**data, **_notified_dict(notified)})
    return notified, ()


def _apply(
    settings: ToolConfig,
    writer: LdapWriter,
    user: User,
    *,
    kick: bool,
    done: str,
    extra: Mapping[str, object],
    deleted: bool = False,
) -> Change:
    # Consumers first: a proxy told to drop its cache before its consumer has the change
    # would only cache the old state again.
    replication = after_write(settings, writer, user.dn, deleted=deleted)
    lagging = replication.warnings(done) if replication is not None else ()
    data = {**user.as_dict(), **extra, **(replication.as_dict() if replication else {})}
    notified, warnings = announce(settings, [user.uid], kick=kick, done=done, data=data)
    return Change(user, notified, extra, (*lagging, *warnings), replication)


def remove_user(settings: ToolConfig, writer: LdapWriter, user: User) -> Removal:
    """Remove the mailbox, then the entry; what the backend removed. No proxy is told
    (see :func:`delete_user`; a domain deletion tells them once, for all its users).

    In this order because the backend finds the user through the entry: with the entry gone
    first, the mailbox could no longer be reached to be removed.
    """
    store = mailstore_for(settings, user.host)
    scripts, warning = _remove_sieve_scripts(settings, store, user)
    removal = store.delete(user.uid)
    writer.delete(user.dn)
    return replace(removal, sieve_scripts=scripts, warnings=(warning,) if warning else ())


def _remove_sieve_scripts(
    settings: ToolConfig, store: Mailstore, user: User
) -> tuple[int | None, str | None]:
    """Delete the user's Sieve scripts over ManageSieve, first: neither kind's mailbox
    deletion removes them for certain (Pigeonhole keeps the sieve directory), and a deleted
    user's vacation text and filter rules are the user's data too. (count, warning): a
    backend without a ManageSieve answer does not stop the deletion, it is named instead."""
    try:
        with store.open_sieve(user.uid, endpoint(settings)) as client:
            return delete_scripts(client, user.host), None
    except SieveUnreachable as exc:
        return None, f"{user.mail}: Sieve scripts not deleted ({exc}); remove them by hand"


def delete_user(settings: ToolConfig, writer: LdapWriter, login: str) -> Change:
    """Remove mailbox and entry; then no proxy lets the user in, or keeps a session."""
    user = find_user(settings, writer, login)
    removal = remove_user(settings, writer, user)
    extra: dict[str, object] = {"messages_removed": removal.messages}
    if removal.kept_as is not None:
        # Cyrus delete_mode: delayed. The user is gone, but the messages are not yet.
        extra["backend_kept_copy"] = removal.kept_as
    extra["sieve_scripts_removed"] = removal.sieve_scripts
    done = f"{user.mail} deleted"
    change = _apply(settings, writer, user, kick=True, done=done, extra=extra, deleted=True)
    return replace(change, warnings=(*removal.warnings, *change.warnings))


def set_password(settings: ToolConfig, writer: LdapWriter, login: str, password: str) -> Change:
    """Open sessions are kept (as a backend keeps them); new logins need the new password."""
    user = find_user(settings, writer, login)
    try:
        hashed = hash_password(password, settings.provision.password_scheme)
    except ValueError as exc:
        raise UsageError(f"password: {exc}") from None
    writer.modify(user.dn, {"userPassword": [(REPLACE, [hashed])]})
    done = f"password of {user.mail} changed"
    return _apply(settings, writer, user, kick=False, done=done, extra={})


def set_login_disabled(
    settings: ToolConfig, writer: LdapWriter, login: str, disabled: bool
) -> Change:
    """Refuse (or allow again) the user's logins through ``[directory] disabled_attribute``.

    The attribute is the one a move sets while it copies, so a disabled user is told
    "being moved, try again" and LMTP defers mail for it: meant for a suspension of hours
    or days (Postfix bounces after its maximal_queue_lifetime), not for closing an account.
    Values of the attribute that do not mean "disabled" are kept (the test farm borrows
    ``description``), and so are a move's own (its lease, its cleanup marker).
    """
    attr = settings.directory.disabled_attribute
    if not attr:
        raise ConfigError(
            settings.path,
            "directory",
            "disabled_attribute",
            "must be set to disable logins: it is the attribute the proxies read",
        )
    user = find_user(settings, writer, login)
    entry = writer.get(user.dn, (attr,))
    values = entry.values(attr) if entry else []
    # A move's lease or cleanup marker is the move's business (directory.movestate).
    others = [v for v in values if not means_disabled(v) or movestate.parse(v) is not None]
    wanted = [DISABLED_VALUE, *others] if disabled else others
    if wanted != values:
        writer.modify(user.dn, {attr: [(REPLACE, wanted)] if wanted else [(DELETE, [])]})
    user = replace(user, login_disabled=disabled)
    done = f"logins of {user.mail} {'disabled' if disabled else 'enabled'}"
    return _apply(settings, writer, user, kick=disabled, done=done, extra={})


@dataclass(frozen=True, slots=True)
class QuotaChange:
    """A quota written to LDAP and given to the user's backend.

    No proxy is told: they route by host and uid and never read the quota, so they cache
    nothing of it. ``applied`` says whether the backend holds the new limit already (Cyrus)
    or takes it from the directory at the user's next login (Dovecot).
    """

    user: User
    applied: bool
    replication: Replication | None = None
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        shown = self.replication.as_dict() if self.replication is not None else {}
        return {
            **self.user.as_dict(),
            "quota_kb": self.user.quota_kb,
            "quota_applied": "now" if self.applied else "at next login",
            **shown,
            "warnings": list(self.warnings),
        }


def set_quota(
    settings: ToolConfig, writer: LdapWriter, login: str, quota_kb: int | None
) -> QuotaChange:
    """Write ``[directory] quota_attribute`` (``None`` removes it), then apply it on the
    user's backend. LDAP first: it is what every backend and a later move go by, and a
    backend that failed is brought in line by running the same change again."""
    quota_kb = check_quota(quota_kb)
    attr = quota_attribute(settings)
    user = find_user(settings, writer, login)
    # REPLACE with no value removes the attribute, and is no error when it is absent.
    writer.modify(user.dn, {attr: [(REPLACE, [] if quota_kb is None else [str(quota_kb)])]})
    user = replace(user, quota_kb=quota_kb)
    what = f"{quota_kb} KiB" if quota_kb is not None else "none"
    done = f"quota of {user.mail} set to {what} in LDAP"
    # Dovecot reads the userdb from its consumer: the change must be there before it counts.
    replication = after_write(settings, writer, user.dn)
    try:
        applied = mailstore_for(settings, user.host).set_quota(user.uid, quota_kb)
    except ProvisionError as exc:
        raise exc.amended(
            f"{done}, but not on {user.host}: {exc}; run the same change again to apply it"
        ) from None
    lagging = replication.warnings(done) if replication is not None else ()
    return QuotaChange(user, applied, replication, lagging)
