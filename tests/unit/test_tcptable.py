"""tcp_table(5): the %XX codec, request parsing, reply framing, bounded lines; fuzzed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.smtp.tcptable import (
    MAX_LINE,
    Get,
    LineDecoder,
    TcpTableError,
    decode,
    encode,
    parse_request,
    reply,
)


def test_encoding_of_what_tcp_table_names() -> None:
    assert encode(b"a b%c\n\t\x7f\xc3\xa9") == b"a%20b%25c%0A%09%7F%C3%A9"
    assert encode(b"alice+x@example.co.uk") == b"alice+x@example.co.uk"


def test_decoding_accepts_any_case() -> None:
    assert decode(b"a%20b%2f%2F%c3%A9") == b"a b//\xc3\xa9"


@pytest.mark.parametrize("bad", [b"%", b"%2", b"%zz", b"a%2", b"%g0"])
def test_bad_escapes(bad: bytes) -> None:
    with pytest.raises(TcpTableError):
        decode(bad)


def test_parse_request() -> None:
    assert parse_request(b"get alice%40example.co.uk") == Get(b"alice@example.co.uk")
    assert parse_request(b"get a%20b\r") == Get(b"a b")
    assert parse_request(b"GET x") == Get(b"x")
    for bad in (b"put x y", b"get", b"get ", b"", b"get %zz"):
        with pytest.raises(TcpTableError):
            parse_request(bad)


def test_reply_is_one_encoded_line() -> None:
    assert reply(200, b"lmtp:inet:127.0.0.2:24") == b"200 lmtp:inet:127.0.0.2:24\n"
    assert reply(500, b"not found") == b"500 not%20found\n"
    assert reply(200, b"x\ny") == b"200 x%0Ay\n"
    assert reply(200, b"x" * 5000) == b"400 reply too long\n"


def test_line_decoder_incremental_and_bounded() -> None:
    decoder = LineDecoder(max_line=10)
    assert decoder.feed(b"get a\nget") == [b"get a"]
    assert decoder.feed(b" b\n") == [b"get b"]
    with pytest.raises(TcpTableError):
        decoder.feed(b"x" * 11)
    with pytest.raises(TcpTableError):
        decoder.feed(b"\n")  # broken for good


def test_a_100k_line_is_an_error_not_a_crash() -> None:
    with pytest.raises(TcpTableError):
        LineDecoder().feed(b"get " + b"a" * 100_000 + b"\n")


def test_longest_allowed_line() -> None:
    line = b"g" * MAX_LINE
    assert LineDecoder().feed(line + b"\n") == [line]


@given(st.binary(max_size=500))
def test_round_trip(data: bytes) -> None:
    encoded = encode(data)
    assert decode(encoded) == data
    assert not any(ch in encoded for ch in b" \t\r\n\x00")


@given(st.binary(max_size=500))
def test_request_round_trip(key: bytes) -> None:
    if key:
        assert parse_request(b"get " + encode(key)) == Get(key)


@given(st.binary(max_size=300))
def test_arbitrary_requests_raise_only_tcp_table_error(line: bytes) -> None:
    try:
        parse_request(line)
    except TcpTableError:
        pass


@given(st.lists(st.binary(max_size=80), max_size=8), st.integers(1, 64))
def test_arbitrary_streams(chunks: list[bytes], limit: int) -> None:
    decoder = LineDecoder(max_line=limit)
    try:
        for chunk in chunks:
            for line in decoder.feed(chunk):
                assert len(line) <= limit and b"\n" not in line
    except TcpTableError:
        pass
