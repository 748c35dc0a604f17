"""``mailfarm bench logins --protocol sieve``: ManageSieve logins through mailfarm's ``[sieve]``
and straight to the farm's Pigeonhole, counted as IMAP and POP3 logins are.

Functional only, as in test_bench.py: every login is counted once, under the right kind,
and the exit status says whether there were errors. No speed assertions. The load goes to
a mailfarm of this module's own, for the reason test_bench.py gives. Only users on the
Dovecot backends: the Cyrus one runs no ManageSieve.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.farm import Farm
from bench.patterns import Credential, format_users
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config, free_port, sieve_section
from proxy.cli import build_parser

pytestmark = pytest.mark.usefixtures("farm")


class SieveProxy:
    def __init__(self, port: int, process: MailfarmProcess) -> None:
        self.port, self.process = port, process

    @property
    def pid(self) -> int:
        assert self.process.proc is not None
        return self.process.proc.pid


@pytest.fixture(scope="module")
def sieve_proxy(farm: Farm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SieveProxy]:
    port = free_port()
    sections = farm_config(farm, ProxyPorts(), sieve=sieve_section(farm, port))
    workdir = tmp_path_factory.mktemp("bench-sieve")
    process = MailfarmProcess(workdir, sections, "bench-sieve").start()
    yield SieveProxy(port, process)
    process.stop()


def users_file(tmp_path: Path, farm: Farm, wrong: bool = False) -> str:
    users = [
        Credential(u.address, u.password + ("-wrong" if wrong else ""))
        for u in farm.users
        if farm.backends[u.backend].sieve_port
    ]
    path = tmp_path / "users.txt"
    path.write_text(format_users(users))
    return str(path)


def direct(farm: Farm, backend: str) -> str:
    b = farm.backends[backend]
    return f"{b.host}:{b.sieve_port}"


def bench(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    """Run ``mailfarm bench … --json`` in-process; its exit status and document."""
    args = build_parser().parse_args(["bench", *argv, "--json", "--quiet"])
    status = args.func(args)
    return status, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("starttls", [False, True], ids=["plaintext", "starttls"])
def test_sieve_logins_through_mailfarm(  # type: ignore[no-untyped-def]
    farm: Farm, sieve_proxy: SieveProxy, tmp_path: Path, capsys, starttls: bool
) -> None:
    status, doc = bench(
        capsys,
        "logins", "--protocol", "sieve", "--port", str(sieve_proxy.port),
        *(["--starttls", "--ca", str(farm.pki.ca_cert), "--sni", "localhost"] if starttls else []),
        "--users", users_file(tmp_path, farm), "--workers", "2", "--requests", "8",
    )  # fmt: skip
    (target,) = doc["targets"]
    assert target["protocol"] == "sieve"
    assert target["tls"] == ("starttls" if starttls else "none")
    assert (target["ok"], target["errors"]) == (8, {}), target["error_samples"]
    assert set(target["phases_ms"]) == {"connect", "greeting", "login", "list", "logout"}
    if starttls:  # every session did its STARTTLS handshake
        assert target["tls_resumption"]["connections"] == 8
    assert status == 0


def test_sieve_starttls_resumes(  # type: ignore[no-untyped-def]
    farm: Farm, sieve_proxy: SieveProxy, tmp_path: Path, capsys
) -> None:
    status, doc = bench(
        capsys,
        "logins", "--protocol", "sieve", "--port", str(sieve_proxy.port), "--starttls",
        "--ca", str(farm.pki.ca_cert), "--sni", "localhost", "--resume",
        "--users", users_file(tmp_path, farm), "--workers", "1", "--requests", "4",
    )  # fmt: skip
    (target,) = doc["targets"]
    assert (target["ok"], target["errors"]) == (4, {}), target["error_samples"]
    assert target["tls_resumption"]["resumed"] == 3  # all but the first
    assert status == 0


def test_sieve_wrong_passwords_are_auth_failures(  # type: ignore[no-untyped-def]
    farm: Farm, sieve_proxy: SieveProxy, tmp_path: Path, capsys
) -> None:
    status, doc = bench(
        capsys,
        "logins", "--protocol", "sieve", "--port", str(sieve_proxy.port),
        "--users", users_file(tmp_path, farm, wrong=True), "--workers", "2", "--requests", "4",
    )  # fmt: skip
    (target,) = doc["targets"]
    assert target["ok"] == 0
    assert target["errors"] == {"auth-failed": 4}, target["error_samples"]
    assert target["error_samples"]["auth-failed"].startswith("NO")
    assert status == 1


def test_sieve_compare_with_both_backends_and_cpu(  # type: ignore[no-untyped-def]
    farm: Farm, sieve_proxy: SieveProxy, tmp_path: Path, capsys
) -> None:
    """Three targets in alternating rounds, each with its CPU: mailfarm and each Dovecot
    backend straight (every backend accepts every user of the directory)."""
    pids = farm.pids()
    status, doc = bench(
        capsys,
        "logins", "--protocol", "sieve", "--port", str(sieve_proxy.port),
        "--users", users_file(tmp_path, farm), "--workers", "2", "--duration", "1",
        "--round", "0.25", "--label", "mailfarm",
        "--compare", direct(farm, "mail1"), "--compare-label", "mail1",
        "--compare2", direct(farm, "mail2"), "--compare2-label", "mail2",
        "--cpu-pid", str(sieve_proxy.pid), "--compare-cpu-pid", str(pids["mail1"]),
        "--compare2-cpu-pid", str(pids["mail2"]), "--pid-tree",
    )  # fmt: skip
    a, b, c = doc["targets"]
    assert [t["label"] for t in (a, b, c)] == ["mailfarm", "mail1", "mail2"]
    for t in (a, b, c):
        assert t["ok"] > 0 and t["error_total"] == 0, t["error_samples"]
        assert t["cpu"]["seconds"] >= 0 and t["cpu"]["ms_per_login"] is not None
    assert [r["target"] for r in doc["rounds"]] == [0, 1, 2] * 4
    texts = [c["text"] for c in doc["comparisons"]]
    assert texts[0].startswith("mailfarm / mail1 = ") and texts[1].startswith("mailfarm / mail2")
    assert status == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tls"], "no implicit-TLS port"),
        (["--pipeline"], "--pipeline"),
    ],
)
def test_sieve_refuses_implicit_tls_and_pipelining(  # type: ignore[no-untyped-def]
    capsys, extra: list[str], message: str
) -> None:
    args = build_parser().parse_args(
        ["bench", "logins", "--protocol", "sieve", "--port", "4190", "--pattern", "u{i}",
         "--password-pattern", "pw{i}", "--count", "1", "--requests", "1", *extra]
    )  # fmt: skip
    assert args.func(args) == 2
    assert message in capsys.readouterr().err


def test_sieve_is_a_logins_protocol_only(capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(
            ["bench", "fetch", "--protocol", "sieve", "--port", "4190", "--size", "1K",
             "--pattern", "u{i}", "--requests", "1"]
        )  # fmt: skip
    assert exc.value.code == 2
    assert "invalid choice: 'sieve'" in capsys.readouterr().err
