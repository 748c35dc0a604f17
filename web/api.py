"""The routes under ``/api/v1``: each calls the service function the CLI calls.

Endpoints are plain ``def``: FastAPI runs them in its thread pool, where the blocking
LDAP and IMAP calls of :mod:`directory.provision` belong. Each opens its own
:class:`LdapWriter` (one connection is not safe to share between threads).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from directory.provision.ldapwrite import REPLACE, LdapWriter
from directory.settings import ToolConfig
from web.auth import authenticate, require, require_domain
from web.jobs import Jobs
from web.models import Kick, Move, NewDomain, NewPassword, NewUser, Record
from web.problems import Problem
from web.tokens import Principal
from web.users import user_dict, users_page

NAME = r"^[^/\x00-\x1f]{1,320}$"
Address = Annotated[str, Path(pattern=NAME, description="uid or address")]
Domain = Annotated[str, Path(pattern=NAME)]


def caller(request: Request) -> Principal:
    """The principal app.py's middleware found, before the body was read."""
    found = getattr(request.state, "principal", None)
    return found or authenticate(request, request.app.state.tokens)


Caller = Annotated[Principal, Depends(caller)]


def build_router(settings: ToolConfig, jobs: Jobs) -> APIRouter:
    router = APIRouter(prefix="/api/v1", dependencies=[Depends(caller)])

    def ldap() -> LdapWriter:
        return LdapWriter(settings)

    def domain_of(login: str) -> str:
        from directory.provision.users import check_address

        return check_address(login)[1]

    def user_access(who: Principal, action: str, login: str) -> None:
        """A domain-admin names users by address (a uid does not say whose domain it is)."""
        hidden = f"{login}: no such user"
        if who.role == "domain-admin":
            if "@" not in login:
                raise Problem(404, hidden)
            require_domain(who, action, domain_of(login), hidden)
        else:
            require(who, action)

    def found_user(who: Principal, writer: LdapWriter, login: str) -> Any:
        from directory.provision.users import find_user

        user = find_user(settings, writer, login)
        if not who.owns(user.mail.rpartition("@")[2]):
            raise Problem(404, f"{login}: no such user")
        return user

    # -- domains ------------------------------------------------------------------------

    def own_domain(who: Principal, writer: LdapWriter, name: str) -> dict[str, Any]:
        from directory.provision.dns import check_domain
        from directory.provision.domains import list_domains

        wanted = check_domain(name)
        hidden = f"domain {wanted}: no such domain"
        require_domain(who, "domains.read", wanted, hidden)
        for domain in list_domains(writer):
            if domain.name == wanted:
                return domain.as_dict()
        raise Problem(404, hidden)

    @router.get("/domains", summary="the domains (a domain admin: its own), with user counts")
    def list_domains(who: Caller) -> dict[str, Any]:
        from directory.provision.domains import list_domains as every

        require(who, "domains.read")
        with ldap() as writer:
            domains = [d.as_dict() for d in every(writer) if who.owns(d.name)]
        return {"domains": domains}

    @router.post("/domains", status_code=201, summary="add a domain: its branch and DNS data")
    def add_domain(who: Caller, body: NewDomain) -> dict[str, Any]:
        from directory.provision.domains import add_domain as add

        require(who, "domains.add")
        with ldap() as writer:
            made = add(settings, writer, body.name, body.mx, body.ns, body.a, date.today())
        return made.as_dict()

    @router.get("/domains/{domain}", summary="one domain and its number of users")
    def get_domain(who: Caller, domain: Domain) -> dict[str, Any]:
        with ldap() as writer:
            return own_domain(who, writer, domain)

    @router.delete("/domains/{domain}", summary="delete a domain (refused while it has users)")
    def delete_domain(
        who: Caller, domain: Domain, force: Annotated[bool, Query()] = False
    ) -> dict[str, Any]:
        from directory.provision.domains import delete_domain as delete

        with ldap() as writer:
            own_domain(who, writer, domain)  # 404 before 403: nothing said of others' names
            require(who, "domains.delete")
            gone, users, warnings = delete(settings, writer, domain, force)
        return {**gone.as_dict(), "deleted_users": [u.mail for u in users], "warnings": warnings}

    # -- users --------------------------------------------------------------------------

    @router.get("/domains/{domain}/users", summary="search a domain's users, 50 a page")
    def list_users(
        who: Caller,
        domain: Domain,
        q: Annotated[str, Query(max_length=320)] = "",
        page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    ) -> dict[str, Any]:
        from directory.provision.dns import check_domain

        name = check_domain(domain)
        require_domain(who, "users.read", name, f"domain {name}: no such domain")
        with ldap() as writer:
            return users_page(settings, writer, name, q, page)

    @router.post("/users", status_code=201, summary="add a user: entry and mailbox")
    def add_user(who: Caller, body: NewUser) -> dict[str, Any]:
        from directory.provision.users import add_user as add

        domain = domain_of(body.address)
        hidden = f"domain {domain} does not exist (add it with: mailfarm domain add)"
        require_domain(who, "users.write", domain, hidden)
        if body.host is not None:
            require(who, "users.place")
        attr = settings.directory.quota_attribute
        if body.quota is not None and not attr:
            raise Problem(422, "no [directory] quota_attribute is set", field="quota")
        with ldap() as writer:
            user = add(settings, writer, body.address, body.password, body.host)
            if body.quota is not None:
                writer.modify(user.dn, {attr: [(REPLACE, [str(body.quota)])]})
                user = found_user(who, writer, user.mail)
            return user_dict(user)

    @router.get("/users/{address}", summary="one user's entry")
    def get_user(who: Caller, address: Address) -> dict[str, Any]:
        user_access(who, "users.read", address)
        with ldap() as writer:
            return user_dict(found_user(who, writer, address))

    @router.delete("/users/{address}", summary="delete a user's mailbox and entry")
    def delete_user(who: Caller, address: Address) -> dict[str, Any]:
        from directory.provision.users import delete_user as delete

        user_access(who, "users.delete", address)
        with ldap() as writer:
            found_user(who, writer, address)
            return delete(settings, writer, address).as_dict()

    @router.post("/users/{address}/password", summary="set a user's password")
    def set_password(who: Caller, address: Address, body: NewPassword) -> dict[str, Any]:
        from directory.provision.users import set_password as change

        user_access(who, "users.write", address)
        with ldap() as writer:
            found_user(who, writer, address)
            return change(settings, writer, address, body.password).as_dict()

    def set_disabled(who: Principal, address: str, disabled: bool) -> dict[str, Any]:
        from directory.provision.users import set_login_disabled

        user_access(who, "users.write", address)
        with ldap() as writer:
            found_user(who, writer, address)
            return set_login_disabled(settings, writer, address, disabled).as_dict()

    @router.post("/users/{address}/disable", summary="refuse a user's logins")
    def disable(who: Caller, address: Address) -> dict[str, Any]:
        return set_disabled(who, address, True)

    @router.post("/users/{address}/enable", summary="allow a user's logins again")
    def enable(who: Caller, address: Address) -> dict[str, Any]:
        return set_disabled(who, address, False)

    @router.post("/users/{address}/move", status_code=202, summary="move a mailbox (a job)")
    def move(who: Caller, address: Address, body: Move) -> dict[str, Any]:
        from directory.provision.move import move_user

        user_access(who, "users.place", address)
        with ldap() as writer:
            user = found_user(who, writer, address)

        def work(report: Any) -> dict[str, Any]:
            with ldap() as writer:
                done = move_user(
                    settings,
                    writer,
                    user.uid,
                    body.to,
                    body.force,
                    lambda event: report(event.as_dict()),
                    keep_old=body.keep_old,
                )
            return done.as_dict()

        job = jobs.start("move", user.mail.rpartition("@")[2], user.uid, work)
        return {"job": job.id, "href": f"/api/v1/jobs/{job.id}", **job.as_dict()}

    @router.get("/jobs/{job_id}", summary="a job's progress and result")
    def get_job(
        who: Caller, job_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    ) -> dict[str, Any]:
        job = jobs.get(job_id)
        if job is None or not who.owns(job.pop("domain")):
            raise Problem(404, f"job {job_id}: no such job")
        return job

    # -- dns ----------------------------------------------------------------------------

    def zone_access(who: Principal, action: str, domain: str) -> str:
        from directory.provision.dns import check_domain

        name = check_domain(domain)
        require_domain(who, action, name, f"domain {name}: no such domain")
        return name

    @router.get("/domains/{domain}/dns", summary="a domain's records and exported zone")
    def get_dns(who: Caller, domain: Domain) -> dict[str, Any]:
        from directory.provision.dns import render_zone
        from directory.provision.dnsstore import read_zone

        name = zone_access(who, "dns.read", domain)
        with ldap() as writer:
            zone = read_zone(writer, name)
        return {
            "domain": name,
            "serial": zone.soa.serial if zone.soa else None,
            "soa": zone.soa.value() if zone.soa else None,
            "records": zone.records,
            "zone": render_zone(name, zone.soa, zone.records) if zone.soa else None,
        }

    def dns_change(change: Any) -> dict[str, Any]:
        return {
            "domain": change.domain,
            "name": change.owner,
            "type": change.rtype,
            "values": change.values,
            "changed": change.changed,
            "serial": change.serial,
        }

    @router.put("/domains/{domain}/dns/{name}/{rtype}", summary="add a record (CNAME replaces)")
    def put_dns(
        who: Caller, domain: Domain, name: Domain, rtype: Domain, body: Record
    ) -> dict[str, Any]:
        from directory.provision.dnsstore import set_record

        zone = zone_access(who, "dns.write", domain)
        with ldap() as writer:
            return dns_change(set_record(writer, zone, name, rtype, body.value, date.today()))

    @router.delete("/domains/{domain}/dns/{name}/{rtype}", summary="delete records")
    def delete_dns(
        who: Caller,
        domain: Domain,
        name: Domain,
        rtype: Domain,
        value: Annotated[str | None, Query(max_length=1024)] = None,
    ) -> dict[str, Any]:
        from directory.provision.dnsstore import delete_record

        zone = zone_access(who, "dns.write", domain)
        with ldap() as writer:
            return dns_change(delete_record(writer, zone, name, rtype, value, date.today()))

    # -- sessions -----------------------------------------------------------------------

    @router.get("/sessions", summary="who is logged in where (not yet available)")
    def sessions(
        who: Caller, user: Annotated[str | None, Query(max_length=320)] = None
    ) -> dict[str, Any]:
        from directory.provision.adminapi import gather_sessions

        require(who, "sessions.read")
        found, missed = gather_sessions(
            settings.provision.admin_urls, settings.admin_token, user
        )
        return {
            "sessions": found,
            "unreachable": [{"instance": url, "problem": why} for url, why in missed],
        }

    @router.post("/sessions/kick", summary="end a user's sessions on every instance")
    def kick(who: Caller, body: Kick) -> dict[str, Any]:
        from directory.provision.users import announce

        user_access(who, "sessions.kick", body.user)
        with ldap() as writer:
            user = found_user(who, writer, body.user)
        done = f"sessions of {user.uid} kicked"
        notified, warnings = announce(
            settings, [user.uid], kick=True, done=done, data=user.as_dict()
        )
        return {
            **user.as_dict(),
            "kicked_on": list(notified.reached),
            "unreachable": [url for url, _ in notified.missed],
            "warnings": list(warnings),
        }

    return router
