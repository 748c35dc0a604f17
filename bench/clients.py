"""Tiny asyncio IMAP and POP3 clients for the load tester, and how their failures are named.

Our own rather than imaplib/poplib: those are blocking (one thread per connection would not
reach thousands of sessions), and a load tester must see every reply to classify failures
the way an operator thinks of them (refused, timed out, wrong password, server busy …).

They speak just enough: greeting, LOGIN / USER+PASS (optionally pipelined), SELECT / STAT,
FETCH BODY.PEEK[] / RETR (counting bytes, not keeping them), IDLE, LOGOUT / QUIT, and
STARTTLS / STLS. Every read has the caller's deadline around it (``asyncio.timeout``).
This module holds the shared parts and IMAP; POP3 is in :mod:`bench.pop3client`,
ManageSieve in :mod:`bench.sieveclient`, SMTP submission in :mod:`bench.smtpclient`.
"""

from __future__ import annotations

import asyncio
import errno
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from bench.patterns import Credential

READ_LIMIT = 1 << 16  # longest line we accept; literals are read separately
CHUNK = 1 << 18


class BenchError(Exception):
    """One failed operation, with the kind it is counted under and a short detail."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


def classify(exc: BaseException, phase: str) -> BenchError:
    """Map any exception from a client step to the error kinds the report counts."""
    if isinstance(exc, BenchError):
        return exc
    if isinstance(exc, TimeoutError):
        kind = "connect-timeout" if phase == "connect" else "timeout"
        return BenchError(kind, f"no answer during {phase}")
    if isinstance(exc, ConnectionRefusedError):
        return BenchError("connect-refused", str(exc))
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return BenchError("tls-error", str(exc)[:200])
    if isinstance(exc, asyncio.IncompleteReadError | ConnectionResetError | BrokenPipeError):
        return BenchError("closed", f"connection closed during {phase}")
    if isinstance(exc, asyncio.LimitOverrunError):
        return BenchError("protocol-error", "reply line too long")
    if isinstance(exc, OSError):
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            return BenchError("fds-exhausted", "too many open files on the client")
        if exc.errno == errno.EADDRNOTAVAIL:
            return BenchError(
                "ports-exhausted", "no free local port (TIME_WAIT?) or --bind address not local"
            )
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return BenchError("unreachable", str(exc))
        return BenchError("os-error", f"{phase}: {exc}")
    return BenchError("client-bug", f"{phase}: {type(exc).__name__}: {exc}")


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    protocol: str = "imap"  # "imap" | "pop3" | "sieve" (ManageSieve) | "smtp" (submission)
    tls: str = "none"  # "none" | "tls" (implicit) | "starttls"
    label: str = ""

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def name(self) -> str:
        return self.label or self.address


class Conn:
    """A stream pair with line reads and byte counting."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def line(self) -> bytes:
        line = await self.reader.readuntil(b"\n")
        return line

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def discard(self, n: int) -> None:
        """Read and drop ``n`` bytes without assembling them (a 10 MB FETCH stays cheap)."""
        while n > 0:
            chunk = await self.reader.read(min(n, CHUNK))
            if not chunk:
                raise asyncio.IncompleteReadError(b"", n)
            n -= len(chunk)

    async def start_tls(self, context: ssl.SSLContext, server_hostname: str) -> None:
        await self.writer.start_tls(context, server_hostname=server_hostname)

    async def close(self, wait_eof: float = 0.0) -> None:
        """Close; first wait briefly for the server's close so TIME_WAIT lands on its side."""
        if wait_eof > 0:
            try:
                async with asyncio.timeout(wait_eof):
                    while await self.reader.read(CHUNK):
                        pass
            except (TimeoutError, OSError, ssl.SSLError):
                pass
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass

    def abort(self) -> None:
        self.writer.transport.abort()

    def ssl_object(self) -> ssl.SSLObject | None:
        """The TLS state once a handshake is done (None on a plain connection)."""
        obj = self.writer.get_extra_info("ssl_object")
        return obj if isinstance(obj, ssl.SSLObject | ssl.SSLSocket) else None


