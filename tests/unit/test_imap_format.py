"""IMAP formatting helpers, and the proof that a replayed login cannot inject commands."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.imapformat import (
    astring_parts,
    capability_code,
    login_command,
    parse_capability,
    quote,
    response_code,
    tagged_status,
)
from proxy.imap.parser import Command, CommandReader, ContinuationNeeded

# -- quoting ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        (b"", b'""'),
        (b"user", b'"user"'),
        (b"a b", b'"a b"'),
        (b'p"a\\ss', b'"p\\"a\\\\ss"'),
        (b"{3}", b'"{3}"'),
        (b"\x01\t\x7f", b'"\x01\t\x7f"'),  # CTLs other than CR/LF/NUL are TEXT-CHARs
    ],
)
def test_quote(value: bytes, quoted: bytes) -> None:
    assert quote(value) == quoted


@pytest.mark.parametrize("value", [b"a\rb", b"a\nb", b"a\x00b", "jöhn".encode(), b"\x80"])
def test_quote_refuses(value: bytes) -> None:
    assert quote(value) is None


def test_astring_parts() -> None:
    assert astring_parts(b"x y", literal_plus=False) == [b'"x y"']
    assert astring_parts(b"a\r\nb", literal_plus=True) == [b"{4+}\r\na\r\nb"]
    assert astring_parts(b"a\r\nb", literal_plus=False) == [b"{4}\r\n", b"a\r\nb"]
    assert astring_parts("é".encode(), literal_plus=False) == [b"{2}\r\n", "é".encode()]


def test_login_command_shapes() -> None:
    assert login_command(b"M3", b"u", b"p w", False) == [b'M3 LOGIN "u" "p w"\r\n']
    assert login_command(b"M3", b"u\n", b"p\r", True) == [b"M3 LOGIN {2+}\r\nu\n {2+}\r\np\r\r\n"]
    assert login_command(b"M3", b"u\n", b"p", False) == [b"M3 LOGIN {2}\r\n", b'u\n "p"\r\n']
    assert login_command(b"M3", b"u", b"\x00", False) == [b'M3 LOGIN "u" {1}\r\n', b"\x00\r\n"]
    assert login_command(b"t", b"\r", b"\n", False) == [
        b"t LOGIN {1}\r\n",
        b"\r {1}\r\n",
        b"\n\r\n",
    ]


@pytest.mark.parametrize("tag", [b"", b"a b", b"a\r\n", b"+", b"*", b"a(", "é".encode()])
def test_login_command_refuses_bad_tags(tag: bytes) -> None:
    with pytest.raises(ValueError):
        login_command(tag, b"u", b"p", False)


@settings(max_examples=500)
@given(st.binary(max_size=64), st.binary(max_size=64), st.booleans())
def test_login_command_cannot_inject(user: bytes, password: bytes, literal_plus: bool) -> None:
    pieces = login_command(b"M3", user, password, literal_plus)
    expected = Command("M3", "LOGIN", (user, password))
    # Joined in one write, as a misbehaving relay might do...
    reader = CommandReader(max_line=1 << 20, max_literal=1 << 20)
    reader.feed(b"".join(pieces))
    events = []
    while (event := reader.next_event()) is not None:
        events.append(event)
    assert [e for e in events if not isinstance(e, ContinuationNeeded)] == [expected]
    assert reader.take_pending() == b""
    # ...and piece by piece, as a server sees it: a continuation after every piece but the
    # last, then the one command.
    reader = CommandReader(max_line=1 << 20, max_literal=1 << 20)
    for piece in pieces[:-1]:
        reader.feed(piece)
        event = reader.next_event()
        assert isinstance(event, ContinuationNeeded) and event.tag == "M3"
        assert reader.next_event() is None
    reader.feed(pieces[-1])
    assert reader.next_event() == expected
    assert reader.next_event() is None
    assert reader.take_pending() == b""


# -- reading server responses -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "caps"),
    [
        (
            b"* CAPABILITY IMAP4rev1 LITERAL+ auth=PLAIN\r\n",
            ("IMAP4REV1", "LITERAL+", "AUTH=PLAIN"),
        ),
        (b"* capability imap4rev2", ("IMAP4REV2",)),
        (b"[CAPABILITY IMAP4rev1 SASL-IR]", ("IMAP4REV1", "SASL-IR")),
        (b"a OK [CAPABILITY IMAP4rev1 X] Logged in\r\n", ("IMAP4REV1", "X")),
        (b"* OK [CAPABILITY IMAP4rev1 ID] Dovecot ready.\r\n", ("IMAP4REV1", "ID")),
        (b"* PREAUTH [CAPABILITY IMAP4rev1] hi\r\n", ("IMAP4REV1",)),
        (b"IMAP4rev1 X", ("IMAP4REV1", "X")),  # what capability_code returns
        (b"CAPABILITY IMAP4rev1", ("IMAP4REV1",)),
        (b"* CAPABILITY", ()),
        (b"* OK Dovecot ready.\r\n", ()),
        (b"* OK [ALERT] hi\r\n", ()),
        (b"[ALERT]", ()),
        (b"", ()),
        (b"* CAPABILITY \xff", ("\ufffd",)),
    ],
)
def test_parse_capability(text: bytes, caps: tuple[str, ...]) -> None:
    assert parse_capability(text) == caps


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"a OK [CAPABILITY IMAP4rev1 X] Logged in", b"IMAP4rev1 X"),
        (b"* OK [capability IMAP4rev1] ready\r\n", b"IMAP4rev1"),
        (b"* OK [CAPABILITY] ready\r\n", b""),
        (b"* OK [ALERT] ready\r\n", None),
        (b"* OK ready\r\n", None),
        (b"* CAPABILITY IMAP4rev1\r\n", None),
        (b"", None),
    ],
)
def test_capability_code(line: bytes, code: bytes | None) -> None:
    assert capability_code(line) == code


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"* OK [ALERT] System shutdown\r\n", b"ALERT"),
        (b"a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n", b"AUTHENTICATIONFAILED"),
        (b"* BYE [UNAVAILABLE] later\r\n", b"UNAVAILABLE"),
        (b"* PREAUTH [CAPABILITY IMAP4rev1] x", b"CAPABILITY IMAP4rev1"),
        (b"a bad [PARSE] x", b"PARSE"),
        (b"a OK done\r\n", None),
        (b"a OK [unclosed\r\n", None),
        (b"a OK\r\n", None),
        (b"* FLAGS [x]\r\n", None),
        (b"* 3 EXISTS\r\n", None),
        (b"+ [ALERT] x", None),
    ],
)
def test_response_code(line: bytes, code: bytes | None) -> None:
    assert response_code(line) == code


@pytest.mark.parametrize(
    ("line", "tag", "status"),
    [
        (b"M3 OK Logged in\r\n", b"M3", "OK"),
        (b"M3 NO [AUTHENTICATIONFAILED] no\r\n", b"M3", "NO"),
        (b"M3 bad what\r\n", b"M3", "BAD"),
        (b"M3 OK\r\n", b"M3", "OK"),
        (b"M3 OK", b"M3", "OK"),
        (b"M3 OKAY fine\r\n", b"M3", None),
        (b"M3 BYE x\r\n", b"M3", None),
        (b"M31 OK x\r\n", b"M3", None),
        (b"M3 OK x\r\n", b"M31", None),
        (b"m3 OK x\r\n", b"M3", None),  # tags are compared exactly
        (b"* OK [ALERT] x\r\n", b"*", None),
        (b"* OK x\r\n", b"M3", None),
        (b"", b"M3", None),
        (b"OK x", b"", None),
    ],
)
def test_tagged_status(line: bytes, tag: bytes, status: str | None) -> None:
    assert tagged_status(line, tag) == status


@given(st.binary(max_size=100), st.binary(max_size=8))
def test_response_readers_never_raise(line: bytes, tag: bytes) -> None:
    parse_capability(line)
    capability_code(line)
    response_code(line)
    tagged_status(line, tag)


@pytest.mark.parametrize(
    ("text", "caps"),
    [
        (b"* CAPABILITY IMAP4rev1 auth=PLAIN\r\n", ("IMAP4rev1", "auth=PLAIN")),
        (b"a OK [CAPABILITY IMAP4rev1 SORT] Logged in\r\n", ("IMAP4rev1", "SORT")),
        (b"IMAP4rev1 X", ("IMAP4rev1", "X")),
        (b"* OK Dovecot ready.\r\n", ()),
    ],
)
def test_parse_capability_can_keep_the_servers_case(text: bytes, caps: tuple[str, ...]) -> None:
    """What a client is shown is the backend's own list, spelt as the backend spells it."""
    assert parse_capability(text, keep_case=True) == caps
