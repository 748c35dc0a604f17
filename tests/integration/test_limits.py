"""Connection limits per client address, and the trusted-network exemption, on a live proxy."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from bench.farm import Farm
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config
from tests.integration.imapwire import Wire
from tests.integration.waiting import eventually


def open_from(port: int, source: str) -> Wire:
    w = Wire.__new__(Wire)
    w.sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    w.buf = b""
    return w


def test_per_address_limit_with_trusted_exemption(farm: Farm, tmp_path: Path) -> None:
    ports = ProxyPorts()
    sections = farm_config(
        farm, ports, proxy={"max_connections_per_ip": 3, "trusted_networks": ["127.0.0.7/32"]}
    )
    sections.pop("pop3", None)
    proc = MailfarmProcess(tmp_path, sections, "limits").start()
    held: list[Wire] = []
    try:
        for _ in range(3):
            w = open_from(ports.imap, "127.0.0.5")
            assert w.line().startswith(b"* OK")
            held.append(w)
        refused = open_from(ports.imap, "127.0.0.5")
        assert refused.line().startswith(b"* BYE [UNAVAILABLE] Too many connections")
        assert refused.closed()
        # Another address is not affected, and a trusted one is exempt.
        for source in ("127.0.0.6", "127.0.0.7", "127.0.0.7", "127.0.0.7", "127.0.0.7"):
            w = open_from(ports.imap, source)
            assert w.line().startswith(b"* OK")
            held.append(w)
        # A slot comes back when a connection ends.
        held.pop(0).close()
        for _ in range(40):  # the proxy notices the close asynchronously
            w = open_from(ports.imap, "127.0.0.5")
            line = w.line()
            if line.startswith(b"* OK"):
                break
            w.close()
            time.sleep(0.05)
        assert line.startswith(b"* OK"), line
        held.append(w)
    finally:
        for w in held:
            w.close()
        proc.stop()
    assert "connection limit" in proc.log_text()


def test_idle_proxied_session_is_closed_with_bye(farm: Farm, tmp_path: Path) -> None:
    ports = ProxyPorts()
    sections = farm_config(farm, ports, proxy={"idle_timeout": 1.0})
    sections.pop("pop3", None)
    proc = MailfarmProcess(tmp_path, sections, "idle").start()
    user = farm.user("carol@example.com")
    try:
        with Wire(ports.imap) as w:
            w.line()
            w.send(b"a1 LOGIN " + user.uid.encode() + b" " + user.password.encode() + b"\r\n")
            w.until(b"a1 OK")
            started = time.monotonic()
            assert w.line().startswith(b"* BYE Disconnected for inactivity")
            assert w.closed()
            assert time.monotonic() - started < 20  # bounded, not the 30-minute default
    finally:
        proc.stop()
    assert "outcome=ok:idle-timeout" in proc.log_text()


def test_submission_counts_against_the_same_limits(farm: Farm, tmp_path: Path) -> None:
    import smtplib

    from bench.proxyproc import free_port

    port = free_port()
    sections = farm_config(
        farm,
        ProxyPorts(),
        trusted=False,
        proxy={"max_connections_per_ip": 1},
        submission={"listen": [f"127.0.0.1:{port}"], "relay": f"127.0.0.1:{free_port()}"},
    )
    proc = MailfarmProcess(tmp_path, sections, "smtp-limits").start()

    def open_session() -> smtplib.SMTP | None:
        # The proxy frees a slot when it sees a close, a moment after the client's close.
        try:
            return smtplib.SMTP("127.0.0.1", port, timeout=10)
        except smtplib.SMTPConnectError:
            return None

    def greeted() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as again:
            return again.recv(200).startswith(b"220 ")

    try:
        sessions: list[smtplib.SMTP] = []
        assert eventually(lambda: sessions.append(s) or True if (s := open_session()) else False)
        try:
            second = socket.create_connection(("127.0.0.1", port), timeout=10)
            assert second.recv(200).startswith(b"421 4.7.0 Too many connections")
            second.close()
        finally:
            sessions[0].quit()
        assert eventually(greeted)  # the slot came back when the first session ended
    finally:
        proc.stop()
