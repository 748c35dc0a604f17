"""The public routes mail clients configure themselves with: autoconfig and Autodiscover.

No token, no session: a client asks before it has an account. So the answers reveal only
what DNS already does (which domains are hosted, where the front door is): a domain is
answered when the directory hosts it, asked the same cached way the proxies ask
(:class:`directory.domains.DomainCheck`), and users are never looked up at all, so no
answer can tell whether an address exists. Without ``[provision] front_door`` there is
nothing to announce and every route answers 404.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from directory.domains import DomainCheck
from directory.model import DirectoryUnavailable
from directory.provision.frontdoor import Endpoint, endpoints
from directory.service import Directory
from web.autoconfig import (
    AUTOCONFIG_PREFIX,
    BadRequest,
    autodiscover_address,
    autodiscover_response,
    host_domain,
    split_address,
    thunderbird_config,
)
from web.problems import problem_response

log = logging.getLogger("mailfarm.web")

AUTOCONFIG_PATHS = ("/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml")
AUTODISCOVER_PATHS = ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml")
CACHE = {"Cache-Control": "public, max-age=300"}  # a front door rarely moves; 5 min is fine


class HideQueries(logging.Filter):
    """Drop the query string from access-log lines of the autoconfig paths: Thunderbird
    puts the whole address there (``?emailaddress=``), and the log keeps domains only."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            path, _, _query = args[2].partition("?")
            if path in AUTOCONFIG_PATHS:
                record.args = (*args[:2], path, *args[3:])
        return True


class _Answers:
    """The shared part of every route: which domain, is it hosted, one log line."""

    def __init__(self, offered: tuple[Endpoint, ...], check: DomainCheck | None) -> None:
        self.offered = offered
        self.check = check

    def nothing(self, what: str) -> Response | None:
        """With no front door, 404 for any request, well-formed or not (logged)."""
        if self.check is None:
            return self.done(what, None, problem_response(404, "not found"))
        return None

    async def refusal(self, what: str, domain: str) -> Response | None:
        """None when ``domain`` may be answered, else the answer (logged)."""
        if self.check is None:
            return self.done(what, domain, problem_response(404, "not found"))
        try:
            hosted = await self.check.hosted(domain)
        except DirectoryUnavailable:
            answer = problem_response(503, "the directory is unavailable; try again later")
            return self.done(what, domain, answer)
        return None if hosted else self.done(what, domain, problem_response(404, "not found"))

    def done(self, what: str, domain: str | None, answer: Response) -> Response:
        log.info("web: %s for %s: %d", what, domain or "-", answer.status_code)
        return answer


def build_router(settings: Any) -> APIRouter:
    """The routes, with their own :class:`Directory` when there is a front door to announce
    (built now, before the event loop runs; closed when the app shuts down)."""
    provision = getattr(settings, "provision", None)
    offered = endpoints(provision) if provision is not None else ()
    directory = Directory(settings.directory) if offered else None
    answers = _Answers(offered, DomainCheck(directory) if directory is not None else None)
    router = APIRouter(
        include_in_schema=False, on_shutdown=[directory.close] if directory is not None else []
    )

    def wanted(request: Request, prefix: str) -> str | None:
        """The emailaddress parameter's domain if given (BadRequest if malformed), else
        the one the Host header names."""
        given = request.query_params.get("emailaddress")
        if given is not None:
            return split_address(given)[1]
        return host_domain(request.headers.get("host", ""), prefix)

    async def autoconfig(request: Request, prefix: str) -> Response:
        if (nothing := answers.nothing("autoconfig")) is not None:
            return nothing
        try:
            domain = wanted(request, prefix)
        except BadRequest as exc:
            return answers.done("autoconfig", None, problem_response(400, str(exc)))
        if domain is None:
            return answers.done("autoconfig", None, problem_response(404, "not found"))
        refused = await answers.refusal("autoconfig", domain)
        if refused is not None:
            return refused
        body = thunderbird_config(domain, answers.offered)
        response = Response(body, media_type="application/xml", headers=CACHE)
        return answers.done("autoconfig", domain, response)

    @router.get(AUTOCONFIG_PATHS[0])
    async def autoconfig_host(request: Request) -> Response:
        """Thunderbird's first try: ``autoconfig.<domain>``."""
        return await autoconfig(request, AUTOCONFIG_PREFIX)

    @router.get(AUTOCONFIG_PATHS[1])
    async def autoconfig_well_known(request: Request) -> Response:
        """Thunderbird's second try: the domain's own host name."""
        return await autoconfig(request, "")

    async def autodiscover(request: Request) -> Response:
        if (nothing := answers.nothing("autodiscover")) is not None:
            return nothing
        body = await request.body()  # already capped by web.app.BodyLimit
        try:
            address = autodiscover_address(body)
        except BadRequest as exc:
            return answers.done("autodiscover", None, problem_response(400, str(exc)))
        domain = address.rpartition("@")[2]
        refused = await answers.refusal("autodiscover", domain)
        if refused is not None:
            return refused
        xml = autodiscover_response(address, answers.offered)
        # Not cached: the answer names the address (though it never depends on it).
        response = Response(xml, media_type="text/xml", headers={"Cache-Control": "no-store"})
        return answers.done("autodiscover", domain, response)

    for path in AUTODISCOVER_PATHS:
        router.add_api_route(path, autodiscover, methods=["POST"])
    return router
