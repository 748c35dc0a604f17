"""Many idle sessions held while logins go on (a scaled-down version of the 9,000-session
run in BENCHMARKS.md): no idle session dropped, no login failed, memory per session bounded."""

from __future__ import annotations

import imaplib
import json
import subprocess
import sys
import time
from pathlib import Path

from bench.farm import Farm
from bench.patterns import Credential, format_users
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config

REPO = Path(__file__).resolve().parents[2]
SESSIONS = 600


def test_idle_sessions_held_while_logins_go_on(farm: Farm, tmp_path: Path) -> None:
    ports = ProxyPorts()
    sections = farm_config(farm, ports)
    sections.pop("pop3", None)
    proc = MailfarmProcess(tmp_path, sections, "idle-load").start()
    assert proc.proc is not None
    users = tmp_path / "users.txt"
    # Dovecot's users only: Cyrus forks a process per session, and this is about the proxy.
    dovecot = [u for u in farm.users if farm.backends[u.backend].kind == "dovecot"]
    users.write_text(format_users([Credential(u.address, u.password) for u in dovecot]))
    idle = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy.cli",
            "bench",
            "idle",
            "--port",
            str(ports.imap),
            "--users",
            str(users),
            "--sessions",
            str(SESSIONS),
            "--rate",
            "300",
            "--hold",
            "6",
            "--pid",
            str(proc.proc.pid),
            "--json",
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        text=True,
    )
    carol = farm.user("carol@example.com")
    logins = 0
    try:
        deadline = time.monotonic() + 60
        while idle.poll() is None and time.monotonic() < deadline:
            client = imaplib.IMAP4("127.0.0.1", ports.imap, timeout=15)
            assert client.login(carol.address, carol.password)[0] == "OK"
            assert client.select("INBOX")[0] == "OK"
            client.logout()
            logins += 1
        out, err = idle.communicate(timeout=60)
    finally:
        if idle.poll() is None:
            idle.kill()
        proc.stop()
    result = json.loads(out)
    held = result["targets"][0]["idle"]
    assert held["established"] == SESSIONS and held["dropped"] == 0 and held["failed"] == 0, err
    assert logins >= 10  # logins went on the whole time, every one of them OK
    assert 0 < held["kb_per_session"] < 64  # generous bound; BENCHMARKS.md has the figure
