"""Mail users: their LDAP entry and their mailbox, created and removed together.

An entry is ``uid=<uid>,ou=users,dc=<domain>,ou=domains,<base>`` (inetOrgPerson +
inetLocalMailRecipient). The uid is derived from the address once, at creation
(:func:`uid_for_address`); afterwards a user is always found by searching ``uid`` or
``mail``, never by taking a uid apart (see ARCHITECTURE.md, "Identity of a user").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ldap3.utils.dn import escape_rdn

from directory.model import route_from_entry
from directory.names import escape_filter_value
from directory.passwords import hash_password
from directory.provision import NotFound, ProvisionError, Refused, UsageError
from directory.provision.dns import check_domain
from directory.provision.dnsstore import domain_dn
from directory.provision.ldapwrite import REPLACE, Entry, LdapWriter
from directory.provision.mailstore import admin_login, ensure_inbox, wipe
from proxy.config import Settings

USER_CLASSES = ("inetOrgPerson", "inetLocalMailRecipient")
USER_FILTER = "(&(objectClass=inetLocalMailRecipient)(|(uid={0})(mail={0})))"
_LOCAL = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")


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

    def as_dict(self) -> dict[str, object]:
        return {
            "uid": self.uid,
            "mail": self.mail,
            "mailHost": self.host,
            "dn": self.dn,
            "login_disabled": self.login_disabled,
        }


def _user(entry: Entry, settings: Settings) -> User:
    d = settings.directory
    route = route_from_entry(entry.dn, entry.attrs, d.host_attribute, "", d.disabled_attribute)
    return User(
        dn=entry.dn,
        uid=entry.first("uid") or "",
        mail=entry.first("mail") or "",
        host=route.host if route else "",
        login_disabled=route.login_disabled if route else False,
    )


def _attributes(settings: Settings) -> tuple[str, ...]:
    d = settings.directory
    return tuple(a for a in ("uid", "mail", d.host_attribute, d.disabled_attribute) if a)


def find_user(settings: Settings, writer: LdapWriter, login: str) -> User:
    """The one user a uid or address names; NotFound, or Refused if it is ambiguous."""
    value = escape_filter_value(login.strip().lower())
    found = list(
        writer.search(writer.base, USER_FILTER.format(value), "sub", _attributes(settings))
    )
    if not found:
        raise NotFound(f"{login}: no such user")
    if len(found) > 1:
        raise Refused(f"{login} names {len(found)} entries: {', '.join(e.dn for e in found)}")
    return _user(found[0], settings)


def user_exists(settings: Settings, writer: LdapWriter, *logins: str) -> User | None:
    for login in logins:
        try:
            return find_user(settings, writer, login)
        except NotFound:
            continue
    return None


def host_counts(settings: Settings, writer: LdapWriter, hosts: Sequence[str]) -> dict[str, int]:
    attr = settings.directory.host_attribute
    return {
        host: writer.count(
            writer.base,
            f"(&(objectClass=inetLocalMailRecipient)({attr}={escape_filter_value(host)}))",
        )
        for host in hosts
    }


def list_users(settings: Settings, writer: LdapWriter, domain: str | None = None) -> list[User]:
    if domain is not None:
        domain = check_domain(domain)
        base = f"ou=users,{domain_dn(writer, domain)}"
        if writer.get(domain_dn(writer, domain), ("1.1",)) is None:
            raise NotFound(f"domain {domain}: no such domain")
    else:
        base = writer.base
    try:
        entries = writer.search(
            base, "(objectClass=inetLocalMailRecipient)", "sub", _attributes(settings)
        )
        users = [_user(e, settings) for e in entries]
    except NotFound:
        users = []
    return sorted(users, key=lambda u: u.mail)


def _remove_entry_after(writer: LdapWriter, dn: str, cause: ProvisionError) -> ProvisionError:
    try:
        writer.delete(dn)
    except ProvisionError as exc:
        return type(cause)(f"{cause}; removing the new entry failed too: {exc}")
    return type(cause)(f"{cause}; the entry was removed again")


def add_user(
    settings: Settings,
    writer: LdapWriter,
    address: str,
    password: str,
    host: str | None = None,
    counts: dict[str, int] | None = None,
) -> User:
    """Create the entry, then the mailbox on its host; undo the entry if the mailbox fails.

    ``counts`` (host → users) lets a bulk import place users without counting again.
    """
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
    writer.add(
        dn,
        USER_CLASSES,
        {
            "uid": uid,
            "mail": address,
            "cn": address,
            "sn": local,
            settings.directory.host_attribute: host,
            "userPassword": hashed,
        },
    )
    try:
        with admin_login(settings, host, uid) as client:
            ensure_inbox(client)
    except ProvisionError as exc:
        raise _remove_entry_after(writer, dn, exc) from None
    except BaseException:
        writer.delete(dn)
        raise
    if counts is not None:
        counts[host] = counts.get(host, 0) + 1
    return User(dn, uid, address, host, False)


def delete_user(settings: Settings, writer: LdapWriter, login: str) -> tuple[User, int]:
    """Empty the mailbox, then remove the entry; (user, messages removed).

    In this order because the backend finds the user through the entry: with the entry gone
    first, the mailbox could no longer be reached to be removed.
    """
    user = find_user(settings, writer, login)
    with admin_login(settings, user.host, user.uid) as client:
        removed = wipe(client)
    writer.delete(user.dn)
    return user, removed


def set_password(settings: Settings, writer: LdapWriter, login: str, password: str) -> User:
    user = find_user(settings, writer, login)
    try:
        hashed = hash_password(password, settings.provision.password_scheme)
    except ValueError as exc:
        raise UsageError(f"password: {exc}") from None
    writer.modify(user.dn, {"userPassword": [(REPLACE, [hashed])]})
    return user
