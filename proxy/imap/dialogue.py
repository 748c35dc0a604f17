"""IMAP before login (RFC 9051/3501): a pure state machine from client bytes to actions.

Commands are dispatched by name (``cmd_LOGIN`` …), aiosmtpd-style. States:

====================  =====================================  ===========================
state                 accepts                                leaves to
====================  =====================================  ===========================
COMMANDS              any command line                       SASL, WAITING, DONE
SASL                  one base64 line per challenge, or *    COMMANDS, WAITING, DONE
WAITING               nothing (the core is checking a login) COMMANDS (failed), DONE (ok)
DONE                  nothing: relay or closed
====================  =====================================  ===========================

Any state that reads ends in DONE after the third invalid command (every BAD but a
cancelled AUTHENTICATE counts, as in Dovecot) or at once when a non-synchronizing literal
over the limit is announced: its bytes are already on the way, and reading them only to
drop them would let an anonymous client keep us busy.
"""

from __future__ import annotations

import base64

from proxy.actions import (
    Action,
    Authenticate,
    BackendInfo,
    Close,
    DialogueEnv,
    Failure,
    Send,
    StartTls,
)
from proxy.dialoguebase import LoginDialogue, State
from proxy.imap.parser import (
    Arg,
    Bounds,
    Command,
    CommandReader,
    ContinuationNeeded,
    LiteralTooLong,
    Malformed,
    RawLine,
    TooLong,
)
from proxy.sasl import Credentials, SaslCancelled, SaslError, SaslExchange

GREETING_TEXT = b"mailfarm ready."

MAX_BAD_COMMANDS = 3  # Dovecot's CLIENT_MAX_BAD_COMMANDS
TOO_MANY_BAD = b"* BYE Too many invalid IMAP commands.\r\n"
LITERAL_TOO_LARGE = b"* BYE Literal size too large.\r\n"

# RFC 2971 section 3.3: at most 30 pairs, fields up to 30 octets, values up to 1024.
ID_MAX_PAIRS = 30
ID_MAX_FIELD = 30
ID_MAX_VALUE = 1024
# The largest such ID on the wire is about 31 KB (quoted strings or literals); this leaves
# room for the tag and a few escapes, and nothing like it is allowed for other commands.
ID_MAX_COMMAND = 34 * 1024

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


def _id_bounds(max_line: int) -> Bounds:
    size = max(max_line, ID_MAX_COMMAND)
    return Bounds(line=size, literal=ID_MAX_VALUE, command=size)


def _valid_id_params(params: Arg) -> bool:
    """``NIL`` or ``(field value ...)`` within RFC 2971's limits; a value may be NIL."""
    if params == b"NIL":
        return True
    if not isinstance(params, list) or len(params) % 2 or len(params) > 2 * ID_MAX_PAIRS:
        return False
    fields, values = params[0::2], params[1::2]
    return all(isinstance(f, bytes) and len(f) <= ID_MAX_FIELD for f in fields) and all(
        isinstance(v, bytes) and len(v) <= ID_MAX_VALUE for v in values
    )


def _text(value: object) -> str | None:
    """A command argument as UTF-8 text, or None if it is a list or not UTF-8."""
    if not isinstance(value, bytes):
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


