"""The bench's ManageSieve client on canned server bytes: replies with literals, capability
blocks, and the error kinds refusals are counted under (the report's error table)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bench.clients import BenchError, Conn, read_logical_line
from bench.patterns import Credential
from bench.sieveclient import SieveClient, sieve_failure, sieve_quoted


class _Writer:
    def __init__(self) -> None:
        self.sent = b""

    def write(self, data: bytes) -> None:
        self.sent += data


def _client(server: bytes) -> tuple[SieveClient, _Writer]:
    reader = asyncio.StreamReader()
    reader.feed_data(server)
    reader.feed_eof()
    writer: Any = _Writer()
    return SieveClient(Conn(reader, writer)), writer


GREETING = (
    b'"IMPLEMENTATION" "Dovecot Pigeonhole"\r\n"SIEVE" "fileinto vacation"\r\n'
    b'"SASL" "PLAIN LOGIN"\r\n"STARTTLS"\r\n"VERSION" "1.0"\r\nOK "ready."\r\n'
)


def test_greeting_notes_capabilities() -> None:
    async def go() -> set[bytes]:
        client, _ = _client(GREETING)
        await client.greeting()
        return client.capabilities

    assert asyncio.run(go()) == {b"IMPLEMENTATION", b"SIEVE", b"SASL", b"STARTTLS", b"VERSION"}


def test_login_listscripts_logout_on_the_wire() -> None:
    replies = (
        b'OK "Logged in."\r\n'
        b'"away" ACTIVE\r\n{5}\r\nx\r\nyz\r\n"other"\r\nOK "Listscripts completed."\r\n'
        b'OK "Logout completed."\r\n'
    )

    async def go() -> tuple[int, bytes]:
        client, writer = _client(replies)
        await client.login(Credential("u1@d1.test", "pw1"))
        count = await client.listscripts()
        await client.logout()
        return count, writer.sent

    count, sent = asyncio.run(go())
    assert count == 3  # a literal name (with a CRLF in it) is one script
    assert sent == (b'AUTHENTICATE "PLAIN" "AHUxQGQxLnRlc3QAcHcx"\r\nLISTSCRIPTS\r\nLOGOUT\r\n')


def test_a_literal_joins_the_pieces_of_its_line() -> None:
    async def go() -> tuple[bytes, int]:
        client, _ = _client(b"NO {6}\r\nfailed\r\n")
        return await read_logical_line(client.conn)

    assert asyncio.run(go()) == (b"NO \r\n", 6)


def test_no_with_a_literal_text_is_an_auth_failure() -> None:
    async def go() -> None:
        client, _ = _client(b"NO {21}\r\nAuthentication failed\r\n")
        await client.response("login")

    with pytest.raises(BenchError) as info:
        asyncio.run(go())
    assert info.value.kind == "auth-failed"


@pytest.mark.parametrize(
    ("line", "phase", "kind"),
    [
        (b'NO "Authentication failed."\r\n', "login", "auth-failed"),
        (b'no "lower case is still NO"\r\n', "login", "auth-failed"),
        (b'NO (TRYLATER) "Mailbox server temporarily unavailable."\r\n', "login", "unavailable"),
        (b'BYE (TRYLATER) "Too many connections."\r\n', "greeting", "unavailable"),
        (b'BYE "Too many invalid authentication attempts."\r\n', "login", "closed"),
        (b'NO "TLS support isn\'t enabled."\r\n', "starttls", "tls-error"),
        (b'NO "Authenticate first."\r\n', "list", "rejected"),
        (b"* OK IMAP4rev1 ready\r\n", "greeting", "protocol-error"),
    ],
)
def test_failure_kinds(line: bytes, phase: str, kind: str) -> None:
    assert sieve_failure(line, phase).kind == kind


def test_only_plain_strings_are_quoted() -> None:
    assert sieve_quoted(b"PLAIN") == b'"PLAIN"'
    with pytest.raises(BenchError):
        sieve_quoted(b'a"b')


def test_starttls_needs_the_capability() -> None:
    async def go() -> None:
        client, _ = _client(b'"SASL" "PLAIN"\r\nOK "ready."\r\n')
        await client.greeting()
        await client.starttls(None, "localhost")  # type: ignore[arg-type]

    with pytest.raises(BenchError) as info:
        asyncio.run(go())
    assert info.value.kind == "tls-error"
