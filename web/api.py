"""The routes under ``/api/v1``: JSON in and out around :class:`web.service.Service`.

Endpoints are plain ``def``: FastAPI runs them in its thread pool, where the blocking
LDAP and IMAP calls of the service belong.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from web.audit import Actor
from web.auth import authenticate
from web.models import Kick, Move, NewDomain, NewPassword, NewUser, Quota, Record
from web.service import Service

NAME = r"^[^/\x00-\x1f]{1,320}$"
Address = Annotated[str, Path(pattern=NAME, description="uid or address")]
Domain = Annotated[str, Path(pattern=NAME)]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "-"


def caller(request: Request) -> Actor:
    """The principal app.py's middleware found, before the body was read."""
    found = getattr(request.state, "principal", None)
    principal = found or authenticate(request, request.app.state.tokens)
    return Actor(principal, client_ip(request), "api")


Caller = Annotated[Actor, Depends(caller)]


def build_router(service: Service) -> APIRouter:
    router = APIRouter(prefix="/api/v1", dependencies=[Depends(caller)])

    @router.get("/domains", summary="the domains (a domain admin: its own), with user counts")
    def list_domains(who: Caller, q: Annotated[str, Query(max_length=253)] = "") -> dict[str, Any]:
        return {"domains": service.domains(who, q)}

    @router.post("/domains", status_code=201, summary="add a domain: its branch and DNS data")
    def add_domain(who: Caller, body: NewDomain) -> dict[str, Any]:
        return service.add_domain(who, body.name, body.mx, body.ns, body.a)

    @router.get("/domains/{domain}", summary="one domain and its number of users")
    def get_domain(who: Caller, domain: Domain) -> dict[str, Any]:
        return service.domain(who, domain)

    @router.delete("/domains/{domain}", summary="delete a domain (refused while it has users)")
    def delete_domain(
        who: Caller, domain: Domain, force: Annotated[bool, Query()] = False
    ) -> dict[str, Any]:
        return service.delete_domain(who, domain, force)

    @router.get("/domains/{domain}/users", summary="search a domain's users, 50 a page")
    def list_users(
        who: Caller,
        domain: Domain,
        q: Annotated[str, Query(max_length=320)] = "",
        page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    ) -> dict[str, Any]:
        return service.users(who, domain, q, page)

    @router.post("/users", status_code=201, summary="add a user: entry and mailbox")
    def add_user(who: Caller, body: NewUser) -> dict[str, Any]:
        return service.add_user(who, body.address, body.password, body.host, body.quota)

    @router.get("/users/{address}", summary="one user's entry")
    def get_user(who: Caller, address: Address) -> dict[str, Any]:
        return service.user(who, address)

    @router.delete("/users/{address}", summary="delete a user's mailbox and entry")
    def delete_user(who: Caller, address: Address) -> dict[str, Any]:
        return service.delete_user(who, address)

    @router.post("/users/{address}/password", summary="set a user's password")
    def set_password(who: Caller, address: Address, body: NewPassword) -> dict[str, Any]:
        return service.set_password(who, address, body.password)

    @router.post("/users/{address}/disable", summary="refuse a user's logins")
    def disable(who: Caller, address: Address) -> dict[str, Any]:
        return service.set_disabled(who, address, True)

    @router.post("/users/{address}/enable", summary="allow a user's logins again")
    def enable(who: Caller, address: Address) -> dict[str, Any]:
        return service.set_disabled(who, address, False)

    @router.post("/users/{address}/quota", summary="set (or with null, remove) a quota")
    def set_quota(who: Caller, address: Address, body: Quota) -> dict[str, Any]:
        return service.set_quota(who, address, body.quota)

    @router.post("/users/{address}/move", status_code=202, summary="move a mailbox (a job)")
    def move(who: Caller, address: Address, body: Move) -> dict[str, Any]:
        return service.move(who, address, body.to, body.force, body.keep_old, body.no_sieve)

    @router.get("/jobs/{job_id}", summary="a job's progress and result")
    def get_job(
        who: Caller, job_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    ) -> dict[str, Any]:
        return service.job(who, job_id)

    @router.get("/domains/{domain}/dns", summary="a domain's records and exported zone")
    def get_dns(who: Caller, domain: Domain) -> dict[str, Any]:
        return service.dns(who, domain)

    @router.put("/domains/{domain}/dns/{name}/{rtype}", summary="add a record (CNAME replaces)")
    def put_dns(
        who: Caller, domain: Domain, name: Domain, rtype: Domain, body: Record
    ) -> dict[str, Any]:
        return service.set_dns(who, domain, name, rtype, body.value)

    @router.delete("/domains/{domain}/dns/{name}/{rtype}", summary="delete records")
    def delete_dns(
        who: Caller,
        domain: Domain,
        name: Domain,
        rtype: Domain,
        value: Annotated[str | None, Query(max_length=1024)] = None,
    ) -> dict[str, Any]:
        return service.delete_dns(who, domain, name, rtype, value)

    @router.get("/sessions", summary="who is logged in where, from every instance")
    def sessions(
        who: Caller, user: Annotated[str | None, Query(max_length=320)] = None
    ) -> dict[str, Any]:
        return service.sessions(who, user)

    @router.post("/sessions/kick", summary="end a user's sessions on every instance")
    def kick(who: Caller, body: Kick) -> dict[str, Any]:
        return service.kick(who, body.user)

    @router.get("/audit", summary="the audit log, newest first (a domain admin: its domains)")
    def audit(
        who: Caller,
        q: Annotated[str, Query(max_length=320)] = "",
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> dict[str, Any]:
        return {"entries": service.audit_entries(who, q, limit)}

    return router
