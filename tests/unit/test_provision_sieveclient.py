"""The pure part of the admin tool's ManageSieve client (directory.provision.sieveclient)."""

from __future__ import annotations

import base64

import pytest

from directory.provision.sieveclient import (
    Atom,
    ParseError,
    Script,
    capabilities,
    encode,
    literal_size,
    plain_response,
    scripts,
    status,
    tokens,
)


def test_tokens_of_a_capability_line() -> None:
    line = tokens(b'"SIEVE" "fileinto vacation"\r\n')
    assert line == [b"SIEVE", b"fileinto vacation"]
    assert not isinstance(line[0], Atom)


def test_tokens_read_literals_as_exact_bytes() -> None:
    body = b'require "fileinto";\nif true {\r\n  keep;\n}\n'
    item = b"{%d}\r\n" % len(body) + body + b"\r\n"
    assert tokens(item) == [body]
    assert tokens(b"{%d+}\r\n" % len(body) + body + b"\r\n") == [body]


def test_tokens_after_a_literal_continue_the_line() -> None:
    item = b'"name" {3}\r\nabc ACTIVE\r\n'
    assert tokens(item) == [b"name", b"abc", Atom("ACTIVE")]


def test_quoted_strings_unescape() -> None:
    assert tokens(b'"a \\"b\\" \\\\ c"\r\n') == [b'a "b" \\ c']


def test_lists_and_atoms() -> None:
    line = tokens(b'NO (QUOTA/MAXSCRIPTS) "too many"\r\n')
    assert line == [Atom("NO"), [Atom("QUOTA/MAXSCRIPTS")], b"too many"]


@pytest.mark.parametrize(
    "item",
    [b'"unterminated\r\n', b"(open\r\n", b"close)\r\n", b"{5}\r\nab\r\n", b"{x}\r\n"],
)
def test_malformed_lines_raise(item: bytes) -> None:
    with pytest.raises(ParseError):
        tokens(item)


def test_status_of_final_lines() -> None:
    assert status(tokens(b"OK\r\n")) == ("OK", "", "")
    assert status(tokens(b'ok "Logged in."\r\n')) == ("OK", "", "Logged in.")
    assert status(tokens(b'NO (NONEXISTENT) "no such script"\r\n')) == (
        "NO",
        "NONEXISTENT",
        "no such script",
    )
    assert status(tokens(b'NO (QUOTA/MAXSIZE) "too big"\r\n'))[1] == "QUOTA"
    # A literal as the text (servers may send long texts so).
    assert status(tokens(b"NO {12}\r\nline 2: oops\r\n")) == ("NO", "", "line 2: oops")
    assert status(tokens(b'BYE (TRYLATER) "shutting down"\r\n'))[0] == "BYE"
    assert status(tokens(b'"away" ACTIVE\r\n')) is None
    assert status([]) is None


def test_capabilities_and_scripts() -> None:
    lines = [tokens(b'"IMPLEMENTATION" "Dovecot Pigeonhole"\r\n'), tokens(b'"STARTTLS"\r\n')]
    assert capabilities(lines) == {"IMPLEMENTATION": "Dovecot Pigeonhole", "STARTTLS": ""}
    listed = [tokens(b'"away" ACTIVE\r\n'), tokens(b'"sort rules"\r\n'), tokens(b'{4}\r\nodd"\r\n')]
    assert scripts(listed) == [
        Script("away", True),
        Script("sort rules", False),
        Script('odd"', False),
    ]
    with pytest.raises(ParseError):
        scripts([[Atom("OK")]])


def test_literal_size() -> None:
    assert literal_size(b'"x" {12}\r\n') == 12
    assert literal_size(b"{7+}\r\n") == 7
    assert literal_size(b'"x"\r\n') is None
    assert literal_size(b"{}\r\n") is None


def test_encode_quotes_plain_names_and_sends_scripts_as_literals() -> None:
    assert encode(b"away") == b'"away"'
    assert encode(b'say "hi"') == b'{8+}\r\nsay "hi"'
    assert encode(b"keep;\n", literal=True) == b"{6+}\r\nkeep;\n"
    assert encode(b"") == b'""'


def test_plain_response() -> None:
    raw = base64.b64decode(plain_response("uid", "admin", "secret"))
    assert raw == b"uid\x00admin\x00secret"
    assert base64.b64decode(plain_response("", "u*m", "p")) == b"\x00u*m\x00p"
    with pytest.raises(ValueError):
        plain_response("a\x00b", "admin", "pw")
    with pytest.raises(ValueError):
        plain_response("uid", "admin", "")
