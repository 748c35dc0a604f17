"""A small ManageSieve (RFC 5804) client for tests: straight to a backend or through a proxy.

    with SieveClient("127.0.0.2", farm.backends["mail1"].sieve_port) as sieve:
        sieve.starttls(ssl_context)  # optional; capabilities are read again afterwards
        sieve.authenticate_plain("alice@example.co.uk", "alice-pw")
        sieve.putscript("away", 'require "vacation"; vacation "I am away";')
        sieve.setactive("away")
        assert sieve.listscripts() == [("away", True)]

Every command returns once the server's final ``OK``; a ``NO`` or ``BYE`` raises
:class:`SieveError` with the status, the response code (``AUTH-TOOWEAK``, ``NONEXISTENT``,
``QUOTA/MAXSCRIPTS``...) and the server's human-readable text. Strings go to the server as
quoted strings when they are short and plain, otherwise as non-synchronizing literals
(``{N+}``); the server's quoted strings and literals (``{N}``) are both read.
"""

from __future__ import annotations

import base64
import socket
import ssl
from types import TracebackType
from typing import TypeAlias

#: What a parsed response line holds: atoms, strings, and parenthesised lists of them.
Token: TypeAlias = "Atom | str | list[Token]"


class Atom(str):
    """An unquoted word of a response (``OK``, ``ACTIVE``...), told apart from a string."""


class SieveError(Exception):
    """A ``NO`` or ``BYE`` from the server (or a reply this client cannot make sense of)."""

    def __init__(self, command: str, status: str, code: str = "", text: str = "") -> None:
        self.command = command
        self.status = status  # "NO", "BYE", or "PROTOCOL" for a malformed reply
        self.code = code  # the response code's first word, upper-case, e.g. "NONEXISTENT"
        self.text = text
        code_part = f" ({code})" if code else ""
        super().__init__(f"{command}: {status}{code_part} {text}".rstrip())


