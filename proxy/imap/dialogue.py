"""IMAP before login (RFC 9051/3501): a pure state machine from client bytes to actions.

Commands are dispatched by name (``cmd_LOGIN`` …), aiosmtpd-style. States:

====================  =====================================  ===========================
state                 accepts                                leaves to
====================  =====================================  ===========================
COMMANDS              any command line                       SASL, WAITING, DONE
SASL                  one base64 line per challenge, or *    COMMANDS, WAITING
WAITING               nothing (the core is checking a login) COMMANDS (failed), DONE (ok)
DONE                  nothing: relay or closed
====================  =====================================  ===========================
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Callable

from proxy.actions import (
    Action,
    Authenticate,
    BackendInfo,
    Close,
    DialogueEnv,
    Failure,
    Send,
    StartTls,
    run_events,
)
from proxy.imap.parser import (
    Command,
    CommandReader,
    ContinuationNeeded,
    Malformed,
    RawLine,
    TooLong,
)
from proxy.sasl import Challenge, Credentials, SaslCancelled, SaslError, SaslExchange

GREETING_TEXT = b"mailfarm ready."

FAILURE_REPLIES: dict[Failure, bytes] = {
    Failure.AUTH_FAILED: b"NO [AUTHENTICATIONFAILED] Authentication failed.",
    Failure.UNAVAILABLE: b"NO [UNAVAILABLE] Authentication service temporarily unavailable,"
    b" try again later.",
    Failure.BACKEND_UNAVAILABLE: b"NO [UNAVAILABLE] Mailbox server temporarily unavailable,"
    b" try again later.",
    Failure.LOGIN_DISABLED: b"NO [UNAVAILABLE] Your mailbox is being moved,"
    b" try again in a few minutes.",
}
BYES: dict[Failure, bytes] = {
    Failure.TOO_MANY_FAILURES: b"* BYE Too many invalid authentication attempts.\r\n",
    Failure.TIMEOUT: b"* BYE Disconnected for inactivity.\r\n",
    Failure.SHUTDOWN: b"* BYE [UNAVAILABLE] Server shutting down.\r\n",
    Failure.CONNECTION_LIMIT: b"* BYE [UNAVAILABLE] Too many connections, try again later.\r\n",
    Failure.KICKED: b"* BYE [UNAVAILABLE] Session closed by the administrator,"
    b" please reconnect.\r\n",
}


def imap_bye(failure: Failure) -> bytes:
    return BYES.get(failure, b"* BYE Closing.\r\n")


def imap_farewell(client_tail: bytes, backend_tail: bytes) -> bytes:
    """The backend closed: nothing to add after its own BYE or the client's LOGOUT;
    otherwise the server vanished and the client should know why (RFC 9051 7.1.5)."""
    if b"* BYE" in backend_tail or b"LOGOUT" in client_tail.upper():
        return b""
    return b"* BYE [UNAVAILABLE] Connection to the mailbox server was lost.\r\n"


class State(enum.Enum):
    COMMANDS = "commands"
    SASL = "sasl"
    WAITING = "waiting"
    DONE = "done"


def _text(value: object) -> str | None:
    """A command argument as UTF-8 text, or None if it is a list or not UTF-8."""
    if not isinstance(value, bytes):
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


class ImapDialogue:
    def __init__(self, env: DialogueEnv) -> None:
        self.env = env
        self.reader = CommandReader(env.max_line, env.max_literal)
        self.state = State.COMMANDS
        self.tag = b"*"
        self.sasl: SaslExchange | None = None
        self.tls_active = env.tls_active

    # what the client is told ----------------------------------------------------------
    @property
    def auth_allowed(self) -> bool:
        return self.tls_active or self.env.plaintext_allowed

    def capabilities(self) -> bytes:
        caps = [b"IMAP4rev1", b"SASL-IR", b"LITERAL+", b"ID", b"ENABLE", b"IDLE"]
        if self.env.tls_offered and not self.tls_active:
            caps.append(b"STARTTLS")
        if self.auth_allowed:
            caps += [b"AUTH=PLAIN", b"AUTH=LOGIN"]
        else:
            caps.append(b"LOGINDISABLED")
        return b" ".join(caps)

    def greeting(self) -> bytes:
        return b"* OK [CAPABILITY " + self.capabilities() + b"] " + GREETING_TEXT + b"\r\n"

    def _tagged(self, text: bytes) -> bytes:
        return self.tag + b" " + text + b"\r\n"

    # input ----------------------------------------------------------------------------
    def receive(self, data: bytes) -> list[Action]:
        self.reader.feed(data)
        return self.resume()

    def resume(self) -> list[Action]:
        if self.state is State.WAITING:
            self.state = State.COMMANDS
        return run_events(self.reader.next_event, self._event, self._reading)

    def _reading(self) -> bool:
        return self.state in (State.COMMANDS, State.SASL)

    def _event(self, event: object) -> list[Action]:
        if isinstance(event, Command):
            self.tag = event.tag.encode()
            handler = getattr(self, "cmd_" + event.name, None)
            if handler is None:
                return [Send(self._tagged(b"BAD Command not allowed before login."))]
            return handler(event)
        if isinstance(event, RawLine):
            return self._sasl_step(event.data)
        if isinstance(event, ContinuationNeeded):
            return [Send(b"+ Ready for literal data\r\n")]
        if isinstance(event, TooLong):
            self._end_sasl()
            tag = event.tag.encode() if event.tag else b"*"
            return [Send(tag + b" BAD Line or literal too long.\r\n")]
        if isinstance(event, Malformed):
            self._end_sasl()
            tag = event.tag.encode() if event.tag else b"*"
            reason = event.reason.encode("ascii", "replace")[:200]
            return [Send(tag + b" BAD Error in IMAP command: " + reason + b"\r\n")]
        raise AssertionError(event)

    def _end_sasl(self) -> None:
        self.sasl = None
        if self.state is State.SASL:
            self.state = State.COMMANDS

    # commands -------------------------------------------------------------------------
    def cmd_CAPABILITY(self, cmd: Command) -> list[Action]:
        return [
            Send(
                b"* CAPABILITY "
                + self.capabilities()
                + b"\r\n"
                + self._tagged(b"OK Pre-login capabilities listed.")
            )
        ]

    def cmd_NOOP(self, cmd: Command) -> list[Action]:
        return [Send(self._tagged(b"OK NOOP completed."))]

    def cmd_LOGOUT(self, cmd: Command) -> list[Action]:
        self.state = State.DONE
        return [Send(b"* BYE Logging out.\r\n" + self._tagged(b"OK Logout completed.")), Close()]

    def cmd_ID(self, cmd: Command) -> list[Action]:
        if len(cmd.args) != 1:
            return [Send(self._tagged(b"BAD ID needs one argument."))]
        return [Send(b'* ID ("name" "mailfarm")\r\n' + self._tagged(b"OK ID completed."))]

    def cmd_ENABLE(self, cmd: Command) -> list[Action]:
        return [Send(self._tagged(b"BAD ENABLE is allowed only after login."))]

    def cmd_STARTTLS(self, cmd: Command) -> list[Action]:
        if self.tls_active:
            return [Send(self._tagged(b"BAD TLS is already active."))]
        if not self.env.tls_offered:
            return [Send(self._tagged(b"BAD STARTTLS is not available."))]
        if cmd.args:
            return [Send(self._tagged(b"BAD STARTTLS takes no arguments."))]
        self.state = State.WAITING
        return [Send(self._tagged(b"OK Begin TLS negotiation now.")), StartTls()]

    def tls_started(self) -> None:
        self.tls_active = True
        # Anything sent in clear after STARTTLS must not be executed under TLS.
        self.reader = CommandReader(self.env.max_line, self.env.max_literal)
        self.state = State.COMMANDS

    def _privacy_required(self) -> list[Action]:
        return [
            Send(
                self._tagged(
                    b"NO [PRIVACYREQUIRED] Plaintext authentication disallowed on"
                    b" non-secure (SSL/TLS) connections."
                )
            )
        ]

    def cmd_LOGIN(self, cmd: Command) -> list[Action]:
        if len(cmd.args) != 2:
            return [Send(self._tagged(b"BAD LOGIN needs a user name and a password."))]
        if not self.auth_allowed:
            return self._privacy_required()
        user, password = _text(cmd.args[0]), _text(cmd.args[1])
        if user is None or password is None:
            return [Send(self._tagged(b"BAD LOGIN arguments must be UTF-8 strings."))]
        if not user or not password:
            return [Send(self._tagged(FAILURE_REPLIES[Failure.AUTH_FAILED]))]
        self.state = State.WAITING
        return [Authenticate(Credentials("", user, password))]

    def cmd_AUTHENTICATE(self, cmd: Command) -> list[Action]:
        if not cmd.args or len(cmd.args) > 2 or not all(isinstance(a, bytes) for a in cmd.args):
            return [Send(self._tagged(b"BAD AUTHENTICATE needs a mechanism name."))]
        if not self.auth_allowed:
            return self._privacy_required()
        mech = cmd.args[0].decode("ascii", "replace").upper()  # type: ignore[union-attr]
        initial = cmd.args[1] if len(cmd.args) == 2 else None
        if mech not in SaslExchange.MECHANISMS:
            return [Send(self._tagged(b"NO [CANNOT] Unsupported authentication mechanism."))]
        try:
            self.sasl = SaslExchange(mech, initial)  # type: ignore[arg-type]
        except SaslError as exc:
            return self._sasl_failed(exc)
        return self._sasl_guarded(self.sasl.start)

    def _sasl_step(self, line: bytes) -> list[Action]:
        sasl = self.sasl
        assert sasl is not None
        return self._sasl_guarded(lambda: sasl.step(line))

    def _sasl_guarded(self, step: Callable[[], Challenge | Credentials]) -> list[Action]:
        try:
            return self._sasl_result(step())
        except SaslError as exc:
            return self._sasl_failed(exc)

    def _sasl_failed(self, exc: SaslError) -> list[Action]:
        """RFC 9051: a cancelled or malformed exchange ends with a tagged BAD."""
        self._end_sasl()
        if isinstance(exc, SaslCancelled):
            return [Send(self._tagged(b"BAD Authentication cancelled."))]
        return [Send(self._tagged(b"BAD " + str(exc).encode("ascii", "replace")[:200]))]

    def _sasl_result(self, result: Challenge | Credentials) -> list[Action]:
        if isinstance(result, Challenge):
            self.state = State.SASL
            self.reader.expect_raw_line()
            return [Send(b"+ " + base64.b64encode(result.data) + b"\r\n")]
        self._end_sasl()
        self.state = State.WAITING
        return [Authenticate(result)]

    # outcomes -------------------------------------------------------------------------
    def failed(self, failure: Failure) -> bytes:
        if failure in FAILURE_REPLIES:
            return self._tagged(FAILURE_REPLIES[failure])
        self.state = State.DONE
        return imap_bye(failure)

    def succeeded(self, backend: BackendInfo) -> bytes:
        self.state = State.DONE
        caps = " ".join(backend.capabilities).encode("ascii", "replace")
        return self._tagged(b"OK [CAPABILITY " + caps + b"] Logged in")

    def take_pending(self) -> bytes:
        return self.reader.take_pending()
