"""The admin endpoint over real loopback sockets: a real LDIF directory, real Sessions and,
for kicks, real relays between real sockets. Every status code and the token rules."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from directory.service import Directory
from proxy.admin import (
    MAX_BODY,
    MAX_CLIENTS,
    MAX_CLIENTS_PER_IP,
    MAX_HEADERS,
    MAX_LINE,
    REQUEST_TIMEOUT,
    AdminServer,
    Request,
    Response,
    start,
)
from proxy.config import Settings, load_config
from proxy.limits import Limits
from proxy.metrics import Metrics
from proxy.relay import Relay
from proxy.session import ClientInfo, CoreEnv, SessionRecord, Sessions, _relay_done

DATA = Path(__file__).parent.parent / "data" / "users.ldif"
TOKEN = "s3cret-token"
AUTH = f"Authorization: Bearer {TOKEN}\r\n"


def settings_for(tmp_path: Path, admin: str = "") -> Settings:
    path = tmp_path / "proxy.toml"
    path.write_text(
        f'[directory]\nuri = "ldif:{DATA}"\nbase = "dc=mailfarm,dc=test"\n{admin}',
        encoding="utf-8",
    )
    return load_config(path)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[CoreEnv]:
    settings = settings_for(tmp_path)
    directory = Directory(settings.directory)
    yield CoreEnv(
        directory=directory,
        proxy=settings.proxy,
        server_tls=None,
        sessions=Sessions(),
        limits=Limits(settings.proxy),
    )
    directory.close()


async def serve(env: CoreEnv, token: str, **kw: float) -> tuple[asyncio.Server, int]:
    admin = AdminServer(env, Metrics(env.directory, process=False), token, **kw)  # type: ignore[arg-type]
    server = await admin.listen("127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.fixture
async def port(env: CoreEnv) -> AsyncIterator[int]:
    server, number = await serve(env, TOKEN)
    yield number
    server.close()


@pytest.fixture
async def open_port(env: CoreEnv) -> AsyncIterator[int]:
    """A server with no token configured."""
    server, number = await serve(env, "")
    yield number
    server.close()


async def exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, status, _ = lines[0].split(" ", 2)
    assert version == "HTTP/1.1"
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:])}
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    return int(status), headers, body


async def request(port: int, method: str, target: str, auth: str = AUTH) -> tuple[int, dict]:
    status, headers, body = await exchange(
        port, f"{method} {target} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode()
    )
    assert headers["content-type"] == "application/json"
    return status, json.loads(body)


# -- endpoints ----------------------------------------------------------------------------


async def test_healthz(port: int, env: CoreEnv) -> None:
    assert await request(port, "GET", "/healthz") == (
        200,
        {"status": "ok", "preauth": 0, "proxied": 0, "worker": 0, "workers": 1},
    )


async def test_metrics_parse_back_and_read_the_cache(port: int, env: CoreEnv) -> None:
    await env.directory.lookup("alice_example_co_uk")
    await env.directory.lookup("alice_example_co_uk")
    status, headers, body = await exchange(port, f"GET /metrics HTTP/1.1\r\n{AUTH}\r\n".encode())
    assert status == 200 and headers["content-type"].startswith("text/plain; version=")
    samples = {
        s.name: s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        if not s.labels
    }
    assert samples["mailfarm_route_cache_hits_total"] == 1
    assert samples["mailfarm_route_cache_misses_total"] == 1
    assert samples["mailfarm_route_cache_entries"] == 1


async def test_flush_one_user_then_all(port: int, env: CoreEnv) -> None:
    for login in ("alice_example_co_uk", "bob@example.co.uk", "carol_example_com"):
        await env.directory.lookup(login)
    status, body = await request(port, "POST", "/flush?user=alice%40example.co.uk")
    assert status == 200 and body["user"] == "alice@example.co.uk" and body["flushed"] >= 1
    assert env.directory.cache.get("alice_example_co_uk") is None
    assert env.directory.cache.get("carol_example_com") is not None
    status, body = await request(port, "POST", "/flush")
    assert status == 200 and body["user"] is None and body["flushed"] >= 2
    assert len(env.directory.cache) == 0


async def test_post_body_is_drained_and_ignored(port: int) -> None:
    raw = f"POST /flush HTTP/1.0\r\n{AUTH}Content-Length: 5\r\n\r\nhello".encode()
    status, _, body = await exchange(port, raw)
    assert status == 200 and json.loads(body)["flushed"] == 0


# -- kick, over real relays ----------------------------------------------------------------


class _Accept(asyncio.Protocol):
    """Holds the accepted transport until the relay takes it over with set_protocol."""

    def __init__(self, queue: asyncio.Queue[asyncio.Transport]) -> None:
        self.queue = queue

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.queue.put_nowait(transport)  # type: ignore[arg-type]


async def proxied_session(
    env: CoreEnv,
    front: int,
    back: int,
    queue: asyncio.Queue,
    backends: asyncio.Queue,
    protocol: str,
    login: str,
    uid: str,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, asyncio.StreamReader, Relay]:
    """A user's client connected through a real Relay to a real backend socket."""
    loop = asyncio.get_running_loop()
    user_reader, user_writer = await asyncio.open_connection("127.0.0.1", front)
    client_side = await queue.get()
    backend_side, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", back)
    backend_reader, _ = await backends.get()
    slot = env.limits.admit("127.0.0.1", True)
    assert slot is not None
    relay = Relay(client_side, backend_side, 60.0, _relay_done(env, slot, 0, 0))
    client = ClientInfo("127.0.0.1", 1, "127.0.0.1", 143, False)
    env.sessions.relays.add(relay)
    env.sessions.records[relay] = SessionRecord(protocol, client, login=login, uid=uid)
    relay.start()
    return user_reader, user_writer, backend_reader, relay


