"""Netstrings (http://cr.yp.to/proto/netstrings.txt), the framing of Postfix's socketmap.

``12:hello world!,`` carries ``hello world!``. The decoder is incremental (TCP delivers
any split of the stream) and bounded: the length prefix is checked against the limit as
soon as it is complete, so a peer announcing a huge payload is refused before a single
payload byte is buffered. Any malformed input raises :class:`NetstringError` and the
decoder stays broken: after a framing error the stream cannot be resynchronised, so the
only correct reaction is to close the connection.
"""

from __future__ import annotations

# Postfix's socketmap client refuses replies over 100000 characters; requests are a map
# name and a key (an address or a domain), so 10000 is already generous.
DEFAULT_MAX_LENGTH = 10_000


class NetstringError(ValueError):
    """The stream is not a netstring within the limit; close the connection."""


def encode(payload: bytes) -> bytes:
    """Frame ``payload`` as one netstring."""
    return b"%d:%s," % (len(payload), payload)


class NetstringDecoder:
    """Feed bytes as they arrive; get whole payloads back, in order."""

    __slots__ = ("_broken", "_buffer", "_max_digits", "_need", "max_length")

    def __init__(self, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        if max_length < 0:
            raise ValueError("max_length must not be negative")
        self.max_length = max_length
        self._max_digits = len(str(max_length))
        self._buffer = bytearray()
        self._need: int | None = None  # payload length once the prefix is parsed
        self._broken = False

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete netstring (bounded by the limit plus a prefix)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Consume ``data``; return every payload it completes (possibly none)."""
        if self._broken:
            raise NetstringError("decoder already failed")
        self._buffer += data
        out: list[bytes] = []
        try:
            while True:
                payload = self._next()
                if payload is None:
                    return out
                out.append(payload)
        except NetstringError:
            self._broken = True
            self._buffer.clear()
            raise

    def _next(self) -> bytes | None:
        buf = self._buffer
        if self._need is None:
            colon = buf.find(b":", 0, self._max_digits + 1)
            if colon < 0:
                if buf and not bytes(buf).isdigit():
                    raise NetstringError("length prefix is not a decimal number")
                if len(buf) > self._max_digits:
                    raise NetstringError(f"netstring longer than {self.max_length} bytes")
                return None
            digits = bytes(buf[:colon])
            if not digits or not digits.isdigit():
                raise NetstringError("length prefix is not a decimal number")
            if len(digits) > 1 and digits[:1] == b"0":
                raise NetstringError("length prefix has leading zeros")
            length = int(digits)
            if length > self.max_length:
                raise NetstringError(f"netstring longer than {self.max_length} bytes")
            del buf[: colon + 1]
            self._need = length
        need = self._need
        if len(buf) < need + 1:
            return None
        if buf[need] != ord(","):
            raise NetstringError("netstring not terminated by ','")
        payload = bytes(buf[:need])
        del buf[: need + 1]
        self._need = None
        return payload
