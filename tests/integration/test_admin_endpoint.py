"""The admin endpoint of a running `mailfarm serve`: metrics from real sessions, kick, flush."""

from __future__ import annotations

import imaplib
import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bench.farm import Farm
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config, free_port
from directory.provision.adminapi import gather_sessions
from tests.integration.imapwire import Wire

TOKEN = "s3cret-admin-token"


def call(port: int, method: str, path: str, token: str | None = TOKEN) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def sample(text: bytes, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def test_metrics_kick_and_flush(farm: Farm, tmp_path: Path) -> None:
    ports, admin = ProxyPorts(), free_port()
    sections = farm_config(farm, ports, admin={"listen": [f"127.0.0.1:{admin}"], "token": TOKEN})
    proc = MailfarmProcess(tmp_path, sections, "admin").start()
    alice, bob = farm.user("alice@example.co.uk"), farm.user("bob@example.co.uk")
    try:
        client = imaplib.IMAP4("127.0.0.1", ports.imap, timeout=10)
        client.login(bob.address, bob.password)
        client.logout()
        bad = imaplib.IMAP4("127.0.0.1", ports.imap, timeout=10)
        try:
            bad.login(bob.address, "wrong")
        except imaplib.IMAP4.error:
            pass
        bad.shutdown()
        with Wire(ports.imap) as w:
            w.line()
            w.send(b"a1 LOGIN " + alice.uid.encode() + b" " + alice.password.encode() + b"\r\n")
            w.until(b"a1 OK")
            status, body = call(admin, "GET", "/metrics")
            assert status == 200
            logins = "mailfarm_logins_total"
            assert sample(body, logins, protocol="imap", outcome="ok") >= 2
            assert sample(body, logins, protocol="imap", outcome="auth-failed") >= 1
            assert sample(body, "mailfarm_sessions", protocol="imap", state="proxied") == 1
            assert sample(body, "mailfarm_backend_connect_seconds_count", protocol="imap") >= 2
            # Who is logged in where, as the admin tool and the web API gather it.
            url = f"http://127.0.0.1:{admin}"
            found, missed = gather_sessions([url, "http://127.0.0.1:9"], TOKEN, alice.address)
            assert [(s["uid"], s["protocol"], s["instance"]) for s in found] == [
                (alice.uid, "imap", url)
            ]
            assert found[0]["backend"].startswith(farm.backend_of(alice).host)
            # Logged in by uid, yet named by the directory's address and its domain.
            assert (found[0]["mail"], found[0]["domain"]) == (alice.address, "example.co.uk")
            assert [u for u, _ in missed] == ["http://127.0.0.1:9"]
            assert call(admin, "GET", "/sessions", token=None)[0] in (401, 403)
            # Kicking needs the token; then alice's session is told and closed.
            assert call(admin, "POST", f"/kick?user={alice.uid}", token=None)[0] in (401, 403)
            status, body = call(admin, "POST", f"/kick?user={alice.address}")
            assert status == 200 and json.loads(body)["kicked"] == 1
            assert w.line().startswith(b"* BYE [UNAVAILABLE]")
            assert w.closed()
        status, body = call(admin, "POST", "/flush")
        assert status == 200 and b"flushed" in body
        assert call(admin, "GET", "/healthz", token=None)[0] == 200
    finally:
        proc.stop()


def test_idle_connections_do_not_starve_healthz(farm: Farm, tmp_path: Path) -> None:
    """The hardening issue: 32 idle connections made /healthz answer 503, so a load balancer
    took a healthy instance out. Now a fresh probe is answered at once, whoever holds
    idle connections (one address or many), and the idle ones are closed within seconds."""
    ports, admin = ProxyPorts(), free_port()
    sections = farm_config(farm, ports, admin={"listen": [f"127.0.0.1:{admin}"], "token": TOKEN})
    proc = MailfarmProcess(tmp_path, sections, "admin-idle").start()
    idle: list[socket.socket] = []
    try:
        sources = ["127.0.0.5"] * 24 + [f"127.0.2.{i}" for i in range(1, 25)]  # 48 in all
        for source in sources:
            idle.append(
                socket.create_connection(("127.0.0.1", admin), 5, source_address=(source, 0))
            )
        idle[0].sendall(b"GET /heal")  # a slow drip counts as idle too
        time.sleep(0.2)
        for _ in range(3):
            started = time.monotonic()
            assert call(admin, "GET", "/healthz", token=None)[0] == 200
            assert time.monotonic() - started < 2.0
        status, body = call(admin, "GET", "/metrics")
        assert status == 200 and b"mailfarm_" in body
        # Whatever was not closed to make room is closed by the read timeout.
        deadline = time.monotonic() + 6.0
        for sock in idle:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                while sock.recv(4096):
                    pass
            except ConnectionResetError:
                pass
    finally:
        for sock in idle:
            sock.close()
        proc.stop()
