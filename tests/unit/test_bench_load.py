"""The load tester's pure parts: round plans, tickets, wire helpers, /proc readings, CLI checks."""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import ssl
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import cli, targets
from bench.clients import BenchError, classify, imap_string
from bench.load import Gate, Round, closest, plan_rounds
from bench.pop3client import read_dot_terminated
from bench.procstat import cpu_seconds, expand_pids, memory
from proxy.cli import build_parser

# -- rounds and tickets -------------------------------------------------------------------


def test_single_target_is_one_round() -> None:
    assert plan_rounds(1, 20, None, 5, 2) == [Round(0, seconds=20)]
    assert plan_rounds(1, None, 80, 5, 2) == [Round(0, requests=80)]


def test_compare_alternates_and_splits_time_exactly() -> None:
    rounds = plan_rounds(2, 20, None, 5, 2)
    assert [r.target for r in rounds] == [0, 1] * 4
    assert sum(r.seconds or 0 for r in rounds if r.target == 0) == pytest.approx(20)
    odd = plan_rounds(2, 7, None, 5, 2)  # 7 s in rounds of at most 5 s: 2 rounds of 3.5 s
    assert [r.seconds for r in odd] == [3.5] * 4


@given(st.integers(1, 10_000), st.integers(1, 20))
def test_compare_splits_requests_exactly(requests: int, rounds: int) -> None:
    plan = plan_rounds(2, None, requests, 5, rounds)
    for target in (0, 1):
        assert sum(r.requests or 0 for r in plan if r.target == target) == requests
    assert [r.target for r in plan] == [0, 1] * (len(plan) // 2)


def test_plan_needs_one_budget() -> None:
    with pytest.raises(ValueError):
        plan_rounds(1, None, None, 5, 2)


def test_gate_counts_exactly_and_stops_at_deadline() -> None:
    gate = Gate(3, float("inf"))
    assert [gate.take() for _ in range(5)] == [True, True, True, False, False]
    assert Gate(None, 0.0).take() is False


def test_closest_message() -> None:
    assert closest({1: 100, 2: 1_000_000, 3: 1_000_300}, 1_000_000) == (2, 1_000_000)
    assert closest({1: 5, 2: 5}, 5) == (2, 5)  # latest on ties
    assert closest({}, 5) is None


# -- wire helpers -------------------------------------------------------------------------


def test_imap_strings_quote_or_use_literals() -> None:
    assert imap_string("alice", False) == (b'"alice"', False)
    assert imap_string('p"a\\ss w0rd', False) == (b'"p\\"a\\\\ss w0rd"', False)
    assert imap_string("pässword", True) == (b"{9+}\r\np\xc3\xa4ssword", False)
    assert imap_string("pässword", False) == (b"{9}\r\np\xc3\xa4ssword", True)


@pytest.mark.parametrize(
    ("exc", "phase", "kind"),
    [
        (TimeoutError(), "connect", "connect-timeout"),
        (TimeoutError(), "login", "timeout"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "connect", "connect-refused"),
        (OSError(errno.EMFILE, "too many"), "connect", "fds-exhausted"),
        (OSError(errno.EADDRNOTAVAIL, "no port"), "connect", "ports-exhausted"),
        (asyncio.IncompleteReadError(b"", 10), "select", "closed"),
        (ssl.SSLError("bad"), "greeting", "tls-error"),
        (ValueError("oops"), "login", "client-bug"),
        (BenchError("auth-failed", "NO"), "login", "auth-failed"),
    ],
)
def test_errors_are_classified(exc: BaseException, phase: str, kind: str) -> None:
    assert classify(exc, phase).kind == kind


def pop3_body(message: bytes) -> bytes:
    """Dot-stuff ``message`` (CRLF lines) and terminate it, as a POP3 server sends RETR."""
    lines = message.split(b"\r\n")[:-1] if message else []
    stuffed = [b"." + line if line.startswith(b".") else line for line in lines]
    return b"".join(line + b"\r\n" for line in stuffed) + b".\r\n"


async def consume(wire: bytes, cuts: list[int]) -> int:
    reader = asyncio.StreamReader()
    pieces, last = [], 0
    for cut in [*sorted({c % (len(wire) + 1) for c in cuts}), len(wire)]:
        pieces.append(wire[last:cut])
        last = cut
    for piece in pieces:
        if piece:
            reader.feed_data(piece)
    reader.feed_eof()
    return await read_dot_terminated(reader)


lines = st.lists(st.sampled_from([b"", b".", b"..", b".x", b"abc", b"x.", b"\r", b"a.b"]))


@settings(max_examples=300)
@given(lines, st.lists(st.integers(0, 10_000), max_size=8))
def test_retr_size_undoes_dot_stuffing(body: list[bytes], cuts: list[int]) -> None:
    message = b"".join(line + b"\r\n" for line in body if b"\r" not in line)
    size = asyncio.run(consume(pop3_body(message), cuts))
    assert size == len(message)


def test_retr_counts_a_large_message() -> None:
    message = (b"." + b"x" * 74 + b"\r\n") * 20_000
    assert asyncio.run(consume(pop3_body(message), [65536, 70000])) == len(message)


# -- /proc readings -----------------------------------------------------------------------


def fake_proc(tmp_path: Path) -> Path:
    def proc(pid: int, ppid: int, ticks: tuple[int, int, int, int], pss: int | None, rss: int):
        d = tmp_path / str(pid)
        d.mkdir()
        fields = ["S", str(ppid)] + ["0"] * 9 + [str(t) for t in ticks] + ["0"] * 10
        (d / "stat").write_text(f"{pid} (a b) c) " + " ".join(fields) + "\n")
        (d / "status").write_text(f"Name:\tx\nVmRSS:\t{rss} kB\n")
        if pss is not None:
            (d / "smaps_rollup").write_text(f"Rss: {rss} kB\nPss:  {pss} kB\n")

    proc(10, 1, (100, 50, 7, 3), 1000, 4000)
    proc(11, 10, (10, 10, 0, 0), None, 300)  # no smaps_rollup: RSS fallback
    proc(12, 11, (5, 5, 0, 0), 200, 900)
    proc(20, 1, (1, 1, 0, 0), 50, 60)
    (tmp_path / "self").mkdir()
    return tmp_path


def test_pid_tree_memory_and_cpu(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path)
    assert expand_pids([10], tree=False, proc=proc) == [10]
    assert expand_pids([10], tree=True, proc=proc) == [10, 11, 12]
    alone = memory([10], proc=proc)
    assert alone is not None and (alone.kb, alone.kind) == (1000, "pss")
    tree = memory([10], tree=True, proc=proc)
    assert tree is not None and (tree.kb, tree.kind, tree.processes) == (1500, "mixed", 3)
    hz = os.sysconf("SC_CLK_TCK")
    assert cpu_seconds([10], proc=proc) == pytest.approx(150 / hz)
    assert cpu_seconds([10], tree=True, proc=proc) == pytest.approx((160 + 20 + 10) / hz)
    assert memory([999], proc=proc) is None
    assert cpu_seconds([999], proc=proc) is None


# -- command line -------------------------------------------------------------------------


def test_hostport_parsing() -> None:
    assert targets.parse_hostport("127.0.0.2:143") == ("127.0.0.2", 143)
    assert targets.parse_hostport("[::1]:993") == ("::1", 993)
    for bad in ("127.0.0.1", "host:0", "a:b", ":143"):
        with pytest.raises(targets.UsageError):
            targets.parse_hostport(bad)


def test_remote_targets_are_refused_unless_allowed() -> None:
    assert targets.check_host("127.0.0.5", 143, False) == ["127.0.0.5"]
    assert targets.check_host("::1", 143, False) == ["::1"]
    with pytest.raises(targets.UsageError, match="allow-remote"):
        targets.check_host("192.0.2.1", 143, False)
    assert targets.check_host("192.0.2.1", 143, True) == ["192.0.2.1"]


@pytest.mark.parametrize(
    ("text", "size"),
    [("1048576", 1048576), ("1M", 1048576), ("10MB", 10485760), ("4k", 4096), ("2MiB", 2097152)],
)
def test_sizes(text: str, size: int) -> None:
    assert cli._size(text) == size


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["bench", *argv])


