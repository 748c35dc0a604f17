"""How a proxied session ends and what happens to its bytes around the handover.

A LOGOUT or QUIT pipelined behind the login is a clean end: nothing may follow the
backend's final reply. A client that stopped reading before the handover still holds the
backend back (back-pressure), so a mailbox never streams into the proxy's memory.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from bench.farm import Farm
from proxy.relay import Relay
from tests.integration.proxies import RunningProxy


def read_to_close(sock: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_pipelined_imap_logout_ends_with_the_backends_ok(farm: Farm, proxy: RunningProxy) -> None:
    alice = farm.user("alice@example.co.uk")
    with socket.create_connection(("127.0.0.1", proxy.ports.imap), timeout=10) as sock:
        sock.sendall(f'A1 LOGIN "{alice.address}" "{alice.password}"\r\nA2 LOGOUT\r\n'.encode())
        lines = read_to_close(sock).splitlines()
    assert lines[-1].startswith(b"A2 OK"), lines
    assert not any(b"mailbox server was lost" in line for line in lines), lines


def test_pipelined_pop3_quit_ends_with_the_backends_ok(farm: Farm, proxy: RunningProxy) -> None:
    bob = farm.user("bob@example.co.uk")
    with socket.create_connection(("127.0.0.1", proxy.ports.pop3), timeout=10) as sock:
        sock.sendall(f"USER {bob.address}\r\nPASS {bob.password}\r\nQUIT\r\n".encode())
        lines = read_to_close(sock).splitlines()
    assert lines[-1].startswith(b"+OK"), lines
    assert not any(line.startswith(b"-ERR") for line in lines), lines


async def _stalled_client_handover(stream: int) -> tuple[int, int]:
    """A real Relay between two loopback connections whose client stopped reading (and
    filled its send buffer) before the handover; returns (bytes the backend managed to
    send, the proxy's largest client write buffer)."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Queue[asyncio.Transport] = asyncio.Queue()

    class Hold(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted.put_nowait(transport)  # type: ignore[arg-type]

    front = await loop.create_server(Hold, "127.0.0.1", 0)
    back = await loop.create_server(Hold, "127.0.0.1", 0)
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and never reads
    client.setblocking(False)
    await loop.sock_connect(client, front.sockets[0].getsockname())
    client_side = await accepted.get()
    backend_out, _ = await loop.create_connection(asyncio.Protocol, *back.sockets[0].getsockname())
    backend_in = await accepted.get()
    # The login phase's replies filled the client's buffer past the high-water mark.
    while client_side.get_write_buffer_size() <= client_side.get_write_buffer_limits()[1]:
        client_side.write(b"* OK filler\r\n" * 4096)
        await asyncio.sleep(0.01)
    relay = Relay(client_side, backend_out, 60.0)
    relay.start()
    sent, largest, chunk = 0, 0, b"x" * 65536
    for _ in range(stream // len(chunk)):
        if backend_in.get_write_buffer_size() > 4 * 1024 * 1024:
            await asyncio.sleep(0.01)  # the backend waits too, as a real one does
            if backend_in.get_write_buffer_size() > 4 * 1024 * 1024:
                break
        backend_in.write(chunk)
        sent += len(chunk)
        await asyncio.sleep(0)
        largest = max(largest, client_side.get_write_buffer_size())
    await asyncio.sleep(0.2)
    largest = max(largest, client_side.get_write_buffer_size())
    relay.finish("test")
    backend_in.close()
    client.close()
    front.close()
    back.close()
    return sent, largest


@pytest.mark.parametrize("loop_kind", ["uvloop", "asyncio"])
def test_a_client_paused_before_the_handover_holds_the_backend_back(loop_kind: str) -> None:
    stream = 50 * 1024 * 1024
    if loop_kind == "uvloop":
        import uvloop

        runner = uvloop.run
    else:
        runner = asyncio.run
    sent, largest = runner(_stalled_client_handover(stream))
    # Without back-pressure all 50 MB would pile up in the proxy's buffer for the client.
    assert largest < 16 * 1024 * 1024, (sent, largest)
