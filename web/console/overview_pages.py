"""The pages that read the farm rather than one domain: dashboard, sessions, audit log."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from web.console.core import HEADERS, Console, url


def dashboard_view(snap: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the page shows of :meth:`web.dashboard.Dashboard.snapshot`: sessions are the
    proxied ones (a client still at its login prompt is not a session of a user)."""
    if snap is None:
        return None
    totals = snap.get("totals", {})
    by_protocol = {
        proto: counts.get("proxied", 0) for proto, counts in (totals.get("sessions") or {}).items()
    }
    instances = [
        {**i, "count": sum(c.get("proxied", 0) for c in (i.get("sessions") or {}).values())}
        for i in snap.get("instances", [])
    ]
    return {
        "sessions": sum(by_protocol.values()),
        "by_protocol": by_protocol,
        "by_backend": totals.get("sessions_by_backend") or {},
        "logins_per_minute": totals.get("logins_per_minute"),
        "failed_per_minute": totals.get("failed_logins_per_minute"),
        "failed_total": totals.get("failed_logins_total", 0),
        "backends": snap.get("backends", []),
        "instances": instances,
    }


def register(router: APIRouter, console: Console) -> None:
    service = console.service

    @router.get("/")
    async def dashboard(request: Request) -> Response:
        session, who = console.staff(request)
        if not service.may_role(who.principal.role, "dashboard.read"):
            return RedirectResponse(url("domains"), status_code=303, headers=HEADERS)
        snapshot, (code, problem) = await console.attempt(service.dashboard, who)
        return console.render(
            "dashboard.html",
            session,
            status=code,
            title="Dashboard",
            snap=dashboard_view(snapshot),
            error=problem,
        )

    async def sessions_page(request: Request, status: int = 200, error: str = "") -> Response:
        session, who = console.staff(request)
        user = request.query_params.get("user", "")[:320].strip()
        found, (code, problem) = await console.attempt(service.sessions, who, user or None)
        return console.render(
            "sessions.html",
            session,
            status=code if problem else status,
            title="Sessions",
            user=user,
            found=found or {"sessions": [], "unreachable": []},
            error=problem or error,
        )

    @router.get("/sessions")
    async def sessions(request: Request) -> Response:
        return await sessions_page(request)

    @router.post("/sessions/kick")
    async def kick(request: Request) -> Response:
        session, who = console.staff(request)
        fields = await console.form(request, session)
        user = fields.get("user", "").strip()
        done, (code, problem) = await console.attempt(service.kick, who, user)
        if problem:  # another domain's user answers 404, as a missing one does
            return await sessions_page(request, code, problem)
        return console.done(session, f"Sessions of {done['mail']} kicked.", url("sessions"))

    @router.get("/audit")
    async def audit(request: Request) -> Response:
        session, who = console.staff(request)
        q = request.query_params.get("q", "")[:320]
        entries, (code, problem) = await console.attempt(service.audit_entries, who, q, 500)
        return console.render(
            "audit.html",
            session,
            status=code,
            title="Audit log",
            q=q,
            entries=entries or [],
            error=problem,
        )
