"""ManageSieve (RFC 5804) client input before login: commands made of atoms, quoted strings
and literals, read from an anonymous peer with bounded memory.

Unlike POP3, a command may span lines: a literal ``{N+}`` CRLF is followed by N octets that
belong to the command (an AUTHENTICATE initial response, or a SASL response, may be sent
so). The reader therefore tokenizes as it splits: it knows when a CRLF ends the command
and when it is inside a literal.

Limits: a command's text outside literals is bounded by ``max_line``, each literal by
``max_literal``. A command over either is dropped as it arrives and reported once: a long
line when its end has come (:class:`TooLong`), a big literal as soon as its header is read
(:class:`LiteralTooLarge`), so the client gets one ``NO`` for it and stays in step. A
malformed command (an unterminated quote, a bad literal header) is reported as
:class:`BadSyntax` after its CRLF.

Sans-I/O: :meth:`CommandReader.feed` takes bytes, :meth:`CommandReader.next_event` returns
one event at a time, lazily, so what follows a successful AUTHENTICATE stays buffered for
:meth:`CommandReader.take_pending` and reaches the backend byte for byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeAlias

MAX_QUOTED = 1024  # RFC 5804 section 4: quoted strings are at most 1024 octets


@dataclass(frozen=True, slots=True)
class TooLong:
    """A command's text exceeded ``max_line``."""


@dataclass(frozen=True, slots=True)
class LiteralTooLarge:
    """A literal exceeded ``max_literal``; its octets were skipped."""


@dataclass(frozen=True, slots=True)
class BadSyntax:
    reason: str


@dataclass(frozen=True, slots=True)
class Atom:
    value: bytes


@dataclass(frozen=True, slots=True)
class String:
    """A quoted string (escapes resolved) or a literal's octets."""

    value: bytes


Token: TypeAlias = Atom | String


@dataclass(frozen=True, slots=True)
class Command:
    tokens: tuple[Token, ...]

    @property
    def name(self) -> str:
        """The command name upper-cased; "" when the first token is not an atom."""
        first = self.tokens[0] if self.tokens else None
        if isinstance(first, Atom) and first.value.isascii():
            return first.value.decode("ascii").upper()
        return ""

    @property
    def args(self) -> tuple[Token, ...]:
        return self.tokens[1:]


Event: TypeAlias = Command | TooLong | LiteralTooLarge | BadSyntax
_SILENT = BadSyntax("")  # the end of a command already answered

_ATOM = re.compile(rb"[^\x00-\x20\x7f\"{}()\\]+")
_LITERAL = re.compile(rb"\{(\d{1,10})(\+?)\}\r\n")


class _Incomplete(Exception):
    """The buffer ends inside the command: wait for more bytes. ``text`` counts the octets
    outside literals so far, which ``max_line`` bounds."""

    def __init__(self, text: int = 0) -> None:
        self.text = text