class ResumingContext(ssl.SSLContext):
    """A client context that offers ``session`` (a previous connection's) on each handshake.

    Neither asyncio's nor uvloop's TLS (``open_connection(ssl=…)``, ``start_tls``) takes a
    session argument, but both build their ``SSLObject`` with ``context.wrap_bio``, which
    does; overriding it is the one hook that works on both loops. A session is only valid
    with the context that made it, so each worker owns one context (and so one session)
    per target, and connects with it one connection at a time.
    """

    session: ssl.SSLSession | None = None

    def wrap_bio(  # type: ignore[override]
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        offered = session or (None if server_side else self.session)
        return super().wrap_bio(incoming, outgoing, server_side, server_hostname, offered)

    def keep(self, conn: Conn) -> None:
        """Remember ``conn``'s session for the next connect. Call it after a read that came
        after the handshake: TLS 1.3 tickets arrive then, and a session taken before them
        cannot resume."""
        obj = conn.ssl_object()
        session = obj.session if obj is not None else None
        if session is not None:
            self.session = session


def client_context(cafile: str | None, insecure: bool, resuming: bool = False) -> ssl.SSLContext:
    """What ``ssl.create_default_context`` makes, optionally as a :class:`ResumingContext`
    (which cannot be made by ``create_default_context``, hence this copy of its settings)."""
    if not resuming:
        context = ssl.create_default_context(cafile=cafile)
    else:
        context = ResumingContext(ssl.PROTOCOL_TLS_CLIENT)
        if cafile:
            context.load_verify_locations(cafile=cafile)
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def connect(
    endpoint: Endpoint,
    context: ssl.SSLContext | None,
    sni: str | None,
    source: str | None = None,
) -> Conn:
    """Open the connection (and implicit TLS); ``source`` is a local address to bind."""
    implicit = context if endpoint.tls == "tls" else None
    reader, writer = await asyncio.open_connection(
        endpoint.host,
        endpoint.port,
        ssl=implicit,
        server_hostname=(sni or endpoint.host) if implicit else None,
        limit=READ_LIMIT,
        local_addr=(source, 0) if source else None,
    )
    return Conn(reader, writer)


# -- IMAP --------------------------------------------------------------------------------

_LITERAL_AT_END = re.compile(rb"\{(\d+)\+?\}\r?\n$")
_QUOTABLE = re.compile(r"[\x20-\x7e]*")
_CODE = re.compile(rb"^\S+ (?:OK|NO|BAD) \[([A-Z-]+)")


async def read_logical_line(conn: Conn) -> tuple[bytes, int]:
    """One response line of IMAP or ManageSieve, whose literals (``{N}`` / ``{N+}`` at a line
    end, then N bytes) are skipped: the line's pieces around them joined, and the literal
    bytes counted, not kept (a 10 MB FETCH stays cheap)."""
    line = await conn.line()
    skipped = 0
    while (m := _LITERAL_AT_END.search(line)) is not None:
        size = int(m.group(1))
        await conn.discard(size)
        skipped += size
        line = line[: m.start()] + await conn.line()  # the rest of the line after the literal
    return line, skipped


def imap_string(text: str, literal_plus: bool) -> tuple[bytes, bool]:
    """An IMAP string and whether it is a synchronizing literal (needs a ``+`` first)."""
    if _QUOTABLE.fullmatch(text):
        return b'"' + text.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"', False
    data = text.encode()
    if literal_plus:
        return b"{%d+}\r\n" % len(data) + data, False
    return b"{%d}\r\n" % len(data) + data, True


def _imap_failure(reply: bytes, phase: str) -> BenchError:
    text = reply.decode("utf-8", "replace").strip()[:200]
    code = _CODE.match(reply)
    code_name = code.group(1).decode() if code else ""
    if b" BAD " in reply[:24]:
        return BenchError("protocol-error", f"{phase}: {text}")
    if phase == "login":
        if code_name in ("UNAVAILABLE", "INUSE", "LIMIT", "SERVERBUG"):
            return BenchError("unavailable", text)
        return BenchError("auth-failed", text)
    if phase == "select":
        return BenchError("mailbox-error", text)
    return BenchError("rejected", f"{phase}: {text}")


class ImapClient:
    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.capabilities: set[bytes] = set()
        self.counter = 0

    def tag(self) -> bytes:
        self.counter += 1
        return b"b%d" % self.counter

    async def greeting(self) -> None:
        line = await self.conn.line()
        if line.startswith(b"* BYE"):
            raise BenchError("unavailable", line.decode("utf-8", "replace").strip()[:200])
        if not line.startswith((b"* OK", b"* PREAUTH")):
            raise BenchError("protocol-error", f"greeting {line[:80]!r}")
        self._note_caps(line)

    def _note_caps(self, line: bytes) -> None:
        m = re.search(rb"\[CAPABILITY ([^\]]*)\]", line) or re.match(rb"\* CAPABILITY (.*)", line)
        if m:
            self.capabilities = set(m.group(1).upper().split())

    async def response(self, tag: bytes, phase: str) -> tuple[bytes, int]:
        """Read up to the tagged reply; return it and the literal bytes seen on the way."""
        literal_bytes = 0
        prefix = tag + b" "
        while True:
            line, size = await read_logical_line(self.conn)
            literal_bytes += size
            if line.startswith(prefix):
                if line[len(prefix) : len(prefix) + 2] != b"OK":
                    raise _imap_failure(line, phase)
                self._note_caps(line)
                return line, literal_bytes
            if line.startswith(b"* BYE") and phase != "logout":
                raise BenchError("closed", line.decode("utf-8", "replace").strip()[:200])
            if line.startswith(b"* CAPABILITY"):
                self._note_caps(line)

    def login_command(self, user: Credential) -> tuple[bytes, list[bytes]]:
        """The LOGIN command as the pieces to send (split where a literal needs a ``+``)."""
        tag = self.tag()
        plus = b"LITERAL+" in self.capabilities or b"LITERAL-" in self.capabilities
        pieces, current = [], tag + b" LOGIN"
        for arg in (user.login, user.password):
            encoded, sync = imap_string(arg, plus)
            if sync:
                head, _, data = encoded.partition(b"\r\n")
                pieces.append(current + b" " + head + b"\r\n")
                current = data
            else:
                current += b" " + encoded
        pieces.append(current + b"\r\n")
        return tag, pieces

    async def login(self, user: Credential, then: Sequence[bytes] = ()) -> list[bytes]:
        """LOGIN; commands in ``then`` are pipelined right behind it. Returns their tags."""
        tag, pieces = self.login_command(user)
        for piece in pieces[:-1]:
            self.conn.send(piece)
            line = await self.conn.line()
            if not line.startswith(b"+"):
                raise _imap_failure(line, "login")
        tags = []
        out = pieces[-1]
        for command in then:
            t = self.tag()
            tags.append(t)
            out += t + b" " + command + b"\r\n"
        self.conn.send(out)
        await self.response(tag, "login")
        return tags

    async def command(self, command: bytes, phase: str) -> tuple[bytes, int]:
        tag = self.tag()
        self.conn.send(tag + b" " + command + b"\r\n")
        return await self.response(tag, phase)

    async def select(self) -> int:
        """SELECT INBOX; the number of messages."""
        tag = self.tag()
        self.conn.send(tag + b" SELECT INBOX\r\n")
        return await self.select_reply(tag)

    async def select_reply(self, tag: bytes) -> int:
        exists = 0
        prefix = tag + b" "
        while True:
            line = await self.conn.line()
            if line.startswith(prefix):
                if line[len(prefix) : len(prefix) + 2] != b"OK":
                    raise _imap_failure(line, "select")
                return exists
            m = re.match(rb"\* (\d+) EXISTS", line)
            if m:
                exists = int(m.group(1))

    async def sizes(self, exists: int) -> dict[int, int]:
        """Message number → RFC822.SIZE for the whole mailbox."""
        if exists == 0:
            return {}
        tag = self.tag()
        self.conn.send(tag + b" FETCH 1:* (RFC822.SIZE)\r\n")
        sizes = {}
        while True:
            line = await self.conn.line()
            m = re.match(rb"\* (\d+) FETCH \(.*RFC822\.SIZE (\d+)", line)
            if m:
                sizes[int(m.group(1))] = int(m.group(2))
            elif line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise _imap_failure(line, "fetch")
                return sizes

    async def fetch_body(self, number: int) -> int:
        """FETCH n BODY.PEEK[] (PEEK: the benchmark must not change \\Seen); body bytes."""
        _, size = await self.command(b"FETCH %d BODY.PEEK[]" % number, "fetch")
        return size

    async def idle(self) -> bytes:
        tag = self.tag()
        self.conn.send(tag + b" IDLE\r\n")
        while True:
            line = await self.conn.line()
            if line.startswith(b"+"):
                return tag
            if line.startswith(tag + b" "):
                raise _imap_failure(line, "idle")

    async def done(self, tag: bytes) -> None:
        self.conn.send(b"DONE\r\n")
        await self.response(tag, "idle")

    async def logout(self) -> None:
        await self.command(b"LOGOUT", "logout")


async def start_tls(conn: Conn, protocol: str, context: ssl.SSLContext, sni: str) -> None:
    """STARTTLS (IMAP) or STLS (POP3) right after the greeting (SMTP: see bench.smtpclient)."""
    if protocol == "imap":
        conn.send(b"t0 STARTTLS\r\n")
        while True:
            line = await conn.line()
            if line.startswith(b"t0 "):
                if not line.startswith(b"t0 OK"):
                    raise BenchError("tls-error", line.decode("utf-8", "replace").strip())
                break
    else:
        conn.send(b"STLS\r\n")
        line = await conn.line()
        if not line.startswith(b"+OK"):
            raise BenchError("tls-error", line.decode("utf-8", "replace").strip())
    await conn.start_tls(context, sni)
