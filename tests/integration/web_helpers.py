"""``mailfarm web`` as operators run it, for the API and console tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.proxyproc import free_port, render_toml
from tests.integration.provision_helpers import REPO


class WebServer:
    """``mailfarm web`` on a free port; stopped with SIGTERM, as systemd would."""

    def __init__(self, workdir: Path, sections: dict[str, Any], name: str) -> None:
        self.port = free_port()
        self.config = workdir / f"{name}.toml"
        self.log = workdir / f"{name}.log"
        sections = {**sections, "web": {**sections.get("web", {})}}
        sections["web"]["listen"] = [f"127.0.0.1:{self.port}"]
        self.config.write_text(render_toml(sections))
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "proxy.cli", "web", "-c", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mailfarm web exited: {self.log_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"not listening: {self.log_text()[-2000:]}") from None
                time.sleep(0.05)
        scheme = "https" if sections["web"].get("tls") else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode
