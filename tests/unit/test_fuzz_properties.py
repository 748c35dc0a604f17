"""Properties every parser facing the network must keep, checked the same way for all:
arbitrary bytes in arbitrary chunks give only the parser's own events and errors, the
split points never change the answer, memory stays bounded, and what we encode parses
back to what we meant. Per-module edge cases live in each module's own test file; the
long-running versions of these checks are the atheris targets in ``fuzz/``.
"""

from __future__ import annotations

import base64
import importlib.util
import itertools
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.imapformat import astring_parts
from proxy import proxyproto
from proxy.actions import (
    Authenticate,
    BackendInfo,
    Close,
    DialogueEnv,
    Failure,
    Send,
    StartTls,
)
from proxy.imap.dialogue import ImapDialogue
from proxy.imap.parser import Command as ImapCommand
from proxy.imap.parser import CommandReader, ContinuationNeeded, LiteralTooLong, Malformed, RawLine
from proxy.imap.parser import TooLong as ImapTooLong
from proxy.pop3.dialogue import Pop3Dialogue
from proxy.pop3.parser import LineReader, parse_command
from proxy.pop3.parser import TooLong as Pop3TooLong
from proxy.sasl import Challenge, Credentials, SaslError, SaslExchange, encode_plain

HAVE_SMTP = importlib.util.find_spec("proxy.smtp.netstring") is not None
smtp_only = pytest.mark.skipif(not HAVE_SMTP, reason="proxy.smtp parsers not in this build")

cuts = st.lists(st.integers(min_value=0, max_value=2000), max_size=20)


def split(data: bytes, points: list[int]) -> Iterator[bytes]:
    """``data`` cut at ``points`` (taken modulo its length): what TCP may deliver."""
    bounds = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    for lo, hi in itertools.pairwise(bounds):
        yield data[lo:hi]


# -- IMAP command reader ------------------------------------------------------------------

IMAP_EVENTS = ImapCommand | ContinuationNeeded | ImapTooLong | LiteralTooLong | Malformed | RawLine
imap_words = st.sampled_from(
    [b"a1 ", b"LOGIN ", b"AUTHENTICATE PLAIN", b'"x\\"y"', b"{3}\r\n", b"{5+}\r\n", b"(",
     b")", b" ", b"\r\n", b"\n", b"\x00", b"~{2}\r\n", b"NIL", b"*", b"{99999999999}\r\n"]
)  # fmt: skip
imap_streams = st.lists(imap_words | st.binary(max_size=10), max_size=25).map(b"".join)


def imap_events(
    data: bytes, points: list[int], max_line: int = 64, max_literal: int = 16
) -> list[object]:
    reader = CommandReader(max_line, max_literal)
    events: list[object] = []
    for chunk in split(data, points):
        reader.feed(chunk)
        while (event := reader.next_event()) is not None:
            assert isinstance(event, IMAP_EVENTS)
            events.append(event)
            if isinstance(event, ImapCommand) and event.name == "AUTHENTICATE":
                reader.expect_raw_line()
    return events


@given(imap_streams, cuts)
def test_imap_reader_chunking_is_invisible(data: bytes, points: list[int]) -> None:
    assert imap_events(data, points) == imap_events(data, [])


astrings = st.binary(max_size=40)


@given(
    st.from_regex(r"[A-Za-z0-9.]{1,10}", fullmatch=True), astrings, astrings, st.booleans(), cuts
)
def test_imap_login_round_trip(
    tag: str, user: bytes, password: bytes, plus: bool, points: list[int]
) -> None:
    """What common.imapformat writes (to a backend) proxy.imap.parser reads back exactly."""
    parts = [tag.encode() + b" LOGIN "]
    for i, value in enumerate((user, password)):
        pieces = astring_parts(value, plus)
        parts[-1] += pieces[0]
        parts.extend(pieces[1:])
        parts[-1] += b" " if i == 0 else b"\r\n"
    events = [
        e
        for e in imap_events(b"".join(parts), points, 8192, 8192)
        if not isinstance(e, ContinuationNeeded)
    ]
    assert events == [ImapCommand(tag, "LOGIN", (user, password))]


# -- POP3 line reader ---------------------------------------------------------------------


def pop3_lines(data: bytes, points: list[int], max_line: int) -> list[object]:
    reader = LineReader(max_line)
    out: list[object] = []
    for chunk in split(data, points):
        reader.feed(chunk)
        while (line := reader.next_line()) is not None:
            assert isinstance(line, bytes | Pop3TooLong)
            if isinstance(line, bytes):
                assert b"\n" not in line and len(line) <= max_line
            out.append(line)
        assert reader.buffered <= max_line + len(chunk)
    return out


