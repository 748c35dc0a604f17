"""SMTP/LMTP wire details shared by the LMTP proxy and the submission relay (pure).

Kept apart from the clients that use them so that the parts where a mistake becomes a
security problem (message transparency, reply parsing, xtext) are unit-tested and fuzzed
without sockets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_REPLY_LINE = 2048  # RFC 5321 says 512; real servers are longer, none this long
MAX_REPLY_LINES = 100  # an EHLO reply has a line per extension; 100 is plenty

_REPLY_LINE = re.compile(rb"([2-5][0-9][0-9])([ -]?)(.*)", re.DOTALL)


class ReplyError(ValueError):
    """The peer's reply is not SMTP (garbled, too long); the connection is unusable."""


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def transient(self) -> bool:
        return 400 <= self.code < 500

    def wire(self) -> str:
        """The reply as we pass it on: every line, with its code, CRLF between lines."""
        lines = self.lines or ("",)
        last = len(lines) - 1
        return "\r\n".join(
            f"{self.code}{' ' if i == last else '-'}{text}".rstrip() for i, text in enumerate(lines)
        )

    def brief(self) -> str:
        """One line for logs."""
        return f"{self.code} {' / '.join(self.lines)}"[:300]


def local_reply(code: int, text: str) -> Reply:
    """A reply we make up ourselves (backend down, timeout), in the peer's format."""
    return Reply(code, (text,))


class ReplyParser:
    """Accumulates the lines of one (possibly multi-line) reply."""

    __slots__ = ("_code", "_lines")

    def __init__(self) -> None:
        self._code: int | None = None
        self._lines: list[str] = []

    def feed_line(self, raw: bytes) -> Reply | None:
        """One line including or excluding its CRLF; a Reply when the last line arrived."""
        line = raw.rstrip(b"\r\n")
        if len(line) > MAX_REPLY_LINE:
            raise ReplyError("reply line too long")
        found = _REPLY_LINE.fullmatch(line)
        if found is None:
            raise ReplyError("not an SMTP reply")
        code = int(found.group(1))
        if self._code is not None and code != self._code:
            raise ReplyError("reply code changed within a multi-line reply")
        self._code = code
        text = found.group(3).decode("utf-8", "replace")
        self._lines.append("".join(ch if ch.isprintable() else "?" for ch in text))
        if len(self._lines) > MAX_REPLY_LINES:
            raise ReplyError("reply has too many lines")
        if found.group(2) == b"-":
            return None
        reply = Reply(code, tuple(self._lines))
        self._code, self._lines = None, []
        return reply


def extensions(reply: Reply) -> dict[str, str]:
    """EHLO/LHLO keywords (upper case) → their parameters; the first line is the greeting."""
    out: dict[str, str] = {}
    for line in reply.lines[1:]:
        keyword, _, params = line.strip().partition(" ")
        if keyword:
            out[keyword.upper()] = params.strip()
    return out


_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def wire_data(content: bytes) -> bytes:
    """A message body as it must go after DATA: CRLF lines, dot-stuffed, terminated.

    Bare CR and bare LF become CRLF first. Passing them through would let a message carry
    ``<LF>.<CR><LF>``, which some servers take as the end of data: the rest of the message
    would then be read as SMTP commands (SMTP smuggling). Normalising means the only
    end-of-data sequence the next hop can see is the one appended here.
    """
    lines = _LINE_BREAK.split(content)
    if lines and lines[-1] == b"":
        lines.pop()
    stuffed = [b"." + line if line.startswith(b".") else line for line in lines]
    return b"".join(line + b"\r\n" for line in stuffed) + b".\r\n"


def xtext(value: str) -> str:
    """RFC 3461 xtext, as XCLIENT (Postfix XCLIENT_README) requires for its values."""
    out = []
    for byte in value.encode("utf-8"):
        if 33 <= byte <= 126 and byte not in (ord("+"), ord("=")):
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)


def reverse_path(address: str | None) -> str:
    """The MAIL FROM address to pass on: aiosmtpd reports the null sender as ``"<>"``,
    which must go out as ``MAIL FROM:<>`` (bounces), never as ``<<>>``."""
    return "" if not address or address == "<>" else address


_HELO_SAFE = re.compile(r"[A-Za-z0-9.\-_:\[\]]{1,255}")


def safe_helo(name: str, fallback: str) -> str:
    """A HELO name we can repeat in our own EHLO to the next hop without breaking it."""
    return name if _HELO_SAFE.fullmatch(name or "") else fallback
