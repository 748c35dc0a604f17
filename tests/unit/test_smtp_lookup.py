"""The lookup service over the embedded LDIF directory, driven through its protocol objects
with fake transports (no sockets): map answers, domain cache, framing, ordering, errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from ipaddress import ip_network
from pathlib import Path

import pytest

from directory.domains import DomainCheck, make_probe
from directory.model import DirectoryUnavailable
from directory.service import Directory
from proxy.config import LOOPBACK, Settings, load_config
from proxy.smtp.lookup import MapProtocol, MapService, SocketmapCodec, TcpTableCodec
from proxy.smtp.maps import Status
from proxy.smtp.netstring import NetstringDecoder, encode

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    config = tmp_path / "proxy.toml"
    config.write_text(
        f'[directory]\nuri = "ldif:{DATA}/users.ldif"\nbase = "dc=mailfarm,dc=test"\n'
        '[lookup]\ntransport = "lmtp:inet:{host}:2424"\n'
    )
    return load_config(config)


@pytest.fixture
def service(settings: Settings) -> Iterator[MapService]:
    directory = Directory(settings.directory)
    yield MapService(settings.lookup, directory, DomainCheck(directory))
    directory.close()


async def ask(service: MapService, name: str, key: str) -> tuple[Status, str]:
    answer = await service.answer(name, key.encode())
    return answer.status, answer.text


async def test_maps(service: MapService) -> None:
    found = Status.FOUND
    assert await ask(service, "transport", "Alice+x@Example.co.uk") == (
        found,
        "lmtp:inet:127.0.0.2:2424",
    )
    assert await ask(service, "mailboxes", "bob@example.co.uk") == (found, "bob_example_co_uk")
    assert await ask(service, "aliases", "bob@example.co.uk") == (found, "bob@mbox3.example.co.uk")
    assert (await ask(service, "aliases", "alice@example.co.uk"))[0] is Status.NOT_FOUND
    assert await ask(service, "domains", "UNDER_SCORE.org") == (found, "under_score.org")
    for name, key in [
        ("domains", "example.org"),
        ("domains", "co.uk"),
        ("mailboxes", "erin@example.com"),  # no mailHost: not routable, not a mailbox
        ("mailboxes", "mallory@example.com"),  # outside the base
        ("mailboxes", "alice_example_co_uk"),  # a uid is not an address
        ("transport", "@example.co.uk"),
    ]:
        assert (await ask(service, name, key))[0] is Status.NOT_FOUND, (name, key)
    assert await ask(service, "virtual", "x@y.z") == (Status.PERM, "unknown map virtual")
    assert (await service.answer("transport", b"\xff@x")).status is Status.NOT_FOUND


async def test_directory_down_is_temporary(settings: Settings) -> None:
    directory = Directory(settings.directory)
    service = MapService(settings.lookup, directory, DomainCheck(directory))
    directory.source.close()  # a closed LDIF source raises DirectoryUnavailable
    try:
        assert await ask(service, "transport", "alice@example.co.uk") == (
            Status.TEMP,
            "directory unavailable",
        )
        assert (await ask(service, "domains", "example.com"))[0] is Status.TEMP
    finally:
        directory.close()


async def test_domain_cache_and_stale_if_error(settings: Settings) -> None:
    now = [0.0]
    calls: list[str] = []
    down = [False]

    def probe(domain: str) -> bool:
        calls.append(domain)
        if down[0]:
            raise DirectoryUnavailable("down")
        return domain == "hosted.test"

    directory = Directory(settings.directory)
    check = DomainCheck(directory, probe, timer=lambda: now[0])
    try:
        assert await check.hosted("hosted.test") and not await check.hosted("other.test")
        assert await check.hosted("hosted.test") and not await check.hosted("other.test")
        assert calls == ["hosted.test", "other.test"]  # second round from the cache
        now[0] += settings.directory.cache_ttl + 1
        down[0] = True
        assert await check.hosted("hosted.test")  # stale, but better than deferring mail
        with pytest.raises(DirectoryUnavailable):
            await check.hosted("other.test")  # a "no" is never served stale
    finally:
        directory.close()


async def test_concurrent_domain_questions_share_one_query(settings: Settings) -> None:
    calls = 0
    gate = asyncio.Event()

    async def probe(domain: str) -> bool:
        nonlocal calls
        calls += 1
        await gate.wait()
        return True

    directory = Directory(settings.directory)
    check = DomainCheck(directory, probe)
    try:
        tasks = [asyncio.ensure_future(check.hosted("d.test")) for _ in range(5)]
        await asyncio.sleep(0)
        gate.set()
        assert await asyncio.gather(*tasks) == [True] * 5
        assert calls == 1
    finally:
        directory.close()


def test_ldif_probe(settings: Settings) -> None:
    directory = Directory(settings.directory)

    async def go() -> tuple[bool, bool]:
        probe = make_probe(directory)
        return await probe("example.co.uk"), await probe("example.org")

    try:
        assert asyncio.run(go()) == (True, False)
    finally:
        directory.close()


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.paused = False

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.written += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("192.0.2.1", 4242) if name == "peername" else default


async def settle(transport: FakeTransport, replies: int, decode: bool = True) -> list[bytes]:
    for _ in range(200):
        if decode:
            out = NetstringDecoder().feed(bytes(transport.written))
        else:
            out = bytes(transport.written).splitlines()
        if len(out) >= replies:
            return out
        await asyncio.sleep(0.005)
    raise AssertionError(f"only {transport.written!r}")


async def test_socketmap_protocol_answers_in_order(service: MapService) -> None:
    protocol = MapProtocol(service, SocketmapCodec(), idle_timeout=60)
    transport = FakeTransport()
    protocol.connection_made(transport)
    stream = b"".join(
        encode(p)
        for p in (
            b"transport bob@example.co.uk",
            b"domains nowhere.test",
            b"mailboxes alice@example.co.uk",
            b"nosuchmap x",
        )
    )
    for i in range(0, len(stream), 7):  # any split of the stream
        protocol.data_received(stream[i : i + 7])
    assert await settle(transport, 4) == [
        b"OK lmtp:inet:127.0.0.3:2424",
        b"NOTFOUND ",
        b"OK alice_example_co_uk",
        b"PERM unknown map nosuchmap",
    ]
    assert not transport.closed
    protocol.connection_lost(None)


async def test_socketmap_framing_error_closes(service: MapService) -> None:
    protocol = MapProtocol(service, SocketmapCodec(), idle_timeout=60)
    transport = FakeTransport()
    protocol.connection_made(transport)
    protocol.data_received(b"100000:" + b"x" * 100)
    assert transport.closed
    assert NetstringDecoder().feed(bytes(transport.written))[0].startswith(b"PERM ")
    protocol.connection_lost(None)


async def test_tcp_table_protocol(service: MapService) -> None:
    protocol = MapProtocol(service, TcpTableCodec(), idle_timeout=60)
    transport = FakeTransport()
    protocol.connection_made(transport)
    protocol.data_received(b"get alice%2Bx@example.co.uk\nget nobody@example.com\nput x y\n")
    assert await settle(transport, 3, decode=False) == [
        b"200 lmtp:inet:127.0.0.2:2424",
        b"500 not%20found",
        b"400 unsupported%20request",
    ]
    protocol.data_received(b"get " + b"a" * 5000)
    assert transport.closed
    protocol.connection_lost(None)


async def test_idle_connection_is_closed(service: MapService) -> None:
    protocol = MapProtocol(service, SocketmapCodec(), idle_timeout=0.05)
    transport = FakeTransport()
    protocol.connection_made(transport)
    await asyncio.sleep(0.15)
    assert transport.closed
    protocol.connection_lost(None)


async def test_peer_outside_allowed_networks_is_closed_at_accept(
    service: MapService, caplog: pytest.LogCaptureFixture
) -> None:
    """FakeTransport's peer is 192.0.2.1: refused by the default (loopback), served when
    its network is listed."""
    for codec in (SocketmapCodec(), TcpTableCodec()):
        protocol = MapProtocol(service, codec, idle_timeout=60, allowed=LOOPBACK)
        transport = FakeTransport()
        with caplog.at_level(logging.WARNING, "mailfarm.lookup"):
            caplog.clear()
            protocol.connection_made(transport)
        assert transport.closed and not transport.written
        assert [r.getMessage() for r in caplog.records] == [
            "lookup connection from 192.0.2.1:4242 refused: not in [lookup] allowed_networks"
        ]
        protocol.connection_lost(None)  # nothing was started, nothing to clean up

    protocol = MapProtocol(
        service, SocketmapCodec(), idle_timeout=60, allowed=(ip_network("192.0.2.0/24"),)
    )
    transport = FakeTransport()
    protocol.connection_made(transport)
    protocol.data_received(encode(b"mailboxes alice@example.co.uk"))
    assert await settle(transport, 1) == [b"OK alice_example_co_uk"]
    protocol.connection_lost(None)
