"""A small blocking ManageSieve (RFC 5804) client for admin logins on the backends.

What a move needs of a user's Sieve scripts: list them, read each one's bytes, write them
under the same name, make one active, delete them. Scripts are handled as bytes, never
decoded, so a copy is the same octets; they go to the server as non-synchronizing literals
(``{n+}``, which RFC 5804 servers must accept), names as quoted strings.

The parsing (:func:`tokens`, :func:`status`, :func:`literal_size`, :func:`encode`) is pure
and has unit tests; :class:`SieveClient` is the socket around it. Every socket failure
becomes :class:`directory.provision.Unavailable` naming the backend (a refused connection
:class:`SieveUnreachable`, so a move can tell "no ManageSieve there" from a failure
mid-way), and every ``NO``/``BYE`` a :class:`SieveError` with the server's code and text.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeAlias

from directory.provision import Unavailable
from directory.provision.saslplain import plain_response

MAX_LINE = 1 << 20
MAX_LITERAL = 16 << 20  # far above any server's script size limit


class Atom(str):
    """An unquoted word of a response (``OK``, ``ACTIVE``, ``SIEVE``...)."""


#: A parsed response line: atoms, strings (bytes, quoted or literal) and (lists).
Token: TypeAlias = "Atom | bytes | list[Token]"


class SieveUnreachable(Unavailable):
    """The backend's ManageSieve port could not be connected to at all."""


class SieveError(Unavailable):
    """A ``NO`` or ``BYE`` answer (or one this client cannot make sense of)."""

    def __init__(self, address: str, command: str, status: str, code: str, text: str) -> None:
        shown = f" ({code})" if code else ""
        super().__init__(f"backend {address}: ManageSieve {command} failed: {status}{shown} {text}")
        self.status = status  # NO, BYE, or PROTOCOL for a reply that makes no sense
        self.code = code  # the response code's first word, upper-case: NONEXISTENT...
        self.text = text  # the server's human-readable text


class ParseError(ValueError):
    """A response line that is not ManageSieve."""


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    active: bool


# -- the pure part ------------------------------------------------------------------------


def literal_size(line: bytes) -> int | None:
    """The octet count when ``line`` (with or without CRLF) ends with a literal's
    announcement, ``{n}`` or ``{n+}``; ``None`` otherwise."""
    line = line.rstrip(b"\r\n")
    if not line.endswith(b"}"):
        return None
    start = line.rfind(b"{")
    size = line[start + 1 : -1].rstrip(b"+")
    if start < 0 or not size.isdigit():
        return None
    return int(size)


def tokens(item: bytes) -> list[Token]:
    """One response, literals included as they came on the wire (``{n}\\r\\n`` then n
    octets, then the rest of the line), as a list of tokens."""
    stack: list[list[Token]] = [[]]
    pos, end = 0, len(item)
    if item.endswith(b"\r\n"):
        end -= 2
    while pos < end:
        char = item[pos : pos + 1]
        if char in (b" ", b"\r", b"\n"):
            pos += 1
        elif char == b"(":
            stack.append([])
            pos += 1
        elif char == b")":
            if len(stack) == 1:
                raise ParseError(f"unbalanced ) in {item[:80]!r}")
            inner = stack.pop()
            stack[-1].append(inner)
            pos += 1
        elif char == b'"':
            value, pos = _quoted(item, pos)
            stack[-1].append(value)
        elif char == b"{":
            close = item.find(b"}\r\n", pos)
            size = item[pos + 1 : close].rstrip(b"+") if close > 0 else b""
            if not size.isdigit():
                raise ParseError(f"bad literal in {item[:80]!r}")
            start = close + 3
            if start + int(size) > len(item):
                raise ParseError("literal shorter than announced")
            stack[-1].append(item[start : start + int(size)])
            pos = start + int(size)
        else:
            stop = pos
            while stop < end and item[stop : stop + 1] not in (b" ", b"(", b")", b"\r"):
                stop += 1
            stack[-1].append(Atom(item[pos:stop].decode("utf-8", "replace")))
            pos = stop
    if len(stack) != 1:
        raise ParseError(f"unbalanced ( in {item[:80]!r}")
    return stack[0]


