"""What every console page shares: the signed-in check, CSRF, rendering and error pages.

Pages are server-side Jinja2 templates with autoescaping on for every template, so a name
like ``<script>`` is text wherever it is shown. Responses forbid framing and inline
scripts (Content-Security-Policy) and are never cached: they show users' data.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from common.configschema import ConfigError
from directory.provision import ProvisionError
from web.audit import Actor
from web.console.staff_sessions import COOKIE, Sessions, StaffSession, same_token
from web.problems import Problem, status_of
from web.service import Service

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
MAX_FIELDS = 64
log = logging.getLogger("mailfarm.web")

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class FormError(Exception):
    pass


class SignInNeeded(Exception):
    """Raised by :meth:`Console.staff`; the app turns it into a redirect to sign-in."""

    def __init__(self, back: str) -> None:
        self.back = back


class CsrfRefused(Exception):
    pass


def parse_form(body: bytes) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body; the last value of a repeated field
    wins. Malformed or hostile bodies raise :class:`FormError`, never anything else."""
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(
            text, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FIELDS
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormError(f"the form could not be read: {exc}") from None
    return {key: value for key, value in pairs if "\x00" not in key + value}


def explain(exc: Exception) -> tuple[int, str]:
    """(status, message) for a refused action, as the API would answer it."""
    if isinstance(exc, Problem):
        return exc.status, exc.detail
    if isinstance(exc, ProvisionError):
        return status_of(exc), str(exc)
    if isinstance(exc, ConfigError):
        return 503, f"the server's configuration does not allow this: {exc}"
    raise exc


def url(*parts: str, **query: str | int) -> str:
    """A console URL; each part is quoted, so a name never breaks out of its segment."""
    path = "/console/" + "/".join(quote(p, safe="@") for p in parts)
    pairs = [f"{k}={quote(str(v), safe='')}" for k, v in query.items() if v not in ("", None)]
    return path + ("?" + "&".join(pairs) if pairs else "")


def utc(stamp: Any) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(stamp)))
    except (TypeError, ValueError, OverflowError):
        return ""


class Console:
    def __init__(
        self,
        service: Service,
        sessions: Sessions,
        secure_cookies: bool,
        dashboard: Any = None,
    ) -> None:
        self.service = service
        self.sessions = sessions
        self.secure = secure_cookies
        self.dashboard = dashboard
        self.env = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals["url"] = url
        self.env.filters["utc"] = utc

    # -- who is asking ----------------------------------------------------------------

    def session_of(self, request: Request) -> StaffSession | None:
        return self.sessions.find(request.cookies.get(COOKIE))

    def staff(self, request: Request) -> tuple[StaffSession, Actor]:
        session = self.session_of(request)
        if session is None:
            raise SignInNeeded(request.url.path)
        ip = request.client.host if request.client else "-"
        return session, Actor(session.principal, ip, "console")

    async def form(self, request: Request, session: StaffSession) -> dict[str, str]:
        """The posted form, once its CSRF token matched this session's."""
        if request.headers.get("content-type", "").split(";")[0].strip() != (
            "application/x-www-form-urlencoded"
        ):
            raise CsrfRefused()
        fields = parse_form(await request.body())
        if not same_token(session.csrf, fields.get("csrf")):
            raise CsrfRefused()
        return fields

    # -- answers ----------------------------------------------------------------------

    def render(
        self,
        template: str,
        session: StaffSession | None,
        status: int = 200,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        flash = []
        if session is not None:
            flash, session.flash = session.flash, []
        page = self.env.get_template(template).render(
            me=session.principal if session else None,
            csrf=session.csrf if session else "",
            may=(lambda action: self.service.may_role(session.principal.role, action))
            if session
            else (lambda action: False),
            flash=flash,
            **context,
        )
        return HTMLResponse(page, status_code=status, headers={**HEADERS, **(headers or {})})

    def done(self, session: StaffSession, message: str, to: str) -> Response:
        """Post/redirect/get: a reload never repeats the change."""
        session.flash.append(message)
        return RedirectResponse(to, status_code=303, headers=HEADERS)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await run_in_threadpool(fn, *args)

    async def attempt(self, fn: Callable[..., Any], *args: Any) -> tuple[Any, tuple[int, str]]:
        """(result, (200, "")) or (None, (status, message)) for a refused call."""
        try:
            return await self.call(fn, *args), (200, "")
        except Exception as exc:  # explain() re-raises what is not a refusal
            return None, explain(exc)

    def cookie_args(self) -> dict[str, Any]:
        return {
            "httponly": True,
            "secure": self.secure,
            "samesite": "strict",
            "path": "/",
        }
