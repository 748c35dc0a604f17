"""The load tester's POP3 client: USER/PASS (optionally pipelined), STAT, LIST, RETR, QUIT.

The POP3 twin of :class:`bench.clients.ImapClient`, with the same error kinds.
"""

from __future__ import annotations

import asyncio

from bench.clients import CHUNK, BenchError, Conn
from bench.patterns import Credential


def _pop3_failure(line: bytes, phase: str) -> BenchError:
    text = line.decode("utf-8", "replace").strip()[:200]
    if not line.startswith(b"-ERR"):
        return BenchError("protocol-error", f"{phase}: {text}")
    if phase == "login":
        if b"[SYS/" in line or b"[IN-USE]" in line:
            return BenchError("unavailable", text)
        return BenchError("auth-failed", text)
    if phase == "stat":
        return BenchError("mailbox-error", text)
    return BenchError("rejected", f"{phase}: {text}")


class Pop3Client:
    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    async def greeting(self) -> None:
        line = await self.conn.line()
        if line.startswith(b"-ERR"):
            raise BenchError("unavailable", line.decode("utf-8", "replace").strip()[:200])
        if not line.startswith(b"+OK"):
            raise BenchError("protocol-error", f"greeting {line[:80]!r}")

    async def ok(self, phase: str) -> bytes:
        line = await self.conn.line()
        if not line.startswith(b"+OK"):
            raise _pop3_failure(line, phase)
        return line

    async def command(self, command: bytes, phase: str) -> bytes:
        self.conn.send(command + b"\r\n")
        return await self.ok(phase)

    async def login(self, user: Credential, pipeline: bool) -> None:
        for field in (user.login, user.password):
            if "\r" in field or "\n" in field:
                raise BenchError("client-bug", "POP3 USER/PASS cannot carry CR or LF")
        user_cmd = b"USER " + user.login.encode() + b"\r\n"
        pass_cmd = b"PASS " + user.password.encode() + b"\r\n"
        if pipeline:
            self.conn.send(user_cmd + pass_cmd)
            await self.ok("login")
        else:
            self.conn.send(user_cmd)
            await self.ok("login")
            self.conn.send(pass_cmd)
        await self.ok("login")

    async def stat(self) -> int:
        line = await self.command(b"STAT", "stat")
        parts = line.split()
        try:
            return int(parts[1])
        except (IndexError, ValueError):
            raise BenchError("protocol-error", f"STAT reply {line[:80]!r}") from None

    async def sizes(self) -> dict[int, int]:
        await self.command(b"LIST", "list")
        sizes = {}
        while (line := await self.conn.line()) != b".\r\n":
            number, _, size = line.strip().partition(b" ")
            sizes[int(number)] = int(size)
        return sizes

    async def retr(self, number: int) -> int:
        """RETR n; the message size after undoing dot-stuffing (what LIST reports)."""
        await self.command(b"RETR %d" % number, "retr")
        return await read_dot_terminated(self.conn.reader)

    async def quit(self) -> None:
        await self.command(b"QUIT", "logout")


_STUFFED = b"\r\n.."
_END = b"\r\n.\r\n"


async def read_dot_terminated(reader: asyncio.StreamReader) -> int:
    """Consume a POP3 multi-line body; its size without stuffing and without the final dot.

    Scans chunks instead of reading line by line: a 10 MB message has ~130,000 lines, and a
    Python loop over them would make the client, not the server, the bottleneck. ``carry``
    keeps the last bytes of the previous chunk so a pattern split between chunks is seen
    once; it starts as a virtual CRLF because the body starts at the beginning of a line.
    """
    carry = b"\r\n"
    raw = len(carry)
    stuffed = 0
    while True:
        chunk = await reader.read(CHUNK)
        if not chunk:
            raise asyncio.IncompleteReadError(b"", None)
        raw += len(chunk)
        data = carry + chunk
        start = max(0, len(carry) - 3)  # matches wholly inside carry were counted already
        end = data.find(_END, max(0, len(carry) - 4))
        if end >= 0:
            stuffed += data.count(_STUFFED, start, end + 2)
            if end + len(_END) != len(data):
                raise BenchError("protocol-error", "data after the end of a RETR")
            return raw - 2 - (len(data) - (end + 2)) - stuffed
        stuffed += data.count(_STUFFED, start)
        carry = data[-4:]
