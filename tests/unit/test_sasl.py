"""SASL PLAIN/LOGIN: RFC 4616 vectors, every rejection path, and fuzzing."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.sasl import (
    MAX_FIELD_OCTETS,
    MAX_RESPONSE_CHARS,
    Cancelled,
    Challenge,
    Credentials,
    SaslCancelled,
    SaslError,
    SaslExchange,
    base64_challenge,
    decode_base64_response,
    decode_plain,
    encode_plain,
)


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


# -- decode_plain / encode_plain ----------------------------------------------------------


def test_rfc4616_examples() -> None:
    assert decode_plain(b"\x00tim\x00tanstaaftanstaaf") == Credentials(
        "", "tim", "tanstaaftanstaaf"
    )
    assert decode_plain(b"Ursel\x00Kurt\x00xipj3plmq") == Credentials("Ursel", "Kurt", "xipj3plmq")


def test_encode_plain_matches_rfc4616() -> None:
    assert encode_plain("tim", "tanstaaftanstaaf") == b"AHRpbQB0YW5zdGFhZnRhbnN0YWFm"
    assert encode_plain("Kurt", "xipj3plmq", authzid="Ursel") == b64(b"Ursel\x00Kurt\x00xipj3plmq")


def test_utf8_fields() -> None:
    creds = decode_plain("\x00jöhn@exämple.de\x00pässwörd €".encode())
    assert creds == Credentials("", "jöhn@exämple.de", "pässwörd €")


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"tim",
        b"\x00timpassword",  # one NUL only
        b"\x00tim\x00pass\x00",  # extra NUL
        b"a\x00b\x00c\x00d",
        b"\x00\x00",  # everything empty
        b"\x00\x00pass",  # empty authcid
        b"\x00tim\x00",  # empty password
        b"\x00ti\xffm\x00pass",  # non-UTF-8 authcid
        b"\x00tim\x00pa\xc3",  # truncated UTF-8 password
        b"\xfe\x00tim\x00pass",  # non-UTF-8 authzid
        b"\x00tim\x00\xed\xa0\x80",  # UTF-8-encoded surrogate
        b"\x00" + b"u" * (MAX_FIELD_OCTETS + 1) + b"\x00p",
        b"\x00u\x00" + b"p" * (MAX_FIELD_OCTETS + 1),
        b"z" * (MAX_FIELD_OCTETS + 1) + b"\x00u\x00p",
    ],
)
def test_decode_plain_rejects(message: bytes) -> None:
    with pytest.raises(SaslError):
        decode_plain(message)


def test_field_limit_is_inclusive() -> None:
    big = "x" * MAX_FIELD_OCTETS
    creds = decode_plain(f"{big}\x00{big}\x00{big}".encode())
    assert creds == Credentials(big, big, big)
    assert decode_plain(decode_base64_response(encode_plain(big, big, big))) == creds


def test_errors_never_contain_the_password() -> None:
    secret = "hunter2-secret"
    for message in (
        f"\x00\x00{secret}",
        f"\x00u\x00{secret}\x00",
        f"\x00u\x00{secret}\udcff",
        "\x00u\x00" + secret * 200,
    ):
        raw = message.encode("utf-8", "surrogateescape")
        with pytest.raises(SaslError) as info:
            decode_plain(raw)
        assert secret not in str(info.value)


def test_repr_hides_password() -> None:
    creds = Credentials("", "tim", "tanstaaftanstaaf")
    assert "tanstaaf" not in repr(creds)
    assert "tim" in repr(creds)


@pytest.mark.parametrize(
    ("authcid", "password", "authzid"),
    [("", "p", ""), ("u", "", ""), ("u\x00v", "p", ""), ("u", "p\x00", ""), ("u", "p", "\x00")],
)
def test_encode_plain_rejects_what_decode_would(authcid: str, password: str, authzid: str) -> None:
    with pytest.raises(SaslError):
        encode_plain(authcid, password, authzid)


def test_encode_plain_rejects_unencodable() -> None:
    with pytest.raises(SaslError):
        encode_plain("u", "\udcff")


_field_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=200)


@given(_field_text, _field_text.filter(bool), _field_text.filter(bool))
def test_plain_round_trip(authzid: str, authcid: str, password: str) -> None:
    wire = encode_plain(authcid, password, authzid)
    assert decode_plain(decode_base64_response(wire)) == Credentials(authzid, authcid, password)


# -- base64 -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [(b"=", b""), (b"", b""), (b"dGVzdA==", b"test"), (b"dGVzdDE=", b"test1"), (b"YWJj", b"abc")],
)
def test_decode_base64(line: bytes, expected: bytes) -> None:
    assert decode_base64_response(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        b"dGVzdA",  # missing padding
        b"dGVzdA=",  # short padding
        b"dGVzdA===",  # excess padding
        b"dGVz dA==",  # whitespace inside
        b" dGVzdA==",
        b"dGVzdA==\r",
        b"dGVzdA==\n",
        b"dGVzdA==x",  # data after padding
        b"==",
        b"=dGVzdA=",
        b"dGVzdA!=",  # junk character
        b"dGVzdB==",  # non-zero pad bits: decodable but not canonical
        b"dGVzdA-_",  # URL-safe alphabet
        b"\xff\xfe",
        b"*",
        b"A" * (MAX_RESPONSE_CHARS + 4),
    ],
)
def test_decode_base64_rejects(line: bytes) -> None:
    with pytest.raises(SaslError):
        decode_base64_response(line)


@given(st.binary(max_size=3 * MAX_FIELD_OCTETS + 2))
def test_base64_round_trip(data: bytes) -> None:
    assert decode_base64_response(b64(data)) == data


def test_base64_challenge() -> None:
    assert base64_challenge(b"") == b""
    assert base64_challenge(b"Username:") == b"VXNlcm5hbWU6"
    assert b"\n" not in base64_challenge(b"x" * 500)


# -- SaslExchange -------------------------------------------------------------------------


@pytest.mark.parametrize("mech", ["CRAM-MD5", "", "PLAIN ", "pla\u0131n", "XOAUTH2", "LOGIN\x00"])
def test_unknown_mechanism(mech: str) -> None:
    with pytest.raises(SaslError):
        SaslExchange(mech, None)


@pytest.mark.parametrize("mech", ["plain", "Plain", "PLAIN"])
def test_mechanism_case_insensitive(mech: str) -> None:
    assert SaslExchange(mech, None).mechanism == "PLAIN"


def test_plain_without_initial_response() -> None:
    ex = SaslExchange("PLAIN", None)
    assert ex.start() == Challenge(b"")
    assert ex.step(b64(b"\x00tim\x00tanstaaftanstaaf")) == Credentials(
        "", "tim", "tanstaaftanstaaf"
    )
    with pytest.raises(RuntimeError):
        ex.step(b"=")


def test_plain_with_initial_response() -> None:
    ex = SaslExchange("plain", b64(b"Ursel\x00Kurt\x00xipj3plmq"))
    assert ex.start() == Credentials("Ursel", "Kurt", "xipj3plmq")
    with pytest.raises(RuntimeError):
        ex.step(b"")


@pytest.mark.parametrize("ir", [b"=", b"", b"!!!!", b"dGVzdA==", b"*"])
def test_plain_bad_initial_response(ir: bytes) -> None:
    with pytest.raises(SaslError):
        SaslExchange("PLAIN", ir).start()


def test_plain_empty_response_in_step_is_refused() -> None:
    ex = SaslExchange("PLAIN", None)
    ex.start()
    with pytest.raises(SaslError):
        ex.step(b"=")


def test_login_without_initial_response() -> None:
    ex = SaslExchange("LOGIN", None)
    assert ex.start() == Challenge(b"Username:")
    assert ex.step(b64(b"tim")) == Challenge(b"Password:")
    assert ex.step(b64("pässwörd".encode())) == Credentials("", "tim", "pässwörd")


def test_login_with_initial_response() -> None:
    ex = SaslExchange("login", b64(b"tim"))
    assert ex.start() == Challenge(b"Password:")
    assert ex.step(b64(b"secret")) == Credentials("", "tim", "secret")


@pytest.mark.parametrize("ir", [b"=", b"!", b64(b"a\x00b"), b64(b"\xff")])
def test_login_bad_initial_response(ir: bytes) -> None:
    with pytest.raises(SaslError):
        SaslExchange("LOGIN", ir).start()


@pytest.mark.parametrize(
    ("user", "password"), [(b"", b"p"), (b"u", b""), (b"u\xff", b"p"), (b"u", b"p\x00q")]
)
def test_login_rejects_bad_fields(user: bytes, password: bytes) -> None:
    ex = SaslExchange("LOGIN", None)
    ex.start()
    with pytest.raises(SaslError):
        ex.step(b64(user))
        ex.step(b64(password))


@pytest.mark.parametrize(
    ("mech", "ir", "steps_before_cancel"),
    [
        ("PLAIN", None, []),
        ("LOGIN", None, []),
        ("LOGIN", None, [b64(b"tim")]),
        ("LOGIN", b64(b"tim"), []),
    ],
)
def test_cancel_at_each_step(mech: str, ir: bytes | None, steps_before_cancel: list[bytes]) -> None:
    ex = SaslExchange(mech, ir)
    assert isinstance(ex.start(), Challenge)
    for line in steps_before_cancel:
        assert isinstance(ex.step(line), Challenge)
    with pytest.raises(SaslCancelled) as info:
        ex.step(b"*")
    assert isinstance(info.value, SaslError)
    assert isinstance(info.value, Cancelled)
    with pytest.raises(RuntimeError):  # the exchange is over
        ex.step(b64(b"x"))


def test_error_ends_exchange() -> None:
    ex = SaslExchange("LOGIN", None)
    ex.start()
    with pytest.raises(SaslError):
        ex.step(b"not base64!")
    with pytest.raises(RuntimeError):
        ex.step(b64(b"tim"))


def test_misuse_is_a_runtime_error() -> None:
    ex = SaslExchange("PLAIN", None)
    with pytest.raises(RuntimeError):
        ex.step(b"")
    ex.start()
    with pytest.raises(RuntimeError):
        ex.start()


# -- fuzzing: client bytes only ever produce SaslError ------------------------------------


def _only_sasl_errors(fn, *args):  # type: ignore[no-untyped-def]
    try:
        return fn(*args)
    except SaslError:
        return None


@given(st.binary(max_size=300))
def test_fuzz_decoders(data: bytes) -> None:
    _only_sasl_errors(decode_base64_response, data)
    _only_sasl_errors(decode_plain, data)
    _only_sasl_errors(decode_plain, decode_base64_response(b64(data)))


_line = st.one_of(st.binary(max_size=120), st.binary(max_size=90).map(b64), st.just(b"*"))


@given(
    st.sampled_from(["PLAIN", "LOGIN", "plain", "login"]),
    st.one_of(st.none(), _line),
    st.lists(_line, max_size=3),
)
def test_fuzz_exchange(mech: str, ir: bytes | None, lines: list[bytes]) -> None:
    ex = SaslExchange(mech, ir)
    result = _only_sasl_errors(ex.start)
    for line in lines:
        if not isinstance(result, Challenge):
            break
        result = _only_sasl_errors(ex.step, line)
    assert result is None or isinstance(result, Challenge | Credentials)