def _quoted(item: bytes, pos: int) -> tuple[bytes, int]:
    out = bytearray()
    pos += 1
    while pos < len(item):
        byte = item[pos]
        if byte == 0x5C and pos + 1 < len(item):  # \" and \\
            out.append(item[pos + 1])
            pos += 2
        elif byte == 0x22:
            return bytes(out), pos + 1
        elif byte in (0x0D, 0x0A):
            break
        else:
            out.append(byte)
            pos += 1
    raise ParseError(f"unterminated string in {item[:80]!r}")


def status(line: list[Token]) -> tuple[str, str, str] | None:
    """``(OK|NO|BYE, code, text)`` when the tokens are a final response, else ``None``.
    ``code`` is the response code's first word, upper-case (``NONEXISTENT``, ``QUOTA``)."""
    if not line or not isinstance(line[0], Atom) or line[0].upper() not in ("OK", "NO", "BYE"):
        return None
    code, text = "", ""
    for token in line[1:]:
        if isinstance(token, list):
            first = token[0] if token else b""
            code = first.decode("utf-8", "replace") if isinstance(first, bytes) else str(first)
            code = code.split("/")[0].upper()
        elif isinstance(token, bytes):
            text = token.decode("utf-8", "replace").strip()
    return line[0].upper(), code, text


def capabilities(lines: list[list[Token]]) -> dict[str, str]:
    """The greeting's (or CAPABILITY's) lines: ``"SIEVE" "fileinto vacation"`` each."""
    caps = {}
    for line in lines:
        if not line or not isinstance(line[0], bytes):
            raise ParseError(f"not a capability: {line!r}")
        value = line[1] if len(line) > 1 and isinstance(line[1], bytes) else b""
        caps[line[0].decode("utf-8", "replace").upper()] = value.decode("utf-8", "replace")
    return caps


def scripts(lines: list[list[Token]]) -> list[Script]:
    """LISTSCRIPTS' lines: ``"name"`` or ``"name" ACTIVE`` each."""
    out = []
    for line in lines:
        if not line or not isinstance(line[0], bytes):
            raise ParseError(f"not a script name: {line!r}")
        active = len(line) > 1 and isinstance(line[1], Atom) and line[1].upper() == "ACTIVE"
        out.append(Script(line[0].decode("utf-8", "surrogateescape"), active))
    return out


def encode(value: bytes, literal: bool = False) -> bytes:
    """A string argument: quoted when short and plain (and not ``literal``), otherwise a
    non-synchronizing literal."""
    plain = len(value) < 1024 and not any(b in value for b in b'\r\n\0"\\')
    if plain and not literal:
        return b'"' + value + b'"'
    return b"{%d+}\r\n" % len(value) + value


# -- the client ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SieveEndpoint:
    """Where and how to reach a backend's ManageSieve: the proxy's ``[sieve] backend_*``."""

    port: int = 4190
    tls: str = "none"  # none, starttls, tls
    tls_verify: bool = True
    ca_file: Path | None = None
    timeout: float = 30.0

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file is not None else None
        )
        if not self.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


