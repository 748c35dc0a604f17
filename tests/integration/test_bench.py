"""``mailfarm bench`` against the real farm: small loads, and the tool checking its own counts.

No speed assertions: these tests check that every operation is counted once, under the
right kind, and that every output (text, JSON, HTML) says so. How fast is BENCHMARKS.md's job.

The load goes to a mailfarm of this module's own (``proxy`` below), not the session-wide
one: concurrent logins grow a proxy's LDAP connection pool, and tests that later restart
slapd under the shared proxy must not depend on what ran before them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.farm import Farm
from bench.patterns import Credential, format_users
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config
from proxy.cli import build_parser
from tests.integration.proxies import RunningProxy

pytestmark = pytest.mark.usefixtures("farm")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def proxy(farm: Farm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    ports = ProxyPorts()
    workdir = tmp_path_factory.mktemp("bench")
    process = MailfarmProcess(workdir, farm_config(farm, ports), "bench").start()
    yield RunningProxy(ports, process)
    process.stop()


def users_file(tmp_path: Path, farm: Farm, wrong: bool = False, only: str | None = None) -> str:
    users = [
        Credential(u.address, u.password + ("-wrong" if wrong else ""))
        for u in farm.users
        if only is None or u.address == only
    ]
    path = tmp_path / "users.txt"
    path.write_text(format_users(users))
    return str(path)


def bench(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    """Run ``mailfarm bench … --json`` in-process; its exit status and document."""
    args = build_parser().parse_args(["bench", *argv, "--json", "--quiet"])
    status = args.func(args)
    out = capsys.readouterr().out
    return status, json.loads(out)


def direct(farm: Farm, backend: str, protocol: str = "imap") -> str:
    b = farm.backends[backend]
    return f"{b.host}:{b.imap_port if protocol == 'imap' else b.pop3_port}"


def test_logins_count_exactly(farm: Farm, proxy, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    status, doc = bench(
        capsys,
        "logins", "--port", str(proxy.ports.imap), "--users", users_file(tmp_path, farm),
        "--workers", "4", "--requests", "80",
    )  # fmt: skip
    (target,) = doc["targets"]
    assert (target["ok"], target["errors"], target["error_total"]) == (80, {}, 0)
    assert status == 0
    assert target["latency_ms"]["count"] == 80
    lat = target["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert set(target["phases_ms"]) == {"connect", "greeting", "login", "select", "logout"}
    assert sum(target["histogram"]["counts"]) == 80
    assert sum(target["timeline"]["ok"]) == 80
    assert doc["comparison"] is None


def test_wrong_passwords_are_auth_failures(farm: Farm, proxy, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    status, doc = bench(
        capsys,
        "logins", "--port", str(proxy.ports.imap), "--users", users_file(tmp_path, farm, True),
        "--workers", "2", "--requests", "6",
    )  # fmt: skip
    (target,) = doc["targets"]
    assert target["ok"] == 0
    assert target["errors"] == {"auth-failed": 6}
    assert "AUTHENTICATIONFAILED" in target["error_samples"]["auth-failed"]
    assert status == 1


def test_wrong_pattern_on_pop3_direct(farm: Farm, capsys) -> None:  # type: ignore[no-untyped-def]
    status, doc = bench(
        capsys,
        "logins", "--protocol", "pop3", "--host", farm.backends["mail1"].host,
        "--port", str(farm.backends["mail1"].pop3_port), "--pattern", "u{i}@d{i%10}.test",
        "--password-pattern", "pw{i}", "--count", "3", "--workers", "3", "--requests", "3",
    )  # fmt: skip
    assert doc["targets"][0]["errors"] == {"auth-failed": 3}  # the test farm has no bulk users
    assert status == 1


def test_refused_connections_are_counted(capsys) -> None:  # type: ignore[no-untyped-def]
    from bench.proxyproc import free_port

    status, doc = bench(
        capsys,
        "logins", "--port", str(free_port()), "--pattern", "u{i}", "--password-pattern", "p",
        "--count", "1", "--workers", "2", "--requests", "5",
    )  # fmt: skip
    assert doc["targets"][0]["errors"] == {"connect-refused": 5}
    assert status == 1


def test_pop3_pipelined_logins(farm: Farm, proxy, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    status, doc = bench(
        capsys,
        "logins", "--protocol", "pop3", "--port", str(proxy.ports.pop3),
        "--users", users_file(tmp_path, farm), "--workers", "2", "--requests", "10",
        "--pipeline",
    )  # fmt: skip
    assert (doc["targets"][0]["ok"], doc["targets"][0]["errors"]) == (10, {})
    assert status == 0


def test_starttls_logins(farm: Farm, proxy, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    status, doc = bench(
        capsys,
        "logins", "--port", str(proxy.ports.imap), "--starttls",
        "--ca", str(farm.pki.ca_cert), "--users", users_file(tmp_path, farm),
        "--workers", "2", "--requests", "6", "--pipeline",
    )  # fmt: skip
    assert (doc["targets"][0]["ok"], doc["targets"][0]["errors"]) == (6, {})
    assert status == 0


def test_compare_with_direct_backend_reports_ratio(  # type: ignore[no-untyped-def]
    farm: Farm, proxy, tmp_path: Path, capsys
) -> None:
    status, doc = bench(
        capsys,
        "logins", "--port", str(proxy.ports.imap), "--users", users_file(tmp_path, farm),
        "--compare", direct(farm, "mail1"), "--label", "mailfarm", "--compare-label", "direct",
        "--workers", "2", "--duration", "1", "--round", "0.25",
        "--cpu-pid", str(proxy.process.proc.pid),
    )  # fmt: skip
    a, b = doc["targets"]
    assert (a["label"], b["label"]) == ("mailfarm", "direct")
    assert a["ok"] > 0 and b["ok"] > 0
    assert a["error_total"] == b["error_total"] == 0
    assert [r["target"] for r in doc["rounds"]] == [0, 1] * 4
    comparison = doc["comparison"]
    assert comparison["ratio"] == pytest.approx(a["rate_per_s"] / b["rate_per_s"])
    assert comparison["text"].startswith("mailfarm / direct = ")
    assert a["cpu"]["seconds"] >= 0 and a["cpu"]["ms_per_login"] is not None
    assert "cpu" not in b  # no --compare-cpu-pid
    assert status == 0


def test_idle_sessions_held_and_memory(farm: Farm, proxy, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    status, doc = bench(
        capsys,
        "idle", "--port", str(proxy.ports.imap), "--users", users_file(tmp_path, farm),
        "--sessions", "50", "--rate", "200", "--hold", "1",
        "--pid", str(proxy.process.proc.pid),
    )  # fmt: skip
    (target,) = doc["targets"]
    idle = target["idle"]
    assert (idle["requested"], idle["established"], idle["held"]) == (50, 50, 50)
    assert (idle["dropped"], idle["failed"], target["error_total"]) == (0, 0, 0)
    (round_,) = idle["rounds"]
    assert round_["memory_before_kb"] > 0 and round_["memory_holding_kb"] > 0
    assert round_["memory_kind"] in ("pss", "rss")
    assert idle["kb_per_session"] is not None
    assert status == 0


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_fetch_counts_bytes(farm: Farm, proxy, tmp_path: Path, capsys, protocol: str) -> None:  # type: ignore[no-untyped-def]
    user = farm.user("quote@example.com")  # its mailbox is not inspected by other tests
    lmtp = farm.backends[user.backend]
    size = 1024 * 1024
    argv = [
        "fetch", "--protocol", protocol,
        "--port", str(proxy.ports.imap if protocol == "imap" else proxy.ports.pop3),
        "--users", users_file(tmp_path, farm, only=user.address),
        "--size", str(size), "--workers", "2", "--requests", "6",
        "--compare", direct(farm, user.backend, protocol),
        "--deliver-lmtp", f"{lmtp.host}:{lmtp.lmtp_port}",
    ]  # fmt: skip
    status, doc = bench(capsys, *argv)
    for target in doc["targets"]:
        assert target["errors"] == {}
        assert target["fetches"] == 6
        assert target["message_size"] >= size
        assert target["bytes"] == target["message_size"] * target["fetches"]
    assert doc["comparison"]["metric"] == "MB/s"
    assert status == 0


def test_html_report(farm: Farm, proxy, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    report = tmp_path / "bench.html"
    status, _ = bench(
        capsys,
        "logins", "--port", str(proxy.ports.imap), "--users", users_file(tmp_path, farm),
        "--workers", "2", "--requests", "10", "--report", str(report),
    )  # fmt: skip
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    svgs = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(svgs) >= 2
    for svg in svgs:
        ET.fromstring(svg)
    assert status == 0


def test_command_line_end_to_end(farm: Farm, proxy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    done = subprocess.run(
        [
            sys.executable, "-m", "proxy.cli", "bench", "logins",
            "--port", str(proxy.ports.imap), "--users", users_file(tmp_path, farm),
            "--workers", "3", "--requests", "9", "--json", "--progress",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["targets"][0]["ok"] == 9
    assert "mailfarm bench logins:" in done.stderr  # the plan, before the run
    text = subprocess.run(
        [
            sys.executable, "-m", "proxy.cli", "bench", "logins", "--host", "192.0.2.1",
            "--port", "143", "--users", users_file(tmp_path, farm), "--requests", "1",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert text.returncode == 2
    assert "--allow-remote" in text.stderr


def test_backend_kinds_benchmark_reports_both_kinds(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import kinds

    kinds.main(["--logins", "2", "--rounds", "1"])
    reports = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    assert [r["kind"] for r in reports] == ["dovecot", "cyrus"]
    for report in reports:
        assert set(report["sessions_per_s"]) == {"direct", "password", "proxy"}
        assert all(rate > 0 for rate in report["sessions_per_s"].values())


def test_moverate_benchmark_reports_both_copies(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import moverate

    argv = ["--messages", "20", "--folders", "2", "--rounds", "1", "--size", "4KB", "--quiet"]
    moverate.main(argv)
    doc = json.loads(capsys.readouterr().out)
    assert (doc["messages"], doc["move_settle_s"]) == (20, 0)
    (move,), (copy,) = doc["runs"]["mailfarm"], doc["runs"]["imapsync_style"]
    assert move["messages"] == copy["messages"] == 20
    assert copy["identical"] is True  # the imapsync-style copy does the same job
    for rates in (*doc["median"].values(), *doc["dovecot_cyrus_moves"]):
        assert rates["messages_per_s"] > 0 and rates["mb_per_s"] > 0, rates
    ratio = doc["ratio_mailfarm_to_imapsync_style"]
    assert ratio["whole_move"] > 0 and ratio["copy_phase"] > 0
