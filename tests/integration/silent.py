"""A peer that accepts TCP connections and never says a word (a hung server, a black hole):
the failure that costs a client its whole timeout, for tests of how mailfarm bounds it."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def silent_listener(host: str, port: int) -> Iterator[int]:
    """Listen on ``host:port`` (0: any free port), accept everything, answer nothing; the
    port is yielded. Every connection is held open until the block ends."""
    listener = socket.create_server((host, port), backlog=256)
    listener.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        for s in held:
            s.close()
        listener.close()
