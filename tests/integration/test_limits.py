"""Connection limits per client address, and the trusted-network exemption, on a live proxy."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from bench.farm import Farm
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config
from tests.integration.imapwire import Wire


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
