"""An LDAP server that hangs must never hang logins.

Two kinds of hang: a host that accepts TCP and never says a word (a listener in this test),
and the farm's real slapd frozen with SIGSTOP. Either way every login, however many wait at
once, gets the protocol's "try again later" within ``[directory] timeout`` plus a margin,
never the inactivity BYE; a good second URI takes over; and after SIGCONT logins work again
without restarting mailfarm. Times are checked only against generous bounds.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bench.farm import Farm, FarmUser
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config
from tests.integration.silent import silent_listener
from tests.integration.waiting import eventually

TIMEOUT = 2.0
# Generous: the timeout, the margin mailfarm adds, and a busy test machine.
BOUND = 2 * TIMEOUT + 2
LOGINS = 25
PREAUTH_TIMEOUT = 15  # well above BOUND, so a hung login shows up as the inactivity BYE
CLIENT_TIMEOUT = PREAUTH_TIMEOUT + 10

Reply = tuple[bytes, float]  # (the server's answer to the login, seconds it took)


@pytest.fixture()
def silent_ldap() -> Iterator[str]:
    """An ldap:// URI whose host accepts connections and never answers (nor closes)."""
    with silent_listener("127.0.0.1", 0) as port:
        yield f"ldap://127.0.0.1:{port}"


@contextmanager
def slapd_frozen(farm: Farm) -> Iterator[None]:
    """slapd SIGSTOPped: its port still accepts (the kernel's backlog), nothing answers."""
    pid = farm.pids()["ldap"]
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def start_proxy(
    farm: Farm, tmp_path: Path, name: str, directory: dict[str, Any]
) -> tuple[MailfarmProcess, ProxyPorts]:
    ports = ProxyPorts()
    table = {"timeout": TIMEOUT, **directory}
    sections = farm_config(farm, ports, directory=table, proxy={"preauth_timeout": PREAUTH_TIMEOUT})
    return MailfarmProcess(tmp_path, sections, name).start(), ports


def _quoted(text: str) -> bytes:
    return b'"' + text.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"'


def imap_login(port: int, login: str, password: str) -> Reply:
    """The tagged answer to LOGIN (or the BYE / what came instead), and how long it took."""
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), CLIENT_TIMEOUT) as sock:
            stream = sock.makefile("rb")
            stream.readline()  # greeting
            sock.sendall(b"a1 LOGIN " + _quoted(login) + b" " + _quoted(password) + b"\r\n")
            while True:
                line = stream.readline()
                if not line or line.startswith((b"a1 ", b"* BYE")):
                    break
            if line.startswith(b"a1 OK"):  # after a failure just leave: its outcome is logged
                sock.sendall(b"a2 LOGOUT\r\n")
    except OSError as exc:
        line = f"<{type(exc).__name__}>".encode()
    return line, time.monotonic() - started


def pop3_login(port: int, login: str, password: str) -> Reply:
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), CLIENT_TIMEOUT) as sock:
            stream = sock.makefile("rb")
            stream.readline()  # greeting
            sock.sendall(b"USER " + login.encode() + b"\r\n")
            line = stream.readline()
            if line.startswith(b"+OK"):
                sock.sendall(b"PASS " + password.encode() + b"\r\n")
                line = stream.readline()
            if line.startswith(b"+OK"):
                sock.sendall(b"QUIT\r\n")
    except OSError as exc:
        line = f"<{type(exc).__name__}>".encode()
    return line, time.monotonic() - started


def at_once(jobs: list[Callable[[], Reply]]) -> list[Reply]:
    """Run every job in its own thread, all at the same time."""
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return list(pool.map(lambda job: job(), jobs))


def plain_users(farm: Farm) -> list[FarmUser]:
    """Farm users whose password needs no quoting games on either protocol."""
    names = ["alice@example.co.uk", "bob@example.co.uk", "carol@example.com", "dave@example.com"]
    return [farm.user(n) for n in names]


def unavailable_wave(
    proc: MailfarmProcess, ports: ProxyPorts, logins: list[tuple[str, str]]
) -> list[Reply]:
    """Logins spread over IMAP and (when built) POP3, all started at once."""
    pop3 = "pop3" in proc.sections
    jobs: list[Callable[[], Reply]] = []
    for i, (login, password) in enumerate(logins):
        if pop3 and i % 3 == 2:
            jobs.append(lambda lp=(login, password): pop3_login(ports.pop3, *lp))
        else:
            jobs.append(lambda lp=(login, password): imap_login(ports.imap, *lp))
    return at_once(jobs)


