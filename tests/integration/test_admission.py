"""Admission on a live proxy: connection limits counted before any TLS handshake on every
listener, failed handshakes logged as such, and eviction of the oldest pre-login connection
instead of locking newcomers out."""

from __future__ import annotations

import imaplib
import re
import socket
import ssl
import time
import urllib.request
from pathlib import Path

import pytest

from bench.farm import Farm
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config, free_port
from tests.integration.imapwire import Wire
from tests.integration.waiting import eventually

SILENT = 12  # connections opened by one address, against a per-address limit of 3


def open_from(port: int, source: str, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout, source_address=(source, 0))


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Did the server close (or reset) this connection within ``within`` seconds?"""
    sock.settimeout(within)
    try:
        while True:
            if not sock.recv(4096):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def wire_from(port: int, source: str) -> Wire:
    w = Wire.__new__(Wire)
    w.sock = open_from(port, source)
    w.buf = b""
    return w


def metric(admin: int, name: str, **labels: str) -> float:
    request = urllib.request.Request(
        f"http://127.0.0.1:{admin}/metrics", headers={"Authorization": "Bearer t"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    match = re.search(rf"^{name}\{{{re.escape(want)}\}} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


@pytest.fixture
def limited(farm: Farm, tmp_path: Path):  # type: ignore[no-untyped-def]
    ports, admin, submissions, starttls = ProxyPorts(), free_port(), free_port(), free_port()
    sections = farm_config(
        farm,
        ports,
        trusted=False,
        proxy={"max_connections_per_ip": 3, "preauth_timeout": 30},
        admin={"listen": [f"127.0.0.1:{admin}"], "token": "t"},
        submission={
            "listen": [f"127.0.0.1:{starttls}"],
            "tls_listen": [f"127.0.0.1:{submissions}"],
            "relay": f"127.0.0.1:{free_port()}",
        },
    )
    proc = MailfarmProcess(tmp_path, sections, "admission").start()
    yield proc, ports, admin, submissions, starttls
    proc.stop()


def test_silent_connections_to_implicit_tls_ports_are_counted_at_accept(limited) -> None:  # type: ignore[no-untyped-def]
    proc, ports, _admin, submissions, _starttls = limited
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    for port in (ports.imaps, ports.pop3s, submissions):
        held = [open_from(port, "127.0.0.5") for _ in range(SILENT)]
        try:
            # The first three hold their places (silently, mid-handshake); every later one
            # is closed at once instead of costing a TLS session each.
            closed = [closed_by_server(s, 0.5 if i < 3 else 5.0) for i, s in enumerate(held)]
            assert closed == [False] * 3 + [True] * (SILENT - 3), (port, closed)
        finally:
            for s in held:
                s.close()
        # Once they are gone, the address gets its places back.
        assert eventually(lambda: "refused: connection limit" in proc.log_text())
        def handshake_works(port: int = port) -> bool:
            try:
                with ctx.wrap_socket(open_from(port, "127.0.0.5", 3)) as tls:
                    return bool(tls.recv(100))
            except OSError:
                return False

        assert eventually(handshake_works, timeout=10)


def test_a_failed_handshake_is_one_info_line_and_a_metric(limited) -> None:  # type: ignore[no-untyped-def]
    proc, ports, admin, submissions, starttls_port = limited
    before = proc.log_text().count("outcome=tls-failed")
    # STARTTLS, then something that is not a TLS ClientHello.
    with wire_from(ports.imap, "127.0.0.6") as w:
        w.line()
        w.send(b"a STARTTLS\r\n")
        assert w.line().startswith(b"a OK")
        time.sleep(0.5)
        w.send(b"junk\r\n")
        assert w.closed()
    with wire_from(ports.pop3, "127.0.0.6") as w:
        w.line()
        w.send(b"STLS\r\n")
        assert w.line().startswith(b"+OK")
        w.send(b"junk\r\n")
        assert w.closed()
    with wire_from(starttls_port, "127.0.0.6") as w:  # submission's STARTTLS (aiosmtpd's)
        w.line()
        w.send(b"EHLO client.example\r\n")
        w.until(b"250 ")
        w.send(b"STARTTLS\r\n")
        assert w.line().startswith(b"220")
        time.sleep(0.2)
        w.send(b"junk\r\n")
        assert w.closed()
    for port in (ports.imaps, ports.pop3s, submissions):  # implicit TLS spoken to in clear
        with wire_from(port, "127.0.0.6") as w:
            w.send(b"a LOGIN x y\r\n")
            assert w.closed()
    assert eventually(lambda: proc.log_text().count("outcome=tls-failed") >= before + 6)
    text = proc.log_text()
    assert "Traceback" not in text and "internal-error" not in text
    for line in text.splitlines():
        if "outcome=tls-failed" in line:
            assert " INFO " in line or "INFO" in line.split("session")[0], line
    assert metric(admin, "mailfarm_tls_failures_total", protocol="imap") >= 2
    assert metric(admin, "mailfarm_tls_failures_total", protocol="pop3") >= 2
    assert metric(admin, "mailfarm_tls_failures_total", protocol="submission") >= 2


def test_the_oldest_connection_not_logged_in_makes_room(farm: Farm, tmp_path: Path) -> None:
    """Three addresses holding every place cannot keep a fourth address's user out."""
    ports = ProxyPorts()
    sections = farm_config(
        farm,
        ports,
        proxy={"max_connections": 6, "max_connections_per_ip": 2, "trusted_networks": []},
    )
    sections.pop("pop3", None)
    proc = MailfarmProcess(tmp_path, sections, "evict").start()
    held: list[Wire] = []
    try:
        for source in ("127.0.0.5", "127.0.0.5", "127.0.0.6", "127.0.0.6", "127.0.0.7"):
            w = wire_from(ports.imap, source)
            assert w.line().startswith(b"* OK")
            held.append(w)
        w = wire_from(ports.imap, "127.0.0.7")
        held.append(w)
        assert w.line().startswith(b"* OK")  # the sixth: the farm is full now
        alice = farm.user("alice@example.co.uk")
        # A real user from a fourth address: the oldest silent connection makes room.
        user = wire_from(ports.imap, "127.0.0.8")
        assert user.line().startswith(b"* OK")
        assert held[0].line().startswith(b"* BYE [UNAVAILABLE] Too many connections")
        assert held[0].closed()
        # LOGIN is refused in clear without TLS from an untrusted address; use STARTTLS.
        ctx = ssl.create_default_context(cafile=str(farm.pki.ca_cert))
        ctx.check_hostname = False
        user.send(b"a STARTTLS\r\n")
        assert user.line().startswith(b"a OK")
        user.sock = ctx.wrap_socket(user.sock)
        user.send(f'b LOGIN "{alice.address}" "{alice.password}"\r\n'.encode())
        assert user.until(b"b ")[-1].startswith(b"b OK")
        # Logged in, that session is never evicted: newcomers push out the silent ones,
        # oldest first (and then each other), never the user.
        for i in range(8):
            newcomer = wire_from(ports.imap, f"127.0.1.{i + 1}")
            assert newcomer.line().startswith(b"* OK")
            held.append(newcomer)
        for old in held[1:5]:
            assert old.line().startswith(b"* BYE [UNAVAILABLE] Too many connections")
        user.send(b"c NOOP\r\n")
        assert user.until(b"c ")[-1].startswith(b"c OK")
        user.close()
    finally:
        for w in held:
            w.close()
        proc.stop()
    assert proc.log_text().count("outcome=evicted") >= 9


def test_logged_in_sessions_are_not_evicted_imaplib(farm: Farm, tmp_path: Path) -> None:
    ports = ProxyPorts()
    sections = farm_config(farm, ports, proxy={"max_connections": 2})
    sections.pop("pop3", None)
    proc = MailfarmProcess(tmp_path, sections, "evict2").start()
    alice, carol = farm.user("alice@example.co.uk"), farm.user("carol@example.com")
    try:
        a = imaplib.IMAP4("127.0.0.1", ports.imap, timeout=10)
        a.login(alice.address, alice.password)
        c = imaplib.IMAP4("127.0.0.1", ports.imap, timeout=10)
        c.login(carol.address, carol.password)
        refused = wire_from(ports.imap, "127.0.0.9")
        assert refused.line().startswith(b"* BYE [UNAVAILABLE] Too many connections")
        assert a.noop()[0] == "OK" and c.noop()[0] == "OK"
        a.logout()
        c.logout()
    finally:
        proc.stop()