class CommandReader:
    """Incremental command reader, bounded in memory, never raising on input."""

    def __init__(self, max_line: int = 8192, max_literal: int = 8192) -> None:
        self._buf = bytearray()
        self._max_line = max(max_line, 16)
        self._max_literal = max_literal
        # Dropping an oversized command: octets of a literal still to skip, then to the CRLF.
        self._skip_literal = 0
        self._skipping: Event | None = None

    def feed(self, data: bytes) -> None:
        self._buf += data

    def buffered(self) -> int:
        return len(self._buf)

    def take_pending(self) -> bytes:
        out = bytes(self._buf)
        self._buf.clear()
        return out

    def next_event(self) -> Event | None:
        if self._skipping is not None:
            return self._skip()
        try:
            command, used = self._parse()
        except _Incomplete as short:
            if short.text > self._max_line:
                self._drop(TooLong())
                return self._skip()
            return None
        except _Oversized as big:
            # Answered at once: a client sending a non-synchronising literal sends its
            # octets unasked, and is told now rather than after them; they are skipped.
            self._drop(_SILENT, skip_literal=big.size, cut=big.start)
            return LiteralTooLarge()
        except _Malformed as bad:
            end = self._buf.find(b"\r\n", bad.at)
            if end < 0:
                self._drop(BadSyntax(bad.reason))
                return self._skip()
            del self._buf[: end + 2]
            return BadSyntax(bad.reason)
        del self._buf[:used]
        return command

    # -- dropping an oversized command ------------------------------------------------

    def _drop(self, event: Event, skip_literal: int = 0, cut: int | None = None) -> None:
        self._skipping = event
        self._skip_literal = skip_literal
        if cut is not None:
            del self._buf[:cut]
        else:
            self._buf.clear()

    def _skip(self) -> Event | None:
        """Discard what belongs to the dropped command; its event once its end is seen."""
        if self._skip_literal:
            n = min(self._skip_literal, len(self._buf))
            del self._buf[:n]
            self._skip_literal -= n
            if self._skip_literal:
                return None
        while True:
            end = self._buf.find(b"\r\n")
            if end < 0:
                # Keep a trailing CR (its LF may come next), drop the rest.
                keep = 1 if self._buf.endswith(b"\r") else 0
                del self._buf[: len(self._buf) - keep]
                return None
            literal = _LITERAL.search(bytes(self._buf[: end + 2]))
            if literal is not None and literal.end() == end + 2:
                # The dropped command goes on with another literal: skip it too.
                del self._buf[: end + 2]
                self._skip_literal = int(literal.group(1))
                return self._skip()
            del self._buf[: end + 2]
            event, self._skipping = self._skipping, None
            return self.next_event() if event is _SILENT else event

    # -- parsing ----------------------------------------------------------------------

    def _parse(self) -> tuple[Command, int]:
        buf = self._buf
        tokens: list[Token] = []
        i = 0
        text = 0  # octets outside literals
        while True:
            if i >= len(buf) or text > self._max_line:
                raise _Incomplete(text)
            ch = buf[i]
            if buf.startswith(b"\r\n", i):
                if not tokens:
                    raise _Malformed("empty command", i)
                return Command(tuple(tokens)), i + 2
            if ch == 0x0D and i + 1 == len(buf):
                raise _Incomplete(text)  # its LF may be in the next packet
            if ch == 0x20:
                i += 1
                text += 1
                continue
            if ch == 0x22:  # "
                try:
                    value, i2 = _quoted(buf, i)
                except _Incomplete:
                    raise _Incomplete(text + len(buf) - i) from None
                text += i2 - i
                i = i2
                tokens.append(String(value))
                continue
            if ch == 0x7B:  # {
                header = _LITERAL.match(buf, i)
                if header is None:
                    if b"\r\n" not in buf[i:]:
                        raise _Incomplete(text + len(buf) - i)
                    raise _Malformed("bad literal", i)
                size = int(header.group(1))
                if size > self._max_literal:
                    raise _Oversized(size, header.end())
                start = header.end()
                text += start - i
                if len(buf) < start + size:
                    raise _Incomplete(text)  # the literal's octets are bounded apart
                tokens.append(String(bytes(buf[start : start + size])))
                i = start + size
                continue
            atom = _ATOM.match(buf, i)
            if atom is None:
                raise _Malformed("unexpected character", i)
            tokens.append(Atom(atom.group()))
            text += atom.end() - i
            i = atom.end()


class _Malformed(Exception):
    def __init__(self, reason: str, at: int) -> None:
        self.reason = reason
        self.at = at


class _Oversized(Exception):
    def __init__(self, size: int, start: int) -> None:
        self.size = size
        self.start = start  # where the literal's octets begin


def _quoted(buf: bytearray, i: int) -> tuple[bytes, int]:
    """A quoted string at ``buf[i]`` (the opening quote): its value and the index after."""
    out = bytearray()
    j = i + 1
    while j < len(buf):
        ch = buf[j]
        if ch == 0x5C:  # backslash: only \\ and \" are escapes
            if j + 1 >= len(buf):
                raise _Incomplete()
            nxt = buf[j + 1]
            if nxt not in (0x5C, 0x22):
                raise _Malformed("bad escape in a quoted string", j)
            out.append(nxt)
            j += 2
        elif ch == 0x22:
            return bytes(out), j + 1
        elif ch in (0x0D, 0x0A, 0x00):
            raise _Malformed("CR, LF or NUL in a quoted string", j)
        else:
            out.append(ch)
            j += 1
        if len(out) > MAX_QUOTED:
            raise _Malformed("quoted string longer than 1024 octets (use a literal)", j)
    raise _Incomplete()


def quote(value: bytes) -> bytes:
    """``value`` as a ManageSieve quoted string (the caller keeps CR, LF and NUL out)."""
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def string(value: bytes) -> bytes:
    """A server string: quoted when it can be, a literal otherwise (RFC 5804 section 4)."""
    if len(value) <= MAX_QUOTED and not any(c in value for c in b"\r\n\x00"):
        return quote(value)
    return b"{%d}\r\n" % len(value) + value
