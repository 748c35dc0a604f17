"""ManageSieve capability blocks: ours before login, the backends' learnt as they log in.

Before login a client is told which Sieve extensions the server supports (``"SIEVE"``),
and editors use that list to check scripts; but which backend serves the client is only
known after login. So the list shown is the one the backends last sent (every backend
login reads the backend's greeting), and until the first login a default: Debian 12's
Pigeonhole list. After login, a CAPABILITY goes to the backend itself and gets its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from proxy.sieve.parser import quote

IMPLEMENTATION = b"mailfarm"
VERSION = b"1.0"
#: Pigeonhole 0.5 (Debian 12) with its default extensions, until a backend says otherwise.
DEFAULT_SIEVE = (
    b"fileinto reject envelope encoded-character vacation subaddress comparator-i;ascii-numeric"
    b" relational regex imap4flags copy include variables body enotify environment mailbox"
    b" date index ihave duplicate mime foreverypart extracttext"
)
DEFAULT_NOTIFY = b"mailto"
#: What a backend's greeting may tell the clients (its SASL, STARTTLS and IMPLEMENTATION
#: describe the backend's listener, not ours).
LEARNT = (b"SIEVE", b"NOTIFY", b"MAXREDIRECTS")

_LINE = re.compile(rb'"([^"\\]*)"(?: "((?:[^"\\]|\\.)*)")?\r?\n?')


def parse_capability_line(line: bytes) -> tuple[bytes, bytes | None] | None:
    """``"NAME" "value"`` → (NAME upper-cased, value); None for a line that is not one."""
    found = _LINE.fullmatch(line)
    if found is None:
        return None
    value = found.group(2)
    if value is not None:
        value = re.sub(rb"\\(.)", rb"\1", value)
    return found.group(1).upper(), value


@dataclass
class KnownCapabilities:
    """One per sieve listener: what the backends said, for the next pre-login block."""

    learnt: dict[bytes, bytes] = field(
        default_factory=lambda: {b"SIEVE": DEFAULT_SIEVE, b"NOTIFY": DEFAULT_NOTIFY}
    )

    def learn(self, lines: list[bytes]) -> None:
        seen = {}
        for line in lines:
            parsed = parse_capability_line(line)
            if parsed is not None and parsed[0] in LEARNT and parsed[1] is not None:
                seen[parsed[0]] = parsed[1]
        if b"SIEVE" in seen:  # a greeting without SIEVE is not one to learn from
            self.learnt = seen

    def block(self, sasl: bool, starttls: bool) -> bytes:
        """The capability lines (no final OK): RFC 5804 section 1.7."""
        lines = [(b"IMPLEMENTATION", IMPLEMENTATION)]
        lines.append((b"SASL", b"PLAIN LOGIN" if sasl else b""))
        lines += [(name, self.learnt[name]) for name in LEARNT if name in self.learnt]
        if starttls:
            lines.append((b"STARTTLS", None))
        lines.append((b"VERSION", VERSION))
        return b"".join(
            quote(name) + (b" " + quote(value) if value is not None else b"") + b"\r\n"
            for name, value in lines
        )
