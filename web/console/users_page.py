"""A domain's users (search, pages, add) and one user's page (password, disable, quota,
move with live progress, kick, delete)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from web.console.core import Console, url
from web.users import PAGE_SIZE

MAX_QUERY = 320


def move_percent(job: dict[str, Any]) -> int:
    """How far a move is, for the progress bar: bytes when the source told them, else
    messages; 100 only once the job says done (a copy at 100 % still has to switch)."""
    if job.get("state") == "done":
        return 100
    p = job.get("progress") or {}
    done, total = p.get("bytes_done", 0), p.get("bytes_total", 0)
    if not total:
        done, total = p.get("messages_done", 0), p.get("messages_total", 0)
    if not total:
        return 0
    return max(0, min(99, int(100 * done / total)))


def parse_quota(text: str) -> tuple[int | None, str]:
    """(KiB or None for no quota, error)."""
    text = text.strip()
    if not text:
        return None, ""
    if not text.isdigit() or len(text) > 15:
        return None, "Quota: a whole number of KiB, or empty for none."
    return int(text), ""


def register(router: APIRouter, console: Console) -> None:
    service = console.service
    hosts = list(service.settings.provision.hosts)

    async def listing(
        request: Request, domain: str, status: int = 200, error: str = "", values: Any = None
    ) -> Response:
        session, who = console.staff(request)
        q = request.query_params.get("q", "")[:MAX_QUERY]
        raw_page = request.query_params.get("page", "1")
        page = int(raw_page) if raw_page.isdigit() and 0 < int(raw_page) < 100_000 else 1
        found, (code, problem) = await console.attempt(service.users, who, domain, q, page)
        if found is None:
            return console.render("error.html", session, status=code, title="Users", error=problem)
        pages = max(1, -(-found["total"] // PAGE_SIZE))
        return console.render(
            "users.html",
            session,
            status=status,
            title=f"Users of {found['domain']}",
            domain=found["domain"],
            found=found,
            pages=pages,
            q=q,
            hosts=hosts,
            error=error,
            values=values or {},
        )

    @router.get("/domains/{domain}/users")
    async def users(request: Request, domain: str) -> Response:
        return await listing(request, domain)

    @router.post("/domains/{domain}/users")
    async def add_user(request: Request, domain: str) -> Response:
        session, who = console.staff(request)
        fields = await console.form(request, session)
        kept = {k: v for k, v in fields.items() if k != "password"}  # never sent back
        local = fields.get("address", "").strip()
        address = local if "@" in local else f"{local}@{domain}"
        quota, bad = parse_quota(fields.get("quota", ""))
        if bad:
            return await listing(request, domain, 422, bad, kept)
        host = fields.get("host") or None
        made, (status, problem) = await console.attempt(
            service.add_user, who, address, fields.get("password", ""), host, quota
        )
        if problem:
            return await listing(request, domain, status, problem, kept)
        return console.done(
            session, f"User {made['mail']} added on {made['mailHost']}.", url("users", made["mail"])
        )

    async def user_page(
        request: Request, address: str, status: int = 200, error: str = "", values: Any = None
    ) -> Response:
        session, who = console.staff(request)
        user, (code, problem) = await console.attempt(service.user, who, address)
        if user is None:
            return console.render("error.html", session, status=code, title="User", error=problem)
        return console.render(
            "user.html",
            session,
            status=status,
            title=user["mail"],
            user=user,
            domain=user["mail"].rpartition("@")[2],
            hosts=[h for h in hosts if h != user["mailHost"]],
            quota_attribute=service.settings.directory.quota_attribute,
            error=error,
            values=values or {},
        )

    @router.get("/users/{address}")
    async def user(request: Request, address: str) -> Response:
        return await user_page(request, address)

    @router.post("/users/{address}/{action}")
    async def change(request: Request, address: str, action: str) -> Response:
        session, who = console.staff(request)
        fields = await console.form(request, session)
        kept = {k: v for k, v in fields.items() if k != "password"}
        call: tuple[Any, ...]
        if action == "password":
            call = (service.set_password, who, address, fields.get("password", ""))
            message = "Password changed."
        elif action in ("disable", "enable"):
            call = (service.set_disabled, who, address, action == "disable")
            message = "Logins refused." if action == "disable" else "Logins allowed again."
        elif action == "quota":
            quota, bad = parse_quota(fields.get("quota", ""))
            if bad:
                return await user_page(request, address, 422, bad, kept)
            call = (service.set_quota, who, address, quota)
            message = "Quota set." if quota is not None else "Quota removed."
        elif action == "kick":
            call = (service.kick, who, address)
            message = "Sessions kicked."
        elif action == "move":
            no_sieve = fields.get("no_sieve") == "yes"  # the old backend has no ManageSieve
            call = (service.move, who, address, fields.get("to", ""), False, False, no_sieve)
            message = "Move started."
        elif action == "delete":
            if fields.get("confirm", "").strip().lower() != address.lower():
                wrong = f"Type the address, {address}, to delete this user."
                return await user_page(request, address, 422, wrong, kept)
            call = (service.delete_user, who, address)
            message = f"User {address} deleted."
        else:
            return console.render(
                "error.html", session, status=404, title="Not found", error="no such action"
            )
        done, (status, problem) = await console.attempt(*call)
        if problem:
            return await user_page(request, address, status, problem, kept)
        if action == "move":
            return console.done(session, message, url("jobs", done["job"]))
        if action == "delete":
            domain = address.rpartition("@")[2]
            return console.done(session, message, url("domains", domain, "users"))
        return console.done(session, message, url("users", address))

    @router.get("/jobs/{job_id}")
    async def job(request: Request, job_id: str) -> Response:
        session, who = console.staff(request)
        found, (code, problem) = await console.attempt(service.job, who, job_id[:64])
        if found is None:
            return console.render("error.html", session, status=code, title="Job", error=problem)
        running = found["state"] == "running"
        return console.render(
            "job.html",
            session,
            title=f"Moving {found['subject']}",
            job=found,
            percent=move_percent(found),
            headers={"Refresh": "1"} if running else None,
        )
