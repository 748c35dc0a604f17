"""Real HAProxy in front of mailfarm instances: a loopback config built on the shipped sample
(``deploy/haproxy.cfg``), the process, and its stats socket (``show stat``, ``set server``).

The test config takes the sample's ``defaults`` section verbatim (timeouts, retries, the
``/healthz`` check, ``send-proxy-v2``), so the sample is what gets tested; only what must
differ on one loopback host is generated: the listen ports, each server's admin port, and
faster check intervals so a drain or restart is noticed within a fraction of a second.
"""

from __future__ import annotations

import csv
import io
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "deploy" / "haproxy.cfg"
# Per server, overriding the sample's `inter 2s fall 3 rise 2`: a test must not wait seconds
# for each state change.
FAST_CHECKS = "inter 200ms fall 2 rise 1"


def sample_section(header: str, text: str | None = None) -> str:
    """The lines of the sample's section whose first line is ``header`` (e.g. "defaults"),
    up to the next unindented line that is not a comment."""
    lines = (SAMPLE.read_text() if text is None else text).splitlines()
    start = lines.index(header)
    out = [lines[start]]
    for line in lines[start + 1 :]:
        if line and not line[0].isspace() and not line.startswith("#"):
            break
        out.append(line)
    return "\n".join(out).rstrip() + "\n"


@dataclass(frozen=True)
class Instance:
    """One mailfarm instance as HAProxy sees it: a name, the PROXY protocol port of each
    backend (``{"imap": 10143, "pop3": 10110}``) and its admin port for health checks."""

    name: str
    ports: Mapping[str, int]
    admin_port: int


def render_config(
    stats_socket: Path, frontends: Mapping[str, int], instances: Sequence[Instance]
) -> str:
    """A config for 127.0.0.1: the sample's defaults, one frontend and backend per protocol
    (named as in the sample, so the drain commands read the same), no daemon, no chroot."""
    parts = [
        "global\n"
        "    maxconn 2000\n"
        "    log stdout format raw local0 info\n"  # one tcplog line a connection, in the log
        f"    stats socket {stats_socket} mode 600 level admin\n"
        "    stats timeout 30s\n",
        sample_section("defaults"),
    ]
    for proto, port in frontends.items():
        servers = "".join(
            f"    server {i.name} 127.0.0.1:{i.ports[proto]} port {i.admin_port} {FAST_CHECKS}\n"
            for i in instances
        )
        parts.append(
            f"frontend {proto}\n    bind 127.0.0.1:{port}\n    default_backend {proto}\n"
            f"backend {proto}\n    balance leastconn\n{servers}"
        )
    return "\n".join(parts)


class HAProxy:
    """``haproxy -db -f CFG`` (foreground) and a client for its stats socket."""

    def __init__(self, workdir: Path, config: str, stats_socket: Path) -> None:
        self.config = workdir / "haproxy.cfg"
        self.config.write_text(config)
        self.log_path = workdir / "haproxy.log"
        self.stats_socket = stats_socket
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> HAProxy:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                ["haproxy", "-db", "-f", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited: {self.log_path.read_text()[-2000:]}")
            try:
                self.command("show info")
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("haproxy stats socket never answered") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def command(self, line: str) -> str:
        """One command on the stats socket (what `socat stdio admin.sock` does): the socket
        answers, then closes, so reading to EOF is the whole answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.stats_socket))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def stats(self) -> dict[tuple[str, str], dict[str, str]]:
        """``show stat`` as {(backend, server): row}, the CSV header's names as keys."""
        text = self.command("show stat").lstrip("# ")
        return {(r["pxname"], r["svname"]): r for r in csv.DictReader(io.StringIO(text))}

    def server(self, backend: str, server: str) -> dict[str, str]:
        return self.stats()[(backend, server)]

    def set_state(self, backends: Sequence[str], server: str, state: str) -> None:
        """``set server BACKEND/SERVER state ready|drain|maint`` on each backend."""
        for backend in backends:
            answer = self.command(f"set server {backend}/{server} state {state}")
            assert answer.strip() == "", answer

    def wait_status(
        self,
        backends: Sequence[str],
        server: str,
        accept: Callable[[dict[str, str]], bool],
        timeout: float = 15.0,
    ) -> None:
        deadline = time.monotonic() + timeout
        while True:
            rows = [self.server(backend, server) for backend in backends]
            if all(accept(row) for row in rows):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{server} never reached the state wanted: {rows}")
            time.sleep(0.05)
