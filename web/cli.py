"""``mailfarm web -c proxy.toml``: serve the API on every ``[web] listen`` address.

uvicorn runs on sockets bound here, so one process serves IPv4 and IPv6 addresses alike;
it stops cleanly on SIGTERM or SIGINT (uvicorn's own handlers).
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
from collections.abc import Callable
from typing import Any

from common.configschema import ConfigError


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host or "0.0.0.0", port), family=family, backlog=128)
    except OSError as exc:
        raise ConfigError("", "web", "listen", f"{host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def cmd_web(args: argparse.Namespace) -> int:
    import uvicorn

    from web.app import create_app
    from web.audit import Audit
    from web.autoconfig_routes import HideQueries
    from web.dashboard import Dashboard
    from web.tokens import Tokens, load_tokens

    settings = args.load(args.config)
    web = settings.web
    if not web.listen:
        raise ConfigError(settings.path, "web", "listen", "is required for mailfarm web")
    # Without a tokens file the console still serves staff; the API then refuses every call.
    tokens = Tokens({}) if web.api_tokens_file is None else load_tokens(
        web.api_tokens_file, settings.path
    )
    audit = Audit(web.audit_log)
    dashboard = Dashboard(settings)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("uvicorn.access").addFilter(HideQueries())  # no addresses in the log
    sockets = [_bind(host, port) for host, port in web.listen]
    config = uvicorn.Config(
        create_app(settings, tokens, audit, dashboard),
        log_config=None,
        access_log=True,
        ssl_certfile=str(web.cert) if web.tls and web.cert else None,
        ssl_keyfile=str(web.key) if web.tls and web.key else None,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    for host, port in web.listen:
        scheme = "https" if web.tls else "http"
        logging.getLogger("mailfarm.web").info("web: listening on %s://%s:%d", scheme, host, port)
    # uvicorn re-raises the stop signal once it has shut down; with these handlers in place
    # that re-raise is a no-op, so a stop asked for is a clean exit 0, not death by SIGTERM.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
    uvicorn.Server(config).run(sockets=sockets)
    return 0


def register(subparsers: Any, add_config: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``web`` to the ``mailfarm`` command."""
    p = subparsers.add_parser("web", help="serve the console and the REST API ([web] section)")
    add_config(p)
    p.set_defaults(func=cmd_web)
