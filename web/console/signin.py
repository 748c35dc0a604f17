"""Signing staff in and out: an LDAP bind as their entry (:mod:`web.staff`).

Each failure makes the next attempt from that address, and for that login, wait longer
(:class:`web.staff.FailedLogins`); the wait is an ``asyncio.sleep``, so a guesser slows
only itself. The sign-in form is CSRF-protected too (a pre-session cookie and its HMAC),
so another site cannot sign a browser into an account of its choosing.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from web.audit import Actor
from web.console.core import HEADERS, Console, CsrfRefused, parse_form
from web.console.staff_sessions import COOKIE
from web.staff import FailedLogins, StaffDirectoryDown, failure_keys, sign_in
from web.tokens import Principal

PRE_COOKIE = "mailfarm_signin"
MAX_LOGIN = 256


def safe_back(back: str | None) -> str:
    """Only a console path: a sign-in link must not send anyone to another site."""
    if back and back.startswith("/console/") and "//" not in back and "\\" not in back:
        return back
    return "/console/"


def register(router: APIRouter, console: Console, settings: Any, web: Any) -> None:
    failures = FailedLogins()

    def form_page(
        request: Request, status: int = 200, error: str = "", login: str = "", back: str = ""
    ) -> Response:
        nonce = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(18)
        page = console.render(
            "signin.html",
            None,
            status=status,
            title="Sign in",
            error=error,
            login=login,
            back=safe_back(back or request.query_params.get("back")),
            token=console.sessions.signin_token(nonce),
        )
        page.set_cookie(PRE_COOKIE, nonce, max_age=3600, **console.cookie_args())
        return page

    @router.get("/signin")
    async def signin_form(request: Request) -> Response:
        if console.session_of(request) is not None:
            return RedirectResponse("/console/", status_code=303, headers=HEADERS)
        return form_page(request)

    @router.post("/signin")
    async def signin(request: Request) -> Response:
        fields = parse_form(await request.body())
        nonce = request.cookies.get(PRE_COOKIE)
        if not console.sessions.check_signin(nonce, fields.get("token")):
            raise CsrfRefused()
        login = fields.get("login", "").strip()[:MAX_LOGIN]
        password = fields.get("password", "")
        back = fields.get("back", "")
        ip = request.client.host if request.client else "-"
        keys = failure_keys(ip, login)
        wait = max(failures.delay(key) for key in keys)
        if wait:
            await asyncio.sleep(wait)
        try:
            principal = await console.call(sign_in, settings, web, login, password)
        except StaffDirectoryDown:
            return form_page(
                request, 503, "The directory cannot be reached: try again shortly.", login, back
            )
        who = Actor(principal or Principal("-", frozenset(), f"staff:{login}"), ip, "console")
        if principal is None:
            for key in keys:
                failures.failed(key)
            console.service.audit.record(who, "staff.signin", login, None, "failed")
            return form_page(request, 401, "Wrong user name or password.", login, back)
        failures.succeeded(keys[1])  # the login's count; the address keeps its record
        console.service.audit.record(who, "staff.signin", login, None, "ok")
        cookie, _session = console.sessions.start(principal)
        answer = RedirectResponse(safe_back(back), status_code=303, headers=HEADERS)
        answer.set_cookie(COOKIE, cookie, **console.cookie_args())
        answer.delete_cookie(PRE_COOKIE, path="/")
        return answer

    @router.post("/signout")
    async def signout(request: Request) -> Response:
        session, who = console.staff(request)
        await console.form(request, session)
        console.sessions.end(request.cookies.get(COOKIE))
        console.service.audit.record(who, "staff.signout", who.principal.source, None, "ok")
        answer = RedirectResponse("/console/signin", status_code=303, headers=HEADERS)
        answer.delete_cookie(COOKIE, path="/")
        return answer


def url_with_back(back: str) -> str:
    from urllib.parse import quote

    return "/console/signin?back=" + quote(safe_back(back), safe="/@")
