"""What the directory answers, shared by every directory backend and every caller.

The three outcomes of an authentication are kept apart on purpose: a client must never
be told "bad password" because the directory is down.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from directory import movestate


class DirectoryUnavailable(Exception):
    """No directory server could answer (down, timed out, refused our service bind)."""


@dataclass(frozen=True, slots=True)
class Route:
    """Where a user's mailbox lives, as the directory entry says.

    ``port`` is ``None`` when the entry names no port; callers then use their protocol's
    configured ``backend_port``. ``login_disabled`` is set while an admin moves the user.
    """

    uid: str
    dn: str
    host: str
    port: int | None = None
    mail: str | None = None
    routing_address: str | None = None
    login_disabled: bool = False

    @property
    def domain(self) -> str | None:
        """The domain of the entry's own address (``mail``), lower-case; ``None`` without
        one. Never taken from the login: a uid (``alice_example_co_uk``) names no domain."""
        if not self.mail or "@" not in self.mail:
            return None
        return self.mail.rpartition("@")[2].strip().rstrip(".").lower() or None


class AuthOutcome(enum.Enum):
    OK = "ok"
    BAD_PASSWORD = "bad-password"
    NO_USER = "no-user"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class AuthResult:
    outcome: AuthOutcome
    route: Route | None = None
    from_cache: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome is AuthOutcome.OK


class UserSource(Protocol):
    """A synchronous directory backend; the async facade runs it off the event loop.

    ``find`` takes an already-normalised login and returns ``None`` for "no such user".
    ``None`` from ``find`` and ``False`` from ``bind`` are answers; only
    :class:`DirectoryUnavailable` means "could not ask".
    """

    def find(self, login: str) -> Route | None: ...

    def bind(self, dn: str, password: str) -> bool: ...

    def find_domain(self, domain: str) -> bool:
        """Is a mail domain hosted (the ``domain_filter`` matches an entry)?"""
        ...

    def close(self) -> None: ...


_TRUE = {"true", "yes", "1", "on"}


def means_disabled(value: str, now: float | None = None) -> bool:
    """Whether a ``disabled_attribute`` value refuses logins; the provisioning side keeps
    the values that do not when it disables or re-enables a user. A running move's lease
    refuses them until it expires (:mod:`directory.movestate`)."""
    state = movestate.parse(value)
    if state is not None:
        return state.live(now)
    return value.lower() in _TRUE


def route_from_entry(
    dn: str,
    attrs: dict[str, list[str]],
    host_attribute: str,
    port_attribute: str = "",
    disabled_attribute: str = "",
) -> Route | None:
    """Build a Route from an entry's attributes (keys lower-cased); ``None`` if unroutable.

    Shared by the LDAP and the LDIF sources so the two cannot drift apart. An entry without
    a host cannot be routed: answering "no such user" is safer than routing to a guess.
    """

    def first(name: str) -> str | None:
        values = attrs.get(name.lower()) if name else None
        return values[0] if values else None

    host = first(host_attribute)
    uid = first("uid")
    if not host or not uid:
        return None
    port: int | None = None
    port_text = first(port_attribute)
    if port_text is not None and port_text.isdigit() and 0 < int(port_text) < 65536:
        port = int(port_text)
    values = attrs.get(disabled_attribute.lower(), []) if disabled_attribute else []
    disabled = any(means_disabled(v) for v in values)
    return Route(
        uid=uid,
        dn=dn,
        host=host,
        port=port,
        mail=first("mail"),
        routing_address=first("mailRoutingAddress"),
        login_disabled=disabled,
    )