class SieveClient:
    """One ManageSieve connection; use it as a context manager to close it in any case."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.host = host
        self._sock: socket.socket = socket.create_connection((host, port), timeout=timeout)
        self._file = self._sock.makefile("rb")
        self.capabilities: dict[str, str] = {}
        self.last_code = ""  # the response code and text of the last OK, e.g. after LOGOUT
        self.last_text = ""
        try:
            self._read_capabilities("greeting")
        except BaseException:
            self.close()
            raise

    # -- commands -------------------------------------------------------------------------

    def capability(self) -> dict[str, str]:
        """Ask again (``CAPABILITY``): e.g. after logging in, when the server may say more."""
        self._send("CAPABILITY")
        return self._read_capabilities("CAPABILITY")

    def starttls(self, context: ssl.SSLContext, server_hostname: str | None = None) -> None:
        """``STARTTLS``, the handshake, then the capabilities the server sends unasked."""
        self._send("STARTTLS")
        self._read_response("STARTTLS")
        self._file.close()
        self._sock = context.wrap_socket(self._sock, server_hostname=server_hostname or self.host)
        self._file = self._sock.makefile("rb")
        self._read_capabilities("STARTTLS")

    def authenticate_plain(
        self, user: str, password: str, authzid: str = "", initial: bool = True
    ) -> None:
        """SASL PLAIN: ``authzid`` is whom to act as (a master/proxy login), ``user`` the
        authentication identity. ``initial`` sends the credentials with the command (SASL-IR);
        otherwise they answer the server's empty challenge."""
        response = base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()
        if initial:
            self._send("AUTHENTICATE", "PLAIN", response)
        else:
            self._send("AUTHENTICATE", "PLAIN")
            tokens = self._read_tokens()
            if tokens and isinstance(tokens[0], Atom) and tokens[0].upper() in ("NO", "BYE"):
                self._raise("AUTHENTICATE", tokens)
            self._sock.sendall(f'"{response}"\r\n'.encode())  # a string, not a command
        self._read_response("AUTHENTICATE")

    def putscript(self, name: str, text: str) -> None:
        self._send("PUTSCRIPT", name, _Literal(text))
        self._read_response("PUTSCRIPT")

    def checkscript(self, text: str) -> None:
        self._send("CHECKSCRIPT", _Literal(text))
        self._read_response("CHECKSCRIPT")

    def setactive(self, name: str) -> None:
        """Make ``name`` the active script; ``""`` deactivates whichever is active."""
        self._send("SETACTIVE", name)
        self._read_response("SETACTIVE")

    def listscripts(self) -> list[tuple[str, bool]]:
        """``(name, active)`` for each of the user's scripts, in the server's order."""
        self._send("LISTSCRIPTS")
        scripts = []
        for tokens in self._read_response("LISTSCRIPTS"):
            if not tokens or not isinstance(tokens[0], str) or isinstance(tokens[0], Atom):
                raise SieveError("LISTSCRIPTS", "PROTOCOL", text=f"unexpected line {tokens!r}")
            active = len(tokens) > 1 and str(tokens[1]).upper() == "ACTIVE"
            scripts.append((str(tokens[0]), active))
        return scripts

    def getscript(self, name: str) -> str:
        self._send("GETSCRIPT", name)
        lines = self._read_response("GETSCRIPT")
        if len(lines) != 1 or len(lines[0]) != 1 or not isinstance(lines[0][0], str):
            raise SieveError("GETSCRIPT", "PROTOCOL", text=f"unexpected reply {lines!r}")
        return str(lines[0][0])

    def deletescript(self, name: str) -> None:
        self._send("DELETESCRIPT", name)
        self._read_response("DELETESCRIPT")

    def havespace(self, name: str, size: int) -> None:
        self._send("HAVESPACE", name, Atom(str(size)))
        self._read_response("HAVESPACE")

    def noop(self) -> None:
        self._send("NOOP")
        self._read_response("NOOP")

    def logout(self) -> None:
        """``LOGOUT`` (the server answers ``OK`` and closes), then close the socket."""
        try:
            self._send("LOGOUT")
            self._read_response("LOGOUT")
        finally:
            self.close()

    def close(self) -> None:
        try:
            self._file.close()
        finally:
            self._sock.close()

    def __enter__(self) -> SieveClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the wire -------------------------------------------------------------------------

    def _send(self, *words: str) -> None:
        """A command: its name (an atom), then arguments, each a quoted string or literal."""
        parts = [words[0]] + [_encode(word) for word in words[1:]]
        self._sock.sendall(" ".join(parts).encode() + b"\r\n")

    def _read_capabilities(self, command: str) -> dict[str, str]:
        caps: dict[str, str] = {}
        for tokens in self._read_response(command):
            if not tokens or isinstance(tokens[0], (Atom, list)):
                raise SieveError(command, "PROTOCOL", text=f"unexpected capability {tokens!r}")
            caps[str(tokens[0]).upper()] = str(tokens[1]) if len(tokens) > 1 else ""
        self.capabilities = caps
        return caps

    def _read_response(self, command: str) -> list[list[Token]]:
        """The lines before the final ``OK``, parsed; raise on ``NO``/``BYE``."""
        lines: list[list[Token]] = []
        while True:
            tokens = self._read_tokens()
            head = tokens[0] if tokens else None
            if isinstance(head, Atom) and head.upper() in ("OK", "NO", "BYE"):
                if head.upper() != "OK":
                    self._raise(command, tokens)
                self.last_code, self.last_text = _code_and_text(tokens)
                return lines
            lines.append(tokens)

    def _raise(self, command: str, tokens: list[Token]) -> None:
        code, text = _code_and_text(tokens)
        raise SieveError(command, str(tokens[0]).upper(), code, text)

    def _read_line(self) -> bytes:
        line = self._file.readline(1 << 20)
        if not line:
            raise SieveError("read", "PROTOCOL", text="connection closed by the server")
        if not line.endswith(b"\n"):
            raise SieveError("read", "PROTOCOL", text="line too long")
        return line.rstrip(b"\r\n")

    def _read_tokens(self) -> list[Token]:
        """One response line as tokens, reading any literals' bytes (and the rest of the
        line after them) from the socket."""
        stack: list[list[Token]] = [[]]
        line, pos = self._read_line(), 0
        while True:
            while pos < len(line) and line[pos : pos + 1] == b" ":
                pos += 1
            if pos >= len(line):
                break
            char = line[pos : pos + 1]
            if char == b"(":
                stack.append([])
                pos += 1
            elif char == b")":
                if len(stack) == 1:
                    raise SieveError("read", "PROTOCOL", text=f"unbalanced ) in {line!r}")
                inner = stack.pop()
                stack[-1].append(inner)
                pos += 1
            elif char == b'"':
                value, pos = _quoted(line, pos)
                stack[-1].append(value)
            elif char == b"{" and line.endswith(b"}"):
                size = int(line[pos + 1 : -1].rstrip(b"+"))
                data = self._file.read(size)
                if len(data) != size:
                    raise SieveError("read", "PROTOCOL", text="connection closed in a literal")
                stack[-1].append(data.decode("utf-8", "replace"))
                line, pos = self._read_line(), 0
            else:
                end = pos
                while end < len(line) and line[end : end + 1] not in (b" ", b"(", b")"):
                    end += 1
                stack[-1].append(Atom(line[pos:end].decode("utf-8", "replace")))
                pos = end
        if len(stack) != 1:
            raise SieveError("read", "PROTOCOL", text=f"unbalanced ( in {line!r}")
        return stack[0]


class _Literal(str):
    """An argument always sent as a literal (script bodies)."""


def _encode(word: str) -> str:
    if isinstance(word, Atom):
        return word
    raw = word.encode()
    plain = len(raw) < 1024 and not any(b in raw for b in b'\r\n\0"\\')
    if plain and not isinstance(word, _Literal):
        return f'"{word}"'
    return f"{{{len(raw)}+}}\r\n{word}"


def _quoted(line: bytes, pos: int) -> tuple[str, int]:
    out = bytearray()
    pos += 1
    while pos < len(line):
        byte = line[pos]
        if byte == 0x5C and pos + 1 < len(line):  # backslash escapes " and \
            out.append(line[pos + 1])
            pos += 2
        elif byte == 0x22:
            return out.decode("utf-8", "replace"), pos + 1
        else:
            out.append(byte)
            pos += 1
    raise SieveError("read", "PROTOCOL", text=f"unterminated string in {line!r}")


def _code_and_text(tokens: list[Token]) -> tuple[str, str]:
    code, text = "", ""
    for token in tokens[1:]:
        if isinstance(token, list):
            code = str(token[0]).upper() if token else ""
        elif not isinstance(token, Atom):
            text = str(token)
    return code, text
