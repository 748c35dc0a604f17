"""Run every configured front end on uvloop; SIGTERM drains, SIGHUP reloads.

SIGTERM (or SIGINT): stop accepting, let sessions end by themselves for ``shutdown_grace``
seconds, then close the rest with the protocol's goodbye. SIGHUP: reload the TLS
certificates and keys (``[tls]`` and every ``[[tls.certificates]]``), re-read an LDIF
directory, flush the route cache.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import os
import resource
import signal

from directory.service import Directory
from proxy.actions import Failure
from proxy.config import Settings
from proxy.limits import Limits
from proxy.listener import reload_tls, server_tls_context, start_listener
from proxy.logsetup import setup_logging
from proxy.metrics import Metrics
from proxy.session import CoreEnv, Dialect, Sessions

log = logging.getLogger("mailfarm.server")


def dialects(settings: Settings) -> list[Dialect]:
    """The protocols this build knows, each bound to its section of the configuration."""
    from proxy.imap.backend import imap_backend_login
    from proxy.imap.dialogue import ImapDialogue, imap_bye, imap_farewell

    out = [
        Dialect("imap", settings.imap, ImapDialogue, imap_backend_login, imap_bye, imap_farewell)
    ]
    try:
        from proxy.pop3.protocol import pop3_dialect
    except ImportError:
        return out
    out.append(pop3_dialect(settings.pop3))
    from proxy.sieve.protocol import sieve_dialect

    out.append(sieve_dialect(settings.sieve))
    return out


# Services other than the login proxies. Each module has
# ``async def start(settings: Settings, env: CoreEnv) -> list[asyncio.AbstractServer]``
# returning its listening servers (none when its section configures no listener).
SERVICES = ("proxy.smtp.lookup", "proxy.smtp.lmtp", "proxy.smtp.submission", "proxy.admin")


class Server:
    def __init__(self, settings: Settings, workers: int = 1, worker: int = 0) -> None:
        self.settings = settings
        self.directory = Directory(settings.directory, auth_cache_ttl=settings.proxy.auth_cache_ttl)
        self.env = CoreEnv(
            directory=self.directory,
            proxy=settings.proxy,
            server_tls=server_tls_context(settings.tls),
            sessions=Sessions(),
            limits=Limits(settings.proxy),
            metrics=Metrics(self.directory, tuple(d.name for d in dialects(settings))),
            workers=workers,
            worker=worker,
            backends=settings.backends,
        )
        self.directory.on_lookup = self.env.metrics.lookup
        self.env.metrics.set_worker(worker, workers)
        self.servers: list[asyncio.AbstractServer] = []
        self.stopping = asyncio.Event()
        self._dialects = {d.name: d for d in dialects(settings)}

    async def start(self) -> None:
        for dialect in self._dialects.values():
            s = dialect.settings
            for host, port in s.listen:
                self.servers.append(await start_listener(dialect, self.env, host, port, False))
            for host, port in s.tls_listen:
                self.servers.append(await start_listener(dialect, self.env, host, port, True))
            for host, port in s.proxy_protocol_listen:
                self.servers.append(
                    await start_listener(dialect, self.env, host, port, False, proxy_protocol=True)
                )
        for name in SERVICES:
            try:
                module = importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if not exc.name or not (name == exc.name or name.startswith(exc.name + ".")):
                    raise
                continue  # not part of this build yet
            self.servers.extend(await module.start(self.settings, self.env))
        if not self.servers:
            log.warning("no listeners configured: nothing to serve")

    def reload(self) -> None:
        if self.env.server_tls is not None:
            try:
                reload_tls(self.env.server_tls, self.settings.tls)
                count = 1 + len(self.settings.tls.certificates)
                log.info("TLS certificate reloaded (%d certificate%s)", count, "s"[: count - 1])
            except (OSError, ValueError) as exc:
                log.error("TLS reload failed, keeping the old certificate: %s", exc)
        reload = getattr(self.directory.source, "reload", None)
        if reload is not None:
            try:
                reload()
            except Exception as exc:
                log.error("directory reload failed, keeping the old data: %s", exc)
        count = self.directory.flush()
        log.info("route cache flushed (%d entries)", count)

    async def drain(self) -> None:
        for s in self.servers:
            s.close()
        sessions = self.env.sessions
        grace = self.settings.proxy.shutdown_grace
        log.info("stopping: %d sessions, waiting up to %.0fs", len(sessions), grace)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while len(sessions) and loop.time() < deadline:  # noqa: ASYNC110 - a 0.1 s poll is fine at shutdown
            await asyncio.sleep(0.1)
        for relay in list(sessions.relays):
            record = sessions.records.get(relay)
            dialect = self._dialects.get(record.protocol) if record else None
            relay.kick(dialect.bye(Failure.SHUTDOWN) if dialect else b"")
        for task in list(sessions.preauth):
            task.cancel()
        await asyncio.sleep(0)
        self.directory.close()

    async def run(self) -> int:
        # Handlers first: a reload or stop sent the moment the listeners accept (a deploy
        # script, systemd) must not meet the default action, which kills the process.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        await self.start()
        tune_gc()
        log.info("mailfarm ready")
        await self.stopping.wait()
        await self.drain()
        return 0


# Young-generation collections every this many allocations instead of CPython's 700: a
# login allocates a few hundred container objects that reference counting frees anyway, so
# the default collects several times per login for next to nothing.
GC_YOUNG_THRESHOLD = 20_000


def tune_gc() -> None:
    """Once serving: what was loaded at start (modules, settings, TLS contexts) lives as long
    as the process, so it is moved out of the collector's sight (``gc.freeze``) instead of
    being traversed again by every full collection, which 9,000 idle sessions make rare
    enough already."""
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, second, third)


def worker_count(setting: int | str) -> int:
    if setting == "auto":
        return len(os.sched_getaffinity(0)) or 1
    return int(setting)


def run_worker(settings: Settings, workers: int = 1, worker: int = 0) -> int:
    import uvloop

    try:
        return uvloop.run(Server(settings, workers, worker).run())
    except (OSError, RuntimeError) as exc:
        log.error("cannot serve: %s", exc)
        return 3


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one: every proxied session holds two
    sockets, and the usual soft limit of 1024 would cap a process at ~500 sessions."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit above %d: %s", soft, exc)
    return soft


def serve(settings: Settings) -> int:
    setup_logging(settings.proxy.log_level)
    limit = raise_fd_limit()
    if limit < 2 * settings.proxy.max_connections:
        log.warning(
            "open-files limit %d is below what max_connections = %d needs (%d)",
            limit,
            settings.proxy.max_connections,
            2 * settings.proxy.max_connections,
        )
    workers = worker_count(settings.proxy.workers)
    if workers == 1:
        return run_worker(settings)
    from proxy.workers import supervise

    return supervise(settings, workers, run_worker)