class SieveClient:
    """One ManageSieve connection to ``host``; a context manager (logs out on exit)."""

    def __init__(self, host: str, endpoint: SieveEndpoint) -> None:
        self.address = f"{host}:{endpoint.port}"
        try:
            sock = socket.create_connection((host, endpoint.port), timeout=endpoint.timeout)
        except OSError as exc:
            raise SieveUnreachable(
                f"backend {self.address}: no ManageSieve: {exc.strerror or exc}"
            ) from None
        self._sock: socket.socket = sock
        try:
            if endpoint.tls == "tls":
                self._sock = endpoint.context().wrap_socket(sock, server_hostname=host)
            self._file = self._sock.makefile("rb", buffering=1 << 16)
            self.capabilities = capabilities(self._lines("greeting"))
            if endpoint.tls == "starttls":
                if "STARTTLS" not in self.capabilities:
                    raise Unavailable(f"backend {self.address}: ManageSieve offers no STARTTLS")
                self._send(b"STARTTLS")
                self._lines("STARTTLS")
                self._file.close()
                self._sock = endpoint.context().wrap_socket(self._sock, server_hostname=host)
                self._file = self._sock.makefile("rb", buffering=1 << 16)
                self.capabilities = capabilities(self._lines("STARTTLS"))
        except ssl.SSLError as exc:
            self.close()
            raise Unavailable(f"backend {self.address}: ManageSieve TLS: {exc}") from None
        except BaseException:
            self.close()
            raise

    # -- wire -----------------------------------------------------------------------------

    def _fail(self, what: object) -> Unavailable:
        self.close()
        return Unavailable(f"backend {self.address}: ManageSieve connection lost: {what}")

    def _readline(self) -> bytes:
        try:
            line = self._file.readline(MAX_LINE)
        except OSError as exc:
            raise self._fail(exc) from None
        if not line.endswith(b"\n"):
            raise self._fail("closed by the server" if not line else "line too long")
        return line

    def _read_item(self) -> bytes:
        parts = [self._readline()]
        while (size := literal_size(parts[-1])) is not None:
            if size > MAX_LITERAL:
                raise self._fail(f"literal of {size} octets")
            try:
                body = self._file.read(size)
            except OSError as exc:
                raise self._fail(exc) from None
            if len(body) != size:
                raise self._fail("closed inside a literal")
            parts += [body, self._readline()]
        return b"".join(parts)

    def _send(self, *words: bytes) -> None:
        try:
            self._sock.sendall(b" ".join(words) + b"\r\n")
        except OSError as exc:
            raise self._fail(exc) from None

    def _lines(self, command: str) -> list[list[Token]]:
        """The lines before the final ``OK``; a ``NO``/``BYE`` raises :class:`SieveError`."""
        lines = []
        while True:
            item = self._read_item()
            try:
                line = tokens(item)
            except ParseError as exc:
                self.close()
                raise SieveError(self.address, command, "PROTOCOL", "", str(exc)) from None
            final = status(line)
            if final is None:
                lines.append(line)
                continue
            if final[0] != "OK":
                if final[0] == "BYE":
                    self.close()
                raise SieveError(self.address, command, *final)
            return lines

    def _run(self, command: str, *args: bytes) -> list[list[Token]]:
        self._send(command.encode(), *args)
        return self._lines(command)

    # -- commands -------------------------------------------------------------------------

    def authenticate_plain(self, authzid: str, authcid: str, password: str) -> None:
        """``AUTHENTICATE "PLAIN"`` as ``authcid``, acting for ``authzid`` when given, with
        the initial response in the command (both Pigeonhole and timsieved take it)."""
        try:
            response = plain_response(authzid, authcid, password)
        except ValueError as exc:
            raise SieveError(self.address, "AUTHENTICATE", "NO", "", str(exc)) from None
        what = f"AUTHENTICATE as {authcid}" + (f" for {authzid}" if authzid else "")
        self._send(b"AUTHENTICATE", b'"PLAIN"', b'"' + response + b'"')
        self._lines(what)

    def listscripts(self) -> list[Script]:
        lines = self._run("LISTSCRIPTS")
        try:
            return scripts(lines)
        except ParseError as exc:
            raise SieveError(self.address, "LISTSCRIPTS", "PROTOCOL", "", str(exc)) from None

    def getscript(self, name: str) -> bytes:
        lines = self._run("GETSCRIPT", encode(name.encode("utf-8", "surrogateescape")))
        if len(lines) != 1 or len(lines[0]) != 1 or not isinstance(lines[0][0], bytes):
            raise SieveError(self.address, "GETSCRIPT", "PROTOCOL", "", f"reply {lines!r:.80}")
        return lines[0][0]

    def putscript(self, name: str, content: bytes) -> None:
        self._run(
            "PUTSCRIPT", encode(name.encode("utf-8", "surrogateescape")), encode(content, True)
        )

    def setactive(self, name: str) -> None:
        """Make ``name`` the active script; ``""`` deactivates whichever is."""
        self._run("SETACTIVE", encode(name.encode("utf-8", "surrogateescape")))

    def deletescript(self, name: str) -> None:
        self._run("DELETESCRIPT", encode(name.encode("utf-8", "surrogateescape")))

    def close(self) -> None:
        for thing in (getattr(self, "_file", None), self._sock):
            try:
                if thing is not None:
                    thing.close()
            except OSError:
                pass

    def logout(self) -> None:
        try:
            self._run("LOGOUT")
        except Unavailable:
            pass
        self.close()

    def __enter__(self) -> SieveClient:
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
