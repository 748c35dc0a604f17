"""Bounded IMAP command reader for the pre-authentication phase (RFC 9051/3501, RFC 7888).

Before login the proxy must understand the client well enough to route it, but the peer
is anonymous: every byte it can make us hold is bounded (``max_line``, ``max_literal``,
``max_command``, or a named command's own :class:`Bounds`, as ID needs more room than
the rest), and oversized input is counted and dropped as it arrives, then reported once.
A non-synchronizing literal over its bound is reported as soon as it is announced: its
bytes are coming whatever we answer, and the caller will rather hang up than wait for
them. After login the proxy relays bytes raw and this module is out of the picture.

Sans-I/O like h11: bytes go in with :meth:`CommandReader.feed`, events come out of
:meth:`CommandReader.next_event`. Events are produced lazily and a command's bytes stay
in the buffer until its final event, so :meth:`CommandReader.take_pending` can hand the
exact unconsumed client bytes (pipelined commands) to the backend after login.

The caller must drain ``next_event`` after each ``feed`` (and stop reading the socket
while it is busy), otherwise the buffer holds whatever it was fed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeAlias

Arg: TypeAlias = bytes | list["Arg"]


@dataclass(frozen=True, slots=True)
class Command:
    """A complete command; ``name`` is upper-cased, NIL is left as the atom ``b"NIL"``."""

    tag: str
    name: str
    args: tuple[Arg, ...]


@dataclass(frozen=True, slots=True)
class ContinuationNeeded:
    """The client announced ``{size}`` and waits: send ``+`` or call ``reject_literal``."""

    tag: str
    size: int


@dataclass(frozen=True, slots=True)
class TooLong:
    """A line or literal exceeded its bound; the command is dropped (answer BAD)."""

    tag: str | None


@dataclass(frozen=True, slots=True)
class LiteralTooLong:
    """A non-synchronizing literal over its bound was announced; the reader skips its body,
    but the client is sending it anyway, so a server usually closes (RFC 7888 section 4)."""

    tag: str | None
    size: int


@dataclass(frozen=True, slots=True)
class Malformed:
    """A syntax error; ``reason`` is a fixed string, safe to echo in a BAD response."""

    tag: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class RawLine:
    """One line read after :meth:`CommandReader.expect_raw_line`, CRLF stripped."""

    data: bytes


Event: TypeAlias = Command | ContinuationNeeded | TooLong | LiteralTooLong | Malformed | RawLine


@dataclass(frozen=True, slots=True)
class Bounds:
    """What one command may make us hold: its line bytes (CRLF included, literal bodies
    excluded), each literal body, and both together."""

    line: int
    literal: int
    command: int


# RFC 9051: tag = 1*<any ASTRING-CHAR except "+">; ASTRING-CHAR = ATOM-CHAR / "]";
# ATOM-CHAR = any CHAR (%x01-7F) except ( ) { SP CTL % * " \ ].
_TAG = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\+]+')
_ATOM = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\\]]+')
_ASTRING = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\]+')
# Unrolled loop: linear time, no backtracking blow-up on long strings.
_QUOTED = re.compile(rb'"([^"\\\r\n\x00]*(?:\\["\\][^"\\\r\n\x00]*)*)"')
_UNESCAPE = re.compile(rb'\\(["\\])')
_LITERAL = re.compile(rb"\{([0-9]+)(\+?)\}")
# A literal announced at the end of a line we are discarding; see _skip_line.
_TRAILING_LITERAL = re.compile(rb"\{([0-9]{1,20})(\+?)\}\r?\n\Z")
_TAIL = 32  # bytes kept while discarding a line: enough to see _TRAILING_LITERAL
_MAX_DEPTH = 8  # nested lists; deep nesting only serves to blow callers' recursion

_SP, _LPAREN, _RPAREN, _DQUOTE, _LBRACE, _TILDE = b' ()"{~'
_COMMAND, _LITERAL_BODY, _SKIP_LINE, _SKIP_BYTES, _RAW = range(5)


class _Again:
    """Progress was made without an event: loop again."""


_AGAIN = _Again()
_Step: TypeAlias = Event | _Again | None


def _literal_size(digits: bytes) -> int:
    # int() refuses >4300 digits; anything over 18 digits is over every limit anyway.
    return int(digits) if len(digits) <= 18 else 1 << 62


class CommandReader:
    """Incremental reader of client commands, bounded in memory, never raising on input."""

    __slots__ = (
        "_bounds",
        "_buf",
        "_by_name",
        "_default",
        "_lf_from",
        "_line_len",
        "_lit_size",
        "_lit_sync",
        "_lit_total",
        "_mode",
        "_name",
        "_need_sep",
        "_pending",
        "_scan",
        "_skip",
        "_skip_literals",
        "_stack",
        "_tag",
    )

    def __init__(
        self,
        max_line: int = 8192,
        max_literal: int = 8192,
        *,
        max_command: int | None = None,
        command_bounds: Mapping[str, Bounds] | None = None,
    ) -> None:
        """``max_line`` bounds a command's line bytes (CRLF included, literal bodies
        excluded), ``max_literal`` each literal body, ``max_command`` everything one
        command may make us hold (default: a line plus two full literals, i.e. LOGIN).
        ``command_bounds`` replaces those for the commands it names (upper-case), so one
        command can be allowed more without loosening the others; memory is then bounded
        by the largest of them."""
        if max_line < 1 or max_literal < 0:
            raise ValueError("max_line must be >= 1 and max_literal >= 0")
        command = max_line + 2 * max_literal if max_command is None else max_command
        self._default = Bounds(max_line, max_literal, command)
        self._by_name = dict(command_bounds or {})
        if any(b.line < 1 or b.literal < 0 for b in self._by_name.values()):
            raise ValueError("a command's line bound must be >= 1 and its literal bound >= 0")
        self._buf = bytearray()
        self._mode = _COMMAND
        self._pending: TooLong | Malformed | None = None  # reported when a discard ends
        self._skip = 0  # literal bytes still to discard
        self._skip_literals = True
        self._reset_command()

    def _reset_command(self) -> None:
        # _buf[0] is always the first byte of the command being read.
        self._bounds = self._default
        self._scan = 0  # where parsing resumes
        self._lf_from = 0  # _buf[_scan:_lf_from] is known to hold no LF
        self._tag: str | None = None
        self._name = ""
        self._stack: list[list[Arg]] = [[]]
        self._need_sep = False
        self._line_len = 0
        self._lit_total = 0
        self._lit_size = 0
        self._lit_sync = False

    def feed(self, data: bytes) -> None:
        """Append client bytes; nothing is parsed until :meth:`next_event`."""
        if self._mode == _SKIP_BYTES and not self._buf:
            # Fast path for a huge LITERAL+ being discarded: never store it.
            k = min(self._skip, len(data))
            self._skip -= k
            data = data[k:]
        self._buf += data

    def next_event(self) -> Event | None:
        """Return the next event, or None when more data is needed."""
        while True:
            mode = self._mode
            if mode == _COMMAND:
                step = self._read_segment()
            elif mode == _LITERAL_BODY:
                step = self._read_literal()
            elif mode == _SKIP_LINE:
                step = self._skip_line()
            elif mode == _SKIP_BYTES:
                step = self._skip_bytes()
            else:
                step = self._read_raw()
            if step is not _AGAIN:
                return step  # type: ignore[return-value]

    def expect_raw_line(self) -> None:
        """Read the next line verbatim (AUTHENTICATE responses are not commands)."""
        if self._mode != _COMMAND or self._tag is not None:
            raise RuntimeError("expect_raw_line() in the middle of a command")
        self._mode = _RAW
        self._lf_from = 0

    def take_pending(self) -> bytes:
        """Hand over every byte not consumed by an event and empty the reader.

        Bytes of a partially read command are included; bytes already discarded as part
        of an oversized command are gone.
        """
        data = bytes(self._buf)
        self._buf.clear()
        self._mode = _COMMAND
        self._pending = None
        self._skip = 0
        self._reset_command()
        return data

    def reject_literal(self) -> None:
        """Drop the command whose synchronizing literal was announced and not accepted.

        The client only sends the literal after our ``+``, so the next byte it sends
        starts a new command.
        """
        if not (self._mode == _LITERAL_BODY and self._lit_sync):
            raise RuntimeError("no synchronizing literal is outstanding")
        del self._buf[: self._scan]
        self._mode = _COMMAND
        self._reset_command()

    # -- internals ---------------------------------------------------------------------

    def _peek_tag(self, end: int) -> str | None:
        m = _TAG.match(self._buf, 0, end)
        if m is None or m.end() >= end or self._buf[m.end()] != _SP:
            return None
        return m.group().decode("ascii")

    def _peek_name(self, end: int) -> str:
        """The upper-cased name of a command whose first line has not ended, or "" unless
        ``_buf[:end]`` holds a tag and a whole name followed by a space. Looking no further
        than the bound just exceeded keeps the answer independent of how input was split."""
        buf = self._buf
        m = _TAG.match(buf, 0, end)
        if m is None or m.end() >= end or buf[m.end()] != _SP:
            return ""
        m = _ATOM.match(buf, m.end() + 1, end)
        if m is None or m.end() >= end or buf[m.end()] != _SP:
            return ""
        return m.group().upper().decode("ascii")

    def _fail(self, event: TooLong | Malformed, segment_start: int) -> _Again:
        """Discard the current command from the segment being read, report afterwards."""
        del self._buf[:segment_start]
        self._reset_command()
        self._pending = event
        self._skip_literals = True
        self._mode = _SKIP_LINE
        return _AGAIN

    def _read_segment(self) -> _Step:
        """Parse one line segment: up to LF, or up to a literal announcement."""
        buf = self._buf
        start = self._scan
        bounds = self._bounds
        used = self._line_len
        limit = start + min(bounds.line - used, bounds.command - used - self._lit_total)
        nl = buf.find(b"\n", self._lf_from, limit)
        if nl < 0:
            if len(buf) < limit:
                self._lf_from = len(buf)
                return None
            if self._tag is None and bounds is self._default:
                own = self._by_name.get(self._peek_name(limit))
                if own is not None:
                    # A first line too long for the default, of a command allowed more.
                    self._bounds = own
                    self._lf_from = limit
                    return _AGAIN
            tag = self._tag if self._tag is not None else self._peek_tag(bounds.line)
            return self._fail(TooLong(tag), start)
        end = nl - 1 if nl > start and buf[nl - 1] == 0x0D else nl
        tag = self._tag
        if buf.find(b"\x00", start, end) >= 0:
            return self._fail(Malformed(tag or self._peek_tag(end), "NUL in line"), start)
        self._line_len += nl + 1 - start
        pos = start
        if tag is None:
            if end == start:
                return self._fail(Malformed(None, "empty line"), start)
            m = _TAG.match(buf, pos, end)
            if m is None or (m.end() < end and buf[m.end()] != _SP):
                return self._fail(Malformed(None, "invalid tag"), start)
            tag = m.group().decode("ascii")
            if m.end() == end:
                return self._fail(Malformed(tag, "missing command name"), start)
            m = _ATOM.match(buf, m.end() + 1, end)
            if m is None or (m.end() < end and buf[m.end()] != _SP):
                return self._fail(Malformed(tag, "invalid command name"), start)
            self._tag = tag
            self._name = m.group().upper().decode("ascii")
            pos = m.end()
            self._need_sep = True
            own = self._by_name.get(self._name, self._default)
            self._bounds = own
            if self._line_len > min(own.line, own.command):
                return self._fail(TooLong(tag), start)
        stack = self._stack
        need_sep = self._need_sep
        while pos < end:
            c = buf[pos]
            if need_sep:
                if c == _SP:
                    need_sep = False
                    pos += 1
                elif c == _RPAREN and len(stack) > 1:
                    stack.pop()
                    pos += 1
                else:
                    return self._fail(Malformed(tag, "expected space or end of line"), start)
            elif c == _DQUOTE:
                m = _QUOTED.match(buf, pos, end)
                if m is None:
                    return self._fail(Malformed(tag, "invalid quoted string"), start)
                value = bytes(m.group(1))
                if b"\\" in value:
                    value = _UNESCAPE.sub(rb"\1", value)
                stack[-1].append(value)
                pos = m.end()
                need_sep = True
            elif c == _LPAREN:
                if len(stack) > _MAX_DEPTH:
                    return self._fail(Malformed(tag, "lists nested too deeply"), start)
                inner: list[Arg] = []
                stack[-1].append(inner)
                pos += 1
                if pos < end and buf[pos] == _RPAREN:
                    pos += 1
                    need_sep = True
                else:
                    stack.append(inner)
            elif c == _LBRACE:
                m = _LITERAL.match(buf, pos, end)
                if m is None or m.end() != end:
                    return self._fail(Malformed(tag, "invalid literal"), start)
                return self._literal(_literal_size(m.group(1)), not m.group(2), nl)
            elif c == _TILDE:
                return self._fail(Malformed(tag, "literal8 is not supported here"), start)
            else:
                m = _ASTRING.match(buf, pos, end)
                if m is None:
                    return self._fail(Malformed(tag, "unexpected character"), start)
                stack[-1].append(bytes(m.group()))
                pos = m.end()
                need_sep = True
        if len(stack) > 1:
            return self._fail(Malformed(tag, "unbalanced parentheses"), start)
        if not need_sep:
            return self._fail(Malformed(tag, "unexpected end of line"), start)
        event = Command(tag, self._name, tuple(stack[0]))
        del buf[: nl + 1]
        self._reset_command()
        return event

    def _literal(self, size: int, sync: bool, nl: int) -> _Step:
        tag = self._tag
        assert tag is not None
        bounds = self._bounds
        if size > bounds.literal or self._line_len + self._lit_total + size > bounds.command:
            del self._buf[: nl + 1]
            self._reset_command()
            if sync:
                # The client waits for a "+" that never comes, so it sends no body.
                return TooLong(tag)
            # Reported now; the body and the rest of the command are skipped silently.
            self._pending = None
            self._skip = size
            self._skip_literals = True
            self._mode = _SKIP_BYTES
            return LiteralTooLong(tag, size)
        self._lit_total += size
        self._lit_size = size
        self._lit_sync = sync
        self._scan = self._lf_from = nl + 1
        self._need_sep = False
        self._mode = _LITERAL_BODY
        return ContinuationNeeded(tag, size) if sync else _AGAIN

    def _read_literal(self) -> _Step:
        start = self._scan
        stop = start + self._lit_size
        if len(self._buf) < stop:
            return None
        self._stack[-1].append(bytes(self._buf[start:stop]))
        self._scan = self._lf_from = stop
        self._lit_sync = False
        self._need_sep = True
        self._mode = _COMMAND
        return _AGAIN

    def _skip_line(self) -> _Step:
        """Discard through the next LF, following LITERAL+ bodies announced on the way.

        A discarded line may end with ``{n+}``: those n bytes will come and must not be
        taken for commands. It may end with ``{n}``: then the client waits for a ``+``
        and sends nothing more, so the command ends here.
        """
        buf = self._buf
        nl = buf.find(b"\n")
        if nl < 0:
            if len(buf) > _TAIL:
                del buf[:-_TAIL]
            return None
        m = None
        if self._skip_literals:
            m = _TRAILING_LITERAL.search(buf, max(0, nl + 1 - _TAIL), nl + 1)
        plus = m is not None and m.group(2) == b"+"
        if plus:
            self._skip = int(m.group(1))  # type: ignore[union-attr]
        del buf[: nl + 1]
        if plus:
            self._mode = _SKIP_BYTES
            pending = self._pending
            if pending is not None and self._skip > self._default.literal:
                # As for a command still being read: say so now, not after the body.
                self._pending = None
                return LiteralTooLong(pending.tag, self._skip)
            return _AGAIN
        event = self._pending
        self._pending = None
        self._mode = _COMMAND
        self._reset_command()
        return _AGAIN if event is None else event

    def _skip_bytes(self) -> _Step:
        k = min(self._skip, len(self._buf))
        del self._buf[:k]
        self._skip -= k
        if self._skip:
            return None
        self._mode = _SKIP_LINE
        return _AGAIN

    def _read_raw(self) -> _Step:
        buf = self._buf
        limit = self._default.line
        nl = buf.find(b"\n", self._lf_from, limit)
        if nl < 0:
            if len(buf) < limit:
                self._lf_from = len(buf)
                return None
            # Reported at once: the caller answers while the rest of the line is dropped,
            # so a client that never ends the line is not left waiting.
            self._pending = None
            self._skip_literals = False
            self._mode = _SKIP_LINE
            return TooLong(None)
        end = nl - 1 if nl > 0 and buf[nl - 1] == 0x0D else nl
        data = bytes(buf[:end])
        del buf[: nl + 1]
        self._mode = _COMMAND
        self._lf_from = 0
        return RawLine(data)
