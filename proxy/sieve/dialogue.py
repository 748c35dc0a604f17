"""ManageSieve before login (RFC 5804): a pure state machine from client bytes to actions,
the twin of :mod:`proxy.pop3.dialogue` for its protocol.

=========  ============================================  ==========================
state      accepts                                       leaves to
=========  ============================================  ==========================
COMMANDS   CAPABILITY STARTTLS AUTHENTICATE NOOP LOGOUT  SASL, WAITING, DONE
SASL       one string per challenge, or ``"*"``          COMMANDS, WAITING
WAITING    nothing (TLS handshake or login check)        COMMANDS, DONE
DONE       nothing: relay or closed
=========  ============================================  ==========================

Replies carry RFC 5804 response codes clients act on: ``(ENCRYPT-NEEDED)`` when plaintext
authentication is not allowed yet, ``(TRYLATER)`` for failures that are not the user's,
``(SASL "...")`` never (no mechanism here has a final server message).
"""

from __future__ import annotations

import base64

from proxy.actions import (
    Action,
    BackendInfo,
    Close,
    DialogueEnv,
    Failure,
    Send,
    StartTls,
)
from proxy.dialoguebase import SESSION_ENDING, LoginDialogue, State
from proxy.sasl import SaslCancelled, SaslError, SaslExchange
from proxy.sieve.capabilities import KnownCapabilities
from proxy.sieve.parser import (
    Atom,
    BadSyntax,
    Command,
    CommandReader,
    Event,
    LiteralTooLarge,
    String,
    TooLong,
    quote,
)

FAILURE_REPLIES: dict[Failure, bytes] = {
    Failure.AUTH_FAILED: b'NO "Authentication failed."\r\n',
    Failure.UNAVAILABLE: b'NO (TRYLATER) "Authentication service temporarily unavailable,'
    b' try again later."\r\n',
    Failure.BACKEND_UNAVAILABLE: b'NO (TRYLATER) "Mailbox server temporarily unavailable,'
    b' try again later."\r\n',
    Failure.LOGIN_DISABLED: b'NO (TRYLATER) "Your mailbox is being moved,'
    b' try again in a few minutes."\r\n',
    Failure.TOO_MANY_FAILURES: b'BYE "Too many invalid authentication attempts."\r\n',
    Failure.TIMEOUT: b'BYE "Disconnected for inactivity."\r\n',
    Failure.SHUTDOWN: b'BYE (TRYLATER) "Server shutting down."\r\n',
    Failure.CONNECTION_LIMIT: b'BYE (TRYLATER) "Too many connections, try again later."\r\n',
    Failure.KICKED: b'BYE (TRYLATER) "Session closed by the administrator, please reconnect."\r\n',
}
PLAINTEXT_DISALLOWED = (
    b'NO (ENCRYPT-NEEDED) "Plaintext authentication disallowed on non-secure (SSL/TLS)'
    b' connections."\r\n'
)
#: Commands of the authenticated state (RFC 5804 section 2): known, but not yet.
AFTER_LOGIN = frozenset(
    {
        "PUTSCRIPT",
        "LISTSCRIPTS",
        "SETACTIVE",
        "GETSCRIPT",
        "DELETESCRIPT",
        "RENAMESCRIPT",
        "CHECKSCRIPT",
        "HAVESPACE",
        "UNAUTHENTICATE",
    }
)


def _no(text: str) -> list[Action]:
    return [Send(b"NO " + quote(text.encode("ascii", "replace")) + b"\r\n")]


def _strings(args: tuple[Atom | String, ...]) -> list[bytes] | None:
    """Every argument as a string's value; None if one is an atom (a syntax error)."""
    if any(not isinstance(a, String) for a in args):
        return None
    return [a.value for a in args]


