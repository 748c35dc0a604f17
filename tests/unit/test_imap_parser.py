"""Pre-authentication IMAP command reader: syntax, literals, limits, laziness, fuzzing."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.imap.parser import (
    Bounds,
    Command,
    CommandReader,
    ContinuationNeeded,
    Event,
    LiteralTooLong,
    Malformed,
    RawLine,
    TooLong,
)


def drain(reader: CommandReader) -> list[Event]:
    events = []
    while (event := reader.next_event()) is not None:
        events.append(event)
    return events


def parse(data: bytes, **limits: Any) -> list[Event]:
    reader = CommandReader(**limits)
    reader.feed(data)
    return drain(reader)


def cmd(tag: str, name: str, *args: object) -> Command:
    return Command(tag, name, tuple(args))  # type: ignore[arg-type]


# -- plain command lines ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"a CAPABILITY\r\n", cmd("a", "CAPABILITY")),
        (b"A001 capability\n", cmd("A001", "CAPABILITY")),  # bare LF, name upper-cased
        (b"x.y] noop\r\n", cmd("x.y]", "NOOP")),  # "]" is an ASTRING-CHAR, valid in tags
        (b"a LOGIN user secret\r\n", cmd("a", "LOGIN", b"user", b"secret")),
        (b"a LOGIN us]er p=+!&\r\n", cmd("a", "LOGIN", b"us]er", b"p=+!&")),
        (b'a LOGIN "" ""\r\n', cmd("a", "LOGIN", b"", b"")),
        (b'a LOGIN "p\\"a\\\\ss w0rd" x\r\n', cmd("a", "LOGIN", b'p"a\\ss w0rd', b"x")),
        ('a LOGIN "jöhn" "€"\r\n'.encode(), cmd("a", "LOGIN", "jöhn".encode(), "€".encode())),
        (b'a LOGIN "\x01\x7f" x\r\n', cmd("a", "LOGIN", b"\x01\x7f", b"x")),  # CTLs are TEXT-CHAR
        (b"a ID NIL\r\n", cmd("a", "ID", b"NIL")),
        (
            b'a ID ("name" "x" "version" "1")\r\n',
            cmd("a", "ID", [b"name", b"x", b"version", b"1"]),
        ),
        (b"a X () (a (b ()) c) d\r\n", cmd("a", "X", [], [b"a", [b"b", []], b"c"], b"d")),
        (b"a AUTHENTICATE PLAIN =\r\n", cmd("a", "AUTHENTICATE", b"PLAIN", b"=")),
    ],
)
def test_valid_lines(line: bytes, expected: Command) -> None:
    assert parse(line) == [expected]


@pytest.mark.parametrize(
    ("line", "tag"),
    [
        (b"\r\n", None),
        (b"\n", None),
        (b" a NOOP\r\n", None),
        (b"+ NOOP\r\n", None),  # "+" is not allowed in a tag
        (b"a+b NOOP\r\n", None),
        (b"a(b NOOP\r\n", None),
        (b"\xc3\xa9 NOOP\r\n", None),
        (b"a\x00 NOOP\r\n", None),
        (b"a\r\n", "a"),
        (b"a \r\n", "a"),
        (b"a NO\x00OP\r\n", "a"),
        (b"a NOOP \r\n", "a"),  # trailing space
        (b"a LOGIN  x y\r\n", "a"),  # double space
        (b"a NOOP(\r\n", "a"),
        (b"a NOOP x(\r\n", "a"),
        (b"a X )\r\n", "a"),
        (b"a X (a\r\n", "a"),
        (b"a X (a))\r\n", "a"),
        (b"a X ( a)\r\n", "a"),
        (b"a X (a )\r\n", "a"),
        (b'a LOGIN "x\\y" z\r\n', "a"),  # only \" and \\ may be escaped
        (b'a LOGIN "x\ry" z\r\n', "a"),
        (b'a LOGIN "x\x00y" z\r\n', "a"),
        (b'a LOGIN "unterminated\r\n', "a"),
        (b'a LOGIN "x"y\r\n', "a"),
        (b"a LOGIN x\x00y z\r\n", "a"),
        (b"a LOGIN \xc3\xa9 z\r\n", "a"),  # 8-bit atoms are not ATOM-CHARs
        (b"a LOGIN x* y\r\n", "a"),
        (b"a LOGIN x\\ y\r\n", "a"),
        (b"a NOOP\r\r\n", "a"),
        (b"a LOGIN ~{3}\r\n", "a"),  # literal8
        (b"a LOGIN {3\r\n", "a"),
        (b"a LOGIN {3} x\r\n", "a"),  # literal not at end of line
        (b"a LOGIN {-3}\r\n", "a"),
        (b"a X " + b"(" * 9 + b")" * 9 + b"\r\n", "a"),  # nested too deeply
    ],
)
def test_malformed_lines(line: bytes, tag: str | None) -> None:
    events = parse(line + b"b NOOP\r\n")
    assert len(events) == 2
    assert isinstance(events[0], Malformed)
    assert events[0].tag == tag
    assert events[0].reason.isascii() and events[0].reason
    assert events[1] == cmd("b", "NOOP")  # the reader recovered at the next line


def test_nesting_limit_is_inclusive() -> None:
    assert parse(b"a X " + b"(" * 8 + b")" * 8 + b"\r\n")[0].name == "X"  # type: ignore[union-attr]


# -- literals -----------------------------------------------------------------------------


def test_sync_literal_waits_for_bytes() -> None:
    reader = CommandReader()
    reader.feed(b"a LOGIN {4}\r\n")
    assert drain(reader) == [ContinuationNeeded("a", 4)]
    reader.feed(b"us")
    assert drain(reader) == []
    reader.feed(b"er {6}\r\n")
    assert drain(reader) == [ContinuationNeeded("a", 6)]
    reader.feed(b"se")
    assert drain(reader) == []
    reader.feed(b'cr"t\r\n')
    assert drain(reader) == [cmd("a", "LOGIN", b"user", b'secr"t')]


def test_literal_plus_needs_no_continuation() -> None:
    assert parse(b'a LOGIN {4+}\r\nuser {3+}\r\n\x00\xff"\r\n') == [
        cmd("a", "LOGIN", b"user", b'\x00\xff"')
    ]


def test_literal_is_data_even_with_crlf_and_a_command_inside() -> None:
    body = b"x\r\na2 LOGOUT\r\n"
    data = b"a1 LOGIN {%d}\r\n%s {%d+}\r\n%s\r\n" % (len(body), body, len(body), body)
    assert parse(data) == [
        ContinuationNeeded("a1", len(body)),
        cmd("a1", "LOGIN", body, body),
    ]


def test_literals_inside_lists_and_empty_literals() -> None:
    assert parse(b'a ID ("name" {2+}\r\nxy "v" {0}\r\n)\r\n') == [
        ContinuationNeeded("a", 0),
        cmd("a", "ID", [b"name", b"xy", b"v", b""]),
    ]


def test_literal_must_be_followed_by_a_separator() -> None:
    events = parse(b"a LOGIN {3+}\r\nabcX\r\nb NOOP\r\n")
    assert events == [Malformed("a", "expected space or end of line"), cmd("b", "NOOP")]


def test_oversized_sync_literal_is_refused_at_once() -> None:
    reader = CommandReader(max_literal=10)
    reader.feed(b"a LOGIN {11}\r\n")
    assert drain(reader) == [TooLong("a")]
    reader.feed(b"b NOOP\r\n")  # the client got BAD, never "+", so it moves on
    assert drain(reader) == [cmd("b", "NOOP")]


def test_absurd_literal_sizes() -> None:
    assert parse(b"a LOGIN {99999999999999999999999}\r\nb NOOP\r\n") == [
        TooLong("a"),
        cmd("b", "NOOP"),
    ]
    digits = b"9" * 5000  # int() would refuse this many digits
    assert parse(b"a LOGIN {" + digits + b"}\r\nb NOOP\r\n", max_line=6000) == [
        TooLong("a"),
        cmd("b", "NOOP"),
    ]


def test_oversized_literal_plus_is_skipped() -> None:
    body = b"x\r\nb LOGOUT\r\n" * 20
    data = b"a LOGIN {%d+}\r\n%s {2+}\r\nzz\r\nc NOOP\r\n" % (len(body), body)
    reader = CommandReader(max_literal=100)
    for i in range(0, len(data), 7):
        reader.feed(data[i : i + 7])
        for event in drain(reader):
            assert event in (LiteralTooLong("a", len(body)), cmd("c", "NOOP"))
        assert len(reader._buf) <= 40
    assert reader.take_pending() == b""


def test_huge_literal_plus_is_never_stored() -> None:
    reader = CommandReader(max_literal=1000)
    reader.feed(b"a APPEND {50000000+}\r\n")
    assert drain(reader) == [LiteralTooLong("a", 50000000)]
    chunk = b"\n" * 65536
    for _ in range(50000000 // 65536):
        reader.feed(chunk)
        assert len(reader._buf) == 0
    reader.feed(b"\n" * (50000000 % 65536) + b"\r\nb NOOP\r\n")
    assert drain(reader) == [cmd("b", "NOOP")]


def test_command_budget_bounds_many_literals() -> None:
    reader = CommandReader(max_line=1000, max_literal=10, max_command=45)
    reader.feed(b"a X {10+}\r\n" + b"x" * 10 + b" {10+}\r\n" + b"y" * 10)
    reader.feed(b" {10+}\r\n" + b"z" * 10 + b"\r\nb NOOP\r\n")
    assert drain(reader) == [TooLong("a"), cmd("b", "NOOP")]


def test_reject_literal() -> None:
    reader = CommandReader()
    reader.feed(b"a LOGIN {5}\r\n")
    assert drain(reader) == [ContinuationNeeded("a", 5)]
    reader.reject_literal()
    reader.feed(b"b NOOP\r\n")
    assert drain(reader) == [cmd("b", "NOOP")]
    with pytest.raises(RuntimeError):
        reader.reject_literal()


def test_reject_literal_only_for_sync_literals() -> None:
    reader = CommandReader()
    reader.feed(b"a LOGIN {5+}\r\nab")
    assert drain(reader) == []
    with pytest.raises(RuntimeError):
        reader.reject_literal()


# -- oversized lines ----------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 1000, 4096, 100_000])
def test_long_line_is_discarded_with_bounded_memory(chunk: int) -> None:
    reader = CommandReader(max_line=1024)
    data = b"tag1 LOGIN " + b"x" * 100_000 + b"\r\nb NOOP\r\n"
    events: list[Event] = []
    for i in range(0, len(data), chunk):
        reader.feed(data[i : i + chunk])
        events += drain(reader)
        assert len(reader._buf) <= 1024
    assert events == [TooLong("tag1"), cmd("b", "NOOP")]


def test_long_line_tag_unknown_when_not_visible() -> None:
    assert parse(b"x" * 100 + b" NOOP\r\nb NOOP\r\n", max_line=50) == [
        TooLong(None),
        cmd("b", "NOOP"),
    ]


def test_line_limit_counts_crlf() -> None:
    assert parse(b"a NOOP\r\n", max_line=8) == [cmd("a", "NOOP")]
    assert parse(b"a NOOP\r\n", max_line=7) == [TooLong("a")]


def test_line_limit_spans_literal_continuations() -> None:
    data = b"a LOGIN {1+}\r\nx " + b"y" * 40 + b"\r\nb NOOP\r\n"
    assert parse(data, max_line=50) == [TooLong("a"), cmd("b", "NOOP")]
    assert parse(data, max_line=60)[0] == cmd("a", "LOGIN", b"x", b"y" * 40)


def test_discarded_line_ending_in_literal_plus_skips_the_literal() -> None:
    data = b"a X " + b"y" * 100 + b" {10+}\r\nb LOGOUT\r\n\r\nc NOOP\r\n"
    assert parse(data, max_line=50) == [TooLong("a"), cmd("c", "NOOP")]
    data = b'a X "bad\\q" {10+}\r\nb LOGOUT\r\n\r\nc NOOP\r\n'
    assert parse(data) == [Malformed("a", "invalid quoted string"), cmd("c", "NOOP")]


def test_discarded_line_ending_in_sync_literal_ends_the_command() -> None:
    data = b'a X "bad\\q" {12}\r\nc NOOP\r\n'
    assert parse(data) == [Malformed("a", "invalid quoted string"), cmd("c", "NOOP")]


# -- pipelining and laziness --------------------------------------------------------------


def test_pipelined_commands_in_order() -> None:
    data = b"a CAPABILITY\r\nb NOOP\r\nc LOGIN x y\r\n"
    assert parse(data) == [cmd("a", "CAPABILITY"), cmd("b", "NOOP"), cmd("c", "LOGIN", b"x", b"y")]


def test_take_pending_after_login_returns_exactly_the_rest() -> None:
    reader = CommandReader()
    reader.feed(b"a LOGIN x y\r\nb SELECT INBOX\r\n")
    assert reader.next_event() == cmd("a", "LOGIN", b"x", b"y")
    assert reader.take_pending() == b"b SELECT INBOX\r\n"
    assert reader.take_pending() == b""
    assert reader.next_event() is None


def test_take_pending_includes_a_partial_command() -> None:
    reader = CommandReader()
    reader.feed(b"a LOGIN {3}\r\nab")
    assert drain(reader) == [ContinuationNeeded("a", 3)]
    assert reader.take_pending() == b"a LOGIN {3}\r\nab"
    reader.feed(b"b NOOP\r\n")  # the reader starts afresh
    assert drain(reader) == [cmd("b", "NOOP")]


# -- raw-line mode ------------------------------------------------------------------------


def test_raw_line_mode() -> None:
    reader = CommandReader()
    reader.feed(b"a AUTHENTICATE PLAIN\r\nAHRpbQB0YW5z\r\nb NOOP\r\n")
    assert reader.next_event() == cmd("a", "AUTHENTICATE", b"PLAIN")
    reader.expect_raw_line()
    assert reader.next_event() == RawLine(b"AHRpbQB0YW5z")
    assert reader.next_event() == cmd("b", "NOOP")


@pytest.mark.parametrize(
    ("data", "raw"),
    [
        (b"*\r\n", b"*"),
        (b"\n", b""),
        (b"\r\n", b""),
        (b"a2 LOGOUT\n", b"a2 LOGOUT"),
        (b"{3}\r\n", b"{3}"),
    ],
)
def test_raw_lines_are_not_commands(data: bytes, raw: bytes) -> None:
    reader = CommandReader()
    reader.expect_raw_line()
    reader.feed(data)
    assert drain(reader) == [RawLine(raw)]


def test_raw_line_too_long() -> None:
    reader = CommandReader(max_line=16)
    reader.expect_raw_line()
    events: list[Event] = []
    for _ in range(100):
        reader.feed(b"QUJD" * 10)
        events += drain(reader)
        assert len(reader._buf) <= 40
    assert events == [TooLong(None)]
    reader.feed(b"{5+}\r\nb NOOP\r\n")  # no literal in a raw line
    assert drain(reader) == [cmd("b", "NOOP")]


def test_expect_raw_line_mid_command_is_an_error() -> None:
    reader = CommandReader()
    reader.feed(b"a LOGIN {3}\r\n")
    drain(reader)
    with pytest.raises(RuntimeError):
        reader.expect_raw_line()


# -- properties ---------------------------------------------------------------------------

_FRAGMENTS = [
    b"a LOGIN x y\r\n", b"b NOOP\n", b"\r\n", b"{3}\r\n", b"{4+}\r\n", b"{200+}\r\n",
    b'"q\\"x"', b"(", b")", b" ", b"x" * 60, b"\x00", b"~{1}\r\n", b"c ID (", b"{99}\r\n",
]  # fmt: skip
_literal = st.binary(max_size=12).map(lambda b: b"{%d}\r\n%s" % (len(b), b))
_literal_plus = st.binary(max_size=12).map(lambda b: b"{%d+}\r\n%s" % (len(b), b))
_arg = st.recursive(
    st.sampled_from([b"x", b"NIL", b'""', b'"a\\"b"', b"y]"]) | _literal | _literal_plus,
    lambda inner: st.lists(inner, max_size=3).map(lambda xs: b"(" + b" ".join(xs) + b")"),
    max_leaves=6,
)
_line = st.builds(
    lambda tag, name, args, eol: tag + b" " + name + b"".join(b" " + a for a in args) + eol,
    st.sampled_from([b"a", b"b1", b"+", b""]),
    st.sampled_from([b"LOGIN", b"AUTHENTICATE", b"noop", b"ID"]),
    st.lists(_arg, max_size=4),
    st.sampled_from([b"\r\n", b"\n", b" \r\n"]),
)
_junk = st.lists(_line | _line | st.sampled_from(_FRAGMENTS) | st.binary(max_size=8), max_size=12)


def _run_chunked(data: bytes, cuts: list[int], raw_after_auth: bool, **limits: Any) -> tuple:
    reader = CommandReader(**limits)
    bounds = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    events: list[Event] = []
    for lo, hi in itertools.pairwise(bounds):
        reader.feed(data[lo:hi])
        while (event := reader.next_event()) is not None:
            events.append(event)
            if raw_after_auth and isinstance(event, Command) and event.name == "AUTHENTICATE":
                reader.expect_raw_line()
        # Drained: at most one partial command (a line and its literals, or what its own
        # bounds allow), or the few bytes kept while discarding a line, plus the chunk.
        held = [limits["max_line"] + 2 * limits["max_literal"]]
        held += [b.command for b in limits.get("command_bounds", {}).values()]
        assert len(reader._buf) <= max(held) + max(hi - lo, 32)
    return events, reader.take_pending()


@settings(max_examples=300)
@given(_junk.map(b"".join), st.lists(st.integers(min_value=0), max_size=40), st.booleans())
def test_split_points_do_not_matter(data: bytes, cuts: list[int], raw: bool) -> None:
    limits = {"max_line": 60, "max_literal": 10}
    whole = _run_chunked(data, [], raw, **limits)
    assert _run_chunked(data, cuts, raw, **limits) == whole
    assert _run_chunked(data, list(range(len(data))), raw, **limits) == whole


@settings(max_examples=300)
@given(_junk.map(b"".join), st.lists(st.integers(min_value=0), max_size=40), st.booleans())
def test_split_points_do_not_matter_with_command_bounds(
    data: bytes, cuts: list[int], raw: bool
) -> None:
    """Whether a line is long enough to need ID's own bounds is decided the same way
    whatever the chunks (tiny defaults make the widening happen often)."""
    limits = {"max_line": 8, "max_literal": 10, "command_bounds": {"ID": Bounds(90, 4, 100)}}
    whole = _run_chunked(data, [], raw, **limits)
    assert _run_chunked(data, cuts, raw, **limits) == whole
    assert _run_chunked(data, list(range(len(data))), raw, **limits) == whole


@settings(max_examples=300)
@given(st.binary(max_size=400), st.integers(min_value=1, max_value=64), st.booleans())
def test_arbitrary_bytes_only_produce_events(data: bytes, max_line: int, raw: bool) -> None:
    events, _ = _run_chunked(data, [7, 50, 51], raw, max_line=max_line, max_literal=8)
    for event in events:
        assert isinstance(
            event, Command | ContinuationNeeded | TooLong | LiteralTooLong | Malformed | RawLine
        )


# -- per-command bounds (ID may be longer than the rest, RFC 2971) ------------------------

_WIDE = {"ID": Bounds(line=400, literal=20, command=400)}


def test_a_named_command_gets_its_own_line_bound() -> None:
    line = b"a ID (" + b'"f" "' + b"v" * 300 + b'")\r\n'
    assert parse(line, max_line=100, command_bounds=_WIDE) == [cmd("a", "ID", [b"f", b"v" * 300])]
    # Lower-case names and a line arriving byte by byte are widened alike.
    reader = CommandReader(max_line=100, command_bounds=_WIDE)
    events: list[Event] = []
    for b in line.replace(b"ID", b"id"):
        reader.feed(bytes([b]))
        events += drain(reader)
    assert events == [cmd("a", "ID", [b"f", b"v" * 300])]


def test_other_commands_keep_the_default_bounds() -> None:
    line = b"a LOGIN " + b"x" * 300 + b" y\r\nb NOOP\r\n"
    assert parse(line, max_line=100, command_bounds=_WIDE) == [TooLong("a"), cmd("b", "NOOP")]
    # A tag that only looks like the name does not widen anything.
    assert parse(b"ID " + b"x" * 300 + b"\r\n", max_line=100, command_bounds=_WIDE) == [
        TooLong("ID")
    ]


def test_a_named_command_is_refused_beyond_its_own_bound() -> None:
    line = b'a ID ("f" "' + b"v" * 500 + b'")\r\nb NOOP\r\n'
    assert parse(line, max_line=100, command_bounds=_WIDE) == [TooLong("a"), cmd("b", "NOOP")]


def test_a_named_command_has_its_own_literal_bound() -> None:
    ok = b'a ID ("f" {20}\r\n' + b"v" * 20 + b")\r\n"
    assert parse(ok, max_literal=100, command_bounds=_WIDE) == [
        ContinuationNeeded("a", 20),
        cmd("a", "ID", [b"f", b"v" * 20]),
    ]
    refused = b'a ID ("f" {21}\r\nb LOGIN {21}\r\n'
    assert parse(refused, max_literal=100, command_bounds=_WIDE) == [
        TooLong("a"),
        ContinuationNeeded("b", 21),
    ]


def test_a_named_command_bound_spans_its_literals() -> None:
    bounds = {"ID": Bounds(line=400, literal=300, command=400)}
    line = b'a ID ("f" {300+}\r\n' + b"v" * 300 + b' "g" "' + b"w" * 100 + b'")\r\nb NOOP\r\n'
    assert parse(line, max_line=100, command_bounds=bounds) == [TooLong("a"), cmd("b", "NOOP")]


def test_a_narrower_bound_applies_once_the_name_is_known() -> None:
    bounds = {"ID": Bounds(line=20, literal=5, command=20)}
    assert parse(b'a ID ("name" "mutt1234567")\r\nb NOOP\r\n', command_bounds=bounds) == [
        TooLong("a"),
        cmd("b", "NOOP"),
    ]


# -- oversized non-synchronizing literals are reported when announced ---------------------


def test_oversized_literal_plus_is_reported_at_once() -> None:
    reader = CommandReader(max_literal=100)
    reader.feed(b"a LOGIN {101+}\r\n")
    assert drain(reader) == [LiteralTooLong("a", 101)]
    reader.feed(b"x" * 101 + b" y\r\nb NOOP\r\n")  # still skipped, never a command
    assert drain(reader) == [cmd("b", "NOOP")]


def test_oversized_literal_plus_ending_a_discarded_line_is_reported_at_once() -> None:
    reader = CommandReader(max_line=50, max_literal=100)
    reader.feed(b"a X " + b"y" * 100 + b" {5000+}\r\n")
    assert drain(reader) == [LiteralTooLong("a", 5000)]
    reader.feed(b"z" * 5000 + b"\r\nb NOOP\r\n")
    assert drain(reader) == [cmd("b", "NOOP")]


def test_raw_line_too_long_is_reported_before_its_end() -> None:
    """An AUTHENTICATE response over the bound is answered while the client still sends,
    so a client that never ends the line is not left waiting for the login timeout."""
    reader = CommandReader(max_line=16)
    reader.expect_raw_line()
    reader.feed(b"QUJD" * 10)
    assert drain(reader) == [TooLong(None)]
    reader.feed(b"QUJD" * 1000)
    assert drain(reader) == []
    reader.feed(b"\r\nb NOOP\r\n")
    assert drain(reader) == [cmd("b", "NOOP")]