async def test_kick_closes_that_users_sessions_with_each_protocols_goodbye(
    port: int, env: CoreEnv
) -> None:
    loop = asyncio.get_running_loop()
    accepted: asyncio.Queue[asyncio.Transport] = asyncio.Queue()
    backends: asyncio.Queue = asyncio.Queue()

    async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await backends.put((reader, writer))

    front = await loop.create_server(lambda: _Accept(accepted), "127.0.0.1", 0)
    back = await asyncio.start_server(backend, "127.0.0.1", 0)
    fport, bport = front.sockets[0].getsockname()[1], back.sockets[0].getsockname()[1]
    try:
        alice_imap = await proxied_session(
            env,
            fport,
            bport,
            accepted,
            backends,
            "imap",
            "Alice@Example.co.uk",
            "alice_example_co_uk",
        )
        alice_pop3 = await proxied_session(
            env,
            fport,
            bport,
            accepted,
            backends,
            "pop3",
            "alice_example_co_uk",
            "alice_example_co_uk",
        )
        bob = await proxied_session(
            env, fport, bport, accepted, backends, "imap", "bob", "bob_example_co_uk"
        )
        alice_imap[1].write(b"a1 NOOP\r\n")  # the relay really relays
        assert await asyncio.wait_for(alice_imap[2].readline(), 5) == b"a1 NOOP\r\n"
        assert (await request(port, "GET", "/healthz"))[1]["proxied"] == 3
        status, body = await request(port, "GET", "/sessions")
        assert status == 200 and len(body["sessions"]) == 3
        status, body = await request(port, "GET", "/sessions?user=alice_example_co_uk")
        listed = sorted((s["protocol"], s["uid"], s["client"]) for s in body["sessions"])
        assert listed == [
            ("imap", "alice_example_co_uk", "127.0.0.1:1"),
            ("pop3", "alice_example_co_uk", "127.0.0.1:1"),
        ]
        assert (await request(port, "GET", "/sessions?usr=x"))[0] == 400

        status, body = await request(port, "POST", "/kick?user=ALICE@example.co.uk")
        assert (status, body) == (200, {"kicked": 1, "user": "ALICE@example.co.uk"})
        imap_bye = await asyncio.wait_for(alice_imap[0].read(), 5)
        assert imap_bye.startswith(b"* BYE [UNAVAILABLE] ") and imap_bye.endswith(b"\r\n")

        status, body = await request(port, "POST", "/kick?user=Alice_Example_Co_UK")
        assert (status, body) == (200, {"kicked": 1, "user": "Alice_Example_Co_UK"})
        pop3_bye = await asyncio.wait_for(alice_pop3[0].read(), 5)
        assert pop3_bye.startswith(b"-ERR [SYS/TEMP] ") and pop3_bye.endswith(b"\r\n")
        assert alice_imap[3].reason == alice_pop3[3].reason == "kicked"
        assert await asyncio.wait_for(alice_pop3[2].read(), 5) == b""  # backend closed too

        assert env.sessions.relays == {bob[3]}
        assert await request(port, "POST", "/kick?user=alice_example_co_uk") == (
            200,
            {"kicked": 0, "user": "alice_example_co_uk"},
        )
        bob[1].write(b"b1 NOOP\r\n")  # untouched
        assert await asyncio.wait_for(bob[2].readline(), 5) == b"b1 NOOP\r\n"
    finally:
        for relay in list(env.sessions.relays):
            relay.finish("test-end")
        front.close()
        back.close()


