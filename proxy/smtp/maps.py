"""The Postfix lookup maps, as pure data: request keys in, answers out, no I/O.

Postfix hands a map the whole key (``Alice+lists@Example.CO.UK`` for a recipient), so
case folding and extension stripping happen here, the way Postfix itself would do them
for a local table. Which directory answer becomes which reply is decided once, in
:func:`render`, for both wire protocols (socketmap and tcp_table).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from directory.model import Route
from directory.names import MAX_LOGIN_LENGTH, split_address

MAP_NAMES = ("domains", "mailboxes", "transport", "aliases")
MAX_DOMAIN_LENGTH = 253
MAX_MAP_NAME = 64
_NAME_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


class Status(enum.Enum):
    FOUND = "found"
    NOT_FOUND = "not-found"
    TEMP = "temp"  # the directory is down: Postfix must defer, never bounce
    PERM = "perm"  # a request we cannot answer (unknown map): also an error for Postfix


@dataclass(frozen=True, slots=True)
class Answer:
    status: Status
    text: str = ""


NOT_FOUND = Answer(Status.NOT_FOUND)


class BadRequest(ValueError):
    """A socketmap request that is not ``name SP key``; the text is safe to send back."""


def parse_socketmap(payload: bytes) -> tuple[str, bytes]:
    """Split a socketmap request payload into its map name and raw key."""
    name, sep, key = payload.partition(b" ")
    if not sep or not name or not key:
        raise BadRequest("request must be 'name key'")
    if len(name) > MAX_MAP_NAME or not all(ch in _NAME_CHARS for ch in name):
        raise BadRequest("bad map name")
    return name.decode("ascii").lower(), key


def decode_key(raw: bytes) -> str | None:
    """UTF-8 text of a key, or ``None`` when it cannot name anything (the map answers
    "not found" rather than failing, as a local table would)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    text = text.strip()
    if not text or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        return None
    return text


def normalise_domain(text: str) -> str | None:
    """``Example.CO.UK.`` → ``example.co.uk``; ``None`` for anything that is no domain.

    Postfix also asks for parent domains as ``.co.uk``; those never name a hosted domain.
    Underscores are allowed because the directory allows them (``under_score.org``).
    """
    domain = text.strip().lower().removesuffix(".")
    if not domain or len(domain) > MAX_DOMAIN_LENGTH or domain.startswith("."):
        return None
    if any(ch.isspace() or ch in '@[]()<>,;:\\"/%*' or ord(ch) < 0x20 for ch in domain):
        return None
    if any(not label for label in domain.split(".")):
        return None
    return domain


def address_candidates(text: str, delimiters: str) -> list[str]:
    """The addresses to try for a recipient key, most specific first.

    As Postfix does for its own tables: the address as given (case-folded), then without
    its ``+extension`` when ``delimiters`` (``recipient_delimiter``, a set of characters)
    occur in the local part. Keys that are no address (a bare domain, ``@domain``
    catch-all probes, a uid) give no candidates: a mailbox is always asked for by address.
    """
    address = text.strip().lower()
    if len(address) > MAX_LOGIN_LENGTH:
        return []
    parts = split_address(address)
    if parts is None:
        return []
    local, domain = parts
    if normalise_domain(domain) is None:
        return []
    candidates = [f"{local}@{domain}"]
    cut = min((i for i, ch in enumerate(local) if ch in delimiters), default=-1)
    if cut > 0:
        candidates.append(f"{local[:cut]}@{domain}")
    return candidates


def render_transport(template: str, host: str) -> str:
    """Fill ``{host}`` in the ``[lookup] transport`` template.

    An IPv6 literal is bracketed, as Postfix's ``inet:host:port`` next-hop syntax needs.
    Plain replacement, not ``str.format``: other braces in an operator's template stay.
    """
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return template.replace("{host}", host)


def route_answer(
    map_name: str, route: Route | None, template: str, alias: str | None = None
) -> Answer:
    """The answer of a per-user map for a directory route (``None``: no such user).

    ``alias`` is the name the user's backend files mail under when that is not the address
    (:func:`directory.mailstores.postfix_alias`): the aliases map hands it to Postfix.
    """
    if route is None:
        return NOT_FOUND
    if map_name == "mailboxes":
        return Answer(Status.FOUND, route.uid)
    if map_name == "transport":
        if route.login_disabled:
            # The mailbox is being moved: hold the mail in Postfix's queue until it lands.
            return Answer(Status.TEMP, "mailbox is being moved")
        return Answer(Status.FOUND, render_transport(template, route.host))
    if map_name == "aliases":
        if route.routing_address:
            return Answer(Status.FOUND, route.routing_address)
        if alias:
            return Answer(Status.FOUND, alias)
        return NOT_FOUND
    raise ValueError(f"{map_name!r} is not a per-user map")


def render(answer: Answer) -> tuple[bytes, int]:
    """``(socketmap payload, tcp_table status)`` for an answer: one table for both."""
    text = answer.text.encode("utf-8", "replace")
    if answer.status is Status.FOUND:
        return b"OK " + text, 200
    if answer.status is Status.NOT_FOUND:
        return b"NOTFOUND ", 500
    if answer.status is Status.TEMP:
        return b"TEMP " + text, 400
    return b"PERM " + text, 400
