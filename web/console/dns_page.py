"""A domain's DNS: the records, add/edit/delete, the zone as exported, the SOA serial."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from directory.provision.dns import EDITABLE
from web.console.core import Console, url

TYPES = tuple(t for t in EDITABLE if t != "SOA")  # a zone has one SOA, set with `dns set`


def register(router: APIRouter, console: Console) -> None:
    service = console.service

    async def page(
        request: Request, domain: str, status: int = 200, error: str = "", values: Any = None
    ) -> Response:
        session, who = console.staff(request)
        zone, (code, problem) = await console.attempt(service.dns, who, domain)
        if zone is None:
            return console.render("error.html", session, status=code, title="DNS", error=problem)
        rows = [
            (owner, rtype, value)
            for owner, types in sorted(zone["records"].items(), key=lambda i: (i[0] != "@", i[0]))
            for rtype, values in sorted(types.items())
            for value in values
        ]
        return console.render(
            "dns.html",
            session,
            status=status,
            title=f"DNS of {zone['domain']}",
            domain=zone["domain"],
            zone=zone,
            rows=rows,
            types=TYPES,
            error=error,
            values=values or {},
        )

    @router.get("/domains/{domain}/dns")
    async def dns(request: Request, domain: str) -> Response:
        return await page(request, domain)

    @router.post("/domains/{domain}/dns/{action}")
    async def change(request: Request, domain: str, action: str) -> Response:
        session, who = console.staff(request)
        fields = await console.form(request, session)
        name = fields.get("name", "").strip() or "@"
        rtype = fields.get("type", "").strip().upper()
        value = fields.get("value", "").strip()
        if action == "add":
            call: tuple[Any, ...] = (service.set_dns, who, domain, name, rtype, value)
        elif action == "edit":
            old = fields.get("old", "")
            call = (service.edit_dns, who, domain, name, rtype, old, value)
        elif action == "delete":
            call = (service.delete_dns, who, domain, name, rtype, value or None)
        else:
            return console.render(
                "error.html", session, status=404, title="Not found", error="no such action"
            )
        done, (status, problem) = await console.attempt(*call)
        if problem:
            return await page(request, domain, status, problem, fields)
        verb = {"add": "added", "edit": "changed", "delete": "deleted"}[action]
        return console.done(
            session,
            f"{rtype} record at {name} {verb}; SOA serial now {done['serial']}.",
            url("domains", domain, "dns"),
        )
