"""The help desk's console: HTML pages under ``/console`` on the service the API uses."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from web.console import dns_page, domains_page, overview_pages, signin, users_page
from web.console.core import HEADERS, TEMPLATES, Console, CsrfRefused, FormError, SignInNeeded
from web.console.staff_sessions import Sessions
from web.service import Service

STATIC = TEMPLATES.parent / "static"


def install(app: FastAPI, service: Service, settings: Any) -> Console:
    web = settings.web
    secret_file = web.session_secret_file
    # Without a secret file, a random one: sessions then end when the process does.
    secret = secret_file.read_bytes().strip() if secret_file else secrets.token_bytes(32)
    console = Console(service, Sessions(secret), secure_cookies=bool(web.tls))
    router = APIRouter(prefix="/console", include_in_schema=False)
    signin.register(router, console, settings, web)
    overview_pages.register(router, console)
    domains_page.register(router, console)
    users_page.register(router, console)
    dns_page.register(router, console)

    @router.get("/static/console.css")
    async def stylesheet() -> Response:
        return FileResponse(STATIC / "console.css", media_type="text/css", headers=HEADERS)

    app.include_router(router)

    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        return RedirectResponse("/console/", status_code=303, headers=HEADERS)

    @app.exception_handler(SignInNeeded)
    async def sign_in_needed(request: Request, exc: SignInNeeded) -> Response:
        target = "/console/signin"
        if exc.back and exc.back != "/console/" and request.method == "GET":
            target = signin.url_with_back(exc.back)
        return RedirectResponse(target, status_code=303, headers=HEADERS)

    @app.exception_handler(CsrfRefused)
    async def csrf_refused(request: Request, exc: CsrfRefused) -> Response:
        return console.render(
            "error.html",
            console.session_of(request),
            status=403,
            title="Refused",
            error="This form has expired or did not come from this console "
            "(its CSRF token is missing or wrong). Reload the page and try again.",
        )

    @app.exception_handler(FormError)
    async def form_error(request: Request, exc: FormError) -> Response:
        return console.render(
            "error.html",
            console.session_of(request),
            status=400,
            title="Bad form",
            error=str(exc),
        )

    def html_error(request: Request, status: int, title: str, detail: str) -> Response:
        return console.render(
            "error.html", console.session_of(request), status=status, title=title, error=detail
        )

    app.state.html_error = html_error
    return console
