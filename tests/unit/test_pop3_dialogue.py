"""The pure POP3 pre-login dialogue: every command and state, SASL, STLS, pipelining, fuzzing."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.actions import (
    Action,
    Authenticate,
    BackendInfo,
    Close,
    DialogueEnv,
    Failure,
    Send,
    StartTls,
)
from proxy.config import ProtocolSettings
from proxy.pop3.dialogue import FAILURE_REPLIES, Pop3Dialogue, State
from proxy.pop3.protocol import pop3_bye, pop3_dialect
from proxy.sasl import Credentials


def env(
    *,
    tls_offered: bool = False,
    tls_active: bool = False,
    plaintext: bool = True,
    max_line: int = 512,
) -> DialogueEnv:
    return DialogueEnv(
        tls_offered=tls_offered,
        tls_active=tls_active,
        plaintext_allowed=plaintext,
        max_line=max_line,
        max_literal=8192,
    )


def dialogue(**kw: object) -> Pop3Dialogue:
    return Pop3Dialogue(env(**kw))  # type: ignore[arg-type]


def sent(actions: list[Action]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, Send))


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def capa(d: Pop3Dialogue) -> list[bytes]:
    reply = sent(d.receive(b"CAPA\r\n"))
    lines = reply.split(b"\r\n")
    assert lines[0].startswith(b"+OK") and lines[-2:] == [b".", b""]
    return lines[1:-2]


# -- greeting, CAPA -----------------------------------------------------------------------


def test_greeting_has_no_apop_timestamp() -> None:
    greeting = dialogue().greeting()
    assert greeting.startswith(b"+OK ") and greeting.endswith(b"\r\n")
    assert b"<" not in greeting


def test_capa_with_plaintext_allowed() -> None:
    assert capa(dialogue()) == [
        b"USER",
        b"SASL PLAIN LOGIN",
        b"PIPELINING",
        b"RESP-CODES",
        b"AUTH-RESP-CODE",
        b"IMPLEMENTATION mailfarm",
    ]


def test_capa_without_tls_and_plaintext_lists_stls_only_for_auth() -> None:
    caps = capa(dialogue(tls_offered=True, plaintext=False))
    assert b"STLS" in caps
    assert b"USER" not in caps and not any(c.startswith(b"SASL") for c in caps)
    assert b"PIPELINING" in caps and b"RESP-CODES" in caps and b"AUTH-RESP-CODE" in caps


def test_capa_under_implicit_tls() -> None:
    caps = capa(dialogue(tls_active=True, plaintext=False))
    assert b"USER" in caps and b"SASL PLAIN LOGIN" in caps and b"STLS" not in caps


def test_capa_never_offers_apop_or_stls_without_a_certificate() -> None:
    caps = capa(dialogue(tls_offered=False))
    assert b"STLS" not in caps and not any(b"APOP" in c for c in caps)


# -- USER / PASS --------------------------------------------------------------------------


def test_user_pass_authenticates() -> None:
    d = dialogue()
    assert d.receive(b"USER alice\r\n") == [Send(b"+OK\r\n")]
    actions = d.receive(b"PASS secret\r\n")
    assert actions == [Authenticate(Credentials("", "alice", "secret"))]
    assert d.state is State.WAITING


def test_pass_keeps_spaces_and_utf8() -> None:
    d = dialogue()
    actions = d.receive('user jöhn@example.com\nPASS  p"a\\ss w0rd €\r\n'.encode())
    assert actions[-1] == Authenticate(Credentials("", "jöhn@example.com", ' p"a\\ss w0rd €'))


def test_pass_without_user() -> None:
    d = dialogue()
    assert sent(d.receive(b"PASS secret\r\n")).startswith(b"-ERR ")
    assert d.state is State.COMMANDS


def test_user_needs_a_name() -> None:
    d = dialogue()
    for line in (b"USER\r\n", b"USER \r\n", b"USER a\x00b\r\n", b"USER \xff\r\n"):
        assert sent(d.receive(line)).startswith(b"-ERR ")
    assert sent(d.receive(b"PASS x\r\n")).startswith(b"-ERR ")  # no user remembered


@pytest.mark.parametrize("password", [b"", b"a\x00b", b"\xff\xfe"])
def test_impossible_password_fails_without_asking_the_directory(password: bytes) -> None:
    d = dialogue()
    d.receive(b"USER alice\r\n")
    actions = d.receive(b"PASS " + password + b"\r\n")
    assert actions == [Send(FAILURE_REPLIES[Failure.AUTH_FAILED])]
    assert sent(d.receive(b"PASS good\r\n")).startswith(b"-ERR ")  # USER again first


def test_second_user_replaces_the_first() -> None:
    d = dialogue()
    actions = d.receive(b"USER a\r\nUSER b\r\nPASS p\r\n")
    assert actions[-1] == Authenticate(Credentials("", "b", "p"))


def test_failed_login_needs_user_again() -> None:
    d = dialogue()
    d.receive(b"USER alice\r\nPASS wrong\r\n")
    assert d.failed(Failure.AUTH_FAILED) == b"-ERR [AUTH] Authentication failed.\r\n"
    assert d.resume() == []
    assert sent(d.receive(b"PASS again\r\n")) == b"-ERR No username given.\r\n"
    actions = d.receive(b"USER alice\r\nPASS right\r\n")
    assert actions[-1] == Authenticate(Credentials("", "alice", "right"))


def test_success_reply_and_pipelined_commands_go_to_the_backend() -> None:
    d = dialogue()
    actions = d.receive(b"USER a\r\nPASS p\r\nSTAT\r\nLIST\nRETR 1\r\nQUIT\r\n")
    assert actions == [Send(b"+OK\r\n"), Authenticate(Credentials("", "a", "p"))]
    assert d.succeeded(BackendInfo(greeting=b"+OK backend\r\n")) == b"+OK Logged in.\r\n"
    assert d.state is State.DONE
    assert d.take_pending() == b"STAT\r\nLIST\nRETR 1\r\nQUIT\r\n"


def test_pipelined_commands_after_a_failed_login_are_answered_here() -> None:
    d = dialogue()
    d.receive(b"USER a\r\nPASS p\r\nSTAT\r\nQUIT\r\n")
    d.failed(Failure.AUTH_FAILED)
    actions = d.resume()
    assert sent(actions) == b"-ERR Command not allowed before login.\r\n+OK Logging out.\r\n"
    assert isinstance(actions[-1], Close)


# -- plaintext refusal and STLS -----------------------------------------------------------


PLAINTEXT_REFUSAL = (
    b"-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n"
)


@pytest.mark.parametrize(
    "line", [b"USER alice\r\n", b"PASS x\r\n", b"AUTH PLAIN\r\n", b"AUTH LOGIN dXNlcg==\r\n"]
)
def test_plaintext_refused_without_tls(line: bytes) -> None:
    d = dialogue(tls_offered=True, plaintext=False)
    assert d.receive(line) == [Send(PLAINTEXT_REFUSAL)]
    assert d.state is State.COMMANDS


def test_auth_listing_is_empty_when_auth_not_allowed() -> None:
    d = dialogue(tls_offered=True, plaintext=False)
    assert sent(d.receive(b"AUTH\r\n")) == b"+OK\r\n.\r\n"


def test_stls_flow() -> None:
    d = dialogue(tls_offered=True, plaintext=False)
    actions = d.receive(b"STLS\r\nUSER injected\r\nPASS injected\r\n")
    assert actions == [Send(b"+OK Begin TLS negotiation now.\r\n"), StartTls()]
    assert d.state is State.WAITING
    d.tls_started()
    assert d.take_pending() == b""  # what came in clear after STLS is gone
    assert b"STLS" not in capa(d)
    assert sent(d.receive(b"PASS x\r\n")) == b"-ERR No username given.\r\n"
    actions = d.receive(b"USER alice\r\nPASS secret\r\n")
    assert actions[-1] == Authenticate(Credentials("", "alice", "secret"))


def test_stls_forgets_user_given_in_clear() -> None:
    d = dialogue(tls_offered=True, plaintext=True)
    d.receive(b"USER alice\r\n")
    d.receive(b"STLS\r\n")
    d.tls_started()
    assert sent(d.receive(b"PASS secret\r\n")) == b"-ERR No username given.\r\n"


def test_stls_refused_when_not_offered_or_already_active() -> None:
    assert sent(dialogue().receive(b"STLS\r\n")) == b"-ERR TLS support isn't enabled.\r\n"
    d = dialogue(tls_active=True)
    assert sent(d.receive(b"STLS\r\n")) == b"-ERR TLS is already active.\r\n"
    d = dialogue(tls_offered=True)
    d.receive(b"STLS\r\n")
    d.tls_started()
    assert sent(d.receive(b"STLS\r\n")) == b"-ERR TLS is already active.\r\n"


# -- AUTH ---------------------------------------------------------------------------------


PLAIN = b64(b"\0alice\0secret")


def test_auth_lists_mechanisms() -> None:
    assert sent(dialogue().receive(b"AUTH\r\n")) == b"+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n"


@pytest.mark.parametrize("mech", [b"PLAIN", b"plain", b"Plain"])
def test_auth_plain_with_initial_response(mech: bytes) -> None:
    actions = dialogue().receive(b"AUTH " + mech + b" " + PLAIN + b"\r\n")
    assert actions == [Authenticate(Credentials("", "alice", "secret"))]


def test_auth_plain_without_initial_response() -> None:
    d = dialogue()
    assert d.receive(b"AUTH PLAIN\r\n") == [Send(b"+ \r\n")]
    assert d.state is State.SASL
    assert d.receive(PLAIN + b"\r\n") == [Authenticate(Credentials("", "alice", "secret"))]


def test_auth_plain_trailing_space_is_no_initial_response() -> None:
    assert dialogue().receive(b"AUTH PLAIN \r\n") == [Send(b"+ \r\n")]


def test_auth_plain_with_authzid() -> None:
    actions = dialogue().receive(b"AUTH PLAIN " + b64(b"alice\0alice\0pw") + b"\r\n")
    assert actions == [Authenticate(Credentials("alice", "alice", "pw"))]


def test_auth_login_with_and_without_initial_response() -> None:
    d = dialogue()
    assert d.receive(b"AUTH LOGIN\r\n") == [Send(b"+ " + b64(b"Username:") + b"\r\n")]
    assert d.receive(b64(b"bob") + b"\r\n") == [Send(b"+ " + b64(b"Password:") + b"\r\n")]
    assert d.receive(b64(b"pw") + b"\r\n") == [Authenticate(Credentials("", "bob", "pw"))]
    d = dialogue()
    assert d.receive(b"AUTH LOGIN " + b64(b"bob") + b"\r\n") == [
        Send(b"+ " + b64(b"Password:") + b"\r\n")
    ]
    assert d.receive(b64(b"pw") + b"\n") == [Authenticate(Credentials("", "bob", "pw"))]


def test_auth_cancel() -> None:
    d = dialogue()
    d.receive(b"AUTH LOGIN\r\n")
    assert sent(d.receive(b"*\r\n")) == b"-ERR Authentication cancelled.\r\n"
    assert d.state is State.COMMANDS
    assert sent(d.receive(b"CAPA\r\n")).startswith(b"+OK")


def test_auth_sasl_lines_are_not_commands() -> None:
    d = dialogue()
    d.receive(b"AUTH PLAIN\r\n")
    actions = d.receive(b"QUIT\r\n")  # not base64 of a PLAIN message: the exchange ends
    assert sent(actions).startswith(b"-ERR [AUTH] ")
    assert not any(isinstance(a, Close) for a in actions)


@pytest.mark.parametrize(
    "line",
    [b"AUTH PLAIN !!!!\r\n", b"AUTH PLAIN " + b64(b"no-nul") + b"\r\n", b"AUTH PLAIN =\r\n"],
)
def test_auth_bad_initial_response(line: bytes) -> None:
    d = dialogue()
    assert sent(d.receive(line)).startswith(b"-ERR [AUTH] Invalid response")
    assert d.state is State.COMMANDS and d.sasl is None


def test_auth_unknown_mechanism_and_extra_args() -> None:
    d = dialogue()
    reply = sent(d.receive(b"AUTH CRAM-MD5\r\n"))
    assert reply == b"-ERR Unsupported authentication mechanism.\r\n"
    assert sent(d.receive(b"AUTH PLAIN a b\r\n")).startswith(b"-ERR ")
    assert d.state is State.COMMANDS


def test_too_long_response_ends_the_exchange() -> None:
    d = dialogue(max_line=64)
    d.receive(b"AUTH PLAIN\r\n")
    assert sent(d.receive(b"A" * 200 + b"\r\n")) == b"-ERR Line too long.\r\n"
    assert d.state is State.COMMANDS and d.sasl is None


def test_pipelined_auth_then_commands() -> None:
    d = dialogue()
    actions = d.receive(b"CAPA\r\nAUTH PLAIN " + PLAIN + b"\r\nSTAT\r\n")
    assert isinstance(actions[-1], Authenticate)
    d.succeeded(BackendInfo())
    assert d.take_pending() == b"STAT\r\n"


# -- other commands, oversized lines ------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"NOOP\r\n", b"-ERR Command not allowed before login.\r\n"),
        (b"STAT\r\n", b"-ERR Command not allowed before login.\r\n"),
        (b"retr 1\r\n", b"-ERR Command not allowed before login.\r\n"),
        (b"APOP alice 0123456789abcdef\r\n", b"-ERR Unknown command.\r\n"),
        (b"XCLIENT ADDR=192.0.2.1\r\n", b"-ERR Unknown command.\r\n"),
        (b"HELO x\r\n", b"-ERR Unknown command.\r\n"),
        (b"\r\n", b"-ERR Unknown command.\r\n"),
        (b"\x16\x03\x01\x02\x00\r\n", b"-ERR Unknown command.\r\n"),
    ],
)
def test_commands_not_available_before_login(line: bytes, reply: bytes) -> None:
    d = dialogue()
    assert d.receive(line) == [Send(reply)]
    assert d.state is State.COMMANDS


def test_quit() -> None:
    d = dialogue()
    assert d.receive(b"QUIT\r\nCAPA\r\n") == [Send(b"+OK Logging out.\r\n"), Close()]
    assert d.state is State.DONE


def test_oversized_line_then_usable() -> None:
    d = dialogue(max_line=256)
    actions = d.receive(b"PASS " + b"x" * 100_000 + b"\r\nUSER a\r\nPASS b\r\n")
    assert actions == [
        Send(b"-ERR Line too long.\r\n"),
        Send(b"+OK\r\n"),
        Authenticate(Credentials("", "a", "b")),
    ]


def test_oversized_line_across_reads_answered_once() -> None:
    d = dialogue(max_line=256)
    assert d.receive(b"USER ") == []
    for _ in range(50):
        assert d.receive(b"x" * 4096) == []
    assert d.reader.buffered == 0
    assert d.receive(b"\r\nCAPA\r\n")[0] == Send(b"-ERR Line too long.\r\n")


# -- failures -----------------------------------------------------------------------------


def test_failure_table_uses_rfc3206_codes() -> None:
    assert FAILURE_REPLIES[Failure.AUTH_FAILED].startswith(b"-ERR [AUTH] ")
    for failure in (Failure.UNAVAILABLE, Failure.BACKEND_UNAVAILABLE, Failure.LOGIN_DISABLED):
        assert FAILURE_REPLIES[failure].startswith(b"-ERR [SYS/TEMP] ")
    assert b"few minutes" in FAILURE_REPLIES[Failure.LOGIN_DISABLED]
    assert set(FAILURE_REPLIES) == set(Failure)
    for reply in FAILURE_REPLIES.values():
        assert reply.startswith(b"-ERR ") and reply.endswith(b"\r\n") and reply.count(b"\n") == 1


@pytest.mark.parametrize("failure", [Failure.UNAVAILABLE, Failure.BACKEND_UNAVAILABLE])
def test_temporary_failure_lets_the_client_retry(failure: Failure) -> None:
    d = dialogue()
    d.receive(b"USER a\r\nPASS p\r\n")
    assert d.failed(failure) == FAILURE_REPLIES[failure]
    assert d.resume() == []
    assert d.state is State.COMMANDS


@pytest.mark.parametrize("failure", [Failure.TOO_MANY_FAILURES, Failure.TIMEOUT, Failure.SHUTDOWN])
def test_session_ending_failures(failure: Failure) -> None:
    d = dialogue()
    assert d.failed(failure) == pop3_bye(failure)
    assert d.state is State.DONE
    assert d.receive(b"CAPA\r\n") == []


def test_dialect() -> None:
    settings = ProtocolSettings(
        listen=(),
        tls_listen=(),
        proxy_protocol_listen=(),
        backend_port=110,
        backend_tls="none",
        backend_tls_verify=True,
        backend_ca=None,
        backend_timeout=10.0,
        forward_client_ip=False,
    )
    dialect = pop3_dialect(settings)
    assert dialect.name == "pop3" and dialect.settings is settings
    assert isinstance(dialect.new_dialogue(env()), Pop3Dialogue)
    assert dialect.bye(Failure.TIMEOUT).startswith(b"-ERR ")


# -- fuzzing ------------------------------------------------------------------------------


def drive(d: Pop3Dialogue, chunks: list[bytes], outcomes: list[bool]) -> None:
    """Play the session core: answer every action the way the core would."""
    outcome = iter(outcomes)
    for chunk in chunks:
        actions = d.receive(chunk)
        while actions:
            assert all(isinstance(a, Send | StartTls | Authenticate | Close) for a in actions)
            last = actions[-1]
            if isinstance(last, Close):
                return
            if isinstance(last, StartTls):
                d.tls_started()
                actions = []
            elif isinstance(last, Authenticate):
                if next(outcome, False):
                    d.succeeded(BackendInfo())
                    d.take_pending()
                    return
                assert d.failed(Failure.AUTH_FAILED).startswith(b"-ERR [AUTH]")
                actions = d.resume()
            else:
                actions = []


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.binary(max_size=300), max_size=12),
    st.lists(st.booleans(), max_size=4),
    st.booleans(),
    st.booleans(),
)
def test_arbitrary_bytes_only_produce_actions(
    chunks: list[bytes], outcomes: list[bool], offered: bool, plaintext: bool
) -> None:
    drive(dialogue(tls_offered=offered, plaintext=plaintext, max_line=128), chunks, outcomes)


WORDS = st.sampled_from(
    [b"USER", b"PASS", b"AUTH", b"CAPA", b"STLS", b"QUIT", b"NOOP", b"PLAIN", b"LOGIN",
     b"*", b"=", b" ", b"\r\n", b"\n", b"AGFsaWNlAHNlY3JldA==", b"YWxpY2U=", b"\x00", b"\xff"]
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.lists(WORDS, max_size=20).map(b"".join), max_size=10),
    st.lists(st.booleans(), max_size=4),
    st.booleans(),
    st.booleans(),
)
def test_command_shaped_bytes_only_produce_actions(
    chunks: list[bytes], outcomes: list[bool], offered: bool, plaintext: bool
) -> None:
    drive(dialogue(tls_offered=offered, plaintext=plaintext, max_line=128), chunks, outcomes)