@given(st.binary(max_size=300), cuts, st.integers(min_value=2, max_value=40))
def test_pop3_reader_chunking_is_invisible(data: bytes, points: list[int], max_line: int) -> None:
    assert pop3_lines(data, points, max_line) == pop3_lines(data, [], max_line)


@given(
    st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True),
    st.binary(max_size=60).filter(lambda b: b"\n" not in b and not b.endswith(b"\r")),
    cuts,
)
def test_pop3_command_round_trip(keyword: str, rest: bytes, points: list[int]) -> None:
    line = keyword.encode() + b" " + rest
    (got,) = pop3_lines(line + b"\r\n", points, 8192)
    assert got == line
    command = parse_command(line)
    assert command is not None
    assert (command.name, command.rest, command.args) == (
        keyword.upper(),
        rest,
        tuple(rest.split(b" ")),
    )


@given(st.binary(max_size=80))
def test_pop3_parse_command_never_raises(line: bytes) -> None:
    command = parse_command(line)
    assert command is None or command.name.isascii()


# -- SASL -----------------------------------------------------------------------------------

sasl_text = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), min_size=1, max_size=30
)


@given(sasl_text, sasl_text)
def test_sasl_exchanges_round_trip(user: str, password: str) -> None:
    plain = SaslExchange("PLAIN", None)
    assert plain.start() == Challenge(b"")
    assert plain.step(encode_plain(user, password)) == Credentials("", user, password)
    login = SaslExchange("login", None)
    assert isinstance(login.start(), Challenge)
    assert isinstance(login.step(base64.b64encode(user.encode())), Challenge)
    assert login.step(base64.b64encode(password.encode())) == Credentials("", user, password)


@given(
    st.sampled_from(["PLAIN", "LOGIN", "CRAM-MD5", "pla\u0131n"]),
    st.one_of(st.none(), st.binary(max_size=60)),
    st.lists(st.binary(max_size=60), max_size=3),
)
def test_sasl_arbitrary_responses_only_raise_sasl_errors(
    mechanism: str, initial: bytes | None, lines: list[bytes]
) -> None:
    try:
        exchange = SaslExchange(mechanism, initial)
        result = exchange.start()
        for line in lines:
            if isinstance(result, Credentials):
                break
            result = exchange.step(line)
    except SaslError:
        pass


# -- PROXY protocol -------------------------------------------------------------------------


def verdicts(data: bytes) -> Iterator[object]:
    for n in range(len(data) + 1):
        try:
            yield proxyproto.parse(data[:n])
        except proxyproto.ProxyProtocolError:
            yield "error"


@given(
    st.one_of(
        st.binary(max_size=60),
        st.binary(max_size=60).map(lambda b: b"PROXY " + b),
        st.binary(max_size=60).map(lambda b: proxyproto.SIGNATURE_V2 + b),
    )
)
def test_proxy_verdict_never_changes_once_given(data: bytes) -> None:
    """Reading more never turns an error into a header, or a header into something else:
    the listener may act on the first verdict it gets."""
    final: object = None
    for verdict in verdicts(data):
        if final is not None:
            assert verdict == final
        elif not isinstance(verdict, proxyproto.NeedMore):
            final = verdict


@given(
    st.ip_addresses(v=4).map(str),
    st.integers(0, 65535),
    st.booleans(),
    st.binary(max_size=30),
    cuts,
)
def test_proxy_headers_read_in_chunks(
    ip: str, port: int, v2: bool, tail: bytes, points: list[int]
) -> None:
    header = (proxyproto.build_v2 if v2 else proxyproto.build_v1)(ip, port, "192.0.2.1", 143)
    buf = b""
    for chunk in split(header + tail, points):
        buf += chunk
        result = proxyproto.parse(buf)
        if isinstance(result, proxyproto.ProxyHeader):
            break
    assert isinstance(result, proxyproto.ProxyHeader)
    assert (
        result.source == (ip, port) and buf[result.consumed :] + (header + tail)[len(buf) :] == tail
    )


# -- pre-login dialogues: the whole pure half of a session --------------------------------


def drive(
    dialogue: ImapDialogue | Pop3Dialogue, chunks: Iterator[bytes], succeed: Callable[[], bool]
) -> list[bytes]:
    """What the session core does with the actions, minus the sockets."""
    out = [dialogue.greeting()]
    for chunk in chunks:
        pending = dialogue.receive(chunk)
        while pending:
            action = pending.pop(0)
            if isinstance(action, Send):
                out.append(action.data)
            elif isinstance(action, Close):
                return out
            elif isinstance(action, StartTls):
                dialogue.tls_started()
            else:
                assert isinstance(action, Authenticate)
                if succeed():
                    out.append(dialogue.succeeded(BackendInfo()))
                    dialogue.take_pending()
                    return out
                out.append(dialogue.failed(Failure.AUTH_FAILED))
                pending.extend(dialogue.resume())
    return out


