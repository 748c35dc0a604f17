"""IMAP data for the admin tool's backend client: parsing server responses, building APPENDs.

Pure (bytes in, values out) so the fiddly parts, literals inside responses and message
checksums, are testable without a server. The client in :mod:`.imapclient` only moves bytes.

A response is kept in wire form (lines and literal bodies concatenated, exactly as read) and
tokenised here: an atom is an :class:`Atom`, a quoted string or literal is plain ``bytes``,
a parenthesised list is a ``list``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from common.imapformat import astring_parts
from directory.provision import Unavailable


class Atom(bytes):
    """An unquoted IMAP atom (``UID``, ``\\Seen``, ``BODY[]``, ``NIL``)."""


class ParseError(Unavailable):
    """A response we cannot read: to the operation, as good as a backend that is down."""


_ATOM_END = b" ()\r\n"


def _parse_one(data: bytes, pos: int) -> tuple[object, int]:
    ch = data[pos : pos + 1]
    if ch == b"(":
        items, pos = _parse_seq(data, pos + 1, closing=True)
        return items, pos
    if ch == b'"':
        out = bytearray()
        pos += 1
        while pos < len(data):
            c = data[pos]
            if c == 0x5C and pos + 1 < len(data):  # backslash: the next octet is literal
                out.append(data[pos + 1])
                pos += 2
            elif c == 0x22:
                return bytes(out), pos + 1
            else:
                out.append(c)
                pos += 1
        raise ParseError("unterminated quoted string")
    if ch == b"{":
        end = data.find(b"}\r\n", pos)
        size_text = data[pos + 1 : end].rstrip(b"+")
        if end < 0 or not size_text.isdigit():
            raise ParseError("bad literal")
        start = end + 3
        size = int(size_text)
        if start + size > len(data):
            raise ParseError("literal runs past the response")
        return data[start : start + size], start + size
    start = pos
    while pos < len(data) and data[pos : pos + 1] not in (b" ", b"(", b")", b"\r", b"\n"):
        if data[pos : pos + 1] == b"[":  # a section may hold spaces and parentheses
            close = data.find(b"]", pos)
            if close < 0:
                raise ParseError("unterminated [")
            pos = close
        pos += 1
    if pos == start:
        raise ParseError(f"unexpected {data[pos : pos + 10]!r}")
    return Atom(data[start:pos]), pos


def _parse_seq(data: bytes, pos: int, closing: bool) -> tuple[list[object], int]:
    items: list[object] = []
    while True:
        while data[pos : pos + 1] == b" ":
            pos += 1
        ch = data[pos : pos + 1]
        if ch == b")":
            if not closing:
                raise ParseError("unbalanced )")
            return items, pos + 1
        if ch in (b"", b"\r", b"\n"):
            if closing:
                raise ParseError("unterminated (")
            return items, pos
        value, pos = _parse_one(data, pos)
        items.append(value)


def parse_response(data: bytes) -> list[object]:
    """Tokens of one untagged response, without the leading ``*``."""
    if not data.startswith(b"* "):
        raise ParseError("not an untagged response")
    items, _ = _parse_seq(data, 2, closing=False)
    return items


def word(value: object) -> str:
    """An atom or string as upper-case text, for comparing keywords."""
    return bytes(value).decode("ascii", "replace").upper() if isinstance(value, bytes) else ""


@dataclass(frozen=True, slots=True)
class Message:
    uid: int
    flags: tuple[str, ...]
    internaldate: str
    body: bytes

    def digest(self) -> str:
        """What must survive a copy: content, flags (minus \\Recent) and the internal date."""
        flags = " ".join(sorted(f.lower() for f in self.flags if f.lower() != "\\recent"))
        when = int(parse_internaldate(self.internaldate).timestamp())
        return f"{hashlib.sha256(self.body).hexdigest()}|{flags}|{when}"


def parse_internaldate(text: str) -> datetime:
    """``"17-Jul-1996 02:44:25 -0700"`` (day possibly space-padded) → aware datetime.

    Backends may report the same instant in another zone (Dovecot uses its local zone), so
    copies are compared as instants, never as strings.
    """
    months = "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split()
    try:
        day_text, time_text, zone = text.strip().split(" ")
        day, month, year = day_text.split("-")
        hour, minute, second = (int(p) for p in time_text.split(":"))
        sign = -1 if zone[0] == "-" else 1
        offset = sign * (int(zone[1:3]) * 60 + int(zone[3:5]))
        tz = timezone(timedelta(minutes=offset))
        return datetime(
            int(year), months.index(month.upper()) + 1, int(day), hour, minute, second, 0, tz
        )
    except (ValueError, IndexError) as exc:
        raise ParseError(f"bad INTERNALDATE {text!r}") from exc


def fetch_message(tokens: list[object]) -> Message | None:
    """A :class:`Message` from ``N FETCH (UID .. FLAGS .. INTERNALDATE .. BODY[] ..)``.

    ``None`` for a FETCH without a body (an unsolicited flag update), which callers skip.
    """
    if len(tokens) < 3 or word(tokens[1]) != "FETCH" or not isinstance(tokens[2], list):
        return None
    items = tokens[2]
    attrs = {word(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}
    body, uid = attrs.get("BODY[]"), attrs.get("UID")
    if not isinstance(body, bytes) or not isinstance(uid, bytes) or not uid.isdigit():
        return None
    flags_value = attrs.get("FLAGS")
    flags = tuple(
        bytes(f).decode("utf-8", "replace")
        for f in (flags_value if isinstance(flags_value, list) else [])
    )
    date = attrs.get("INTERNALDATE")
    date_text = bytes(date).decode("ascii", "replace") if isinstance(date, bytes) else ""
    return Message(int(uid), flags, date_text, bytes(body))


def folder_checksum(digests: Iterable[str]) -> str:
    """One checksum for a folder, independent of message order (UIDs differ after a copy)."""
    return hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()


def astring(value: bytes, literal_plus: bool) -> list[bytes]:
    """An argument as pieces: quoted when possible, else a literal."""
    return astring_parts(value, literal_plus)


def join_pieces(parts: Sequence[list[bytes]]) -> list[bytes]:
    """Concatenate argument pieces into the chunks to send, split where a "+" must come.

    Each chunk is joined once from a list: a MULTIAPPEND of 500 messages with LITERAL+ is
    one chunk of megabytes, and growing it with ``+=`` (a copy per message) made building
    it quadratic: seconds of CPU for a batch that the network sends in a fraction of one.
    """
    chunks: list[bytes] = []
    current: list[bytes] = []
    for i, pieces in enumerate(parts):
        if i:
            current.append(b" ")
        current.append(pieces[0])
        for piece in pieces[1:]:
            chunks.append(b"".join(current))
            current = [piece]
    current.append(b"\r\n")
    chunks.append(b"".join(current))
    return chunks


def append_args(
    folder: bytes, messages: Sequence[Message], literal_plus: bool
) -> list[list[bytes]]:
    """Arguments of one (MULTI)APPEND: folder, then flags, date and body per message.

    ``\\Recent`` is dropped: only the server sets it, and an APPEND naming it is refused.
    """
    args = [astring(folder, literal_plus)]
    for message in messages:
        flags = [f for f in message.flags if f.lower() != "\\recent"]
        args.append([b"(" + " ".join(flags).encode("utf-8") + b")"])
        if message.internaldate:
            args.append([b'"' + message.internaldate.strip().encode("ascii") + b'"'])
        body = message.body
        if literal_plus:
            args.append([b"{%d+}\r\n" % len(body) + body])
        else:
            args.append([b"{%d}\r\n" % len(body), body])
    return args


def uid_set(uids: Sequence[int]) -> bytes:
    """``[1, 2, 3, 7]`` → ``b"1:3,7"``: a short UID set even for thousands of messages."""
    out: list[str] = []
    ordered = sorted(uids)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}:{ordered[j]}")
        i = j + 1
    return ",".join(out).encode("ascii")
