"""SASL PLAIN (RFC 4616) and LOGIN, server side, shared by IMAP, POP3 and SMTP.

The three protocols differ only in how a challenge is framed ("+ ", "+ ", "334 ") and
how the client's answer arrives, so the exchange itself is a protocol-neutral state
machine fed with one client line at a time: no I/O, no clock, easy to fuzz.

Every failure on client data is a :class:`SaslError` whose message is a fixed string, so
callers may echo it to the client or log it without ever leaking a password.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass, field

# RFC 4616 requires accepting at least 255 octets for the authcid and the password.
# Real deployments see longer ones (OAuth-ish tokens pasted as passwords, long
# addresses), so we accept four times that; anything larger is an attack or a bug.
MAX_FIELD_OCTETS = 1024
# Longest base64 text that can hold a maximal PLAIN message (three fields + two NULs);
# longer input is refused before decoding so junk costs nothing.
MAX_RESPONSE_CHARS = 4 * -(-(3 * MAX_FIELD_OCTETS + 2) // 3)


class SaslError(ValueError):
    """Malformed or refused client data; the message is safe to show to the client."""


class SaslCancelled(SaslError):
    """The client answered a challenge with ``*`` (RFC 4954, RFC 9051, RFC 5034)."""


# The cancellation is signalled by raising, so there is one way to notice it; the alias
# keeps ``except Cancelled`` working for callers written against that name.
Cancelled = SaslCancelled


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the client claimed; the password is kept out of ``repr`` so logs stay clean."""

    authzid: str
    authcid: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Challenge:
    """Raw challenge bytes; the caller frames them after :func:`base64_challenge`."""

    data: bytes


def decode_base64_response(line: bytes) -> bytes:
    """Decode one client response strictly.

    Lenient decoding would let two different lines mean the same credentials, which makes
    logs and rate limiting lie; so only canonical base64 is accepted. ``=`` is the
    RFC 4954 spelling of an empty initial response; an empty line is also empty.
    """
    if line == b"=":
        return b""
    if len(line) > MAX_RESPONSE_CHARS:
        raise SaslError("response too long")
    try:
        data = binascii.a2b_base64(line, strict_mode=True)
    except (binascii.Error, ValueError, TypeError):
        raise SaslError("invalid base64") from None
    if binascii.b2a_base64(data, newline=False) != line:
        # Non-zero pad bits: decodable, but not what any sane encoder produces.
        raise SaslError("invalid base64") from None
    return data


def _field(raw: bytes, what: str) -> str:
    """Validate one SASL field; ``what`` names it in the error, never its value."""
    if not raw:
        raise SaslError(f"{what} is empty")
    if len(raw) > MAX_FIELD_OCTETS:
        raise SaslError(f"{what} is too long")
    if b"\x00" in raw:
        raise SaslError(f"{what} contains NUL")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslError(f"{what} is not valid UTF-8") from None


def decode_plain(message: bytes) -> Credentials:
    """Split a decoded PLAIN message ``[authzid] NUL authcid NUL passwd`` (RFC 4616)."""
    parts = message.split(b"\x00")
    if len(parts) != 3:
        raise SaslError("PLAIN message must contain exactly two NUL separators")
    authzid_raw, authcid_raw, password_raw = parts
    authzid = _field(authzid_raw, "authorization identity") if authzid_raw else ""
    return Credentials(
        authzid, _field(authcid_raw, "authentication identity"), _field(password_raw, "password")
    )


def encode_plain(authcid: str, password: str, authzid: str = "") -> bytes:
    """Base64 PLAIN message for logging in to a backend (e.g. as a master user).

    The same rules as :func:`decode_plain` apply, so whatever we send a backend is
    something we would have accepted ourselves.
    """
    try:
        fields = [s.encode("utf-8") for s in (authzid, authcid, password)]
    except UnicodeEncodeError:
        raise SaslError("credentials are not encodable as UTF-8") from None
    if fields[0]:
        _field(fields[0], "authorization identity")
    _field(fields[1], "authentication identity")
    _field(fields[2], "password")
    return binascii.b2a_base64(b"\x00".join(fields), newline=False)


def base64_challenge(data: bytes) -> bytes:
    """Encode a challenge; empty stays empty because every protocol sends "+ " bare."""
    return binascii.b2a_base64(data, newline=False) if data else b""


_START, _PLAIN, _LOGIN_USER, _LOGIN_PASSWORD, _DONE = range(5)


class SaslExchange:
    """Server side of one AUTH exchange, protocol-neutral.

    The caller wraps challenges in its own syntax (IMAP ``+ <b64>``, POP3 ``+ <b64>``,
    SMTP ``334 <b64>``) and feeds each client line (without CRLF) to :meth:`step` until
    it returns :class:`Credentials`. Any :class:`SaslError` ends the exchange.
    Calling out of order is a programming error and raises :class:`RuntimeError`.
    """

    MECHANISMS = ("PLAIN", "LOGIN")
    __slots__ = ("_initial", "_state", "_user", "mechanism")

    def __init__(self, mechanism: str, initial_response: bytes | None) -> None:
        # isascii() first: str.upper() maps some non-ASCII letters (the dotless i) to
        # ASCII ones, which would let a non-ASCII name alias a mechanism.
        name = mechanism.upper() if mechanism.isascii() else ""
        if name not in self.MECHANISMS:
            raise SaslError("unsupported authentication mechanism")
        self.mechanism = name
        self._initial = initial_response
        self._state = _START
        self._user = ""

    def start(self) -> Challenge | Credentials:
        """First step: consume the initial response, if any (RFC 4959, 4954, 5034)."""
        if self._state != _START:
            raise RuntimeError("SASL exchange already started")
        initial = self._initial
        self._initial = None
        if self.mechanism == "PLAIN":
            if initial is None:
                self._state = _PLAIN
                return Challenge(b"")
            self._state = _DONE
            return decode_plain(decode_base64_response(initial))
        if initial is None:
            self._state = _LOGIN_USER
            return Challenge(b"Username:")
        self._state = _DONE
        self._user = _field(decode_base64_response(initial), "user name")
        self._state = _LOGIN_PASSWORD
        return Challenge(b"Password:")

    def step(self, line: bytes) -> Challenge | Credentials:
        """Consume one client response line; ``*`` cancels (raises SaslCancelled)."""
        state = self._state
        if state in (_START, _DONE):
            raise RuntimeError("no SASL challenge outstanding")
        # Any error ends the exchange: a half-failed exchange must not be resumable.
        self._state = _DONE
        if line == b"*":
            raise SaslCancelled("authentication cancelled")
        data = decode_base64_response(line)
        if state == _PLAIN:
            return decode_plain(data)
        if state == _LOGIN_USER:
            self._user = _field(data, "user name")
            self._state = _LOGIN_PASSWORD
            return Challenge(b"Password:")
        return Credentials("", self._user, _field(data, "password"))