class ImapDialogue(LoginDialogue):
    def __init__(self, env: DialogueEnv) -> None:
        self.env = env
        self.reader = self._new_reader()
        self.state = State.COMMANDS
        self.tag = b"*"
        self.sasl: SaslExchange | None = None
        self.tls_active = env.tls_active
        self.bad_commands = 0

    def _new_reader(self) -> CommandReader:
        """[proxy] max_line and max_literal for every command but ID, which RFC 2971 lets
        grow to about 31 KB and clients do send large (Dovecot accepts it)."""
        env = self.env
        bounds = {"ID": _id_bounds(env.max_line)}
        return CommandReader(env.max_line, env.max_literal, command_bounds=bounds)

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

    def _bad(self, text: bytes, tag: bytes | None = None) -> list[Action]:
        """A BAD reply, counted: the third gets the goodbye instead, as from Dovecot, so a
        client cannot probe or idle with junk until the login timeout."""
        self.bad_commands += 1
        if self.bad_commands >= MAX_BAD_COMMANDS:
            return self._goodbye(TOO_MANY_BAD, "too-many-bad-commands")
        return [Send((self.tag if tag is None else tag) + b" BAD " + text + b"\r\n")]

    def _goodbye(self, bye: bytes, outcome: str) -> list[Action]:
        self.sasl = None
        self.state = State.DONE
        return [Send(bye), Close(outcome=outcome)]

    # input ----------------------------------------------------------------------------
    def _event(self, event: object) -> list[Action]:
        if isinstance(event, Command):
            self.tag = event.tag.encode()
            handler = getattr(self, "cmd_" + event.name, None)
            if handler is None:
                return self._bad(b"Command not allowed before login.")
            return handler(event)
        if isinstance(event, RawLine):
            return self._sasl_step(event.data)
        if isinstance(event, ContinuationNeeded):
            return [Send(b"+ Ready for literal data\r\n")]
        if isinstance(event, LiteralTooLong):
            return self._goodbye(LITERAL_TOO_LARGE, "literal-too-large")
        if isinstance(event, TooLong):
            tag = self._reply_tag(event.tag)
            self._end_sasl()
            return self._bad(b"Line or literal too long.", tag)
        if isinstance(event, Malformed):
            tag = self._reply_tag(event.tag)
            self._end_sasl()
            reason = event.reason.encode("ascii", "replace")[:200]
            return self._bad(b"Error in IMAP command: " + reason, tag)
        raise AssertionError(event)

    def _reply_tag(self, tag: str | None) -> bytes:
        """The tag of the input a parser error is about: an AUTHENTICATE response has none
        of its own, but the client waits for the AUTHENTICATE command's completion."""
        if tag:
            return tag.encode()
        return self.tag if self.state is State.SASL else b"*"

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
            return self._bad(b"ID needs one argument.")
        if not _valid_id_params(cmd.args[0]):
            return self._bad(b"Invalid ID parameters (RFC 2971 section 3.3).")
        return [Send(b'* ID ("name" "mailfarm")\r\n' + self._tagged(b"OK ID completed."))]

    def cmd_ENABLE(self, cmd: Command) -> list[Action]:
        return self._bad(b"ENABLE is allowed only after login.")

    def cmd_STARTTLS(self, cmd: Command) -> list[Action]:
        if self.tls_active:
            return self._bad(b"TLS is already active.")
        if not self.env.tls_offered:
            return self._bad(b"STARTTLS is not available.")
        if cmd.args:
            return self._bad(b"STARTTLS takes no arguments.")
        self.state = State.WAITING
        return [Send(self._tagged(b"OK Begin TLS negotiation now.")), StartTls()]

    def tls_started(self) -> None:
        self.tls_active = True
        # Anything sent in clear after STARTTLS must not be executed under TLS.
        self.reader = self._new_reader()
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
            return self._bad(b"LOGIN needs a user name and a password.")
        if not self.auth_allowed:
            return self._privacy_required()
        user, password = _text(cmd.args[0]), _text(cmd.args[1])
        if user is None or password is None:
            return self._bad(b"LOGIN arguments must be UTF-8 strings.")
        if not user or not password:
            return [Send(self._tagged(FAILURE_REPLIES[Failure.AUTH_FAILED]))]
        self.state = State.WAITING
        return [Authenticate(Credentials("", user, password))]

    def cmd_AUTHENTICATE(self, cmd: Command) -> list[Action]:
        if not cmd.args or len(cmd.args) > 2 or not all(isinstance(a, bytes) for a in cmd.args):
            return self._bad(b"AUTHENTICATE needs a mechanism name.")
        if not self.auth_allowed:
            return self._privacy_required()
        mech = cmd.args[0].decode("ascii", "replace").upper()  # type: ignore[union-attr]
        initial = cmd.args[1] if len(cmd.args) == 2 else None
        if mech not in SaslExchange.MECHANISMS:
            return [Send(self._tagged(b"NO [CANNOT] Unsupported authentication mechanism."))]
        try:
            self.sasl = SaslExchange(mech, initial)  # type: ignore[arg-type]
        except SaslError as exc:
            return self._sasl_abort(exc)
        return self._sasl_guarded(self.sasl.start)

    def _sasl_step(self, line: bytes) -> list[Action]:
        sasl = self.sasl
        assert sasl is not None
        return self._sasl_guarded(lambda: sasl.step(line))

    def _sasl_refused(self, exc: SaslError) -> list[Action]:
        """RFC 9051: a cancelled or malformed exchange ends with a tagged BAD; only the
        malformed one counts as invalid (Dovecot does not count a client's cancel)."""
        if isinstance(exc, SaslCancelled):
            return [Send(self._tagged(b"BAD Authentication cancelled."))]
        return self._bad(str(exc).encode("ascii", "replace")[:200])

    def _sasl_challenge(self, data: bytes) -> list[Action]:
        self.reader.expect_raw_line()
        return [Send(b"+ " + base64.b64encode(data) + b"\r\n")]

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
