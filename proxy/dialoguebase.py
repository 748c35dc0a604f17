"""What every protocol's login dialogue shares: its states, the read loop, and the shape of
one SASL turn (pure, no I/O).

IMAP, POP3 and ManageSieve each word their replies their own way (a tagged BAD, an -ERR, a
NO with a quoted string; a challenge as ``+ <base64>`` or as a quoted string), so those stay
in each protocol's dialogue, as the two hooks below. When a SASL exchange goes on, stops or
hands over the credentials, and how input is read meanwhile, is the same for all of them and
lives here once.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

from proxy.actions import Action, Authenticate, Failure, run_events
from proxy.sasl import Challenge, Credentials, SaslError, SaslExchange

#: Failures after which the session ends, whatever the protocol; the others answer one login
#: and let the client retry.
SESSION_ENDING = frozenset(
    {
        Failure.TOO_MANY_FAILURES,
        Failure.TIMEOUT,
        Failure.SHUTDOWN,
        Failure.CONNECTION_LIMIT,
        Failure.KICKED,
    }
)


class State(enum.Enum):
    COMMANDS = "commands"
    SASL = "sasl"
    WAITING = "waiting"
    DONE = "done"


class LoginDialogue:
    """Base of the protocol dialogues. A subclass sets ``reader`` (its parser, with
    ``feed`` and ``next_event``) and implements ``_event``, ``_sasl_challenge`` and
    ``_sasl_refused``."""

    reader: Any
    state: State
    sasl: SaslExchange | None

    # -- input ------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Action]:
        self.reader.feed(data)
        return self.resume()

    def resume(self) -> list[Action]:
        if self.state is State.WAITING:
            self.state = State.COMMANDS
        return run_events(self.reader.next_event, self._event, self._reading)

    def _reading(self) -> bool:
        return self.state in (State.COMMANDS, State.SASL)

    def _event(self, event: Any) -> list[Action]:
        raise NotImplementedError

    # -- SASL -------------------------------------------------------------------------

    def _end_sasl(self) -> None:
        self.sasl = None
        if self.state is State.SASL:
            self.state = State.COMMANDS

    def _sasl_guarded(self, step: Callable[[], Challenge | Credentials]) -> list[Action]:
        """Run one SASL step: a challenge keeps the exchange going, credentials end it and
        wait for the core's login, and any error ends it (as every protocol's RFC says)."""
        try:
            result = step()
        except SaslError as exc:
            return self._sasl_abort(exc)
        if isinstance(result, Challenge):
            self.state = State.SASL
            return self._sasl_challenge(result.data)
        self._end_sasl()
        self.state = State.WAITING
        return [Authenticate(result)]

    def _sasl_abort(self, exc: SaslError) -> list[Action]:
        self._end_sasl()
        return self._sasl_refused(exc)

    def _sasl_challenge(self, data: bytes) -> list[Action]:
        """The protocol's continuation carrying ``data`` (not yet base64-encoded)."""
        raise NotImplementedError

    def _sasl_refused(self, exc: SaslError) -> list[Action]:
        """The protocol's reply to a cancelled (:class:`SaslCancelled`) or bad exchange,
        after it has ended."""
        raise NotImplementedError