class SieveDialogue(LoginDialogue):
    def __init__(self, env: DialogueEnv, known: KnownCapabilities | None = None) -> None:
        self.env = env
        self.known = known or KnownCapabilities()
        self.reader = CommandReader(env.max_line, env.max_literal)
        self.state = State.COMMANDS
        self.sasl: SaslExchange | None = None
        self.tls_active = env.tls_active

    @property
    def auth_allowed(self) -> bool:
        return self.tls_active or self.env.plaintext_allowed

    def capabilities(self) -> bytes:
        starttls = self.env.tls_offered and not self.tls_active
        return self.known.block(self.auth_allowed, starttls)

    def greeting(self) -> bytes:
        return self.capabilities() + b'OK "mailfarm ready."\r\n'

    # -- input ------------------------------------------------------------------------

    def _event(self, event: Event) -> list[Action]:
        if isinstance(event, TooLong | LiteralTooLarge | BadSyntax):
            self._end_sasl()
            if isinstance(event, TooLong):
                return _no("Command line too long.")
            if isinstance(event, LiteralTooLarge):
                return _no("Literal too large.")
            return _no(f"Syntax error: {event.reason}.")
        if self.state is State.SASL:
            return self._sasl_response(event)
        name = event.name
        handler = getattr(self, "cmd_" + name, None) if name.isalpha() else None
        if handler is not None:
            return handler(event)
        if name in AFTER_LOGIN:
            return _no("Authenticate first.")
        return _no("Unknown command.")

    # -- commands ---------------------------------------------------------------------

    def cmd_CAPABILITY(self, cmd: Command) -> list[Action]:
        if cmd.args:
            return _no("CAPABILITY takes no arguments.")
        return [Send(self.capabilities() + b'OK "Capability completed."\r\n')]

    def cmd_NOOP(self, cmd: Command) -> list[Action]:
        args = _strings(cmd.args)
        if args is None or len(args) > 1:
            return _no("NOOP takes one optional string.")
        if args:  # RFC 5804 section 2.14: echo the tag
            tag = args[0]
            if any(c in tag for c in b"\r\n\x00"):
                return _no("Invalid NOOP tag.")
            return [Send(b"OK (TAG " + quote(tag) + b') "Done."\r\n')]
        return [Send(b'OK "NOOP completed."\r\n')]

    def cmd_LOGOUT(self, cmd: Command) -> list[Action]:
        self.state = State.DONE
        return [Send(b'OK "Logout completed."\r\n'), Close()]

    def cmd_STARTTLS(self, cmd: Command) -> list[Action]:
        if self.tls_active:
            return _no("TLS is already active.")
        if not self.env.tls_offered:
            return _no("TLS support isn't enabled.")
        self.state = State.WAITING
        return [Send(b'OK "Begin TLS negotiation now."\r\n'), StartTls()]

    def tls_started(self) -> list[Action]:
        """RFC 5804 section 2.2: forget what was said in clear (pipelined commands too),
        then re-issue the capabilities, which now offer SASL and no STARTTLS."""
        self.tls_active = True
        self.reader = CommandReader(self.env.max_line, self.env.max_literal)
        self.state = State.COMMANDS
        return [Send(self.capabilities() + b'OK "TLS negotiation successful."\r\n')]

    def cmd_AUTHENTICATE(self, cmd: Command) -> list[Action]:
        args = _strings(cmd.args)
        if args is None or not 1 <= len(args) <= 2:
            return _no("AUTHENTICATE takes a mechanism and an optional initial response.")
        if not self.auth_allowed:
            return [Send(PLAINTEXT_DISALLOWED)]
        mech = args[0].decode("ascii", "replace")
        initial = args[1] if len(args) == 2 else None
        if initial == b"":  # an empty string is an empty response, "=" in SASL-IR terms
            initial = b"="
        try:
            self.sasl = SaslExchange(mech, initial)
        except SaslError:
            return _no("Unsupported authentication mechanism.")
        return self._sasl_guarded(self.sasl.start)

    def _sasl_response(self, cmd: Command) -> list[Action]:
        assert self.sasl is not None
        sasl = self.sasl
        token = cmd.tokens[0] if len(cmd.tokens) == 1 else None
        if token is None:
            self._end_sasl()
            return _no("Invalid SASL response: one string expected.")
        line = token.value  # "*" (quoted, or bare as some clients send it) cancels
        return self._sasl_guarded(lambda: sasl.step(line))

    def _sasl_refused(self, exc: SaslError) -> list[Action]:
        if isinstance(exc, SaslCancelled):
            return _no("Authentication cancelled.")
        return _no(f"Invalid SASL response: {exc}")

    def _sasl_challenge(self, data: bytes) -> list[Action]:
        return [Send(quote(base64.b64encode(data)) + b"\r\n")]

    # -- outcomes ---------------------------------------------------------------------

    def failed(self, failure: Failure) -> bytes:
        if failure in SESSION_ENDING:
            self.state = State.DONE
        return FAILURE_REPLIES[failure]

    def succeeded(self, backend: BackendInfo) -> bytes:
        """What the backend answered its AUTHENTICATE with, capabilities included when it
        re-sent them, so the client learns the backend's own list."""
        self.state = State.DONE
        return backend.greeting + b'OK "Logged in."\r\n'

    def take_pending(self) -> bytes:
        return self.reader.take_pending()