# -- authorisation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "auth",
    [
        "",
        "Authorization: Bearer wrong\r\n",
        f"Authorization: Bearer {TOKEN}x\r\n",
        f"Authorization: Basic {TOKEN}\r\n",
        f"Authorization: {TOKEN}\r\n",
        "Authorization: Bearer \r\n",
    ],
)
async def test_every_request_needs_the_token(port: int, auth: str) -> None:
    """Everything but the load balancers' liveness probe (GET /healthz) needs the token."""
    status, _, _ = await exchange(port, f"GET /healthz HTTP/1.1\r\n{auth}\r\n".encode())
    assert status == 200
    for method, path in [
        ("GET", "/metrics"),
        ("POST", "/kick?user=a"),
        ("GET", "/nowhere"),
    ]:
        status, headers, _ = await exchange(
            port, f"{method} {path} HTTP/1.1\r\n{auth}\r\n".encode()
        )
        assert status == 401
        assert headers["www-authenticate"].startswith("Bearer")


async def test_bearer_scheme_is_case_insensitive(port: int) -> None:
    status, _ = await request(port, "GET", "/healthz", f"authorization: bearer {TOKEN}\r\n")
    assert status == 200


async def test_without_token_only_gets_are_served(open_port: int) -> None:
    assert (await request(open_port, "GET", "/healthz", ""))[0] == 200
    status, _, _ = await exchange(open_port, b"GET /metrics HTTP/1.1\r\n\r\n")
    assert status == 200
    for target in ("/flush", "/flush?user=alice", "/kick?user=alice"):
        # Not even the right token would help: there is none to match.
        assert (await request(open_port, "POST", target))[0] == 403


# -- routing and request errors -----------------------------------------------------------


async def test_unknown_path_and_wrong_method(port: int) -> None:
    assert (await request(port, "GET", "/"))[0] == 404
    assert (await request(port, "GET", "/healthz/"))[0] == 404
    for method, target, allow in [
        ("GET", "/flush", "POST"),
        ("GET", "/kick?user=a", "POST"),
        ("POST", "/metrics", "GET"),
        ("DELETE", "/healthz", "GET"),
        ("HEAD", "/healthz", "GET"),
    ]:
        status, headers, _ = await exchange(
            port, f"{method} {target} HTTP/1.1\r\n{AUTH}\r\n".encode()
        )
        assert (status, headers["allow"]) == (405, allow)


