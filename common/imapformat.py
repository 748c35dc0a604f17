"""Pure helpers for talking IMAP to a backend and reading its answers.

The proxy replays the client's login to the backend, so client-chosen bytes end up in a
line we write. Everything here is built so that no client byte can ever terminate our
command or start another one: a value is either safely quoted or sent as a literal whose
length we announce.
"""

from __future__ import annotations

import re

_TAG_OK = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\+]+\Z')
_STATUS = frozenset({b"OK", b"NO", b"BAD"})
_CODE_STATUS = frozenset({b"OK", b"NO", b"BAD", b"BYE", b"PREAUTH"})


def quote(value: bytes) -> bytes | None:
    """Quoted string, or None when only a literal can carry the value.

    CR, LF and NUL are never allowed in a quoted string, and 8-bit bytes only after
    UTF8=ACCEPT, which a backend login cannot count on.
    """
    if not value.isascii() or b"\r" in value or b"\n" in value or b"\x00" in value:
        return None
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def astring_parts(value: bytes, literal_plus: bool) -> list[bytes]:
    """How to send one string argument: each element is followed by waiting for "+".

    A synchronizing literal is two parts because the server must say "+" before the
    body; its length is exact, so the body can contain anything, CRLF included.
    """
    quoted = quote(value)
    if quoted is not None:
        return [quoted]
    if literal_plus:
        return [b"{%d+}\r\n" % len(value) + value]
    return [b"{%d}\r\n" % len(value), value]


def login_command(tag: bytes, user: bytes, password: bytes, literal_plus: bool) -> list[bytes]:
    """Pieces of ``tag LOGIN user password CRLF``; wait for a continuation between them."""
    if not _TAG_OK.match(tag):
        raise ValueError("invalid IMAP tag")
    pieces: list[bytes] = []
    current = tag + b" LOGIN "
    for i, value in enumerate((user, password)):
        if i:
            current += b" "
        parts = astring_parts(value, literal_plus)
        current += parts[0]
        if len(parts) == 2:
            pieces.append(current)
            current = parts[1]
    pieces.append(current + b"\r\n")
    return pieces


def response_code(line: bytes) -> bytes | None:
    """The text inside ``[...]`` after OK/NO/BAD/BYE/PREAUTH, tagged or untagged."""
    words = line.split(b" ", 2)
    if len(words) < 3 or words[1].upper() not in _CODE_STATUS:
        return None
    text = words[2]
    if not text.startswith(b"["):
        return None
    close = text.find(b"]")
    return text[1:close] if close > 0 else None


def capability_code(line: bytes) -> bytes | None:
    """Capabilities from a ``[CAPABILITY ...]`` code, so no extra round trip is needed."""
    code = response_code(line)
    if code is None:
        return None
    name, _, rest = code.partition(b" ")
    return rest.strip() if name.upper() == b"CAPABILITY" else None


def parse_capability(text: bytes, *, keep_case: bool = False) -> tuple[str, ...]:
    """Capability names from ``* CAPABILITY ...``, a status line carrying a
    ``[CAPABILITY ...]`` code, the bare code ``[CAPABILITY ...]``, or its contents.

    Upper-cased for comparing (names are case-insensitive); ``keep_case`` keeps the
    server's spelling for lists a client is shown (``IMAP4rev1``, not ``IMAP4REV1``)."""
    text = text.strip()
    code = capability_code(text)
    if code is not None:
        return _words(code, keep_case)
    if text.startswith((b"[", b"* ")):
        inner = text[1:].partition(b"]")[0] if text.startswith(b"[") else text[2:]
        name, _, rest = inner.partition(b" ")
        # Any other untagged response or code (e.g. a greeting without capabilities).
        return _words(rest, keep_case) if name.upper() == b"CAPABILITY" else ()
    name, _, rest = text.partition(b" ")
    return _words(rest if name.upper() == b"CAPABILITY" else text, keep_case)


def _words(text: bytes, keep_case: bool) -> tuple[str, ...]:
    words = text.split() if keep_case else text.upper().split()
    return tuple(word.decode("ascii", "replace") for word in words)


def tagged_status(line: bytes, tag: bytes) -> str | None:
    """ "OK", "NO" or "BAD" when ``line`` is the tagged completion for ``tag``."""
    if not tag or tag in (b"*", b"+") or not line.startswith(tag + b" "):
        return None
    status, _, _ = line[len(tag) + 1 :].rstrip(b"\r\n").partition(b" ")
    status = status.upper()
    return status.decode("ascii") if status in _STATUS else None
