"""Netstrings: the spec's examples, every framing error, and arbitrary input fuzzed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.smtp.netstring import (
    DEFAULT_MAX_LENGTH,
    NetstringDecoder,
    NetstringError,
    encode,
)


def test_spec_examples() -> None:
    assert encode(b"hello world!") == b"12:hello world!,"
    assert encode(b"") == b"0:,"
    assert NetstringDecoder().feed(b"12:hello world!,0:,") == [b"hello world!", b""]


def test_incremental_byte_by_byte() -> None:
    decoder = NetstringDecoder()
    out: list[bytes] = []
    for byte in b"5:abcde,3:xyz,":
        out += decoder.feed(bytes([byte]))
    assert out == [b"abcde", b"xyz"]
    assert decoder.buffered == 0


def test_payload_may_contain_anything() -> None:
    payload = b"1:a,\x00\r\n:,"
    assert NetstringDecoder().feed(encode(payload)) == [payload]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"x:", "not a decimal number"),
        (b":abc,", "not a decimal number"),
        (b"-1:", "not a decimal number"),
        (b"01:a,", "leading zeros"),
        (b"3:abc;", "not terminated"),
        (b"3:abcd,", "not terminated"),
        (b"10001:", "longer than"),
        (b"999999", "longer than"),  # more digits than the limit has, no colon yet
    ],
)
def test_framing_errors(data: bytes, message: str) -> None:
    with pytest.raises(NetstringError, match=message):
        NetstringDecoder().feed(data)


def test_oversized_is_refused_before_buffering_the_payload() -> None:
    decoder = NetstringDecoder()
    with pytest.raises(NetstringError):
        decoder.feed(b"100000:")
    decoder = NetstringDecoder(max_length=10)
    assert decoder.feed(b"10:") == []
    decoder = NetstringDecoder(max_length=10)
    with pytest.raises(NetstringError):
        decoder.feed(b"11:")


def test_a_100k_request_is_an_error_not_a_crash() -> None:
    with pytest.raises(NetstringError):
        NetstringDecoder().feed(encode(b"x" * 100_000))


def test_broken_decoder_stays_broken() -> None:
    decoder = NetstringDecoder()
    with pytest.raises(NetstringError):
        decoder.feed(b"3:abcX")
    with pytest.raises(NetstringError):
        decoder.feed(b"3:abc,")


def test_limit_is_inclusive() -> None:
    assert NetstringDecoder(4).feed(b"4:abcd,") == [b"abcd"]
    assert NetstringDecoder(DEFAULT_MAX_LENGTH).feed(encode(b"a" * DEFAULT_MAX_LENGTH))


@given(st.lists(st.binary(max_size=300), max_size=10), st.data())
def test_round_trip_under_any_split(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(encode(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder = NetstringDecoder()
    out: list[bytes] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        out += decoder.feed(stream[start:cut])
        start = cut
    assert out == payloads
    assert decoder.buffered == 0


@given(st.lists(st.binary(max_size=64), max_size=6), st.integers(0, 64))
def test_arbitrary_bytes_raise_only_netstring_error(chunks: list[bytes], limit: int) -> None:
    decoder = NetstringDecoder(max_length=limit)
    try:
        for chunk in chunks:
            for payload in decoder.feed(chunk):
                assert len(payload) <= limit
            assert decoder.buffered <= limit + len(str(limit)) + 2
    except NetstringError:
        pass
