"""The admin token goes to the instance in ``[provision] admin_urls`` and nowhere else.

Real HTTP servers on 127.0.0.1 stand in for an instance, for where its redirect points and
for an ``http_proxy`` from the environment: the last two must never hear from adminapi.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from directory.provision import Unavailable
from directory.provision.adminapi import call, gather_sessions, tell_every_instance
from directory.provision.adminhttp import Unreachable, fetch, opener

TOKEN = "t0ken-that-must-stay-home"
SESSIONS = {"sessions": [{"uid": "alice", "protocol": "imap", "backend": "b1:143"}]}


@dataclass
class Server:
    """An HTTP server that records each request and answers ``status`` (with ``location``
    for a redirect, ``reason`` as the status line's text)."""

    status: int = 200
    location: str = ""
    reason: str = ""
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)
    httpd: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> Server:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                server.seen.append((self.command, self.path, self.headers.get("Authorization")))
                body = json.dumps(SESSIONS if "/sessions" in self.path else {"ok": 1}).encode()
                self.send_response(server.status, server.reason or None)
                if server.location:
                    self.send_header("Location", server.location)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def serve(servers: list[Server], **kwargs: object) -> Server:
    server = Server(**kwargs).start()  # type: ignore[arg-type]
    servers.append(server)
    return server


def asked(server: Server) -> list[tuple[str, str, str | None]]:
    """The requests but adminapi's ``GET /healthz`` probes (how many workers?), which must
    carry no token: /healthz is open, so the token has no business going there."""
    probes = [entry for entry in server.seen if entry[1] == "/healthz"]
    assert all(entry == ("GET", "/healthz", None) for entry in probes), probes
    return [entry for entry in server.seen if entry[1] != "/healthz"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def proxy_env(monkeypatch: pytest.MonkeyPatch, servers: list[Server]) -> Server:
    """A proxy named in every variable urllib reads, with nothing exempted."""
    proxy = serve(servers)
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, proxy.url)
        monkeypatch.setenv(name.upper(), proxy.url)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    return proxy


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_a_failure_and_is_not_followed(servers: list[Server], status: int) -> None:
    target = serve(servers)
    instance = serve(servers, status=status, location=f"{target.url}/stolen")

    with pytest.raises(Unavailable) as raised:
        call([instance.url], TOKEN, "flush", "alice")
    refusal = "redirects are not followed"
    assert str(raised.value) == f"flush on {instance.url}: answered {status}: {refusal}"

    notified = tell_every_instance([instance.url], TOKEN, ["alice"], ["flush", "kick"])
    assert notified.reached == ()
    assert notified.missed == (
        (instance.url, f"flush on {instance.url}: answered {status}: {refusal}"),
    )

    found, missed = gather_sessions([instance.url], TOKEN, "alice")
    assert found == []
    assert missed == ((instance.url, f"sessions on {instance.url}: answered {status}: {refusal}"),)

    assert target.seen == []  # not the token, not even a request
    assert [auth for _, _, auth in asked(instance)] == [f"Bearer {TOKEN}"] * 3


def test_a_redirect_does_not_stop_the_other_instances(servers: list[Server]) -> None:
    target = serve(servers)
    redirecting = serve(servers, status=302, location=target.url)
    good = serve(servers)

    notified = tell_every_instance([redirecting.url, good.url], TOKEN, ["alice"], ["kick"])
    assert notified.reached == (good.url,)
    assert [url for url, _ in notified.missed] == [redirecting.url]
    assert asked(good) == [("POST", "/kick?user=alice", f"Bearer {TOKEN}")]
    assert target.seen == []


def test_environment_proxy_is_not_used(servers: list[Server], proxy_env: Server) -> None:
    instance = serve(servers)

    assert call([instance.url], TOKEN, "flush", "alice") == []
    notified = tell_every_instance([instance.url], TOKEN, ["alice"], ["kick"])
    assert notified.reached == (instance.url,) and notified.missed == ()
    found, missed = gather_sessions([instance.url], TOKEN)
    assert missed == ()
    assert [(s["uid"], s["instance"]) for s in found] == [("alice", instance.url)]

    assert proxy_env.seen == []
    assert asked(instance) == [
        ("POST", "/flush?user=alice", f"Bearer {TOKEN}"),
        ("POST", "/kick?user=alice", f"Bearer {TOKEN}"),
        ("GET", "/sessions", f"Bearer {TOKEN}"),
    ]


def test_the_opener_uses_no_proxy_and_follows_no_redirect(
    servers: list[Server], proxy_env: Server
) -> None:
    target = serve(servers)
    instance = serve(servers, status=302, location=target.url)
    with pytest.raises(Exception) as raised:
        opener().open(f"{instance.url}/metrics", timeout=5)
    assert getattr(raised.value, "code", None) == 302
    assert [path for _, path, _ in instance.seen] == ["/metrics"]
    assert target.seen == [] and proxy_env.seen == []


def test_problems_hold_neither_token_nor_url_credentials(servers: list[Server]) -> None:
    echoing = serve(servers, status=403, reason=f"Forbidden: Bearer {TOKEN}")
    with pytest.raises(Unavailable) as raised:
        call([echoing.url], TOKEN, "kick", "alice")
    assert str(raised.value) == f"kick on {echoing.url}: HTTP 403 Forbidden: Bearer [token]"

    port = echoing.url.rsplit(":", 1)[1]
    secret_url = f"http://admin:hunter2@127.0.0.1:{port}"
    notified = tell_every_instance([secret_url], TOKEN, ["alice"], ["flush"])
    found, missed = gather_sessions([secret_url], TOKEN)
    assert notified.reached == () and found == []
    for url, problem in [*notified.missed, *missed]:
        assert url == f"http://127.0.0.1:{port}"
        assert "hunter2" not in problem and TOKEN not in problem
    with pytest.raises(Unavailable) as raised:
        call([secret_url], TOKEN, "flush", "alice")
    assert "hunter2" not in str(raised.value) and TOKEN not in str(raised.value)


def test_refused_is_still_only_a_warning() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    warnings = call([url], TOKEN, "flush", "alice")
    assert warnings == [f"flush on {url}: connection refused (instance down: nothing to do there)"]


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "data:,hello"])
def test_only_http_urls_are_fetched(url: str) -> None:
    with pytest.raises(Unreachable, match="not an http:// or https:// URL"):
        fetch(url, TOKEN)


def test_an_oversized_answer_is_given_up(servers: list[Server]) -> None:
    instance = serve(servers)
    with pytest.raises(Unreachable, match="answer larger than 10 bytes"):
        fetch(f"{instance.url}/sessions", TOKEN, limit=10)
