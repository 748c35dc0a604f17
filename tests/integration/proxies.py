"""Session-scoped mailfarm processes in front of the farm, imported by conftest.

Two instances, started once per test session: ``proxy`` trusts loopback (plaintext logins
allowed, as for webmail on the LAN); ``strict_proxy`` trusts nobody, so passwords need TLS.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.farm import Farm
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config


@dataclass
class RunningProxy:
    ports: ProxyPorts
    process: MailfarmProcess


def _start(farm: Farm, workdir: Path, name: str, trusted: bool) -> RunningProxy:
    ports = ProxyPorts()
    sections = farm_config(farm, ports, trusted=trusted)
    return RunningProxy(ports, MailfarmProcess(workdir, sections, name).start())


@pytest.fixture(scope="session")
def proxy(farm: Farm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    running = _start(farm, tmp_path_factory.mktemp("proxy"), "trusted", trusted=True)
    yield running
    running.process.stop()


@pytest.fixture(scope="session")
def strict_proxy(farm: Farm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    running = _start(farm, tmp_path_factory.mktemp("strict"), "strict", trusted=False)
    yield running
    running.process.stop()
