"""Bearer tokens and the role rules, checked on the server for every request.

A domain-admin asking for another domain's user or DNS gets exactly the 404 a missing one
gets, so its answers never tell whether another customer's names exist.
"""

from __future__ import annotations

from fastapi import Request

from web.problems import Problem
from web.tokens import ADMIN, DOMAIN_ADMIN, HELPDESK, Principal, Tokens

# action -> roles allowed (a domain-admin also only within its domains)
RULES: dict[str, tuple[str, ...]] = {
    "domains.read": (ADMIN, HELPDESK, DOMAIN_ADMIN),
    "domains.add": (ADMIN, HELPDESK),  # "a domain by just a few clicks", but not its deletion
    "domains.delete": (ADMIN,),
    "users.read": (ADMIN, HELPDESK, DOMAIN_ADMIN),
    "users.write": (ADMIN, HELPDESK, DOMAIN_ADMIN),  # add, password, disable/enable
    "users.delete": (ADMIN, DOMAIN_ADMIN),
    "users.place": (ADMIN, HELPDESK),  # choose a backend: add --host, move
    "dns.read": (ADMIN, HELPDESK, DOMAIN_ADMIN),
    "dns.write": (ADMIN, DOMAIN_ADMIN),
    "sessions.read": (ADMIN, HELPDESK, DOMAIN_ADMIN),  # a domain-admin: its domains' users
    "sessions.kick": (ADMIN, HELPDESK, DOMAIN_ADMIN),
    "farm.internals": (ADMIN, HELPDESK),  # backend hosts, instance URLs, their errors
    "audit.read": (ADMIN, HELPDESK, DOMAIN_ADMIN),  # a domain-admin: its domains' entries
    "dashboard.read": (ADMIN, HELPDESK),
}


def authenticate(request: Request, tokens: Tokens) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    principal = tokens.find(token.strip()) if scheme.lower() == "bearer" and token else None
    if principal is None:
        raise Problem(
            401,
            "a valid API token is required: Authorization: Bearer TOKEN",
            headers={"WWW-Authenticate": 'Bearer realm="mailfarm"'},
        )
    request.state.principal = principal
    return principal


def require(principal: Principal, action: str) -> None:
    if principal.role not in RULES[action]:
        raise Problem(403, f"role {principal.role} may not do {action}")


def require_domain(principal: Principal, action: str, domain: str, hidden: str) -> None:
    """``hidden`` is the NotFound detail a missing object of that name would give."""
    require(principal, action)
    if not principal.owns(domain):
        raise Problem(404, hidden)
