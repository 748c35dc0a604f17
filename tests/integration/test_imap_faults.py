"""IMAP proxy when the directory or a backend is down: UNAVAILABLE, never "bad password"."""

from __future__ import annotations

import imaplib

import pytest

from bench.farm import Farm
from common.imapformat import quote
from tests.integration.imapwire import Wire


def login_error(port: int, login: str, password: str) -> str:
    client = imaplib.IMAP4("127.0.0.1", port, timeout=20)
    try:
        client.login(login, password)
    except imaplib.IMAP4.error as exc:
        return str(exc)
    finally:
        client.shutdown()
    return "OK"


def test_directory_down_is_unavailable_not_bad_password(farm: Farm, proxy) -> None:  # type: ignore[no-untyped-def]
    user = farm.user("bob@example.co.uk")
    farm.stop_ldap()
    try:
        # A user never seen (no cached route) and a wrong password: both UNAVAILABLE.
        for login, password in [("nobody-yet@example.com", "x"), (user.address, "wrong")]:
            error = login_error(proxy.ports.imap, login, password)
            assert "[UNAVAILABLE]" in error, error
            assert "AUTHENTICATIONFAILED" not in error
    finally:
        farm.start_ldap()
    # Recovers without a restart of mailfarm.
    assert login_error(proxy.ports.imap, user.address, user.password) == "OK"


def test_backend_down_is_unavailable(farm: Farm, proxy) -> None:  # type: ignore[no-untyped-def]
    user = farm.user("alice@example.co.uk")
    other = farm.user("bob@example.co.uk")
    farm.stop_backend(user.backend)
    try:
        error = login_error(proxy.ports.imap, user.address, user.password)
        assert "[UNAVAILABLE]" in error, error
        # Users of the other backend are untouched.
        assert login_error(proxy.ports.imap, other.address, other.password) == "OK"
    finally:
        farm.start_backend(user.backend)
    assert login_error(proxy.ports.imap, user.address, user.password) == "OK"


@pytest.mark.parametrize("bad", ["*", "*)(uid=*", "alice*", "(", "\\", "a\\2a", "*@example.co.uk"])
def test_filter_injection_never_matches(farm: Farm, proxy, bad: str) -> None:  # type: ignore[no-untyped-def]
    alice = farm.user("alice@example.co.uk")
    login = quote(bad.encode())
    assert login is not None
    with Wire(proxy.ports.imap) as w:
        w.line()
        w.send(b"a1 LOGIN " + login + b" " + quote(alice.password.encode()) + b"\r\n")  # type: ignore[operator]
        reply = w.until(b"a1 ")[-1]
    assert reply.startswith(b"a1 NO [AUTHENTICATIONFAILED]"), reply
