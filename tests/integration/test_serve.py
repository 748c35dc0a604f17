"""`mailfarm serve` as an operator runs it: bad config, SIGHUP reload, SIGTERM drain, demo."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.farm import Farm
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config
from tests.integration.imapwire import Wire

REPO = Path(__file__).resolve().parents[2]


def wait_for(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_serve_with_bad_config_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "proxy.toml"
    bad.write_text('[directory]\nuri = "ldap://x"\nbase = "dc=x"\n[imap]\nlisten = "nowhere"\n')
    result = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "serve", "-c", str(bad)],
        capture_output=True, text=True, timeout=30, cwd=REPO,
    )
    assert result.returncode == 2
    assert f"{bad}: [imap] listen: 'nowhere' is not HOST:PORT" in result.stderr


def test_sighup_reloads_tls_and_flushes_cache(farm: Farm, proxy) -> None:  # type: ignore[no-untyped-def]
    proxy.process.signal(signal.SIGHUP)
    assert wait_for(lambda: "route cache flushed" in proxy.process.log_text())
    assert "TLS certificate reloaded" in proxy.process.log_text()
    user = farm.user("carol@example.com")
    with Wire(proxy.ports.imap) as w:  # still serving
        w.line()
        w.send(b"a1 LOGIN " + user.uid.encode() + b" " + user.password.encode() + b"\r\n")
        assert w.until(b"a1 ")[-1].startswith(b"a1 OK")


def test_sigterm_drains_then_says_bye(farm: Farm, tmp_path: Path) -> None:
    ports = ProxyPorts()
    sections = farm_config(farm, ports, proxy={"shutdown_grace": 1.5})
    proc = MailfarmProcess(tmp_path, sections, "drain").start()
    user = farm.user("alice@example.co.uk")
    try:
        with Wire(ports.imap) as w:
            w.line()
            w.send(b"a1 LOGIN " + user.uid.encode() + b" " + user.password.encode() + b"\r\n")
            w.until(b"a1 OK")
            proc.signal(signal.SIGTERM)
            assert wait_for(lambda: "stopping:" in proc.log_text())
            # New clients are refused at once ...
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", ports.imap), timeout=2).close()
            # ... while the session in progress keeps working during the grace period,
            w.send(b"a2 NOOP\r\n")
            assert w.until(b"a2 ")[-1].startswith(b"a2 OK")
            # and is told why when the grace period ends.
            assert w.line().startswith(b"* BYE")
            assert w.closed()
        assert proc.proc is not None and proc.proc.wait(10) == 0
    finally:
        proc.stop()
    assert f"uid={user.uid}" in proc.log_text()


def test_demo_check() -> None:
    """The README's first command: the demo starts a farm and mailfarm that really work."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.demo", "--check"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "alice@example.co.uk logged in through mailfarm to mail1" in result.stdout
    assert "bob@example.co.uk logged in through mailfarm to mail2" in result.stdout


def test_workers_share_the_listeners(farm: Farm, tmp_path: Path) -> None:
    import imaplib
    import os
    import re

    ports = ProxyPorts()
    sections = farm_config(farm, ports, proxy={"workers": 2})
    proc = MailfarmProcess(tmp_path, sections, "workers").start()
    user = farm.user("alice@example.co.uk")
    try:
        assert wait_for(lambda: proc.log_text().count("mailfarm ready") == 2)
        for _ in range(24):
            client = imaplib.IMAP4("127.0.0.1", ports.imap, timeout=15)
            client.login(user.address, user.password)
            client.logout()
        assert wait_for(lambda: proc.log_text().count(f"uid={user.uid}") >= 24)
        pattern = r"mailfarm\.session\[(\d+)\]: session .*uid=" + user.uid
        pids = set(re.findall(pattern, proc.log_text()))
        assert len(pids) == 2, pids  # the kernel spread the connections over both workers
        # A worker that dies is replaced; the service goes on.
        os.kill(int(sorted(pids)[0]), 9)
        assert wait_for(lambda: "restarting" in proc.log_text())
        assert wait_for(lambda: proc.log_text().count("mailfarm ready") == 3)
        client = imaplib.IMAP4("127.0.0.1", ports.imap, timeout=15)
        assert client.login(user.address, user.password)[0] == "OK"
        client.logout()
        proc.signal(signal.SIGTERM)
        assert proc.proc is not None and proc.proc.wait(15) == 0
    finally:
        proc.stop()
