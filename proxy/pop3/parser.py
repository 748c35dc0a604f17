"""Bounded POP3 line reader and command splitter for the pre-login phase (RFC 1939, 2449).

POP3 has no literals and no tags, so the reader is only a line splitter; what makes it worth
a module is that the peer is anonymous: a line longer than ``max_line`` is dropped as it
arrives (the reader never holds more than one line's worth of it) and reported once, when
its end finally comes, so the client gets exactly one ``-ERR`` for it and stays in step.

Sans-I/O like :mod:`proxy.imap.parser`: bytes go in with :meth:`LineReader.feed`, lines come
out of :meth:`LineReader.next_line` one at a time and lazily, so whatever follows the line
that completed a login is still in the buffer for :meth:`LineReader.take_pending` and reaches
the backend byte for byte (POP3 PIPELINING, RFC 2449).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeAlias


@dataclass(frozen=True, slots=True)
class TooLong:
    """A line exceeded ``max_line`` and was discarded; answer ``-ERR`` once."""


Event: TypeAlias = bytes | TooLong

# RFC 2449 keywords are printable ASCII, three or four characters in the base protocol and
# "up to 40" in extensions' spirit; anything else cannot be a command we know.
_KEYWORD = re.compile(rb"[A-Za-z0-9_-]{1,40}")


@dataclass(frozen=True, slots=True)
class Command:
    """One command line: ``name`` upper-cased, ``args`` split on single spaces, ``rest``
    the verbatim text after the keyword and its space (RFC 1939 lets a PASS argument hold
    spaces, so it must not be re-joined from ``args``)."""

    name: str
    args: tuple[bytes, ...]
    rest: bytes


def parse_command(line: bytes) -> Command | None:
    """Split a line (terminator already removed); None when the keyword is not one."""
    keyword, sep, rest = line.partition(b" ")
    if _KEYWORD.fullmatch(keyword) is None:
        return None
    args = tuple(rest.split(b" ")) if sep else ()
    return Command(keyword.decode("ascii").upper(), args, rest)


class LineReader:
    """Incremental line reader, bounded in memory, never raising on input."""

    __slots__ = ("_buf", "_lf_from", "_max_line", "_report", "_skipping")

    def __init__(self, max_line: int = 8192) -> None:
        """``max_line`` bounds a line including its CRLF."""
        if max_line < 2:
            raise ValueError("max_line must allow at least CRLF")
        self._max_line = max_line
        self._buf = bytearray()
        self._lf_from = 0  # _buf[:_lf_from] is known to hold no LF
        self._skipping = False  # inside an oversized line; _buf is empty meanwhile
        self._report = False  # an oversized line ended: report it before anything else

    @property
    def buffered(self) -> int:
        """Bytes held right now; lets tests check that a flood is not being stored."""
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        """Append client bytes; the tail of an oversized line is dropped right here."""
        if self._skipping:
            nl = data.find(b"\n")
            if nl < 0:
                return
            data = data[nl + 1 :]
            self._skipping = False
            self._report = True
        self._buf += data

    def next_line(self) -> Event | None:
        """The next line without its CRLF or bare LF, TooLong, or None for "need more"."""
        if self._report:
            self._report = False
            return TooLong()
        if self._skipping:
            return None
        buf, limit = self._buf, self._max_line
        nl = buf.find(b"\n", self._lf_from, limit)
        if nl < 0:
            if len(buf) < limit:
                self._lf_from = len(buf)
                return None
            self._lf_from = 0
            nl = buf.find(b"\n", limit)
            if nl < 0:
                buf.clear()
                self._skipping = True
                return None
            del buf[: nl + 1]
            return TooLong()
        end = nl - 1 if nl > 0 and buf[nl - 1] == 0x0D else nl
        line = bytes(buf[:end])
        del buf[: nl + 1]
        self._lf_from = 0
        return line

    next_event = next_line  # every dialogue reads its parser's events by this name

    def take_pending(self) -> bytes:
        """Hand over every byte no line was read from, and empty the reader."""
        data = bytes(self._buf)
        self._buf.clear()
        self._lf_from = 0
        self._skipping = self._report = False
        return data
