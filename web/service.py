"""What the console and the API do, once: permission checks, the CLI's service calls, audit.

Both front ends call these methods and nothing below them, so a rule enforced here holds
for a form post and an API call alike, and both record the same audit entries.

Methods are blocking (LDAP, IMAP, the instances' admin endpoints): callers run them in a
thread pool. Each opens its own :class:`LdapWriter` (one connection is not safe to share
between threads).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

from directory.provision.ldapwrite import LdapWriter
from directory.settings import ToolConfig
from web.audit import Actor, Audit
from web.auth import require, require_domain
from web.jobs import Jobs
from web.problems import Problem
from web.users import forget_domain, user_dict, users_page


def domain_of(login: str) -> str:
    from directory.provision.users import check_address

    return check_address(login)[1]


def checked_domain(name: str) -> str:
    from directory.provision.dns import check_domain

    return check_domain(name)


class Service:
    def __init__(
        self, settings: ToolConfig, jobs: Jobs, audit: Audit, dashboard: Any = None
    ) -> None:
        self.settings = settings
        self.jobs = jobs
        self.audit = audit
        self.dashboard_source = dashboard  # web.dashboard.Dashboard

    def _ldap(self) -> LdapWriter:
        return LdapWriter(self.settings)

    # -- the rules --------------------------------------------------------------------

    def _user_access(self, who: Actor, action: str, login: str) -> str | None:
        """A domain-admin names users by address (a uid does not say whose domain it is).
        Returns the domain when the login names one."""
        hidden = f"{login}: no such user"
        domain = domain_of(login) if "@" in login else None
        if who.principal.role == "domain-admin":
            if domain is None:
                raise Problem(404, hidden)
            require_domain(who.principal, action, domain, hidden)
        else:
            require(who.principal, action)
        return domain

    def _found_user(self, who: Actor, writer: LdapWriter, login: str) -> Any:
        from directory.provision.users import find_user

        user = find_user(self.settings, writer, login)
        if not who.owns(user.mail.rpartition("@")[2]):
            raise Problem(404, f"{login}: no such user")
        return user

    def _own_domain(self, who: Actor, writer: LdapWriter, name: str) -> dict[str, Any]:
        from directory.provision.domains import list_domains

        wanted = checked_domain(name)
        hidden = f"domain {wanted}: no such domain"
        require_domain(who.principal, "domains.read", wanted, hidden)
        for domain in list_domains(writer):
            if domain.name == wanted:
                return domain.as_dict()
        raise Problem(404, hidden)

    def _zone_access(self, who: Actor, action: str, domain: str) -> str:
        name = checked_domain(domain)
        require_domain(who.principal, action, name, f"domain {name}: no such domain")
        return name

    @staticmethod
    def may_role(role: str, action: str) -> bool:
        """What a role may do, without raising: what the console offers and what a listing
        shows. Every method that changes something checks with :func:`require` again."""
        from web.auth import RULES

        return role in RULES[action]

    # -- domains ----------------------------------------------------------------------

    def domains(self, who: Actor, q: str = "") -> list[dict[str, Any]]:
        from directory.provision.domains import list_domains

        require(who.principal, "domains.read")
        with self._ldap() as writer:
            found = [d.as_dict() for d in list_domains(writer) if who.owns(d.name)]
        needle = q.strip().lower()
        return [d for d in found if needle in d["domain"]] if needle else found

    def add_domain(
        self, who: Actor, name: str, mx: list[str], ns: list[str], a: list[str]
    ) -> dict[str, Any]:
        from directory.provision.domains import add_domain

        require(who.principal, "domains.add")
        with self.audit.change(who, "domain.add", name, name.lower()):
            with self._ldap() as writer:
                made = add_domain(self.settings, writer, name, mx, ns, a, date.today())
            return made.as_dict()

    def domain(self, who: Actor, name: str) -> dict[str, Any]:
        with self._ldap() as writer:
            return self._own_domain(who, writer, name)

    def delete_domain(self, who: Actor, name: str, force: bool) -> dict[str, Any]:
        from directory.provision.domains import delete_domain

        with self._ldap() as writer:
            found = self._own_domain(who, writer, name)  # 404 before 403: others' names
            require(who.principal, "domains.delete")
            with self.audit.change(who, "domain.delete", found["domain"], found["domain"]):
                gone = delete_domain(self.settings, writer, name, force)
            forget_domain(found["domain"])
        return gone.as_dict()

    # -- users ------------------------------------------------------------------------

    def users(self, who: Actor, domain: str, q: str, page: int) -> dict[str, Any]:
        name = checked_domain(domain)
        require_domain(who.principal, "users.read", name, f"domain {name}: no such domain")
        with self._ldap() as writer:
            return users_page(self.settings, writer, name, q, page)

    def add_user(
        self, who: Actor, address: str, password: str, host: str | None, quota: int | None
    ) -> dict[str, Any]:
        from directory.provision.users import add_user

        domain = domain_of(address)
        hidden = f"domain {domain} does not exist (add it with: mailfarm domain add)"
        require_domain(who.principal, "users.write", domain, hidden)
        if host is not None:
            require(who.principal, "users.place")
        if quota is not None and not self.settings.directory.quota_attribute:
            raise Problem(422, "no [directory] quota_attribute is set", field="quota")
        with self.audit.change(who, "user.add", address, domain) as note:
            with self._ldap() as writer:
                user = add_user(self.settings, writer, address, password, host, quota_kb=quota)
                forget_domain(domain)  # the users page shows the new user at once
                note["detail"] = f"on {user.host}"
                return user_dict(user)

    def user(self, who: Actor, address: str) -> dict[str, Any]:
        self._user_access(who, "users.read", address)
        with self._ldap() as writer:
            return user_dict(self._found_user(who, writer, address))

    def _user_change(self, who: Actor, rule: str, address: str) -> Any:
        """The checks an action on a user starts with (a move or a kick, which do their
        work elsewhere); the found user."""
        self._user_access(who, rule, address)
        with self._ldap() as writer:
            return self._found_user(who, writer, address)

    @contextmanager
    def _changing(
        self, who: Actor, rule: str, action: str, address: str
    ) -> Iterator[tuple[LdapWriter, Any, dict[str, str]]]:
        """One change of one user on one connection: the rule, the user (another domain's
        looks missing), then the audit entry around the change itself."""
        self._user_access(who, rule, address)
        with self._ldap() as writer:
            user = self._found_user(who, writer, address)
            with self.audit.change(who, action, user.mail, _domain(user)) as note:
                yield writer, user, note

    def delete_user(self, who: Actor, address: str) -> dict[str, Any]:
        from directory.provision.users import delete_user

        with self._changing(who, "users.delete", "user.delete", address) as (writer, user, _):
            gone = delete_user(self.settings, writer, user.uid).as_dict()
        forget_domain(_domain(user))
        return gone

    def set_password(self, who: Actor, address: str, password: str) -> dict[str, Any]:
        from directory.provision.users import set_password

        with self._changing(who, "users.write", "user.password", address) as (writer, user, _):
            return set_password(self.settings, writer, user.uid, password).as_dict()

    def set_disabled(self, who: Actor, address: str, disabled: bool) -> dict[str, Any]:
        from directory.provision.users import set_login_disabled

        action = "user.disable" if disabled else "user.enable"
        with self._changing(who, "users.write", action, address) as (writer, user, _):
            return set_login_disabled(self.settings, writer, user.uid, disabled).as_dict()

    def set_quota(self, who: Actor, address: str, quota: int | None) -> dict[str, Any]:
        """``None`` removes the quota (the backend's default applies). Written to LDAP and
        applied on the user's backend, as ``mailfarm user quota`` does."""
        from directory.provision.users import set_quota

        if not self.settings.directory.quota_attribute:
            raise Problem(422, "no [directory] quota_attribute is set", field="quota")
        with self._changing(who, "users.write", "user.quota", address) as (writer, user, note):
            note["detail"] = "none" if quota is None else f"{quota} KiB"
            return set_quota(self.settings, writer, user.uid, quota).as_dict()

    def move(
        self,
        who: Actor,
        address: str,
        to: str,
        force: bool = False,
        keep_old: bool = False,
        no_sieve: bool = False,
    ) -> dict[str, Any]:
        from directory.provision.move import move_user

        user = self._user_change(who, "users.place", address)
        settings = self.settings

        def work(report: Any) -> dict[str, Any]:
            with LdapWriter(settings) as writer:
                done = move_user(
                    settings,
                    writer,
                    user.uid,
                    to,
                    force,
                    lambda event: report(event.as_dict()),
                    keep_old=keep_old,
                    no_sieve=no_sieve,
                )
            return done.as_dict()

        with self.audit.change(who, "user.move", user.mail, _domain(user)) as note:
            job = self.jobs.start("move", _domain(user), user.uid, work)
            note["detail"] = f"{user.host} -> {to}, job {job.id}"
        return {"job": job.id, "href": f"/api/v1/jobs/{job.id}", **job.as_dict()}

    def job(self, who: Actor, job_id: str) -> dict[str, Any]:
        job = self.jobs.get(job_id)
        if job is None or not who.owns(job.pop("domain")):
            raise Problem(404, f"job {job_id}: no such job")
        return job

    # -- dns --------------------------------------------------------------------------

    def dns(self, who: Actor, domain: str) -> dict[str, Any]:
        from directory.provision.dns import render_zone
        from directory.provision.dnsstore import read_zone

        name = self._zone_access(who, "dns.read", domain)
        with self._ldap() as writer:
            zone = read_zone(writer, name)
        return {
            "domain": name,
            "serial": zone.soa.serial if zone.soa else None,
            "soa": zone.soa.value() if zone.soa else None,
            "records": zone.records,
            "zone": render_zone(name, zone.soa, zone.records) if zone.soa else None,
        }

    def set_dns(self, who: Actor, domain: str, name: str, rtype: str, value: str) -> dict[str, Any]:
        from directory.provision.dnsstore import set_record

        zone = self._zone_access(who, "dns.write", domain)
        with self.audit.change(who, "dns.set", f"{name} {rtype}", zone) as note:
            note["detail"] = value
            with self._ldap() as writer:
                return set_record(writer, zone, name, rtype, value, date.today()).as_dict()

    def edit_dns(
        self, who: Actor, domain: str, name: str, rtype: str, old: str, new: str
    ) -> dict[str, Any]:
        """Replace one value: the new one is added first, so a refused value changes nothing."""
        changed = self.set_dns(who, domain, name, rtype, new)
        if rtype.upper() not in ("CNAME", "SOA") and changed["changed"]:
            changed = self.delete_dns(who, domain, name, rtype, old)
        return changed

    def delete_dns(
        self, who: Actor, domain: str, name: str, rtype: str, value: str | None
    ) -> dict[str, Any]:
        from directory.provision.dnsstore import delete_record

        zone = self._zone_access(who, "dns.write", domain)
        with self.audit.change(who, "dns.delete", f"{name} {rtype}", zone) as note:
            note["detail"] = value or "all values"
            with self._ldap() as writer:
                change = delete_record(writer, zone, name, rtype, value, date.today())
                return change.as_dict()

    # -- sessions ---------------------------------------------------------------------

    def sessions(self, who: Actor, user: str | None) -> dict[str, Any]:
        from directory.provision.adminapi import gather_sessions

        require(who.principal, "sessions.read")
        found, missed = gather_sessions(
            self.settings.provision.admin_urls, self.settings.admin_token, user
        )

        if self.may_role(who.principal.role, "farm.internals"):
            return {
                "sessions": found,
                "unreachable": [{"instance": url, "problem": why} for url, why in missed],
            }
        # A customer's domain admin: its domains' users only, by the domain the directory
        # gave the proxy at login (a session without one is not theirs to see), and nothing
        # of the farm's insides: no backend hosts, no instance URLs, no error texts.
        hidden = ("backend", "instance")
        return {
            "sessions": [
                {k: v for k, v in s.items() if k not in hidden}
                for s in found
                if isinstance(s.get("domain"), str) and who.owns(s["domain"])
            ],
            "unreachable": [
                {"instance": "a front-door instance", "problem": "did not answer; try again"}
                for _ in missed
            ],
        }

    def kick(self, who: Actor, login: str) -> dict[str, Any]:
        from directory.provision.users import announce

        user = self._user_change(who, "sessions.kick", login)
        with self.audit.change(who, "session.kick", user.mail, _domain(user)):
            done = f"sessions of {user.uid} kicked"
            notified, warnings = announce(
                self.settings, [user.uid], kick=True, done=done, data=user.as_dict()
            )
        return {
            **user.as_dict(),
            "kicked_on": list(notified.reached),
            "unreachable": [url for url, _ in notified.missed],
            "warnings": list(warnings),
        }

    def dashboard(self, who: Actor) -> dict[str, Any]:
        require(who.principal, "dashboard.read")
        if self.dashboard_source is None:
            raise Problem(503, "no dashboard is configured")
        return self.dashboard_source.snapshot()

    # -- audit ------------------------------------------------------------------------

    def audit_entries(self, who: Actor, q: str = "", limit: int = 200) -> list[dict[str, Any]]:
        require(who.principal, "audit.read")
        return self.audit.entries(who, q, limit)


def _domain(user: Any) -> str:
    return str(user.mail).rpartition("@")[2]
