"""Pre-login POP3 line reader and command splitter: framing, limits, laziness, fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.pop3.parser import Command, Event, LineReader, TooLong, parse_command


def drain(reader: LineReader) -> list[Event]:
    events = []
    while (event := reader.next_line()) is not None:
        events.append(event)
    return events


def lines(data: bytes, max_line: int = 8192) -> list[Event]:
    reader = LineReader(max_line)
    reader.feed(data)
    return drain(reader)


# -- framing ------------------------------------------------------------------------------


def test_crlf_and_bare_lf() -> None:
    assert lines(b"USER a\r\nPASS b\nQUIT\r\n") == [b"USER a", b"PASS b", b"QUIT"]


def test_only_one_cr_is_the_terminator() -> None:
    assert lines(b"PASS a\r\r\n") == [b"PASS a\r"]
    assert lines(b"PASS a\rb\r\n") == [b"PASS a\rb"]


def test_empty_lines_are_lines() -> None:
    assert lines(b"\r\n\n") == [b"", b""]


def test_partial_line_waits() -> None:
    reader = LineReader()
    reader.feed(b"USER al")
    assert reader.next_line() is None
    reader.feed(b"ice\r")
    assert reader.next_line() is None
    reader.feed(b"\nCA")
    assert reader.next_line() == b"USER alice"
    assert reader.next_line() is None
    assert reader.take_pending() == b"CA"


def test_byte_at_a_time() -> None:
    reader = LineReader()
    out: list[Event] = []
    for byte in b"CAPA\r\nUSER x\nPASS y z\r\n":
        reader.feed(bytes([byte]))
        out += drain(reader)
    assert out == [b"CAPA", b"USER x", b"PASS y z"]


# -- limits -------------------------------------------------------------------------------


def test_line_of_exactly_max_line_is_accepted() -> None:
    line = b"x" * 14 + b"\r\n"
    assert lines(line, max_line=16) == [b"x" * 14]
    assert lines(b"x" * 15 + b"\n", max_line=16) == [b"x" * 15]


def test_one_byte_over_is_too_long() -> None:
    assert lines(b"x" * 15 + b"\r\nNOOP\r\n", max_line=16) == [TooLong(), b"NOOP"]


def test_oversized_line_is_reported_once_and_following_lines_survive() -> None:
    data = b"USER " + b"x" * 100_000 + b"\r\nCAPA\r\nQUIT\r\n"
    assert lines(data, max_line=1024) == [TooLong(), b"CAPA", b"QUIT"]


def test_oversized_line_is_dropped_as_it_arrives() -> None:
    reader = LineReader(1024)
    reader.feed(b"PASS ")
    assert reader.next_line() is None
    for _ in range(1000):
        reader.feed(b"y" * 4096)
        assert reader.next_line() is None
        assert reader.buffered <= 4096 + 1024
    assert reader.buffered == 0
    reader.feed(b"yyy\r\nQUIT\r\nST")
    assert drain(reader) == [TooLong(), b"QUIT"]
    assert reader.take_pending() == b"ST"


def test_oversized_line_ending_in_next_feed() -> None:
    reader = LineReader(8)
    reader.feed(b"0123456789")
    assert reader.next_line() is None
    reader.feed(b"\nA\n")
    assert drain(reader) == [TooLong(), b"A"]


def test_max_line_must_allow_a_terminator() -> None:
    with pytest.raises(ValueError):
        LineReader(1)


# -- laziness and take_pending ------------------------------------------------------------


def test_take_pending_keeps_exact_bytes_after_the_consumed_line() -> None:
    reader = LineReader()
    reader.feed(b"USER a\r\nPASS b\r\nSTAT\r\nLIST\nRETR 1\r\nQU")
    assert reader.next_line() == b"USER a"
    assert reader.next_line() == b"PASS b"
    assert reader.take_pending() == b"STAT\r\nLIST\nRETR 1\r\nQU"
    assert reader.take_pending() == b""
    assert reader.next_line() is None


def test_take_pending_keeps_a_long_line_not_yet_reached() -> None:
    reader = LineReader(16)
    long = b"RETR " + b"9" * 100 + b"\r\n"
    reader.feed(b"PASS x\r\n" + long)
    assert reader.next_line() == b"PASS x"
    assert reader.take_pending() == long


def test_take_pending_resets_a_discard() -> None:
    reader = LineReader(8)
    reader.feed(b"0123456789")
    assert reader.next_line() is None
    assert reader.take_pending() == b""
    reader.feed(b"NOOP\r\n")
    assert drain(reader) == [b"NOOP"]


# -- commands -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"CAPA", Command("CAPA", (), b"")),
        (b"capa", Command("CAPA", (), b"")),
        (b"uSeR alice", Command("USER", (b"alice",), b"alice")),
        (b"PASS p a  ss ", Command("PASS", (b"p", b"a", b"", b"ss", b""), b"p a  ss ")),
        (b"PASS ", Command("PASS", (b"",), b"")),
        (b"AUTH PLAIN =", Command("AUTH", (b"PLAIN", b"="), b"PLAIN =")),
        (b"X-EXT-1 a", Command("X-EXT-1", (b"a",), b"a")),
        ("USER jöhn".encode(), Command("USER", ("jöhn".encode(),), "jöhn".encode())),
    ],
)
def test_parse_command(line: bytes, expected: Command) -> None:
    assert parse_command(line) == expected


@pytest.mark.parametrize(
    "line", [b"", b" USER a", b"US\x00ER a", b"\xffUSER", b"USER\ta", b"X" * 41, "ÜSER".encode()]
)
def test_not_a_command(line: bytes) -> None:
    assert parse_command(line) is None


# -- properties ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=8),
    st.lists(st.sampled_from([b"\r\n", b"\n"]), min_size=8, max_size=8),
    st.lists(st.integers(min_value=1, max_value=50), max_size=30),
)
def test_chunking_does_not_change_lines(
    content: list[bytes], ends: list[bytes], cuts: list[int]
) -> None:
    data = b"".join(c + e for c, e in zip(content, ends, strict=False))
    expected = lines(data, max_line=64)
    reader = LineReader(64)
    out: list[Event] = []
    pos = 0
    for cut in [*cuts, len(data)]:
        reader.feed(data[pos : pos + cut])
        pos += cut
        out += drain(reader)
    reader.feed(data[pos:])
    out += drain(reader)
    assert out == expected
    assert reader.take_pending() == b""


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(min_value=2, max_value=64))
def test_never_holds_more_than_a_line_past_what_was_fed(data: bytes, max_line: int) -> None:
    reader = LineReader(max_line)
    for i in range(0, len(data), 7):
        reader.feed(data[i : i + 7])
        for event in drain(reader):
            if isinstance(event, bytes):
                assert len(event) < max_line
        assert reader.buffered < max_line + 7
