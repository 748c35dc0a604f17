"""The domains pages: search, add, and delete with the name typed again."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from web.console.core import Console, url


def split_list(text: str) -> list[str]:
    """A form field of several values: commas, spaces or new lines between them."""
    return [part for part in text.replace(",", " ").split() if part]


def register(router: APIRouter, console: Console) -> None:
    service = console.service

    async def listing(
        request: Request, status: int = 200, error: str = "", values: dict | None = None
    ) -> Response:
        session, who = console.staff(request)
        q = request.query_params.get("q", "")[:253]
        domains, (code, problem) = await console.attempt(service.domains, who, q)
        return console.render(
            "domains.html",
            session,
            status=status if not problem else code,
            title="Domains",
            q=q,
            domains=domains or [],
            error=error or problem,
            values=values or {},
        )

    @router.get("/domains")
    async def domains(request: Request) -> Response:
        return await listing(request)

    @router.post("/domains")
    async def add_domain(request: Request) -> Response:
        session, who = console.staff(request)
        fields = await console.form(request, session)
        name = fields.get("name", "").strip()
        args = (split_list(fields.get(k, "")) for k in ("mx", "ns", "a"))
        made, (status, problem) = await console.attempt(service.add_domain, who, name, *args)
        if problem:
            return await listing(request, status, problem, fields)
        return console.done(
            session, f"Domain {made['domain']} added.", url("domains", made["domain"], "users")
        )

    @router.get("/domains/{domain}/delete")
    async def confirm_delete(request: Request, domain: str) -> Response:
        return await delete_form(request, domain)

    async def delete_form(
        request: Request, domain: str, status: int = 200, error: str = ""
    ) -> Response:
        session, who = console.staff(request)
        found, (code, problem) = await console.attempt(service.domain, who, domain)
        if problem:
            return console.render(
                "error.html", session, status=code, title="Not available", error=problem
            )
        return console.render(
            "domain_delete.html",
            session,
            status=status,
            title=f"Delete {domain}",
            domain=found,
            error=error,
        )

    @router.post("/domains/{domain}/delete")
    async def delete_domain(request: Request, domain: str) -> Response:
        session, who = console.staff(request)
        fields = await console.form(request, session)
        if fields.get("confirm", "").strip().lower() != domain.lower():
            return await delete_form(
                request, domain, 422, f"Type the domain's name, {domain}, to delete it."
            )
        force = fields.get("force") == "yes"
        gone, (status, problem) = await console.attempt(service.delete_domain, who, domain, force)
        if problem:
            return await delete_form(request, domain, status, problem)
        users = len(gone["deleted_users"])
        return console.done(
            session, f"Domain {gone['domain']} deleted ({users} users).", url("domains")
        )
