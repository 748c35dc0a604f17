"""The dashboard's data from a real mailfarm in front of the farm: logins counted, a held
session seen by protocol and by backend, backends and instances that are down said so."""

from __future__ import annotations

import asyncio
import http.server
import imaplib
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.farm import Farm
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config, free_port, render_toml
from directory.settings import Backends, ProvisionSettings
from proxy.config import load_config
from tests.integration.provision_helpers import provision_sections
from tests.integration.silent import silent_listener
from web.dashboard import Dashboard

TOKEN = "dashboard-admin-token"
CLOSED_HOST = "127.0.0.9"  # nothing listens there


@dataclass(frozen=True)
class Config:
    """A ToolConfig as the web process holds one (only what the dashboard reads)."""

    provision: ProvisionSettings
    backends: Backends
    admin_token: str


class FakeClock:
    """A minute passes between snapshots, so a rate per minute is the count itself."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Instance:
    ports: ProxyPorts
    admin: int


@pytest.fixture(scope="module")
def instance(farm: Farm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    ports, admin = ProxyPorts(), free_port()
    sections = farm_config(farm, ports, admin={"listen": [f"127.0.0.1:{admin}"], "token": TOKEN})
    process = MailfarmProcess(tmp_path_factory.mktemp("dashboard"), sections, "dash").start()
    yield Instance(ports, admin)
    process.stop()


def config(farm: Farm, tmp_path: Path, urls: list[str], token: str = TOKEN) -> Config:
    sections = provision_sections(farm, admin={"token": token})
    sections["provision"]["admin_urls"] = urls
    sections["provision"]["hosts"] = [*sections["provision"]["hosts"], CLOSED_HOST]
    path = tmp_path / "tool.toml"
    path.write_text(render_toml(sections))
    settings = load_config(path)
    return Config(settings.provision, settings.backends, settings.admin_token)


def healthz(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
        return json.loads(answer.read())


def settle(port: int, proxied: int) -> None:
    """Wait until the instance's own count says the logged-out sessions have ended."""
    deadline = time.monotonic() + 10
    while (h := healthz(port))["proxied"] != proxied or h["preauth"]:
        assert time.monotonic() < deadline, h
        time.sleep(0.05)


