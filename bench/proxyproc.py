"""Run ``mailfarm serve`` as a real process in front of a farm (tests, demo, load tests).

A subprocess, not an in-process server: the tests then exercise the command, its config
parsing, its signal handling and its log lines exactly as an operator's systemd would.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.farm import Farm
from bench.farm_dovecot import QUOTA_ATTRIBUTE


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        text = str(value).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{text}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(value)


def render_toml(sections: dict[str, Any]) -> str:
    """Tables as ``[name]``; a list of tables (``backends``) as ``[[name]]`` entries."""
    lines = []
    for name, table in sections.items():
        entries = table if isinstance(table, list) else [table]
        for items in entries:
            header = f"[[{name}]]" if isinstance(table, list) else f"[{name}]"
            lines.append(header)
            lines += [f"{key} = {_toml_value(value)}" for key, value in items.items()]
            lines.append("")
    return "\n".join(lines)


def farm_provision(farm: Farm) -> dict[str, Any]:
    """``[provision]`` for the admin tool against ``farm``: slapd's rootdn for writes, the
    farm's backends for new users, its Dovecot master user."""
    mail1, mail2 = farm.backends["mail1"], farm.backends["mail2"]
    return {
        "bind_dn": farm.admin_dn,
        "bind_password": farm.admin_password,
        "hosts": [mail1.host, mail2.host],
        "backend_imap_port": mail1.imap_port,
        "master_user": farm.master_user,
        "master_password": farm.master_password,
        "master_separator": farm.master_separator,
        "default_ns": ["ns1.mailfarm.test"],
        "default_mx": ["mx1.mailfarm.test:10"],
    }


def farm_backends(farm: Farm) -> list[dict[str, Any]]:
    """``[[backends]]`` for every backend of the farm: its kind, the proxy user that can
    vouch for users there (Cyrus ``proxyservers``, a Dovecot master user) and its admin."""
    out = []
    for backend in farm.backends.values():
        if backend.kind == "cyrus":
            admin = (farm.cyrus_admin_user, farm.cyrus_admin_password)
        else:
            admin = (farm.master_user, farm.master_password)
        out.append(
            {
                "host": backend.host,
                "kind": backend.kind,
                "proxy_user": farm.proxy_user,
                "proxy_password": farm.proxy_password,
                "admin_user": admin[0],
                "admin_password": admin[1],
            }
        )
    return out


@dataclass
class ProxyPorts:
    imap: int = field(default_factory=free_port)
    imaps: int = field(default_factory=free_port)
    pop3: int = field(default_factory=free_port)
    pop3s: int = field(default_factory=free_port)


def farm_config(
    farm: Farm, ports: ProxyPorts, trusted: bool = True, **overrides: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """A proxy.toml for a mailfarm in front of ``farm``; ``overrides`` patch sections."""
    backend = next(iter(farm.backends.values()))
    sections: dict[str, dict[str, Any]] = {
        "directory": {
            "uri": [farm.ldap_uri],
            "base": farm.base_dn,
            "bind_dn": farm.service_dn,
            "bind_password": farm.service_password,
            "cache_ttl": 60,
            "negative_ttl": 5,
            "timeout": 3,
            "quota_attribute": QUOTA_ATTRIBUTE,  # what the farm's Dovecot userdb reads
        },
        "proxy": {
            "trusted_networks": ["127.0.0.0/8"] if trusted else [],
            "auth_failure_delay": 0.2,
            "max_auth_failures": 3,
            "preauth_timeout": 30,
            "shutdown_grace": 2,
        },
        "tls": {"cert": str(farm.pki.cert), "key": str(farm.pki.key)},
        "imap": {
            "listen": [f"127.0.0.1:{ports.imap}"],
            "tls_listen": [f"127.0.0.1:{ports.imaps}"],
            "backend_port": backend.imap_port,
            "backend_timeout": 5,
        },
        "pop3": {
            "listen": [f"127.0.0.1:{ports.pop3}"],
            "tls_listen": [f"127.0.0.1:{ports.pop3s}"],
            "backend_port": backend.pop3_port,
            "backend_timeout": 5,
        },
        # No listener by default; the backends' ManageSieve port, which user moves (and the
        # console's) copy Sieve scripts through.
        "sieve": {"backend_port": backend.sieve_port},
    }
    if importlib.util.find_spec("proxy.pop3.protocol") is None:  # not built yet
        del sections["pop3"]
    sections["backends"] = farm_backends(farm)  # type: ignore[assignment]
    for name, table in overrides.items():
        sections.setdefault(name, {}).update(table)
    return sections


def sieve_section(farm: Farm, port: int) -> dict[str, Any]:
    """``[sieve]`` listening on ``port``, to the ManageSieve port every backend of the farm
    shares (Pigeonhole, timsieved); for ``farm_config(farm, ports, sieve=sieve_section(...))``."""
    backend = next(b for b in farm.backends.values() if b.sieve_port)
    return {
        "listen": [f"127.0.0.1:{port}"],
        "backend_port": backend.sieve_port,
        "backend_timeout": 5,
    }


class MailfarmProcess:
    """``mailfarm serve`` (or ``web``) with a generated config; waits until every listener
    accepts."""

    def __init__(
        self,
        workdir: Path,
        sections: dict[str, dict[str, Any]],
        name: str = "mailfarm",
        command: str = "serve",
    ):
        self.command = command  # "serve", or "web" for the REST API
        self.workdir = workdir
        self.config = workdir / f"{name}.toml"
        self.log_path = workdir / f"{name}.log"
        self.sections = sections
        self.proc: subprocess.Popen[bytes] | None = None

    def _listen_ports(self) -> list[int]:
        ports = []
        for table in self.sections.values():
            for key in ("listen", "tls_listen"):
                for addr in table.get(key, []) if isinstance(table, dict) else []:
                    ports.append(int(str(addr).rsplit(":", 1)[1]))
        return ports

    def start(self, timeout: float = 15.0) -> MailfarmProcess:
        if self.proc is not None and self.proc.poll() is None:
            return self  # already running (``with X.start():`` must not start a second one)
        self.config.write_text(render_toml(self.sections))
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", self.command, "-c", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[1],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        try:
            self._wait_listening(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_listening(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        for port in self._listen_ports():
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mailfarm exited: {self.log_text()[-2000:]}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"mailfarm not listening: {self.log_text()[-2000:]}"
                        ) from None
                    time.sleep(0.05)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()

    def __enter__(self) -> MailfarmProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
