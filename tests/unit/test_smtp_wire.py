"""SMTP wire details: reply parsing, message transparency (no smuggling), xtext."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.smtp.wire import (
    MAX_REPLY_LINE,
    MAX_REPLY_LINES,
    Reply,
    ReplyError,
    ReplyParser,
    extensions,
    local_reply,
    reverse_path,
    safe_helo,
    wire_data,
    xtext,
)


def parse(*lines: bytes) -> Reply:
    parser = ReplyParser()
    for line in lines[:-1]:
        assert parser.feed_line(line) is None
    reply = parser.feed_line(lines[-1])
    assert reply is not None
    return reply


def test_single_and_multi_line_replies() -> None:
    assert parse(b"250 2.0.0 Ok\r\n") == Reply(250, ("2.0.0 Ok",))
    ehlo = parse(b"250-relay.test\r\n", b"250-XCLIENT NAME ADDR LOGIN\r\n", b"250 SMTPUTF8\r\n")
    assert ehlo.code == 250 and ehlo.positive
    assert extensions(ehlo) == {"XCLIENT": "NAME ADDR LOGIN", "SMTPUTF8": ""}
    assert parse(b"354\r\n") == Reply(354, ("",))
    assert parse(b"451 4.4.1 down").transient


def test_wire_form_round_trips() -> None:
    reply = parse(b"550-5.1.1 first\r\n", b"550 5.1.1 second\r\n")
    assert reply.wire() == "550-5.1.1 first\r\n550 5.1.1 second"
    assert local_reply(451, "4.4.1 x").wire() == "451 4.4.1 x"
    assert Reply(250, ()).wire() == "250"


@pytest.mark.parametrize(
    "lines",
    [
        [b"hello\r\n"],
        [b"25 short\r\n"],
        [b"650 bad class\r\n"],
        [b"250-a\r\n", b"251 b\r\n"],
        [b"250 " + b"x" * MAX_REPLY_LINE + b"\r\n"],
        [b"250-x\r\n"] * (MAX_REPLY_LINES + 1),
    ],
)
def test_garbled_replies(lines: list[bytes]) -> None:
    parser = ReplyParser()
    with pytest.raises(ReplyError):
        for line in lines:
            parser.feed_line(line)


def test_control_characters_in_reply_text_are_neutralised() -> None:
    reply = parse(b"250 a\x1b[31mb\r\n")
    assert reply.lines == ("a?[31mb",)


def test_dot_stuffing_and_termination() -> None:
    assert wire_data(b"a\r\n.b\r\n..c\r\n") == b"a\r\n..b\r\n...c\r\n.\r\n"
    assert wire_data(b".") == b"..\r\n.\r\n"
    assert wire_data(b"") == b".\r\n"
    assert wire_data(b"no newline at end") == b"no newline at end\r\n.\r\n"


def test_bare_line_endings_cannot_smuggle_an_end_of_data() -> None:
    smuggled = b"Subject: x\r\n\r\nhi\n.\r\nMAIL FROM:<evil@x>\r\n"
    out = wire_data(smuggled)
    assert out.count(b"\r\n.\r\n") == 1 and out.endswith(b"\r\n.\r\n")
    assert b"\r\n..\r\nMAIL FROM" in out
    assert wire_data(b"a\r.\r\nb") == b"a\r\n..\r\nb\r\n.\r\n"


def unstuff(wire: bytes) -> bytes:
    """What an SMTP server stores: lines up to the lone dot, one leading dot removed."""
    assert wire.endswith(b".\r\n")
    body = wire[:-3]
    lines = body.split(b"\r\n")[:-1] if body else []
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines)


@given(st.binary(max_size=300))
def test_transparency(content: bytes) -> None:
    out = wire_data(content)
    assert re.search(rb"(?<!\r)\n|\r(?!\n)", out) is None  # only CRLF line ends
    first_end = (b"\r\n" + out).find(b"\r\n.\r\n")
    assert first_end == len(out) - 3  # the only end-of-data is the last line
    normalised = re.sub(rb"\r\n|\r|\n", b"\r\n", content)
    if normalised and not normalised.endswith(b"\r\n"):
        normalised += b"\r\n"
    assert unstuff(out) == normalised


def test_xtext() -> None:
    assert xtext("alice_example_co_uk") == "alice_example_co_uk"
    assert xtext("a+b=c d") == "a+2Bb+3Dc+20d"
    assert xtext("jos\u00e9") == "jos+C3+A9"


@given(st.text(max_size=100))
def test_xtext_is_printable_and_reversible(value: str) -> None:
    encoded = xtext(value)
    assert all(33 <= ord(ch) <= 126 and ch != "=" for ch in encoded)
    decoded = re.sub(r"\+([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), encoded).encode(
        "latin-1"
    )
    assert decoded == value.encode("utf-8")


def test_safe_helo_and_reverse_path() -> None:
    assert safe_helo("client.example.net", "me") == "client.example.net"
    assert safe_helo("[127.0.0.1]", "me") == "[127.0.0.1]"
    assert safe_helo("bad name\r\nRSET", "me") == "me"
    assert safe_helo("", "me") == "me"
    assert reverse_path("<>") == "" and reverse_path(None) == ""
    assert reverse_path("a@b.test") == "a@b.test"