@pytest.mark.parametrize(
    "target",
    [
        "/kick",
        "/kick?user=",
        "/kick?user=a&user=b",
        "/kick?usr=a",
        "/flush?usr=alice",
        "/flush?user=alice&x=1",
        "/kick?user=" + "a" * 600,
        "/kick?" + "&".join(["a=1"] * 20),
    ],
)
async def test_bad_parameters(port: int, target: str) -> None:
    assert (await request(port, "POST", target))[0] == 400


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /healthz\r\n\r\n", 400),
        (b"GET  /healthz HTTP/1.1\r\n\r\n", 400),
        (b"GET healthz HTTP/1.1\r\n\r\n", 400),
        (b"GET http://x/healthz HTTP/1.1\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1x\r\n\r\n", 400),
        (b"G(T /healthz HTTP/1.1\r\n\r\n", 400),
        (b"GET /health\x01z HTTP/1.1\r\n\r\n", 400),
        (b"GET /healthz HTTP/2.0\r\n\r\n", 505),
        (b"GET /healthz HTTP/1.1\r\nNoColon\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", 400),
        (b"POST /flush HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400),
        (b"POST /flush HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST /flush HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx", 400),
        (b"POST /flush HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort", 400),
        (b"POST /flush HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
        (b"POST /flush HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1), 413),
        (b"POST /flush HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", 413),
        (b"GET /" + b"a" * MAX_LINE + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET /healthz HTTP/1.1\r\nX: " + b"a" * MAX_LINE + b"\r\n\r\n", 431),
        (b"GET /healthz HTTP/1.1\r\n" + b"X: y\r\n" * (MAX_HEADERS + 1) + b"\r\n", 431),
        (b"GET /healthz HTTP/1.1\r\n" + (b"X: " + b"a" * 4000 + b"\r\n") * 5 + b"\r\n", 431),
        (b"GET /healthz HTTP/1.1\r\nX: y", 400),  # the client stopped mid-request
    ],
)
async def test_malformed_and_oversized_requests(port: int, raw: bytes, status: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    writer.write_eof()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert data.startswith(b"HTTP/1.1 %d " % status), data[:80]
    assert "error" in json.loads(data.partition(b"\r\n\r\n")[2])


async def test_a_failing_endpoint_answers_500_and_the_server_goes_on(env: CoreEnv) -> None:
    admin = AdminServer(env, Metrics(env.directory, process=False), "")

    async def broken(request: Request) -> Response:
        raise RuntimeError("bug")

    admin.routes["/broken"] = ("GET", broken, True)
    server = await admin.listen("127.0.0.1", 0)
    number = server.sockets[0].getsockname()[1]
    try:
        assert (await exchange(number, b"GET /broken HTTP/1.1\r\n\r\n"))[0] == 500
        assert (await exchange(number, b"GET /healthz HTTP/1.1\r\n\r\n"))[0] == 200
    finally:
        server.close()


async def test_bare_lf_and_http10_are_understood(port: int) -> None:
    raw = f"GET /healthz HTTP/1.0\n{AUTH.strip()}\n\n".encode()
    assert (await exchange(port, raw))[0] == 200


async def test_silent_client_times_out(env: CoreEnv) -> None:
    server, number = await serve(env, "", request_timeout=0.2)
    try:
        status, _, _ = await exchange(number, b"GET /heal")
        assert status == 408
    finally:
        server.close()


async def test_connection_limit_when_every_slot_is_being_served(env: CoreEnv) -> None:
    """Only requests already read and being answered are never given up for a newcomer:
    with all of those busy, the newcomer gets a 503 and the busy ones finish."""
    admin = AdminServer(env, Metrics(env.directory, process=False), "", max_clients=1)
    release = asyncio.Event()

    async def slow(request: Request) -> Response:
        await release.wait()
        return Response(200, b"{}\n")

    admin.routes["/slow"] = ("GET", slow, True)
    server = await admin.listen("127.0.0.1", 0)
    number = server.sockets[0].getsockname()[1]
    try:
        busy = asyncio.create_task(exchange(number, b"GET /slow HTTP/1.1\r\n\r\n"))
        await asyncio.sleep(0.1)
        assert (await exchange(number, b"GET /healthz HTTP/1.1\r\n\r\n"))[0] == 503
        release.set()
        assert (await busy)[0] == 200
        assert (await exchange(number, b"GET /healthz HTTP/1.1\r\n\r\n"))[0] == 200
    finally:
        server.close()


async def idle_connections(
    port: int, sources: list[str]
) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """One connection from each source address (repeat one for several), saying nothing."""
    out = []
    for source in sources:
        out.append(await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)))
    await asyncio.sleep(0.1)
    return out


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bytes:
    """What the server sent before closing; fails if it keeps the connection ``within`` s."""
    return await asyncio.wait_for(reader.read(), within)


async def test_idle_connections_from_one_address_do_not_starve_healthz(env: CoreEnv) -> None:
    """The hardening issue: 32 idle connections to /healthz made it answer 503 to everyone."""
    server, number = await serve(env, "")
    idle = await idle_connections(number, ["127.0.0.2"] * (MAX_CLIENTS + 8))
    try:
        # A load balancer's probe from another address is served at once...
        started = asyncio.get_running_loop().time()
        assert (await request(number, "GET", "/healthz", ""))[0] == 200
        assert asyncio.get_running_loop().time() - started < 1.0
        # ...and so is one from the noisy address itself: its own oldest silent
        # connection gives way.
        assert await status_from("127.0.0.2", number) == 200
        # One address never holds more than its share of the table.
        await asyncio.sleep(0.05)
        still_open = [r for r, _ in idle if not r.at_eof()]
        assert len(still_open) <= MAX_CLIENTS_PER_IP
    finally:
        for _, writer in idle:
            writer.close()
        server.close()


async def test_a_full_table_gives_up_the_longest_silent_connection(env: CoreEnv) -> None:
    """Slowloris from many addresses (one connection each, under the per-address cap)."""
    server, number = await serve(env, "")
    sources = [f"127.0.1.{i}" for i in range(1, MAX_CLIENTS + 11)]
    idle = await idle_connections(number, sources)
    try:
        assert (await request(number, "GET", "/healthz", ""))[0] == 200
        # The first ones to connect (and say nothing) were closed to make room.
        assert await closed_by_server(idle[0][0], 1.0) == b""
        assert not idle[-1][0].at_eof()
    finally:
        for _, writer in idle:
            writer.close()
        server.close()


async def test_bookkeeping_returns_to_zero(env: CoreEnv) -> None:
    admin = AdminServer(env, Metrics(env.directory, process=False), "", max_clients=4)
    server = await admin.listen("127.0.0.1", 0)
    number = server.sockets[0].getsockname()[1]
    try:
        idle = await idle_connections(number, ["127.0.0.2"] * 10 + ["127.0.0.3"] * 3)
        assert (await request(number, "GET", "/healthz", ""))[0] == 200
        for _, writer in idle:
            writer.close()
        for _ in range(100):
            if admin.connections == 0:
                break
            await asyncio.sleep(0.02)
        assert admin.connections == 0 and admin.connections_by_address == {}
    finally:
        server.close()


async def test_default_read_timeout_is_short(env: CoreEnv) -> None:
    """A client that connects and says nothing is answered 408 and closed within seconds
    (it was 10 s: long enough for a slow drip to hold a slot most of the time)."""
    server, number = await serve(env, "")
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", number)
        writer.write(b"GET /hea")  # a slow drip: part of a request line, then nothing
        data = await closed_by_server(reader, REQUEST_TIMEOUT + 1.0)
        assert data.startswith(b"HTTP/1.1 408 ")
        assert REQUEST_TIMEOUT <= 5.0
        writer.close()
    finally:
        server.close()


async def status_from(source: str, port: int) -> int:
    """The status of ``GET /healthz`` sent from the loopback address ``source``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(b"GET /healthz HTTP/1.1\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return int(data.split(b" ", 2)[1])


async def test_client_leaving_early_does_not_hurt(port: int) -> None:
    for raw in (b"", b"GET /healthz HTTP/1.1\r\n"):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw)
        writer.close()
    await asyncio.sleep(0.05)
    assert (await request(port, "GET", "/healthz"))[0] == 200


# -- the SERVICES entry point -------------------------------------------------------------


def free_port(span: int = 1) -> int:
    """A port such that it and the ``span - 1`` after it are free right now."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        try:
            for port in range(base, base + span):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base


async def test_start_listens_where_configured(tmp_path: Path, env: CoreEnv) -> None:
    assert await start(settings_for(tmp_path), env) == []
    number = free_port()
    settings = settings_for(
        tmp_path, f'[admin]\nlisten = "127.0.0.1:{number}"\ntoken = "{TOKEN}"\n'
    )
    servers = await start(settings, env)  # CoreEnv without a metrics field: falls back
    try:
        assert len(servers) == 1
        assert (await request(number, "GET", "/healthz"))[0] == 200
        assert (await request(number, "GET", "/healthz", ""))[0] == 200  # open probe
        assert (await request(number, "GET", "/metrics", ""))[0] == 401
    finally:
        for s in servers:
            s.close()


async def test_each_worker_gets_its_own_port(tmp_path: Path, env: CoreEnv) -> None:
    base = free_port(3)
    settings = settings_for(tmp_path, f'[admin]\nlisten = "127.0.0.1:{base}"\n')
    worker_env = dataclasses.replace(env, workers=4, worker=2)
    servers = await start(settings, worker_env)
    try:
        assert servers[0].sockets[0].getsockname()[1] == base + 2
    finally:
        for s in servers:
            s.close()
