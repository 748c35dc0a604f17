"""One user, however the login is spelt: the backend is asked for the directory's uid, the
failed-login counter is the uid's, and an address's penalty slows every attempt from it."""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterator

import pytest

from bench.farm import Farm
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config
from tests.integration.waiting import eventually

DELAY = 0.25


@pytest.fixture(scope="module")
def untrusted(farm: Farm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailfarmProcess]:
    """No trusted networks (so the growing penalty applies), plaintext allowed for tests."""
    ports = ProxyPorts()
    sections = farm_config(
        farm,
        ports,
        trusted=False,
        proxy={"auth_failure_delay": DELAY, "plaintext_auth": True, "max_auth_failures": 5},
    )
    proc = MailfarmProcess(tmp_path_factory.mktemp("identity"), sections, "identity").start()
    proc.ports = ports  # type: ignore[attr-defined]
    yield proc
    proc.stop()


def plain_login(port: int, login: str, password: str, source: str) -> tuple[bytes, float]:
    """AUTHENTICATE PLAIN (any bytes fit in it); the tagged reply and how long it took."""
    blob = base64.b64encode(b"\0" + login.encode() + b"\0" + password.encode())
    with socket.create_connection(("127.0.0.1", port), 30, source_address=(source, 0)) as s:
        buf = b""
        while b"\r\n" not in buf:
            buf += s.recv(4096)
        started = time.monotonic()
        s.sendall(b"a AUTHENTICATE PLAIN " + blob + b"\r\n")
        buf = b""
        while b"\na " not in b"\n" + buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        took = time.monotonic() - started
    tagged = next(line for line in buf.split(b"\r\n") if line.startswith(b"a "))
    return tagged, took


@pytest.mark.parametrize(
    "spelling",
    [" carol@example.com", "carol@example.com\t", "\u00a0carol@example.com", "CAROL@example.COM"],
)
def test_any_spelling_of_a_login_reaches_the_uids_mailbox(
    farm: Farm, untrusted: MailfarmProcess, spelling: str
) -> None:
    carol = farm.user("carol@example.com")
    port = untrusted.ports.imap  # type: ignore[attr-defined]
    tagged, _ = plain_login(port, spelling, carol.password, "127.0.0.21")
    assert tagged.startswith(b"a OK"), tagged
    assert eventually(lambda: f"uid={carol.uid} backend=" in untrusted.log_text())
    assert "backend-unavailable" not in untrusted.log_text()


def test_every_spelling_shares_one_failure_counter(
    farm: Farm, untrusted: MailfarmProcess
) -> None:
    """Wrong passwords for dave under four spellings, each from its own address: the
    delay doubles from one to the next, as it would for one spelling."""
    port = untrusted.ports.imap  # type: ignore[attr-defined]
    spellings = [" dave@example.com", "dave@example.com\t", "\u00a0dave@example.com"]
    spellings.append("dave_example_com")
    took = []
    for i, login in enumerate(spellings):
        tagged, seconds = plain_login(port, login, "wrong", f"127.0.0.{31 + i}")
        assert tagged.startswith(b"a NO [AUTHENTICATIONFAILED]"), tagged
        took.append(seconds)
    # Separate counters would answer each after about DELAY; one counter after DELAY * 8
    # for the fourth (generous bound: half of that).
    assert took[3] >= DELAY * 4, took
    dave = farm.user("dave@example.com")
    tagged, _ = plain_login(port, dave.uid, dave.password, "127.0.0.35")
    assert tagged.startswith(b"a OK"), tagged  # and a success clears it


def test_an_address_penalty_slows_the_right_password_too(
    farm: Farm, untrusted: MailfarmProcess
) -> None:
    port = untrusted.ports.imap  # type: ignore[attr-defined]
    bob = farm.user("bob@example.co.uk")
    for i in range(3):
        plain_login(port, f"nobody{i}@example.com", "x", "127.0.0.41")
    # Three failures from this address: 4 * DELAY before the next attempt is even checked.
    tagged, took = plain_login(port, bob.address, bob.password, "127.0.0.41")
    assert tagged.startswith(b"a OK"), tagged
    assert took >= DELAY * 2, took
    # Another address is not slowed, and the success cleared this one's penalty.
    assert plain_login(port, bob.address, bob.password, "127.0.0.42")[0].startswith(b"a OK")
    tagged, took = plain_login(port, bob.address, bob.password, "127.0.0.41")
    assert tagged.startswith(b"a OK") and took < DELAY * 2, took


def test_a_login_with_a_control_character_is_refused_like_a_bad_password(
    untrusted: MailfarmProcess,
) -> None:
    port = untrusted.ports.imap  # type: ignore[attr-defined]
    tagged, _ = plain_login(port, "carol@example.com\x01", "carol-pw", "127.0.0.51")
    assert tagged.startswith(b"a NO [AUTHENTICATIONFAILED]"), tagged
