"""The ASGI application: routes, problem+json handlers, and the guards that run first.

The token is checked before the body is read, and the body is capped before it is
parsed: an unauthenticated client learns nothing and costs next to nothing.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from directory.settings import ToolConfig
from web import autoconfig_routes, problems
from web.api import build_router
from web.audit import Audit
from web.auth import authenticate
from web.jobs import Jobs
from web.problems import Problem, problem_response, status_of
from web.service import Service
from web.tokens import Tokens

MAX_BODY = 64 * 1024  # the largest legitimate body is a DNS value or a password
OPENAPI = "/api/v1/openapi.json"
log = logging.getLogger("mailfarm.web")


class BodyLimit:
    """Refuse a body over ``limit`` bytes with 413, announced or chunked."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        too_large = problem_response(413, f"request bodies are limited to {self.limit} bytes")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await too_large(scope, receive, send)
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                await too_large(scope, receive, send)
                return
            if not message.get("more_body"):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


def _describe(exc: Exception) -> dict[str, Any]:
    from common.configschema import ConfigError
    from directory.provision import ProvisionError

    if isinstance(exc, ProvisionError):
        status = status_of(exc)
    elif isinstance(exc, ConfigError):
        status = 503
    else:
        log.error("web: job failed: %s", type(exc).__name__)
        return {"status": 500, "title": "Internal error", "detail": "see the server log"}
    return json.loads(problem_response(status, str(exc)).body)


def create_app(
    settings: ToolConfig, tokens: Tokens, audit: Audit | None = None, dashboard: Any = None
) -> FastAPI:
    app = FastAPI(
        title="mailfarm",
        version="1",
        summary="Users, moves, DNS and sessions of a mailfarm, for billing systems",
        openapi_url=OPENAPI,
        docs_url=None,
        redoc_url=None,
    )
    problems.install(app)
    app.state.tokens = tokens
    service = Service(settings, Jobs(_describe), audit or Audit(), dashboard)
    app.state.service = service
    app.include_router(build_router(service))
    app.include_router(autoconfig_routes.build_router(settings))  # public: mail clients
    if getattr(settings, "web", None) is not None:
        from web.console import install

        install(app, service, settings)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi() -> dict[str, Any]:
        return app.openapi()

    @app.middleware("http")
    async def check_token(request: Request, call_next: Any) -> Any:
        path = request.url.path
        if path.startswith("/api/") and path != OPENAPI:
            try:
                who = authenticate(request, tokens)
            except Problem as exc:
                return problem_response(exc.status, exc.detail, headers=exc.headers)
            log.info("web: %s %s by %s (%s)", request.method, path, who.role, who.source)
        return await call_next(request)

    app.add_middleware(BodyLimit)
    return app
