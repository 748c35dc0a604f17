"""A small blocking IMAP client for admin logins on the backends.

Not imaplib, because a move must be fast: imaplib sends every literal synchronously (one
round trip per message and then some), while this client sends a whole batch of messages as
one MULTIAPPEND with LITERAL+ literals, i.e. one write and one reply for hundreds of messages.
It falls back to synchronizing literals when a server lacks LITERAL+.

Every socket failure becomes :class:`directory.provision.Unavailable` naming the backend, and
every NO/BAD an :class:`ImapError` (also "unavailable": the step could not be done).
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from common.imapformat import login_command, parse_capability, tagged_status
from directory.provision import Unavailable
from directory.provision.imapdata import join_pieces
from directory.provision.saslplain import plain_response

MAX_LINE = 1 << 20


class ImapError(Unavailable):
    """A command answered NO or BAD."""

    def __init__(self, address: str, command: str, status: str, text: bytes) -> None:
        shown = text.decode("utf-8", "replace").strip()
        super().__init__(f"backend {address}: {command} failed: {status} {shown}")
        self.status = status
        self.text = text


@dataclass(frozen=True, slots=True)
class Response:
    status: str  # OK, NO or BAD
    text: bytes  # the rest of the tagged line
    untagged: list[bytes]  # each in wire form, literals included

    def code(self) -> bytes:
        """The response code of the tagged line (``ALREADYEXISTS``...), or ``b""``."""
        if self.text.startswith(b"["):
            return self.text[1 : self.text.find(b"]")].split(b" ")[0].upper()
        return b""


class ImapClient:
    """One connection to ``host:port``; use as a context manager (logs out on exit)."""

    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        self.address = f"{host}:{port}"
        try:
            self._sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise Unavailable(f"backend {self.address}: {exc.strerror or exc}") from None
        self._file = self._sock.makefile("rb", buffering=1 << 16)
        self._tags = itertools.count(1)
        greeting = self._read_item()
        if not greeting.startswith(b"* OK"):
            self.close()
            raise Unavailable(f"backend {self.address}: unexpected greeting {greeting[:80]!r}")
        self.capabilities = set(parse_capability(greeting))

    # -- wire -----------------------------------------------------------------------------

    def _fail(self, exc: BaseException) -> Unavailable:
        self.close()
        return Unavailable(f"backend {self.address}: connection lost: {exc or type(exc).__name__}")

    def _readline(self) -> bytes:
        try:
            line = self._file.readline(MAX_LINE)
        except OSError as exc:
            raise self._fail(exc) from None
        if not line.endswith(b"\n"):
            raise self._fail(
                ConnectionError("closed by the server" if not line else "line too long")
            )
        return line

    def _read_item(self) -> bytes:
        """One response, literals included: a line ending ``{n}`` continues after n octets."""
        parts = [self._readline()]
        while parts[-1].endswith(b"}\r\n"):
            start = parts[-1].rfind(b"{")
            size = parts[-1][start + 1 : -3]
            if start < 0 or not size.isdigit():
                break
            try:
                body = self._file.read(int(size))
            except OSError as exc:
                raise self._fail(exc) from None
            if len(body) != int(size):
                raise self._fail(ConnectionError("closed inside a literal"))
            parts.append(body)
            parts.append(self._readline())
        return b"".join(parts)

    def _write(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise self._fail(exc) from None

    def _tag(self) -> bytes:
        return b"m%d" % next(self._tags)

    def _tagged(self, tag: bytes, item: bytes, untagged: list[bytes]) -> Response:
        status = tagged_status(item, tag) or "BAD"
        return Response(status, item[len(tag) + 1 + len(status) :].strip(), untagged)

    def _finish(self, tag: bytes, untagged: list[bytes]) -> Response:
        while True:
            item = self._read_item()
            if tagged_status(item, tag) is not None:
                return self._tagged(tag, item, untagged)
            if item.startswith(b"* BYE"):
                raise self._fail(ConnectionError(item.decode("utf-8", "replace").strip()))
            if item.startswith(b"*"):
                untagged.append(item)

    def _exchange(self, tag: bytes, chunks: Sequence[bytes]) -> Response:
        """Send a command whose chunks are separated by synchronizing literals; its reply.

        The server may answer the command before asking for the rest (a NO instead of "+"
        to a literal); that answer is the reply, and the rest is never sent.
        """
        untagged: list[bytes] = []
        self._write(chunks[0])
        for chunk in chunks[1:]:
            while True:
                item = self._read_item()
                if item.startswith(b"+"):
                    break
                if tagged_status(item, tag) is not None:
                    return self._tagged(tag, item, untagged)
                untagged.append(item)
            self._write(chunk)
        return self._finish(tag, untagged)

    def run(self, command: bytes, *args: list[bytes], check: bool = True) -> Response:
        """Send ``command`` with argument pieces and wait for its tagged reply."""
        tag = self._tag()
        response = self._exchange(tag, join_pieces([[tag + b" " + command], *args]))
        if check and response.status != "OK":
            name = command.split(b" ", 1)[0].decode("ascii", "replace")
            raise ImapError(self.address, name, response.status, response.text)
        return response

    # -- commands -------------------------------------------------------------------------

    @property
    def literal_plus(self) -> bool:
        return "LITERAL+" in self.capabilities

    def login(self, user: str, password: str) -> None:
        """LOGIN (quoted or as literals, never one byte of the password in a log)."""
        tag = self._tag()
        pieces = login_command(tag, user.encode(), password.encode(), self.literal_plus)
        self._logged_in(self._exchange(tag, pieces), f"LOGIN as {user}")

    def authenticate_plain(self, authzid: str, authcid: str, password: str) -> None:
        """``AUTHENTICATE PLAIN`` as ``authcid`` acting for ``authzid`` (RFC 4616): how an
        admin or proxy user opens another user's mailbox where LOGIN has no form for it."""
        try:
            token = plain_response(authzid, authcid, password)
        except ValueError as exc:
            raise ImapError(self.address, "AUTHENTICATE", "BAD", str(exc).encode()) from None
        tag = self._tag()
        chunks = [tag + b" AUTHENTICATE PLAIN\r\n", token + b"\r\n"]
        if "SASL-IR" in self.capabilities:
            chunks = [tag + b" AUTHENTICATE PLAIN " + token + b"\r\n"]
        self._logged_in(self._exchange(tag, chunks), f"AUTHENTICATE as {authcid} for {authzid}")

    def _logged_in(self, response: Response, what: str) -> None:
        if response.status != "OK":
            raise ImapError(self.address, what, response.status, response.text)
        if response.code() == b"CAPABILITY":
            self.capabilities = set(parse_capability(response.text))
        else:
            caps = self.run(b"CAPABILITY")
            for item in caps.untagged:
                if item.upper().startswith(b"* CAPABILITY"):
                    self.capabilities = set(parse_capability(item))

    def close(self) -> None:
        for thing in (self._file, self._sock):
            try:
                thing.close()
            except OSError:
                pass

    def logout(self) -> None:
        try:
            self.run(b"LOGOUT", check=False)
        except Unavailable:
            pass
        self.close()

    def __enter__(self) -> ImapClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.logout()
        else:
            self.close()
