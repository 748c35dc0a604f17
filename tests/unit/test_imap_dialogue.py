"""The pure IMAP pre-login dialogue: ID within RFC 2971's limits, oversized input always
answered, the invalid-command budget, and the login reply."""

from __future__ import annotations

import base64

import pytest

from proxy.actions import Action, Authenticate, BackendInfo, Close, DialogueEnv, Send
from proxy.imap.dialogue import ImapDialogue, State

BYE_BAD = b"* BYE Too many invalid IMAP commands.\r\n"


def dialogue(max_line: int = 8192, max_literal: int = 8192) -> ImapDialogue:
    """The production defaults of [proxy] max_line and max_literal."""
    return ImapDialogue(
        DialogueEnv(
            tls_offered=False,
            tls_active=False,
            plaintext_allowed=True,
            max_line=max_line,
            max_literal=max_literal,
        )
    )


def sent(actions: list[Action]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, Send))


def closes(actions: list[Action]) -> list[Close]:
    return [a for a in actions if isinstance(a, Close)]


def quoted_id(pairs: int, field: int = 30, value: int = 1024) -> bytes:
    """``ID`` with ``pairs`` distinct fields of ``field`` octets, values of ``value``."""
    items = [b'"%s" "%s"' % (b"%02d" % i + b"f" * (field - 2), b"v" * value) for i in range(pairs)]
    return b"a ID (" + b" ".join(items) + b")\r\n"


def id_answered(actions: list[Action]) -> bool:
    out = sent(actions)
    return out.startswith(b"* ID (") and out.endswith(b"a OK ID completed.\r\n")


# -- ID: as large as RFC 2971 allows, quoted or as literals -------------------------------


def test_largest_id_rfc_2971_allows_is_answered() -> None:
    line = quoted_id(30)
    assert len(line) > 30_000  # far over max_line
    d = dialogue()
    assert id_answered(d.receive(line))
    assert d.state is State.COMMANDS


def test_largest_id_arriving_in_small_chunks() -> None:
    line = quoted_id(30)
    d = dialogue()
    actions: list[Action] = []
    for i in range(0, len(line), 1000):
        actions += d.receive(line[i : i + 1000])
    assert id_answered(actions)


def test_largest_id_as_synchronizing_literals() -> None:
    d = dialogue()
    out = sent(d.receive(b"a ID ("))
    value = b"v" * 1024
    for i in range(30):
        field = b"%02d" % i + b"f" * 28
        out += sent(d.receive(b"{30}\r\n"))
        out += sent(d.receive(field + b" {1024}\r\n"))
        out += sent(d.receive(value + (b" " if i < 29 else b"")))
    assert out.count(b"+ ") == 60
    assert id_answered(d.receive(b")\r\n"))


def test_largest_id_as_literal_plus() -> None:
    items = [
        b"{30+}\r\n%s {1024+}\r\n%s" % (b"%02d" % i + b"f" * 28, b"v" * 1024) for i in range(30)
    ]
    assert id_answered(dialogue().receive(b"a ID (" + b" ".join(items) + b")\r\n"))


@pytest.mark.parametrize(
    "line",
    [
        quoted_id(31, field=4, value=4),  # more than 30 pairs
        quoted_id(1, field=31),  # a field over 30 octets
        quoted_id(1, value=1025),  # a value over 1024 octets
        quoted_id(30, value=1100),  # past the whole command's bound
        b'a ID ("name")\r\n',  # a field without a value
        b'a ID ("name" ("x"))\r\n',
        b"a ID name\r\n",
    ],
)
def test_id_beyond_rfc_2971_gets_tagged_bad(line: bytes) -> None:
    d = dialogue()
    actions = d.receive(line + b"b NOOP\r\n")
    assert sent(actions).startswith(b"a BAD ")
    assert sent(actions).endswith(b"b OK NOOP completed.\r\n")


def test_id_value_literal_over_1024_is_refused_before_it_is_sent() -> None:
    d = dialogue()
    assert sent(d.receive(b'a ID ("name" {1025}\r\n')).startswith(b"a BAD ")
    assert sent(d.receive(b"b NOOP\r\n")) == b"b OK NOOP completed.\r\n"


def test_id_nil_and_an_empty_list() -> None:
    assert id_answered(dialogue().receive(b"a ID NIL\r\n"))
    assert id_answered(dialogue().receive(b"a ID ()\r\n"))
    assert id_answered(dialogue().receive(b'a ID ("name" NIL "os" "x")\r\n'))


@pytest.mark.parametrize(
    "line",
    [
        b"a LOGIN " + b"x" * 30_000 + b" y\r\n",  # an ID-sized line for any other command
        b"a NOOP " + b"x" * 9_000 + b"\r\n",
        b"ID " + b"x" * 30_000 + b"\r\n",  # "ID" as a tag is not the ID command
    ],
)
def test_other_commands_keep_the_tight_limits(line: bytes) -> None:
    out = sent(dialogue().receive(line))
    assert b" BAD Line or literal too long." in out


