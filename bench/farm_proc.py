"""Process and port plumbing shared by the farm's LDAP and Dovecot halves.

Each daemon runs in the foreground in its own process group, so one ``killpg`` reaches the
Dovecot master and every child it forked, even when the master itself is wedged.

Being in their own groups, the daemons are out of reach of whatever kills the test run (a
CI ``timeout`` sends SIGTERM, which skips ``atexit``; a SIGKILL skips everything). So every
daemon's group is also registered with a reaper: a tiny Python child that holds the read end
of a pipe and, when the pipe closes because this process is gone, kills whatever groups are
still registered. ``PR_SET_PDEATHSIG`` cannot do that job: slapd's switch to ``openldap``
clears it, and it fires when the forking *thread* exits, not the process.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

#: Every loopback address a farm daemon listens on; ports are checked free on all of them.
FARM_HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")

# Below the kernel's ephemeral range (32768+), so an outgoing connection's local port can
# never steal a daemon's port while that daemon is being restarted by a test.
_PORT_RANGE = (20000, 32000)

_REAPER = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
groups = set()
for line in sys.stdin:
    (groups.add if line[0] == "+" else groups.discard)(int(line[1:]))
for sig in (signal.SIGTERM, signal.SIGKILL):
    for group in groups:
        try:
            os.killpg(group, sig)
        except OSError:
            pass
    if groups and sig == signal.SIGTERM:
        time.sleep(2)
"""


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def free_ports(count: int, hosts: Sequence[str] = FARM_HOSTS) -> list[int]:
    """Pick ``count`` distinct ports that are free on every one of ``hosts``.

    The backends share port numbers across 127.0.0.2 and .3, and LDAP sits on .1, so a port
    only qualifies if it can be bound on all three. Another process can still grab one before
    the daemon binds it; callers retry start-up on "address in use".
    """
    rng = random.SystemRandom()
    chosen: list[int] = []
    while len(chosen) < count:
        port = rng.randrange(*_PORT_RANGE)
        if port not in chosen and all(_bindable(host, port) for host in hosts):
            chosen.append(port)
    return chosen


class _Reaper:
    """The safety net for daemons whose owner dies without stopping them (see module doc)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None

    def _send(self, line: str) -> None:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = subprocess.Popen(
                    [sys.executable, "-c", _REAPER],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    text=True,
                    start_new_session=True,
                )
            assert self._proc.stdin is not None
            self._proc.stdin.write(line + "\n")
            self._proc.stdin.flush()

    def watch(self, pgid: int) -> None:
        self._send(f"+{pgid}")

    def forget(self, pgid: int) -> None:
        self._send(f"-{pgid}")


_reaper = _Reaper()


def spawn(argv: list[str], log: Path, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a foreground daemon in its own process group, stdout/stderr appended to ``log``."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            process_group=0,
            close_fds=True,
        )
    _reaper.watch(proc.pid)
    return proc


def stop_process(proc: subprocess.Popen[bytes] | None, grace: float = 2.0) -> None:
    """SIGTERM the daemon, wait, then SIGKILL its whole process group (stragglers included)."""
    stop_processes([proc], grace)


def stop_processes(procs: Iterable[subprocess.Popen[bytes] | None], grace: float = 2.0) -> None:
    """Stop several daemons at once, each given ``grace`` seconds to exit cleanly.

    A Dovecot master normally exits about 1 s after SIGTERM, but now and then it sleeps on a
    child that never goes; the SIGKILL to the group after ``grace`` bounds that, and the
    stale pid file and sockets it leaves do not hinder a restart.
    """
    live = [proc for proc in procs if proc is not None]
    for proc in live:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in live:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # process_group=0 made it the group leader
        except ProcessLookupError:
            pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # only a process stuck in the kernel gets here
            continue
        _reaper.forget(proc.pid)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def greets(host: str, port: int, prefix: bytes) -> bool:
    """Whether a server on ``host:port`` answers with a greeting starting with ``prefix``:
    a listening socket alone can belong to a daemon still reading its config."""
    try:
        with socket.create_connection((host, port), timeout=2) as sock:
            return sock.recv(256).startswith(prefix)
    except OSError:
        return False


def wait_until(
    ready: Callable[[], bool],
    proc: subprocess.Popen[bytes],
    timeout: float,
    what: str,
    log: Path,
) -> None:
    """Poll ``ready`` until true; raise with the log's tail if the daemon dies or time runs out."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        if ready():
            return
        if proc.poll() is not None:
            raise StartError(f"{what} exited with status {proc.returncode}", log)
        if time.monotonic() > deadline:
            raise StartError(f"{what} not ready after {timeout:.0f}s", log)
        time.sleep(delay)
        delay = min(delay * 1.5, 0.1)


def log_tail(log: Path, lines: int = 30) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class StartError(RuntimeError):
    """A farm daemon failed to come up; the message carries the tail of its log."""

    def __init__(self, message: str, log: Path) -> None:
        self.log = log
        self.tail = log_tail(log)
        super().__init__(f"{message}; last lines of {log}:\n{self.tail}")

    @property
    def address_in_use(self) -> bool:
        """True when a lost race for a port, not a broken config, is the cause (so retry)."""
        return "in use" in self.tail.lower()