USERS = ("--pattern", "u{i}", "--password-pattern", "pw{i}", "--count", "3")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("idle", "--port", "1", "--protocol", "pop3", "--sessions", "2", *USERS), "IMAP only"),
        (("logins", "--port", "1", "--requests", "1", "--report", "x.png", *USERS), "PNG"),
        (("logins", "--port", "1", "--requests", "1", "--compare", "nope", *USERS), "HOST:PORT"),
        (("logins", "--host", "192.0.2.1", "--port", "1", "--requests", "1", *USERS), "remote"),
        (("logins", "--port", "1", "--requests", "1", "--pattern", "u{i"), "pattern"),
        (("logins", "--port", "1", "--requests", "1", "--cpu-pid", "999999999", *USERS), "process"),
    ],
)
def test_bad_invocations_exit_2(
    argv: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse(*argv)
    assert args.func(args) == cli.EXIT_USAGE
    assert "mailfarm bench:" in capsys.readouterr().err


def test_spec_from_arguments() -> None:
    args = parse(
        "logins", "--port", "1143", "--compare", "127.0.0.2:143", "--duration", "20",
        "--workers", "32", "--label", "mailfarm", "--compare-label", "direct", *USERS,
    )  # fmt: skip
    spec = cli.build_spec(args)
    assert [t.address for t in spec.targets] == ["127.0.0.1:1143", "127.0.0.2:143"]
    assert [u.login for u in spec.users] == ["u0", "u1", "u2"]
    assert spec.rounds == 2 and spec.duration == 20 and spec.workers == 32
    assert "mailfarm (127.0.0.1:1143) vs direct (127.0.0.2:143)" in spec.settings["description"]
    idle = cli.build_spec(parse("idle", "--port", "1", "--sessions", "5", *USERS))
    assert idle.rounds == 1 and idle.sessions == 5
