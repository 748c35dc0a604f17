"""POP3 before login (RFC 1939, 2449, 2595, 3206, 5034): a pure state machine from client
bytes to actions, the POP3 twin of :mod:`proxy.imap.dialogue`.

Commands are dispatched by name (``cmd_USER`` …). States:

=========  ===========================================  ===============================
state      accepts                                      leaves to
=========  ===========================================  ===============================
COMMANDS   CAPA USER PASS AUTH STLS QUIT; -ERR to the   SASL, WAITING, DONE
           rest (NOOP, STAT … are TRANSACTION-only)
SASL       one base64 line per challenge, or ``*``      COMMANDS, WAITING
WAITING    nothing (TLS handshake or login check)       COMMANDS (failed, TLS up), DONE
DONE       nothing: relay or closed
=========  ===========================================  ===============================

A USER name is remembered only until the next PASS, STLS or failed login: Dovecot forgets
it the same way, and RFC 2595 requires forgetting everything said before TLS.

POP3 replies carry no tag, so a failure is worded the same whether it answers a PASS or
comes unasked (timeout, shutdown): one table, :data:`FAILURE_REPLIES`, with the RFC 3206
codes clients act on ([AUTH]: ask the user; [SYS/TEMP]: retry later, keep the password).
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
from proxy.dialoguebase import SESSION_ENDING, LoginDialogue, State
from proxy.pop3.parser import Command, LineReader, TooLong, parse_command
from proxy.sasl import (
    MAX_FIELD_OCTETS,
    Credentials,
    SaslCancelled,
    SaslError,
    SaslExchange,
)

GREETING = b"+OK mailfarm ready.\r\n"

FAILURE_REPLIES: dict[Failure, bytes] = {
    Failure.AUTH_FAILED: b"-ERR [AUTH] Authentication failed.\r\n",
    Failure.UNAVAILABLE: b"-ERR [SYS/TEMP] Authentication service temporarily unavailable,"
    b" try again later.\r\n",
    Failure.BACKEND_UNAVAILABLE: b"-ERR [SYS/TEMP] Mailbox server temporarily unavailable,"
    b" try again later.\r\n",
    Failure.LOGIN_DISABLED: b"-ERR [SYS/TEMP] Your mailbox is being moved,"
    b" try again in a few minutes.\r\n",
    Failure.TOO_MANY_FAILURES: b"-ERR [AUTH] Too many invalid authentication attempts.\r\n",
    Failure.TIMEOUT: b"-ERR Disconnected for inactivity.\r\n",
    Failure.SHUTDOWN: b"-ERR [SYS/TEMP] Server shutting down.\r\n",
    Failure.CONNECTION_LIMIT: b"-ERR [SYS/TEMP] Too many connections, try again later.\r\n",
    Failure.KICKED: b"-ERR [SYS/TEMP] Session closed by the administrator, please reconnect.\r\n",
}

PLAINTEXT_DISALLOWED = (
    b"-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n"
)
# RFC 1939 TRANSACTION-state commands: a client that sends them before login is confused,
# not speaking another protocol, so it gets a clearer answer than "unknown".
TRANSACTION_COMMANDS = frozenset(
    {"STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL", "LAST"}
)


def _err(text: bytes) -> list[Action]:
    return [Send(b"-ERR " + text + b"\r\n")]


def _text(raw: bytes) -> str | None:
    """A USER or PASS argument as text; None if it cannot be a credential at all.

    The bounds are those of AUTH PLAIN, so USER/PASS cannot carry what AUTH could not (and
    what the backend login could only send as an over-long USER/PASS line).
    """
    if not raw or len(raw) > MAX_FIELD_OCTETS or b"\x00" in raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


class Pop3Dialogue(LoginDialogue):
    def __init__(self, env: DialogueEnv) -> None:
        self.env = env
        self.reader = LineReader(env.max_line)
        self.state = State.COMMANDS
        self.user: str | None = None
        self.sasl: SaslExchange | None = None
        self.tls_active = env.tls_active

    # what the client is told ----------------------------------------------------------
    @property
    def auth_allowed(self) -> bool:
        return self.tls_active or self.env.plaintext_allowed

    def capabilities(self) -> list[bytes]:
        """RFC 2449 CAPA lines; USER and SASL only when they may be used (as Dovecot)."""
        caps: list[bytes] = []
        if self.auth_allowed:
            caps += [b"USER", b"SASL " + " ".join(SaslExchange.MECHANISMS).encode()]
        if self.env.tls_offered and not self.tls_active:
            caps.append(b"STLS")
        return [*caps, b"PIPELINING", b"RESP-CODES", b"AUTH-RESP-CODE", b"IMPLEMENTATION mailfarm"]

    def greeting(self) -> bytes:
        # No <timestamp>, so no client tries APOP: checking a digest needs the cleartext
        # password on our side, and the directory holds hashes (the backend login needs
        # the password itself, too).
        return GREETING

    # input ----------------------------------------------------------------------------
    def _event(self, event: bytes | TooLong) -> list[Action]:
        if isinstance(event, TooLong):
            self._end_sasl()
            return _err(b"Line too long.")
        if self.state is State.SASL:
            return self._sasl_step(event)
        cmd = parse_command(event)
        if cmd is None:
            return _err(b"Unknown command.")
        handler = getattr(self, "cmd_" + cmd.name, None)
        if handler is not None:
            return handler(cmd)
        if cmd.name in TRANSACTION_COMMANDS:
            return _err(b"Command not allowed before login.")
        return _err(b"Unknown command.")

    # commands -------------------------------------------------------------------------
    def cmd_CAPA(self, cmd: Command) -> list[Action]:
        lines = b"".join(cap + b"\r\n" for cap in self.capabilities())
        return [Send(b"+OK Capability list follows\r\n" + lines + b".\r\n")]

    def cmd_QUIT(self, cmd: Command) -> list[Action]:
        self.state = State.DONE
        return [Send(b"+OK Logging out.\r\n"), Close()]

    def cmd_STLS(self, cmd: Command) -> list[Action]:
        if self.tls_active:
            return _err(b"TLS is already active.")
        if not self.env.tls_offered:
            return _err(b"TLS support isn't enabled.")
        self.state = State.WAITING
        return [Send(b"+OK Begin TLS negotiation now.\r\n"), StartTls()]

    def tls_started(self) -> None:
        self.tls_active = True
        # RFC 2595 section 4: forget everything the client said in clear, including bytes
        # pipelined after STLS (CVE-2011-0411) and the USER name.
        self.reader = LineReader(self.env.max_line)
        self.user = None
        self.state = State.COMMANDS

    def cmd_USER(self, cmd: Command) -> list[Action]:
        if not self.auth_allowed:
            return [Send(PLAINTEXT_DISALLOWED)]
        user = _text(cmd.rest)
        if user is None:
            return _err(b"USER needs a valid user name.")
        self.user = user
        return [Send(b"+OK\r\n")]

    def cmd_PASS(self, cmd: Command) -> list[Action]:
        if not self.auth_allowed:
            return [Send(PLAINTEXT_DISALLOWED)]
        user, self.user = self.user, None
        if user is None:
            return _err(b"No username given.")
        password = _text(cmd.rest)  # the whole rest of the line: spaces are allowed
        if password is None:
            return [Send(FAILURE_REPLIES[Failure.AUTH_FAILED])]
        self.state = State.WAITING
        return [Authenticate(Credentials("", user, password))]

    def cmd_AUTH(self, cmd: Command) -> list[Action]:
        if not cmd.args:
            # Not in RFC 5034, but Outlook-era clients probe mechanisms this way.
            mechs = SaslExchange.MECHANISMS if self.auth_allowed else ()
            listing = b"".join(m.encode() + b"\r\n" for m in mechs)
            return [Send(b"+OK\r\n" + listing + b".\r\n")]
        if len(cmd.args) > 2:
            return _err(b"AUTH takes a mechanism and an optional initial response.")
        if not self.auth_allowed:
            return [Send(PLAINTEXT_DISALLOWED)]
        mech = cmd.args[0].decode("ascii", "replace")
        # "AUTH PLAIN " with a stray trailing space means no initial response ("=" is the
        # RFC 5034 spelling of an empty one).
        initial = cmd.args[1] if len(cmd.args) == 2 and cmd.args[1] else None
        try:
            self.sasl = SaslExchange(mech, initial)
        except SaslError:
            return _err(b"Unsupported authentication mechanism.")
        return self._sasl_guarded(self.sasl.start)

    def _sasl_step(self, line: bytes) -> list[Action]:
        assert self.sasl is not None
        sasl = self.sasl
        return self._sasl_guarded(lambda: sasl.step(line))

    def _sasl_refused(self, exc: SaslError) -> list[Action]:
        """Any error ends the exchange, as RFC 5034 requires."""
        if isinstance(exc, SaslCancelled):
            return _err(b"Authentication cancelled.")
        return _err(b"[AUTH] Invalid response: " + str(exc).encode("ascii", "replace")[:200])

    def _sasl_challenge(self, data: bytes) -> list[Action]:
        return [Send(b"+ " + base64.b64encode(data) + b"\r\n")]

    # outcomes -------------------------------------------------------------------------
    def failed(self, failure: Failure) -> bytes:
        self.user = None
        if failure in SESSION_ENDING:
            self.state = State.DONE
        return FAILURE_REPLIES[failure]

    def succeeded(self, backend: BackendInfo) -> bytes:
        # The backend's own greeting and capabilities stay hidden: the client already has
        # ours, and POP3 has no way to update them after login except a new CAPA.
        self.state = State.DONE
        return b"+OK Logged in.\r\n"

    def take_pending(self) -> bytes:
        return self.reader.take_pending()
