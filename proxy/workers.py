"""Worker processes sharing the listeners, as nginx and Dovecot use every core.

The supervisor forks the workers before any event loop or thread exists, forwards SIGTERM,
SIGINT and SIGHUP to them, and restarts a worker that dies unexpectedly (with a pause, so a
worker that cannot start does not spin). Each worker binds its own SO_REUSEPORT sockets and
keeps its own caches and LDAP connections; nothing is shared but the ports.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable

from proxy.config import Settings

log = logging.getLogger("mailfarm.workers")

RESTART_PAUSE = 1.0


def _spawn(settings: Settings, workers: int, index: int, run: Callable[..., int]) -> int:
    pid = os.fork()
    if pid == 0:  # the worker
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        code = 1
        try:
            code = run(settings, workers, index)
        finally:
            logging.shutdown()
            os._exit(code)
    log.info("worker %d started (pid %d)", index, pid)
    return pid


def supervise(settings: Settings, workers: int, run: Callable[..., int]) -> int:
    children: dict[int, int] = {}  # pid -> worker index
    stopping = False

    def forward(signum: int, frame: object) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    for index in range(workers):
        children[_spawn(settings, workers, index, run)] = index
    worst = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        index = children.pop(pid, None)
        if index is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        worst = max(worst, code if code > 0 else 0)
        if stopping:
            continue
        log.error("worker %d (pid %d) exited with %d; restarting", index, pid, code)
        time.sleep(RESTART_PAUSE)
        if not stopping:
            children[_spawn(settings, workers, index, run)] = index
    log.info("all workers stopped")
    return worst
