"""``mailfarm bench`` TLS resumption and submission mode against the real farm (issue 17).

Functional only, as in test_bench.py: the new modes produce results and reports, and
resumption really resumes (counted from each connection's ``session_reused``). No speed
assertions. The load goes to a mailfarm of this module's own, for the reason test_bench.py
gives; submission goes to the session-wide SMTP mailfarm, relayed by the Postfix fixture.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.farm import Farm
from bench.patterns import Credential, format_users
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config
from proxy.cli import build_parser
from tests.integration.proxies import RunningProxy
from tests.integration.smtp_fixtures import RunningSmtpProxy, wait_in_mailbox

pytestmark = pytest.mark.usefixtures("farm")


@pytest.fixture(scope="module")
def own_proxy(farm: Farm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    ports = ProxyPorts()
    workdir = tmp_path_factory.mktemp("bench-modes")
    process = MailfarmProcess(workdir, farm_config(farm, ports), "bench-modes").start()
    yield RunningProxy(ports, process)
    process.stop()


def users_file(tmp_path: Path, users: list[Credential]) -> str:
    path = tmp_path / "users.txt"
    path.write_text(format_users(users))
    return str(path)


def bench(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    """Run ``mailfarm bench … --json`` in-process; its exit status and document."""
    args = build_parser().parse_args(["bench", *argv, "--json", "--quiet"])
    status = args.func(args)
    return status, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("resume", [True, False])
def test_tls_logins_resume_only_with_resume(  # type: ignore[no-untyped-def]
    farm: Farm, own_proxy, tmp_path: Path, capsys, resume: bool
) -> None:
    users = [Credential(u.address, u.password) for u in farm.users]
    report = tmp_path / "resume.html"
    status, doc = bench(
        capsys,
        "logins", "--port", str(own_proxy.ports.imaps), "--tls",
        "--ca", str(farm.pki.ca_cert), "--users", users_file(tmp_path, users),
        "--workers", "2", "--duration", "2", "--report", str(report),
        *(["--resume"] if resume else []),
    )  # fmt: skip
    (target,) = doc["targets"]
    assert target["ok"] > 0 and target["errors"] == {}, target["error_samples"]
    tls = target["tls_resumption"]
    assert tls["offered"] is resume
    assert tls["connections"] == target["ok"]
    if resume:
        # Each worker's first connection has nothing to resume; all later ones should.
        assert tls["resumed"] > 0
        assert tls["resumed"] >= tls["connections"] - 2
    else:
        assert tls["resumed"] == 0
    assert f"TLS sessions resumed: {tls['resumed']:,} of {tls['connections']:,}" in (
        report.read_text()
    )
    assert status == 0


def test_starttls_logins_resume(farm: Farm, own_proxy, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    users = [Credential(u.address, u.password) for u in farm.users]
    status, doc = bench(
        capsys,
        "logins", "--port", str(own_proxy.ports.pop3), "--protocol", "pop3", "--starttls",
        "--ca", str(farm.pki.ca_cert), "--users", users_file(tmp_path, users),
        "--workers", "1", "--requests", "4", "--resume",
    )  # fmt: skip
    (target,) = doc["targets"]
    assert (target["ok"], target["errors"]) == (4, {})
    assert target["tls_resumption"]["resumed"] == 3  # all but the first
    assert status == 0


def test_submit_starttls_delivers(  # type: ignore[no-untyped-def]
    farm: Farm, postfix, smtp_proxy: RunningSmtpProxy, own_proxy, tmp_path: Path, capsys
) -> None:
    alice = farm.user("alice@example.co.uk")
    report = tmp_path / "submit.html"
    status, doc = bench(
        capsys,
        "submit", "--port", str(smtp_proxy.ports.submission), "--starttls",
        "--ca", str(farm.pki.ca_cert),
        "--users", users_file(tmp_path, [Credential(alice.address, alice.password)]),
        "--workers", "2", "--duration", "2", "--report", str(report),
    )  # fmt: skip
    (target,) = doc["targets"]
    assert doc["mode"] == "submit" and target["protocol"] == "smtp"
    assert target["messages"] > 0 and target["error_total"] == 0, target["error_samples"]
    assert target["message_size"] == 2048
    assert set(target["phases_ms"]) == {"connect", "greeting", "login", "send", "logout"}
    assert target["tls_resumption"]["resumed"] == 0  # no --resume
    assert "messages/s" in report.read_text()
    wait_in_mailbox(farm, own_proxy, alice, doc["settings"]["marker"])
    assert status == 0


def test_submit_implicit_tls_pipelined_with_resume(  # type: ignore[no-untyped-def]
    farm: Farm, postfix, smtp_proxy: RunningSmtpProxy, tmp_path: Path, capsys
) -> None:
    alice = farm.user("alice@example.co.uk")
    status, doc = bench(
        capsys,
        "submit", "--port", str(smtp_proxy.ports.submissions), "--tls",
        "--ca", str(farm.pki.ca_cert),
        "--users", users_file(tmp_path, [Credential(alice.address, alice.password)]),
        "--rcpt-pattern", "bob@example.co.uk", "--size", "4K",
        "--workers", "1", "--requests", "3", "--pipeline", "--resume",
    )  # fmt: skip
    (target,) = doc["targets"]
    assert (target["messages"], target["errors"]) == (3, {}), target["error_samples"]
    assert target["bytes"] == 3 * 4096
    assert target["tls_resumption"]["resumed"] == 2
    assert status == 0
