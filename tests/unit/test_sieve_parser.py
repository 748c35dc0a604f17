"""The ManageSieve command reader: tokens, literals, limits, resynchronising after junk."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from proxy.sieve.parser import (
    Atom,
    BadSyntax,
    Command,
    CommandReader,
    LiteralTooLarge,
    String,
    TooLong,
    quote,
    string,
)


def events(data: bytes, max_line: int = 200, max_literal: int = 100, chunk: int = 0) -> list:
    reader = CommandReader(max_line, max_literal)
    out = []
    pieces = [data] if not chunk else [data[i : i + chunk] for i in range(0, len(data), chunk)]
    for piece in pieces:
        reader.feed(piece)
        while (event := reader.next_event()) is not None:
            out.append(event)
    return out


def test_atoms_quoted_strings_and_literals() -> None:
    data = b'AUTHENTICATE "PLAIN" {8+}\r\nAGFsaWNl\r\nnoop "a \\"b\\" \\\\c"\r\n'
    for chunk in (0, 1, 3):
        first, second = events(data, chunk=chunk)
        assert first == Command((Atom(b"AUTHENTICATE"), String(b"PLAIN"), String(b"AGFsaWNl")))
        assert second.name == "NOOP" and second.args == (String(b'a "b" \\c'),)


def test_a_synchronising_literal_is_read_the_same() -> None:
    (cmd,) = events(b'AUTHENTICATE "PLAIN" {3}\r\nabc\r\n')
    assert cmd.args[1] == String(b"abc")


def test_a_literal_may_hold_crlf() -> None:
    (cmd,) = events(b"PUTSCRIPT \"s\" {6+}\r\na\r\nb\r\n\r\n")
    assert cmd.args[1] == String(b"a\r\nb\r\n")


def test_a_long_line_is_reported_once_and_the_next_command_read() -> None:
    got = events(b"NOOP " + b"x" * 500 + b"\r\nLOGOUT\r\n", chunk=7)
    assert got[0] == TooLong() and got[1].name == "LOGOUT" and len(got) == 2


def test_a_big_literal_is_skipped_whole() -> None:
    body = b"\r\n".join([b"y" * 50] * 10)  # 508 octets, CRLFs inside
    data = b"PUTSCRIPT \"s\" {%d+}\r\n" % len(body) + body + b"\r\nLOGOUT\r\n"
    for chunk in (0, 1, 13):
        got = events(data, chunk=chunk)
        assert got[0] == LiteralTooLarge() and [e.name for e in got[1:]] == ["LOGOUT"], got


def test_malformed_commands_are_syntax_errors() -> None:
    for bad in (b'NOOP "unterminated\r\n', b"NOOP {x}\r\n", b"\r\n", b'NOOP "a\\x"\r\n'):
        got = events(bad + b"LOGOUT\r\n")
        assert isinstance(got[0], BadSyntax) and got[1].name == "LOGOUT", (bad, got)


def test_what_follows_stays_buffered() -> None:
    reader = CommandReader()
    reader.feed(b'AUTHENTICATE "PLAIN" "AGE="\r\nLISTSCRIPTS\r\n')
    assert reader.next_event().name == "AUTHENTICATE"
    assert reader.take_pending() == b"LISTSCRIPTS\r\n"


def test_server_strings() -> None:
    assert quote(b'a"b\\') == b'"a\\"b\\\\"'
    assert string(b"a\r\nb") == b"{4}\r\na\r\nb"
    assert string(b"x" * 1025).startswith(b"{1025}\r\n")


@given(st.binary(max_size=400), st.integers(min_value=1, max_value=50))
def test_any_input_is_safe(data: bytes, chunk: int) -> None:
    got = events(data, max_line=64, max_literal=32, chunk=chunk)
    assert all(isinstance(e, Command | TooLong | LiteralTooLarge | BadSyntax) for e in got)