dialogue_words = st.sampled_from(
    [b"a LOGIN u p\r\n", b"a AUTHENTICATE PLAIN\r\n", b"AHUAcA==\r\n", b"*\r\n", b"=\r\n",
     b"a STARTTLS\r\n", b"a CAPABILITY\r\n", b"a LOGOUT\r\n", b"{4}\r\n", b"USER u\r\n",
     b"PASS p\r\n", b"AUTH LOGIN\r\n", b"AUTH PLAIN AHUAcA==\r\n", b"STLS\r\n", b"CAPA\r\n",
     b"QUIT\r\n", b"dQ==\r\n", b"\r\n", b"\n", b" "]
)  # fmt: skip
dialogue_input = st.lists(dialogue_words | st.binary(max_size=12), max_size=20).map(b"".join)


@settings(max_examples=200)
@given(
    st.sampled_from([ImapDialogue, Pop3Dialogue]),
    dialogue_input,
    cuts,
    st.booleans(),
    st.booleans(),
    st.lists(st.booleans(), max_size=5),
)
def test_dialogues_take_any_input(
    make: type, data: bytes, points: list[int], tls: bool, plaintext: bool, results: list[bool]
) -> None:
    env = DialogueEnv(
        tls_offered=tls, tls_active=False, plaintext_allowed=plaintext, max_line=64, max_literal=16
    )
    answers = iter(results)
    replies = drive(make(env), split(data, points), lambda: next(answers, False))
    for reply in replies:
        assert reply.endswith(b"\r\n") and b"\x00" not in reply


# -- SMTP-side parsers (Postfix socketmap netstrings, tcp_table) ---------------------------


def netstring_run(data: bytes, points: list[int], limit: int) -> tuple[list[bytes], bool]:
    from proxy.smtp.netstring import NetstringDecoder, NetstringError

    decoder = NetstringDecoder(limit)
    payloads: list[bytes] = []
    try:
        for chunk in split(data, points):
            payloads += decoder.feed(chunk)
            assert decoder.buffered <= limit + len(str(limit)) + 1
    except NetstringError:
        return payloads, True
    return payloads, False


@smtp_only
@given(st.binary(max_size=200), cuts, st.integers(min_value=0, max_value=40))
def test_netstring_decoder_any_bytes_any_chunks(data: bytes, points: list[int], limit: int) -> None:
    payloads, failed = netstring_run(data, points, limit)
    reference, ref_failed = netstring_run(data, list(range(len(data) + 1)), limit)
    assert failed == ref_failed
    # A failing feed() drops what it had decoded in the same call: a prefix survives.
    assert payloads == reference if not failed else reference[: len(payloads)] == payloads


@smtp_only
@given(st.lists(st.binary(max_size=50), max_size=6), cuts)
def test_netstring_round_trip(payloads: list[bytes], points: list[int]) -> None:
    from proxy.smtp.netstring import encode

    assert netstring_run(b"".join(map(encode, payloads)), points, 50) == (payloads, False)


@smtp_only
@given(st.binary(max_size=100))
def test_tcp_table_codec(data: bytes) -> None:
    from proxy.smtp.tcptable import Get, TcpTableError, decode, encode, parse_request

    encoded = encode(data)
    assert b"\n" not in encoded and b" " not in encoded and decode(encoded) == data
    for text in (data, b"get " + data):
        try:
            decode(text)
            assert isinstance(parse_request(text), Get)
        except TcpTableError:
            pass
    if data:
        assert parse_request(b"get " + encoded) == Get(data)


@smtp_only
@given(st.binary(max_size=300), cuts, st.integers(min_value=1, max_value=40))
def test_tcp_table_lines_any_chunks(data: bytes, points: list[int], max_line: int) -> None:
    from proxy.smtp.tcptable import LineDecoder, TcpTableError

    decoder = LineDecoder(max_line)
    try:
        for chunk in split(data, points):
            for line in decoder.feed(chunk):
                assert b"\n" not in line and len(line) <= max_line
    except TcpTableError:
        with pytest.raises(TcpTableError):
            decoder.feed(b"get x\n")  # broken for good: the connection must close


@smtp_only
@given(st.binary(max_size=120))
def test_socketmap_requests(payload: bytes) -> None:
    from proxy.smtp.maps import BadRequest, parse_socketmap

    try:
        name, key = parse_socketmap(payload)
    except BadRequest:
        return
    assert name and key and payload.lower().startswith(name.encode() + b" ")
