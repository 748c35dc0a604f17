"""Postfix's tcp_table protocol (tcp_table(5)): ``get KEY\\n`` → ``200 DATA\\n``.

Both directions use ``%XX`` for ``%``, whitespace and every non-printing character, so a
key or an answer can never contain the newline that ends a line. The line reader is
bounded (tcp_table(5) limits replies to 4096 characters; requests are keys), and a line
that outgrows it is a :class:`TcpTableError`, as is any malformed encoding.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_LINE = 4096  # tcp_table(5): "Replies must be no longer than 4096 characters"

_HEX = b"0123456789abcdefABCDEF"


class TcpTableError(ValueError):
    """A malformed or oversized request; the message is safe to send back."""


def _plain(byte: int) -> bool:
    # Postfix's hex_quote(): printable ASCII except space and '%' goes through as is.
    return 0x21 <= byte <= 0x7E and byte != 0x25


def encode(data: bytes) -> bytes:
    """``%XX``-encode what tcp_table(5) requires (and nothing else, for readability)."""
    return b"".join(bytes((b,)) if _plain(b) else b"%%%02X" % b for b in data)


def decode(text: bytes) -> bytes:
    """Undo ``%XX`` (hex in any case); a ``%`` not followed by two hex digits is an error."""
    if b"%" not in text:
        return text
    out = bytearray()
    i, end = 0, len(text)
    while i < end:
        byte = text[i]
        if byte != 0x25:
            out.append(byte)
            i += 1
            continue
        pair = text[i + 1 : i + 3]
        if len(pair) != 2 or pair[0] not in _HEX or pair[1] not in _HEX:
            raise TcpTableError("bad %XX encoding")
        out.append(int(pair, 16))
        i += 3
    return bytes(out)


@dataclass(frozen=True, slots=True)
class Get:
    """A lookup request; ``key`` is decoded."""

    key: bytes


def parse_request(line: bytes) -> Get:
    """Parse one request line (without its newline); only ``get`` exists."""
    line = line.removesuffix(b"\r")
    command, sep, rest = line.partition(b" ")
    if command.lower() != b"get" or not sep:
        raise TcpTableError("unsupported request")
    key = decode(rest.strip(b" \t"))
    if not key:
        raise TcpTableError("empty key")
    return Get(key)


def reply(status: int, text: bytes) -> bytes:
    """One reply line; ``text`` is encoded so it cannot break the line framing."""
    line = b"%d %s\n" % (status, encode(text))
    if len(line) > MAX_LINE:
        # Only a pathological directory value gets here; Postfix would reject it anyway.
        return b"400 reply too long\n"
    return line


class LineDecoder:
    """Incremental, bounded ``\\n``-terminated line splitter."""

    __slots__ = ("_broken", "_buffer", "max_line")

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buffer = bytearray()
        self._broken = False

    def feed(self, data: bytes) -> list[bytes]:
        """Return the complete lines in ``data`` (newline removed), in order."""
        if self._broken:
            raise TcpTableError("decoder already failed")
        self._buffer += data
        lines: list[bytes] = []
        start = 0
        buf = self._buffer
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            if nl - start > self.max_line:
                break
            lines.append(bytes(buf[start:nl]))
            start = nl + 1
        del buf[:start]
        over = buf.find(b"\n")
        if over > self.max_line or (over < 0 and len(buf) > self.max_line):
            self._broken = True
            buf.clear()
            raise TcpTableError(f"request line longer than {self.max_line} bytes")
        return lines
