"""The pure parts of the bench's SMTP client: replies, EHLO keywords, dot-stuffing, AUTH PLAIN,
and the error kinds refusals are counted under (the report's error table depends on them)."""

from __future__ import annotations

import base64

import pytest

from bench.clients import BenchError
from bench.load import unique_message
from bench.patterns import Credential
from bench.run import make_message
from bench.smtpclient import (
    auth_plain,
    dot_stuff,
    ehlo_keywords,
    parse_reply_line,
    smtp_failure,
)


def test_reply_lines() -> None:
    assert parse_reply_line(b"250-submit.test hello\r\n") == (250, False, b"submit.test hello")
    assert parse_reply_line(b"250 OK\r\n") == (250, True, b"OK")
    assert parse_reply_line(b"220\r\n") == (220, True, b"")
    assert parse_reply_line(b"354 go ahead\n") == (354, True, b"go ahead")


@pytest.mark.parametrize("line", [b"hello\r\n", b"25 OK\r\n", b"250_OK\r\n", b""])
def test_malformed_reply_is_protocol_error(line: bytes) -> None:
    with pytest.raises(BenchError) as info:
        parse_reply_line(line)
    assert info.value.kind == "protocol-error"


def test_ehlo_keywords_skip_the_greeting_line() -> None:
    lines = [b"submit.test", b"PIPELINING", b"size 10240000", b"AUTH PLAIN LOGIN", b"STARTTLS"]
    assert ehlo_keywords(lines) == {b"PIPELINING", b"SIZE", b"AUTH", b"STARTTLS"}


def test_dot_stuffing() -> None:
    assert dot_stuff(b"a\r\n.b\r\n..c\r\n") == b"a\r\n..b\r\n...c\r\n.\r\n"
    assert dot_stuff(b".first") == b"..first\r\n.\r\n"
    assert dot_stuff(b"bare\nlf\n") == b"bare\r\nlf\r\n.\r\n"
    assert dot_stuff(b"x\r\n.\r\ny") == b"x\r\n..\r\ny\r\n.\r\n"  # a lone dot is not the end


def test_dot_stuffed_bench_message_keeps_its_size() -> None:
    message = make_message(2048, "m")
    assert len(message) == 2048
    assert dot_stuff(message) == message + b".\r\n"  # no dots to stuff, CRLF already


def test_unique_message_ids() -> None:
    message = make_message(2048, "submit-abc")
    one, two = unique_message(message, 1), unique_message(message, 2)
    assert b"<submit-abc-1@bench.mailfarm.test>" in one
    assert b"<submit-abc-2@bench.mailfarm.test>" in two
    assert one.partition(b"\r\n\r\n")[2] == message.partition(b"\r\n\r\n")[2]


def test_auth_plain() -> None:
    decoded = base64.b64decode(auth_plain(Credential("alice@d.test", "pw 1")))
    assert decoded == b"\0alice@d.test\0pw 1"


@pytest.mark.parametrize(
    ("code", "phase", "kind"),
    [
        (535, "login", "auth-failed"),
        (454, "login", "unavailable"),
        (421, "mail", "unavailable"),
        (451, "data", "deferred"),
        (550, "rcpt", "rejected"),
        (503, "mail", "protocol-error"),
        (554, "greeting", "unavailable"),
    ],
)
def test_failure_kinds(code: int, phase: str, kind: str) -> None:
    assert smtp_failure(code, b"text", phase).kind == kind
