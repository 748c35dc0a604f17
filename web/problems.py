"""RFC 9457 ``application/problem+json`` for every error the API answers, FastAPI's own too.

The status follows the CLI's exit-code classes (:mod:`directory.provision`), so a billing
system and a shell script read the same failure the same way. No handler ever echoes what
a client sent (a rejected password must not come back in a 422).
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from common.configschema import ConfigError
from directory.provision import (
    NotFound,
    PartlyApplied,
    ProvisionError,
    Refused,
    Unavailable,
    UsageError,
)

log = logging.getLogger("mailfarm.web")
MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://mailfarm.invalid/problems/"  # stable identifiers, not fetched

TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Refused",
    413: "Request body too large",
    422: "Invalid input",
    500: "Internal error",
    501: "Not implemented",
    503: "Service unavailable",
}
KINDS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "refused",
    413: "too-large",
    422: "invalid",
    500: "internal",
    501: "not-implemented",
    503: "unavailable",
}


class Problem(Exception):
    """An error answered as problem+json; ``extra`` members are added to the object."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field
        self.headers = headers or {}
        self.extra = extra


def problem_response(
    status: int,
    detail: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": TYPE_BASE + KINDS.get(status, str(status)),
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if field is not None:
        body["field"] = field
    body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=MEDIA_TYPE)


def status_of(exc: ProvisionError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Unavailable):
        return 503
    if isinstance(exc, UsageError):
        return 422
    if isinstance(exc, Refused):
        return 409
    return 409  # a plain ProvisionError is the CLI's exit 1: refused


def install(app: FastAPI) -> None:
    """Register the handlers that make every error, FastAPI's included, problem+json."""

    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            exc.status, exc.detail, field=exc.field, headers=exc.headers, **exc.extra
        )

    @app.exception_handler(ProvisionError)
    async def on_provision(request: Request, exc: ProvisionError) -> JSONResponse:
        extra: dict[str, Any] = {}
        if isinstance(exc, PartlyApplied):
            extra["data"] = exc.data
        return problem_response(status_of(exc), str(exc), **extra)

    @app.exception_handler(ConfigError)
    async def on_config(request: Request, exc: ConfigError) -> JSONResponse:
        # The server's configuration cannot do this (e.g. no disabled_attribute): not the
        # client's fault, and not something retrying fixes until an operator acts.
        return problem_response(503, str(exc), config_key=f"[{exc.section}] {exc.key}")

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _field(e.get("loc", ())), "message": str(e.get("msg", "invalid"))}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"field": None, "message": "invalid request"}
        detail = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
        return problem_response(422, detail, field=first["field"], errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else TITLES.get(exc.status_code, "")
        page = _page(request, exc.status_code, detail)
        if page is not None:
            return page
        return problem_response(exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        # The frames, not the message: a message may quote what the client sent.
        frames = "".join(traceback.format_tb(exc.__traceback__))
        log.error(
            "web: %s %s failed: %s\n%s",
            request.method,
            request.url.path,
            type(exc).__name__,
            frames,
        )
        page = _page(request, 500, "internal error (see the server log)")
        return page or problem_response(500, "internal error (see the server log)")


def _page(request: Request, status: int, detail: str) -> Response | None:
    """The console's HTML error page for its own paths (the API stays problem+json)."""
    html = getattr(request.app.state, "html_error", None)
    if html is None or not request.url.path.startswith("/console/"):
        return None
    return html(request, status, TITLES.get(status, "Error"), detail)


def _field(loc: Any) -> str | None:
    """``("body", "password")`` → ``"password"``; ``("path", "address")`` → ``"address"``."""
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None