def assert_all_unavailable(replies: list[Reply]) -> None:
    late = [(r, round(t, 2)) for r, t in replies if t > BOUND]
    wrong = [
        r for r, _ in replies if not r.startswith((b"a1 NO [UNAVAILABLE]", b"-ERR [SYS/TEMP]"))
    ]
    assert not wrong, f"{len(wrong)} of {len(replies)} logins got {sorted(set(wrong))[:4]}"
    assert not late, f"{len(late)} logins took longer than {BOUND}s: {late[:4]}"


def assert_logged_unavailable(proc: MailfarmProcess, count: int) -> None:
    """Every one is logged as directory-unavailable (what the documented alert counts)."""
    assert eventually(lambda: proc.log_text().count("outcome=directory-unavailable") >= count)
    assert "outcome=timeout" not in proc.log_text()


@pytest.mark.parametrize("driver", ["native", "ldap3"])
def test_listener_that_never_answers(
    farm: Farm, tmp_path: Path, silent_ldap: str, driver: str
) -> None:
    proc, ports = start_proxy(
        farm, tmp_path, f"silent-{driver}", {"uri": [silent_ldap], "driver": driver}
    )
    try:
        users = plain_users(farm)
        # Distinct logins, so no two share a lookup; real users and unknown ones alike.
        first = [(f"nobody{i}@example.com", "x") for i in range(LOGINS - len(users))]
        first += [(u.address, u.password) for u in users]
        assert_all_unavailable(unavailable_wave(proc, ports, first))
        # A second wave, once the server has been judged: just as bounded.
        again = [(f"later{i}@example.com", "x") for i in range(LOGINS)]
        assert_all_unavailable(unavailable_wave(proc, ports, again))
        assert_logged_unavailable(proc, 2 * LOGINS)
    finally:
        proc.stop()


@pytest.mark.parametrize("driver", ["native", "ldap3"])
def test_hanging_first_uri_fails_over_within_the_timeout(
    farm: Farm, tmp_path: Path, silent_ldap: str, driver: str
) -> None:
    uris = [silent_ldap, farm.ldap_uri]
    # A timeout long enough that trying the silent server in full, even once per step of a
    # login, would show; the bound is the timeout itself plus a margin.
    timeout = 3.0
    proc, ports = start_proxy(
        farm, tmp_path, f"failover-{driver}", {"uri": uris, "driver": driver, "timeout": timeout}
    )
    users = plain_users(farm)
    try:
        logins = [users[i % len(users)] for i in range(LOGINS)]
        replies = at_once(
            [lambda u=u: imap_login(ports.imap, u.address, u.password) for u in logins]
        )
        refused = [r for r, _ in replies if not r.startswith(b"a1 OK")]
        assert not refused, f"{len(refused)} of {LOGINS} logins got {sorted(set(refused))[:4]}"
        slow = [round(t, 2) for _, t in replies if t > timeout + 1.5]
        assert not slow, f"{len(slow)} logins took longer than the timeout plus 1.5 s: {slow[:4]}"
    finally:
        proc.stop()


@pytest.mark.parametrize("driver", ["native", "ldap3"])
def test_sigstopped_slapd(farm: Farm, tmp_path: Path, driver: str) -> None:
    proc, ports = start_proxy(
        farm,
        tmp_path,
        f"sigstop-{driver}",
        # No stale routes: unknown and known users alike must ask the frozen slapd.
        {"driver": driver, "stale_ttl": 0},
    )
    users = plain_users(farm)
    alice = users[0]
    try:
        # Warm up: routes cached, search and bind connections open to the healthy slapd.
        for u in users:
            assert imap_login(ports.imap, u.address, u.password)[0].startswith(b"a1 OK")
        with slapd_frozen(farm):
            # Cached routes go straight to a bind on an open connection; unknown logins
            # search on the shared search connection. Both hang inside slapd.
            logins = [
                (users[i % len(users)].address, users[i % len(users)].password)
                for i in range(LOGINS // 2)
            ]
            logins += [(f"frozen{i}@example.com", "x") for i in range(LOGINS - len(logins))]
            assert_all_unavailable(unavailable_wave(proc, ports, logins))
            assert_all_unavailable(unavailable_wave(proc, ports, logins))
        assert_logged_unavailable(proc, 2 * LOGINS)
        # After SIGCONT, no restart: logins work again within a bounded wait.
        assert eventually(
            lambda: imap_login(ports.imap, alice.address, alice.password)[0].startswith(b"a1 OK"),
            timeout=30,
            step=0.5,
        ), proc.log_text()[-3000:]
        bob = users[1]
        assert imap_login(ports.imap, bob.address, bob.password)[0].startswith(b"a1 OK")
        assert imap_login(ports.imap, "nobody@example.com", "x")[0].startswith(b"a1 NO")
    finally:
        proc.stop()
