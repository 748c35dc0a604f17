"""The contract between the session core and a protocol's pure pre-login dialogue.

A dialogue turns client bytes into actions for the core (send these bytes, upgrade to TLS,
check these credentials, close) and words each outcome in its own protocol. It never does
I/O, so every protocol's login phase is unit-testable without a socket.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from proxy.sasl import Credentials


@dataclass(frozen=True, slots=True)
class Send:
    data: bytes


@dataclass(frozen=True, slots=True)
class StartTls:
    """Upgrade the client connection now (the dialogue already queued its go-ahead)."""


@dataclass(frozen=True, slots=True)
class Authenticate:
    credentials: Credentials


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection after what was sent so far (LOGOUT, QUIT, or the dialogue gave
    up on the client); ``outcome`` is what the session's log line says."""

    outcome: str = "logout"


Action = Send | StartTls | Authenticate | Close


class Failure(enum.Enum):
    """Every way a login can fail, each worded once per protocol (see each dialogue)."""

    AUTH_FAILED = "auth-failed"  # wrong password or no such user: indistinguishable on purpose
    UNAVAILABLE = "directory-unavailable"
    BACKEND_UNAVAILABLE = "backend-unavailable"
    LOGIN_DISABLED = "login-disabled"  # the user is being moved between backends
    TOO_MANY_FAILURES = "too-many-failures"
    TIMEOUT = "timeout"
    SHUTDOWN = "shutdown"
    CONNECTION_LIMIT = "connection-limit"  # too many connections, in total or from one address
    KICKED = "kicked"  # an administrator closed the session (e.g. the user is being moved)


@dataclass(frozen=True, slots=True)
class BackendInfo:
    """What a backend login learnt that the client's success reply must carry."""

    capabilities: tuple[str, ...] = ()
    greeting: bytes = b""


@dataclass(frozen=True, slots=True)
class DialogueEnv:
    """What a dialogue must know about its connection; all decided by the core."""

    tls_offered: bool  # a TLS context exists and the connection is not yet encrypted
    tls_active: bool
    plaintext_allowed: bool  # trusted network or [proxy] plaintext_auth
    max_line: int
    max_literal: int


E = TypeVar("E")

# After one of these the dialogue must wait for the core before reading further input.
_STOPPING = (Authenticate, StartTls, Close)


def run_events(
    next_event: Callable[[], E | None],
    handle: Callable[[E], list[Action]],
    reading: Callable[[], bool],
) -> list[Action]:
    """The loop every dialogue's ``resume`` runs: take parser events while the dialogue is
    reading, stop after an action the core must carry out first (pipelined input stays
    buffered in the parser for later, or for the backend)."""
    actions: list[Action] = []
    while reading():
        event = next_event()
        if event is None:
            break
        actions.extend(handle(event))
        if actions and isinstance(actions[-1], _STOPPING):
            break
    return actions


class Dialogue(Protocol):
    def greeting(self) -> bytes: ...

    def receive(self, data: bytes) -> list[Action]:
        """Parse client bytes; stops after an Authenticate, StartTls or Close action."""
        ...

    def resume(self) -> list[Action]:
        """Continue with bytes already buffered (after a failed login was answered)."""
        ...

    def tls_started(self) -> list[Action] | None:
        """The handshake is done; what to send now (ManageSieve re-sends capabilities)."""
        ...

    def failed(self, failure: Failure) -> bytes:
        """The reply to the pending login (or an untagged goodbye for session-wide ones)."""
        ...

    def succeeded(self, backend: BackendInfo) -> bytes: ...

    def take_pending(self) -> bytes:
        """Client bytes received after the successful login, to go to the backend first."""
        ...