def test_dashboard_snapshots(farm: Farm, instance: Instance, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{instance.admin}"
    dead = f"http://127.0.0.1:{free_port()}"
    clock = FakeClock()
    dashboard = Dashboard(config(farm, tmp_path, [url, dead]), clock=clock)
    alice, carol = farm.user("alice@example.co.uk"), farm.user("carol@example.com")
    mail1 = farm.backend_of(alice).host

    settle(instance.admin, 0)
    first = dashboard.snapshot()
    live, down = first["instances"]
    assert live["url"] == url and live["up"] and live["problem"] is None
    assert live["rates"] is None  # measuring
    assert first["totals"]["logins_per_minute"] is None and first["totals"]["measuring"] == 1
    assert down == {"url": dead, "up": False, "problem": "connection refused"}
    assert first["totals"]["instances"] == 2 and first["totals"]["instances_up"] == 1

    backends = {b["host"]: b for b in first["backends"]}
    assert backends[mail1]["up"] and backends[mail1]["seconds"] < 1
    assert backends[mail1]["kind"] == "dovecot"
    assert backends[mail1]["port"] == farm.backend_of(alice).imap_port
    assert backends[CLOSED_HOST]["up"] is False and backends[CLOSED_HOST]["problem"]
    assert first["backends_down"] >= 1

    # Two good logins and out, one wrong password, and one session held open.
    for user in (alice, carol):
        client = imaplib.IMAP4("127.0.0.1", instance.ports.imap, timeout=10)
        client.login(user.address, user.password)
        client.logout()
    bad = imaplib.IMAP4("127.0.0.1", instance.ports.imap, timeout=10)
    with pytest.raises(imaplib.IMAP4.error):
        bad.login(alice.address, "not the password")
    bad.shutdown()
    held = imaplib.IMAP4("127.0.0.1", instance.ports.imap, timeout=10)
    held.login(alice.address, alice.password)
    try:
        settle(instance.admin, 1)
        clock.now += 60
        second = dashboard.snapshot()
    finally:
        held.logout()

    live, down = second["instances"]
    assert live["rates"]["seconds"] == 60
    assert live["rates"]["logins_per_minute"] == 3
    assert live["rates"]["failed_logins_per_minute"] == 1
    assert live["failed_logins_total"] == first["instances"][0]["failed_logins_total"] + 1
    assert live["sessions"]["imap"] == {"preauth": 0, "proxied": 1}
    assert live["sessions_by_backend"] == {mail1: 1} and live["sessions_problem"] is None
    assert not down["up"]
    totals = second["totals"]
    assert totals["logins_per_minute"] == 3 and totals["failed_logins_per_minute"] == 1
    assert totals["login_outcomes_per_minute"]["auth-failed"] == 1
    assert totals["sessions"]["imap"]["proxied"] == 1
    assert totals["sessions_by_backend"] == {mail1: 1} and totals["measuring"] == 0
    assert TOKEN not in json.dumps(second)

    # Within max_age, callers share the snapshot rather than scraping again.
    assert dashboard.snapshot() == second


def test_inside_an_event_loop_and_a_wrong_token(
    farm: Farm, instance: Instance, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{instance.admin}"
    dashboard = Dashboard(config(farm, tmp_path, [url]), max_age=0)

    async def from_a_coroutine() -> dict[str, Any]:
        # Blocking, but never asyncio.run(): callable where a loop already runs, and from
        # the loop's thread pool as the web layer calls it.
        dashboard.snapshot()
        return await asyncio.get_running_loop().run_in_executor(None, dashboard.snapshot)

    snap = asyncio.run(from_a_coroutine())
    (live,) = snap["instances"]
    assert live["up"] and live["rates"] is not None  # the second had the first to go by

    # With a token set, the instance wants it for /metrics as well: a wrong one is "down".
    wrong = Dashboard(config(farm, tmp_path, [url], token="not-the-token"))
    (shown,) = wrong.snapshot()["instances"]
    assert not shown["up"] and shown["problem"].startswith("HTTP 401")
    assert "not-the-token" not in json.dumps(shown)


def test_instance_without_token(farm: Farm, tmp_path: Path) -> None:
    """No [admin] token anywhere: /metrics is open, /sessions is not served."""
    ports, admin = ProxyPorts(), free_port()
    sections = farm_config(farm, ports, admin={"listen": [f"127.0.0.1:{admin}"]})
    with MailfarmProcess(tmp_path, sections, "open").start():
        url = f"http://127.0.0.1:{admin}"
        snap = Dashboard(config(farm, tmp_path, [url], token="")).snapshot()
    (live,) = snap["instances"]
    assert live["up"] and live["sessions"]["imap"] == {"preauth": 0, "proxied": 0}
    assert live["sessions_by_backend"] is None and "token" in live["sessions_problem"]
    assert snap["totals"]["sessions_by_backend"] is None
    assert snap["totals"]["sessions_by_backend_complete"] is False


class _Misbehaving(http.server.BaseHTTPRequestHandler):
    """/r/...: a redirect; /big/...: more than the cap; /other/...: not a mailfarm page.
    Every Authorization header that arrives is kept, to check where the token went."""

    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization")))
        if self.path.startswith("/r/"):
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/x")
            self.end_headers()
            return
        body = b"x 1\n" * (2 << 20) if self.path.startswith("/big/") else b"other_metric 1\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass  # the dashboard stopped reading at its cap

    def log_message(self, *args: object) -> None:
        pass


def test_misbehaving_instances_are_each_down_alone(
    farm: Farm, instance: Instance, tmp_path: Path
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Misbehaving)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        with silent_listener("127.0.0.1", 0) as silent:
            urls = [
                f"http://127.0.0.1:{instance.admin}",
                f"http://127.0.0.1:{silent}",
                f"{base}/r",
                f"{base}/big",
                f"{base}/other",
                "file:///etc/passwd",
                f"http://user:pw@127.0.0.1:{free_port()}",
            ]
            started = time.monotonic()
            snap = Dashboard(config(farm, tmp_path, urls)).snapshot()
            took = time.monotonic() - started
    finally:
        server.shutdown()
        server.server_close()
    problems = [i["problem"] for i in snap["instances"]]
    assert problems[0] is None and snap["instances"][0]["up"]
    assert problems[1:] == [
        "no answer within 2 s",
        "answered 302: redirects are not followed",  # the token would go along
        "answer larger than 4 MiB",
        "answer is not a mailfarm /metrics page",
        "not an http:// or https:// URL",
        "name not resolved (Name or service not known)",  # urllib takes no user:pw@
    ]
    assert snap["instances"][-1]["url"].startswith("http://127.0.0.1:")  # no user:pw
    assert took < 5, took  # instances are scraped side by side
    assert ("/x", f"Bearer {TOKEN}") not in _Misbehaving.seen
    assert TOKEN not in json.dumps(snap) and "pw@" not in json.dumps(snap)
