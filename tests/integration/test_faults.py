"""Faults under a live proxy: a backend killed mid-session, a backend that never speaks,
slapd stopped and restarted while logins go on."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.farm import Farm
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config
from tests.integration.imapwire import Wire
from tests.integration.silent import silent_listener


def logged_in(port: int, user) -> Wire:  # type: ignore[no-untyped-def]
    w = Wire(port)
    w.line()
    w.send(b"a1 LOGIN " + user.uid.encode() + b" " + user.password.encode() + b"\r\n")
    assert w.until(b"a1 ")[-1].startswith(b"a1 OK"), user
    w.send(b"a2 SELECT INBOX\r\n")
    assert w.until(b"a2 ")[-1].startswith(b"a2 OK")
    return w


def login_reply(port: int, user, password: str | None = None) -> bytes:  # type: ignore[no-untyped-def]
    with Wire(port) as w:
        w.line()
        pw = (password or user.password).encode()
        w.send(b"a1 LOGIN " + user.uid.encode() + b' "' + pw + b'"\r\n')
        return w.until(b"a1 ")[-1]


def test_backend_killed_mid_session(farm: Farm, proxy) -> None:  # type: ignore[no-untyped-def]
    alice, bob = farm.user("alice@example.co.uk"), farm.user("bob@example.co.uk")
    assert alice.backend != bob.backend
    a, b = logged_in(proxy.ports.imap, alice), logged_in(proxy.ports.imap, bob)
    try:
        farm.kill_backend(alice.backend)
        # Alice's client is told, then disconnected ...
        assert a.line().startswith(b"* BYE [UNAVAILABLE]")
        assert a.closed()
        # ... Bob, on the other backend, carries on,
        b.send(b"a3 NOOP\r\n")
        assert b.until(b"a3 ")[-1].startswith(b"a3 OK")
        # and mailfarm keeps serving: users of the dead backend hear UNAVAILABLE.
        assert login_reply(proxy.ports.imap, alice).startswith(b"a1 NO [UNAVAILABLE]")
    finally:
        a.close()
        b.close()
        farm.start_backend(alice.backend)
    assert login_reply(proxy.ports.imap, alice).startswith(b"a1 OK")


def test_logout_gets_no_extra_goodbye(farm: Farm, proxy) -> None:  # type: ignore[no-untyped-def]
    w = logged_in(proxy.ports.imap, farm.user("carol@example.com"))
    with w:
        w.send(b"a3 LOGOUT\r\n")
        lines = w.until(b"a3 ")
        assert lines[-1].startswith(b"a3 OK")
        assert sum(line.startswith(b"* BYE") for line in lines) == 1
        assert w.closed() and w.buf == b""


@pytest.fixture()
def silent_backend(farm: Farm) -> Iterator[str]:
    """A host that accepts TCP on the IMAP port and never says a word."""
    with silent_listener("127.0.0.14", farm.backends["mail1"].imap_port):
        yield "127.0.0.14"


def test_backend_that_never_speaks(farm: Farm, tmp_path: Path, silent_backend: str) -> None:
    ports = ProxyPorts()
    sections = farm_config(
        farm, ports, directory={"cache_ttl": 0, "negative_ttl": 0}, imap={"backend_timeout": 1}
    )
    sections.pop("pop3", None)
    proc = MailfarmProcess(tmp_path, sections, "silent").start()
    dave = farm.user("dave@example.com")
    old_host = farm.backends[dave.backend].host
    farm.ldap_modify(dave.dn, {"mailHost": [silent_backend]})
    try:
        started = time.monotonic()
        assert login_reply(ports.imap, dave).startswith(b"a1 NO [UNAVAILABLE]")
        assert time.monotonic() - started < 30  # bounded by backend_timeout, not hung
    finally:
        farm.ldap_modify(dave.dn, {"mailHost": [old_host]})
        proc.stop()
    assert "backend 127.0.0.14:" in proc.log_text()


def test_ldap_restart_under_load(farm: Farm, tmp_path: Path) -> None:
    """Cached users keep getting past mailfarm while slapd is down; unknown ones get
    UNAVAILABLE; everything recovers without restarting mailfarm.

    The farm's Dovecot backends check passwords against LDAP themselves (with no auth cache),
    so during the outage a vouched-for login may still be refused by the backend: that is
    the backend's "Mailbox server" reply, never mailfarm's "Authentication service" one.
    """
    ports = ProxyPorts()
    sections = farm_config(farm, ports, proxy={"auth_cache_ttl": 300})
    sections.pop("pop3", None)
    proc = MailfarmProcess(tmp_path, sections, "ldap-restart").start()
    alice, jo = farm.user("alice@example.co.uk"), farm.user("jo_anne@under_score.org")
    results: list[bytes] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            results.append(login_reply(ports.imap, alice))

    try:
        assert login_reply(ports.imap, alice).startswith(b"a1 OK")  # now cached
        thread = threading.Thread(target=hammer)
        thread.start()
        time.sleep(0.5)
        farm.stop_ldap()
        try:
            time.sleep(1.0)
            during = len(results)
            assert login_reply(ports.imap, jo).startswith(b"a1 NO [UNAVAILABLE]")
        finally:
            farm.start_ldap()
        # The backends reconnect to LDAP by themselves; wait until the hammer gets through.
        deadline = time.monotonic() + 15
        mark = len(results)
        while time.monotonic() < deadline and not any(
            r.startswith(b"a1 OK") for r in results[mark:]
        ):
            time.sleep(0.1)
        stop.set()
        thread.join()
        assert not [r for r in results if b"Authentication service" in r]
        assert all(r.startswith((b"a1 OK", b"a1 NO [UNAVAILABLE] Mailbox server")) for r in results)
        assert any(r.startswith(b"a1 OK") for r in results[mark:])  # recovered
        assert len(results) > during > 0  # logins went on during the outage and after it
        assert login_reply(ports.imap, jo).startswith(b"a1 OK")
    finally:
        stop.set()
        proc.stop()
