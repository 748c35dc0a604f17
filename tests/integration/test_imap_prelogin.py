"""IMAP before login, over real sockets against the real farm: what RFC 2971 and RFC 7888
allow and how Dovecot answers the rest (large ID, oversized input, invalid commands)."""

from __future__ import annotations

import base64

import pytest

from bench.farm import Farm
from tests.integration.imapwire import Wire
from tests.integration.waiting import eventually

pytestmark = pytest.mark.usefixtures("farm")

# Short enough that a reply that never comes fails the test long before the proxy's
# preauth_timeout (30 s in the test config) would end the wait.
TIMEOUT = 5.0


def wire(proxy) -> Wire:  # type: ignore[no-untyped-def]
    w = Wire(proxy.ports.imap, timeout=TIMEOUT)
    assert w.line().startswith(b"* OK ")
    return w


def largest_id_items() -> list[tuple[bytes, bytes]]:
    """30 field/value pairs of 30 and 1024 octets: everything RFC 2971 allows."""
    return [(b"%02d" % i + b"f" * 28, bytes([0x61 + i % 26]) * 1024) for i in range(30)]


def login_line(tag: bytes, farm: Farm, address: str) -> bytes:
    user = farm.user(address)
    return tag + b" LOGIN " + user.uid.encode() + b' "' + user.password.encode() + b'"\r\n'


def test_largest_id_quoted_is_answered_and_login_follows(farm: Farm, proxy) -> None:  # type: ignore[no-untyped-def]
    line = b"a1 ID (" + b" ".join(b'"%s" "%s"' % kv for kv in largest_id_items()) + b")\r\n"
    assert len(line) > 30_000
    with wire(proxy) as w:
        w.send(line)
        assert w.line().startswith(b"* ID (")
        assert w.line().startswith(b"a1 OK ")
        w.send(login_line(b"a2", farm, "alice@example.co.uk"))
        assert w.until(b"a2 ")[-1].startswith(b"a2 OK ")


def test_largest_id_as_synchronizing_literals(proxy) -> None:  # type: ignore[no-untyped-def]
    with wire(proxy) as w:
        w.send(b"a1 ID (")
        for i, (field, value) in enumerate(largest_id_items()):
            w.send(b"{%d}\r\n" % len(field))
            assert w.line().startswith(b"+ ")
            w.send(field + b" {%d}\r\n" % len(value))
            assert w.line().startswith(b"+ ")
            w.send(value + (b" " if i < 29 else b")\r\n"))
        assert w.line().startswith(b"* ID (")
        assert w.line().startswith(b"a1 OK ")


def test_largest_id_as_literal_plus(proxy) -> None:  # type: ignore[no-untyped-def]
    items = [b"{%d+}\r\n%s {%d+}\r\n%s" % (len(f), f, len(v), v) for f, v in largest_id_items()]
    with wire(proxy) as w:
        w.send(b"a1 ID (" + b" ".join(items) + b")\r\na2 NOOP\r\n")
        assert w.line().startswith(b"* ID (")
        assert w.line().startswith(b"a1 OK ")
        assert w.line().startswith(b"a2 OK ")


def test_id_beyond_rfc_2971_gets_tagged_bad(proxy) -> None:  # type: ignore[no-untyped-def]
    too_many = b" ".join(b'"f%02d" "v"' % i for i in range(31))
    too_long = b" ".join(b'"%s" "%s"' % (f, v + b"x" * 100) for f, v in largest_id_items())
    with wire(proxy) as w:
        w.send(b"a1 ID (" + too_many + b")\r\n")
        assert w.line().startswith(b"a1 BAD ")
        w.send(b"a2 ID (" + too_long + b")\r\n")
        assert w.line().startswith(b"a2 BAD ")
        w.send(b"a3 NOOP\r\n")
        assert w.line().startswith(b"a3 OK ")


def test_other_commands_keep_the_tight_line_limit(farm: Farm, proxy) -> None:  # type: ignore[no-untyped-def]
    with wire(proxy) as w:
        w.send(b"a1 LOGIN " + b"x" * 30_000 + b" y\r\n")
        assert w.line().startswith(b"a1 BAD ")
        w.send(login_line(b"a2", farm, "alice@example.co.uk"))
        assert w.until(b"a2 ")[-1].startswith(b"a2 OK ")


def test_oversized_authenticate_response_gets_tagged_completion(farm: Farm, proxy) -> None:  # type: ignore[no-untyped-def]
    with wire(proxy) as w:
        w.send(b"a1 AUTHENTICATE PLAIN\r\n")
        assert w.line().rstrip() == b"+"
        w.send(base64.b64encode(b"\0alice\0" + b"p" * 75_000) + b"\r\n")
        assert w.line().startswith(b"a1 BAD ")
        # Still usable afterwards.
        w.send(login_line(b"a2", farm, "bob@example.co.uk"))
        assert w.until(b"a2 ")[-1].startswith(b"a2 OK ")


def test_three_invalid_commands_get_bye_and_close(proxy) -> None:  # type: ignore[no-untyped-def]
    with wire(proxy) as w:
        port = w.sock.getsockname()[1]
        w.send(b"a1 SELECT INBOX\r\n")
        assert w.line().startswith(b"a1 BAD ")
        w.send(b'a2 LOGIN "unterminated\r\n')
        assert w.line().startswith(b"a2 BAD ")
        w.send(b"a3 FOO\r\n")
        assert w.line() == b"* BYE Too many invalid IMAP commands.\r\n"
        assert w.closed()
    assert eventually(lambda: f"client=127.0.0.1:{port} " in proxy.process.log_text())
    (line,) = [
        line
        for line in proxy.process.log_text().splitlines()
        if f"client=127.0.0.1:{port} " in line and "session " in line
    ]
    assert "outcome=too-many-bad-commands" in line


def test_oversized_literal_plus_gets_bye_at_once(proxy) -> None:  # type: ignore[no-untyped-def]
    with wire(proxy) as w:
        w.send(b"a1 LOGIN {50000000+}\r\n")
        assert w.line() == b"* BYE Literal size too large.\r\n"
        assert w.closed()


def test_login_ok_carries_backend_capabilities_in_their_own_case(farm: Farm, proxy) -> None:  # type: ignore[no-untyped-def]
    with wire(proxy) as w:
        w.send(login_line(b"a1", farm, "carol@example.com"))
        reply = w.until(b"a1 ")[-1]
    assert reply.startswith(b"a1 OK [CAPABILITY IMAP4rev1 ")
    assert b"IMAP4REV1" not in reply