# -- AUTHENTICATE responses over the bound ------------------------------------------------


def test_oversized_authenticate_response_gets_a_tagged_bad() -> None:
    d = dialogue()
    assert sent(d.receive(b"a AUTHENTICATE PLAIN\r\n")) == b"+ \r\n"
    out = sent(d.receive(base64.b64encode(b"x" * 75_000) + b"\r\n"))
    assert out.startswith(b"a BAD ")
    assert d.state is State.COMMANDS
    assert sent(d.receive(b"b NOOP\r\n")) == b"b OK NOOP completed.\r\n"


def test_oversized_authenticate_response_is_answered_before_its_line_ends() -> None:
    d = dialogue()
    d.receive(b"a AUTHENTICATE PLAIN\r\n")
    assert sent(d.receive(b"QUJD" * 2100)).startswith(b"a BAD ")
    assert sent(d.receive(b"QUJD" * 1000)) == b""  # the rest of the line is discarded
    assert sent(d.receive(b"\r\nb NOOP\r\n")) == b"b OK NOOP completed.\r\n"


# -- invalid commands: three and the connection is closed, like Dovecot --------------------


@pytest.mark.parametrize(
    "bad",
    [
        b"x SELECT INBOX\r\n",  # not allowed before login
        b"x FOO\r\n",  # unknown
        b'x LOGIN "unterminated\r\n',  # malformed
        b"\r\n",  # no tag at all
        b"x LOGIN " + b"y" * 10_000 + b"\r\n",  # too long
        b"x LOGIN {9000}\r\n",  # literal too long
        b"x LOGIN onlyuser\r\n",  # wrong arguments
        b"x ID (31)\r\n",
    ],
)
def test_third_invalid_command_gets_bye_and_close(bad: bytes) -> None:
    d = dialogue()
    first = d.receive(bad + b"a NOOP\r\n" + bad)
    assert sent(first).count(b" BAD ") == 2 and b"a OK" in sent(first)
    assert not closes(first)
    last = d.receive(bad + b"b NOOP\r\n")
    assert sent(last) == BYE_BAD  # nothing after: b NOOP is never answered
    assert closes(last) == [Close(outcome="too-many-bad-commands")]
    assert d.state is State.DONE


def test_invalid_authenticate_responses_count_but_cancelling_does_not() -> None:
    d = dialogue()
    for _ in range(5):
        d.receive(b"a AUTHENTICATE PLAIN\r\n")
        assert sent(d.receive(b"*\r\n")) == b"a BAD Authentication cancelled.\r\n"
    d.receive(b"a AUTHENTICATE PLAIN\r\n")
    assert sent(d.receive(b"!!notbase64\r\n")).startswith(b"a BAD ")
    d.receive(b"a AUTHENTICATE PLAIN\r\n")
    assert sent(d.receive(b"QUJD" * 3000 + b"\r\n")).startswith(b"a BAD ")
    actions = d.receive(b"c FOO\r\n")
    assert sent(actions) == BYE_BAD and closes(actions)


def test_pipelined_bad_commands_stop_at_the_third() -> None:
    d = dialogue()
    actions = d.receive(b"a FOO\r\nb FOO\r\nc FOO\r\nd LOGIN user pass\r\n")
    assert sent(actions) == (
        b"a BAD Command not allowed before login.\r\n"
        b"b BAD Command not allowed before login.\r\n" + BYE_BAD
    )
    assert not any(isinstance(a, Authenticate) for a in actions)
    assert isinstance(actions[-1], Close)


# -- oversized LITERAL+: goodbye at once, the body is never waited for ---------------------


@pytest.mark.parametrize(
    "announce",
    [
        b"a LOGIN {8193+}\r\n",
        b"a LOGIN {99999999999999999999999+}\r\n",
        b'a ID ("name" {1025+}\r\n',  # ID values are bounded by RFC 2971
        b"a LOGIN " + b"x" * 9000 + b" {50000000+}\r\n",  # ending a line already too long
    ],
)
def test_oversized_literal_plus_gets_bye_at_once(announce: bytes) -> None:
    d = dialogue()
    actions = d.receive(announce)
    assert sent(actions) == b"* BYE Literal size too large.\r\n"
    assert closes(actions) == [Close(outcome="literal-too-large")]
    assert d.state is State.DONE


def test_literal_plus_within_the_limit_is_read() -> None:
    actions = dialogue().receive(b"a LOGIN {8192+}\r\n" + b"u" * 8192 + b" p\r\n")
    assert [type(a) for a in actions] == [Authenticate]


# -- the login reply ----------------------------------------------------------------------


def test_login_ok_carries_the_backends_capabilities_as_spelt() -> None:
    d = dialogue()
    d.receive(b"a LOGIN user pass\r\n")
    reply = d.succeeded(BackendInfo(capabilities=("IMAP4rev1", "SORT", "THREAD=REFERENCES")))
    assert reply == b"a OK [CAPABILITY IMAP4rev1 SORT THREAD=REFERENCES] Logged in\r\n"
