"""userPassword values: the schemes slapd accepts, checked without ever raising."""

from __future__ import annotations

import base64
import hashlib
import logging
import sys
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from directory import passwords
from directory.passwords import crypt_available, hash_password, verify_password

needs_crypt = pytest.mark.skipif(not crypt_available(), reason="no crypt module")

SALTED = ["{SSHA}", "{SSHA256}", "{SSHA512}"]


def by_hand(scheme: str, digest: str, password: bytes, salt: bytes) -> str:
    raw = hashlib.new(digest, password + salt).digest() + salt
    return scheme + base64.b64encode(raw).decode("ascii")


def test_ssha_vector_made_by_hand() -> None:
    stored = by_hand("{SSHA}", "sha1", b"secret", b"\x01\x02\x03\x04")
    assert verify_password(stored, "secret")
    assert not verify_password(stored, "Secret")
    assert verify_password(by_hand("{SSHA512}", "sha512", b"pw", b"s" * 16), "pw")
    assert verify_password(by_hand("{SSHA256}", "sha256", b"pw", b"salt"), "pw")


def test_published_sha_vector() -> None:
    # {SHA} of "password", as printed by `slappasswd -h {SHA} -s password`.
    assert verify_password("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "password")
    assert not verify_password("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "passwore")


@needs_crypt
def test_crypt_published_sha512_vector() -> None:
    # From Drepper's "Unix crypt using SHA-256 and SHA-512" test vectors.
    stored = (
        "{CRYPT}$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJ"
        "uesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
    )
    assert verify_password(stored, "Hello world!")
    assert not verify_password(stored, "Hello world")


@needs_crypt
def test_crypt_made_by_the_crypt_module() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    stored = "{CRYPT}" + crypt.crypt("s3cret", crypt.mksalt(crypt.METHOD_SHA512))
    assert stored.startswith("{CRYPT}$6$")
    assert verify_password(stored, "s3cret")
    assert not verify_password(stored, "s3cret ")


@pytest.mark.parametrize("scheme", [*SALTED, pytest.param("{CRYPT}", marks=needs_crypt)])
def test_round_trip(scheme: str) -> None:
    stored = hash_password("correct horse", scheme)
    assert stored.startswith(scheme)
    assert verify_password(stored, "correct horse")
    assert verify_password(stored.encode("ascii"), "correct horse")
    assert not verify_password(stored, "correct horsE")
    assert not verify_password(stored, "")


def test_default_scheme_and_salt() -> None:
    first, second = hash_password("pw"), hash_password("pw")
    assert first.startswith("{SSHA512}")
    assert first != second  # a fresh salt every time
    raw = base64.b64decode(first.removeprefix("{SSHA512}"))
    assert len(raw) == 64 + passwords.SALT_BYTES


def test_scheme_names_ignore_case() -> None:
    stored = hash_password("pw", "ssha")
    assert stored.startswith("{SSHA}")
    assert verify_password("{ssha}" + stored.removeprefix("{SSHA}"), "pw")
    assert verify_password("{Ssha512}" + hash_password("pw").removeprefix("{SSHA512}"), "pw")
    assert verify_password("{cleartext}pw", "pw")


def test_cleartext() -> None:
    assert verify_password("plain pw", "plain pw")
    assert verify_password(b"plain pw", "plain pw")
    assert verify_password("{CLEARTEXT}plain pw", "plain pw")
    assert verify_password("p\u00e4ss", "p\u00e4ss")
    assert not verify_password("plain pw", "plain p")
    assert not verify_password("", "")
    assert not verify_password("x", "")


@pytest.mark.parametrize(
    "stored",
    [
        "{SSHA}!!!not-base64!!!",
        "{SSHA}" + base64.b64encode(b"x" * 20).decode(),  # a digest and no salt
        "{SSHA}",
        "{SHA}" + base64.b64encode(b"x" * 19).decode(),  # wrong length
        "{SSHA512}" + base64.b64encode(b"short").decode(),
        "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g",  # bad padding
        "{MD5}X03MO1qnZdYdgyfeuILPmQ==",  # a scheme we do not check
        "{FOO}password",
        "{CRYPT}",
        "{CRYPT}*",
        "{CRYPT}!$6$locked",
        "{CRYPT}\u00e9\u00e9",
        "{\u00e9}password",
        b"{SSHA}\xff\xfe",
        b"\xff\xfe",
        "{SSHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n",
    ],
)
def test_garbage_is_refused_without_raising(stored: str | bytes) -> None:
    assert verify_password(stored, "password") is False


def test_unknown_scheme_is_not_plaintext() -> None:
    assert not verify_password("{FOO}bar", "{FOO}bar")


def test_awkward_passwords_never_raise() -> None:
    stored = hash_password("pw", "{SSHA}")
    for password in ("\x00", "pw\x00", "\udcff", "\ud800", "x" * 10_000):
        assert verify_password(stored, password) is False
        assert verify_password("plain", password) is False
        assert verify_password("{CRYPT}$6$saltstring$abc", password) is False


def test_hash_password_refuses_what_it_should() -> None:
    for scheme in ("{SHA}", "{CLEARTEXT}", "{MD5}", "plain"):
        with pytest.raises(ValueError, match="cannot make"):
            hash_password("pw", scheme)
    with pytest.raises(ValueError, match="empty password"):
        hash_password("")


def test_without_a_crypt_module(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    monkeypatch.setattr(passwords, "_crypt_state", [])
    monkeypatch.setitem(sys.modules, "crypt_r", None)
    monkeypatch.setitem(sys.modules, "crypt", None)
    stored = "{CRYPT}$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIF"
    with caplog.at_level(logging.ERROR, logger="directory.passwords"):
        assert not verify_password(stored, "Hello world!")
        assert not verify_password(stored, "Hello world!")
    assert len([r for r in caplog.records if "{CRYPT}" in r.getMessage()]) == 1
    assert not crypt_available()
    with pytest.raises(ValueError, match="not available"):
        hash_password("pw", "{CRYPT}")
    assert verify_password(hash_password("pw", "{SSHA}"), "pw")  # other schemes unaffected


@settings(max_examples=50, deadline=None)
@given(password=st.text(min_size=1, max_size=30), other=st.text(min_size=1, max_size=30))
def test_salted_round_trip_any_password(password: str, other: str) -> None:
    for scheme in SALTED:
        stored = hash_password(password, scheme)
        assert verify_password(stored, password)
        assert verify_password(stored, other) is (other == password)


schemes = st.sampled_from(["", "{SSHA}", "{ssha512}", "{SHA}", "{CRYPT}", "{CLEARTEXT}", "{X}"])


@settings(max_examples=200, deadline=None)
@given(scheme=schemes, body=st.binary(max_size=80) | st.text(max_size=80).map(str.encode),
       password=st.text(max_size=20))
def test_verify_never_raises(scheme: str, body: bytes, password: str) -> None:
    stored = scheme.encode() + body
    assert verify_password(stored, password) in (True, False)
    assert verify_password(stored.decode("utf-8", "surrogateescape"), password) in (True, False)
