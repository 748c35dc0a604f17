"""The lookup maps against real Postfix: postmap queries, then real mail routed by them."""

from __future__ import annotations

import smtplib
import socket
import time
from pathlib import Path

import pytest

from bench.farm import Farm
from bench.farm_postfix import PostfixInstance
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config, free_port
from tests.integration.smtp_fixtures import (
    RunningSmtpProxy,
    message,
    on_backend,
    other_backend,
    postmap,
    token,
    wait_in_mailbox,
)

pytestmark = pytest.mark.usefixtures("farm")


def socketmap(smtp_proxy: RunningSmtpProxy, name: str) -> str:
    return f"socketmap:inet:127.0.0.1:{smtp_proxy.ports.socketmap}:{name}"


def tcp(smtp_proxy: RunningSmtpProxy) -> str:
    return f"tcp:127.0.0.1:{smtp_proxy.ports.tcp_table}"


@pytest.mark.parametrize(
    ("key", "host"),
    [
        ("alice@example.co.uk", "127.0.0.2"),
        ("bob@example.co.uk", "127.0.0.3"),
        ("ALICE@Example.CO.UK", "127.0.0.2"),
        ("bob+lists@example.co.uk", "127.0.0.3"),
        ("Carol+x+y@EXAMPLE.com", "127.0.0.2"),
        ("jo_anne@under_score.org", "127.0.0.2"),
    ],
)
def test_transport_on_both_protocols(
    farm: Farm, smtp_proxy: RunningSmtpProxy, key: str, host: str
) -> None:
    port = farm.backends["mail1"].lmtp_port
    for table in (socketmap(smtp_proxy, "transport"), tcp(smtp_proxy)):
        result = postmap(key, table)
        assert (result.returncode, result.stdout.strip()) == (0, f"lmtp:inet:{host}:{port}"), (
            table,
            result.stderr,
        )


@pytest.mark.parametrize(
    "key", ["nobody@example.co.uk", "alice@example.org", "alice", "@example.com"]
)
def test_unknown_is_not_found(smtp_proxy: RunningSmtpProxy, key: str) -> None:
    for table in (
        socketmap(smtp_proxy, "transport"),
        socketmap(smtp_proxy, "mailboxes"),
        tcp(smtp_proxy),
    ):
        result = postmap(key, table)
        assert (result.returncode, result.stdout, result.stderr) == (1, "", ""), table


def test_mailboxes_and_domains(farm: Farm, smtp_proxy: RunningSmtpProxy) -> None:
    user = farm.user("bob@example.co.uk")
    assert postmap("Bob+tag@Example.co.uk", socketmap(smtp_proxy, "mailboxes")).stdout.strip() == (
        user.uid
    )
    for domain in ("example.co.uk", "EXAMPLE.COM", "under_score.org"):
        result = postmap(domain, socketmap(smtp_proxy, "domains"))
        assert (result.returncode, result.stdout.strip()) == (0, domain.lower())
    for domain in ("example.org", ".co.uk", "mailfarm.test"):
        assert postmap(domain, socketmap(smtp_proxy, "domains")).returncode == 1


def test_aliases_follow_mail_routing_address(farm: Farm, smtp_proxy: RunningSmtpProxy) -> None:
    user = farm.user("quote@example.com")
    table = socketmap(smtp_proxy, "aliases")
    assert postmap(user.address, table).returncode == 1
    farm.ldap_modify(user.dn, {"mailRoutingAddress": ["quote@mbox2.example.com"]})
    try:
        time.sleep(1.2)  # the route cache keeps the old answer for cache_ttl (1 s here)
        result = postmap("Quote+x@example.com", table)
        assert (result.returncode, result.stdout.strip()) == (0, "quote@mbox2.example.com")
    finally:
        farm.ldap_modify(user.dn, {"mailRoutingAddress": None})


def test_unknown_map_is_an_error(smtp_proxy: RunningSmtpProxy) -> None:
    result = postmap("alice@example.co.uk", socketmap(smtp_proxy, "nosuchmap"))
    # postmap exits 1 for "not found" and for errors alike; stderr tells them apart.
    assert result.returncode == 1 and result.stdout == ""
    assert "permanent error: unknown map nosuchmap" in result.stderr


def test_ldap_down_is_a_temporary_error(farm: Farm, smtp_proxy: RunningSmtpProxy) -> None:
    key = f"alice+{token()}@example.co.uk"  # never asked before: nothing cached, not even stale
    farm.stop_ldap()
    try:
        for table in (socketmap(smtp_proxy, "transport"), tcp(smtp_proxy)):
            result = postmap(key, table)
            assert result.returncode == 1 and result.stdout == "", table
            assert "query error" in result.stderr, result.stderr
            if table.startswith("socketmap:"):  # tcp_table's client does not log our text
                assert "temporary error: directory unavailable" in result.stderr
    finally:
        farm.start_ldap()
    assert postmap(key, tcp(smtp_proxy)).returncode == 0  # and answers again at once


def test_many_requests_on_one_connection(farm: Farm, smtp_proxy: RunningSmtpProxy) -> None:
    """What postmap -q - and Postfix's long-lived clients do: pipelined, in order."""
    keys = ["alice@example.co.uk", "nobody@example.co.uk", "bob@example.co.uk"] * 5
    result = postmap("-", socketmap(smtp_proxy, "transport"), "".join(f"{k}\n" for k in keys))
    lines = result.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == [k for k in keys if "nobody" not in k]
    assert all(("127.0.0.2" in line) == line.startswith("alice") for line in lines)


def test_oversized_and_garbled_requests_close_cleanly(smtp_proxy: RunningSmtpProxy) -> None:
    port, tcp_port = smtp_proxy.ports.socketmap, smtp_proxy.ports.tcp_table
    for target, junk in ((port, b"100000:" + b"x" * 1000), (tcp_port, b"get " + b"a" * 5000)):
        with socket.create_connection(("127.0.0.1", target), timeout=5) as sock:
            sock.sendall(junk)
            reply = sock.recv(4096)
            assert b"PERM " in reply or reply.startswith(b"400 "), reply
            assert sock.recv(4096) == b""  # closed after the error
    for target in (port, tcp_port):  # 100 KB at once: refused early, connection dropped
        with socket.create_connection(("127.0.0.1", target), timeout=5) as sock:
            try:
                sock.sendall(b"9" * 100_000)
                sock.recv(4096)
            except OSError:
                pass  # reset while we were still sending: just as good
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:  # still serving
        sock.sendall(b"29:transport alice@example.co.uk,")
        assert b":OK lmtp:inet:127.0.0.2:" in sock.recv(4096)


def test_mail_through_postfix_lands_on_the_right_backend(
    farm: Farm, postfix: PostfixInstance, smtp_proxy: RunningSmtpProxy, proxy
) -> None:  # type: ignore[no-untyped-def]
    subject = token()
    users = [farm.user("alice@example.co.uk"), farm.user("bob@example.co.uk")]
    rcpts = ["Alice@example.co.uk", "bob+tests@example.co.uk"]
    qid = postfix.send("sender@elsewhere.test", rcpts, message("s@elsewhere.test", "x", subject))
    deliveries = postfix.wait_delivered(qid, recipients=2)
    assert sorted(d.status for d in deliveries) == ["sent", "sent"], deliveries
    for user in users:
        wait_in_mailbox(farm, proxy, user, subject)
        assert on_backend(farm, user.backend, user, subject)
        assert not on_backend(farm, other_backend(farm, user), user, subject)


def test_postfix_rejects_unknown_and_defers_when_ldap_is_down(
    farm: Farm, postfix: PostfixInstance, smtp_proxy: RunningSmtpProxy
) -> None:
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=20) as smtp:
        smtp.ehlo("sender.test")
        smtp.mail("sender@elsewhere.test")
        code, text = smtp.rcpt("nobody@example.co.uk")
        assert code == 550 and b"5.1.1" in text
        key = f"carol+{token()}@example.com"
        farm.stop_ldap()
        try:
            code, text = smtp.rcpt(key)
        finally:
            farm.start_ldap()
        assert code // 100 == 4, (code, text)  # Postfix keeps trying: no bounce
        smtp.rset()


@pytest.mark.parametrize("driver", ["native", "ldap3"])
async def test_domain_check_on_each_ldap_driver(farm: Farm, driver: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from directory.domains import DomainCheck
    from directory.model import DirectoryUnavailable
    from directory.service import Directory
    from proxy.config import DIRECTORY_KEYS, load_config

    if driver != "native" and "driver" not in DIRECTORY_KEYS:
        pytest.skip("this build has one LDAP driver")
    config = tmp_path / "proxy.toml"
    driver_line = f'driver = "{driver}"\n' if "driver" in DIRECTORY_KEYS else ""
    config.write_text(
        f'[directory]\nuri = "{farm.ldap_uri}"\nbase = "{farm.base_dn}"\n'
        f'bind_dn = "{farm.service_dn}"\nbind_password = "{farm.service_password}"\n'
        f"timeout = 2\n{driver_line}"
    )
    directory = Directory(load_config(config).directory)
    check = DomainCheck(directory)
    try:
        assert await check.hosted("example.co.uk")
        assert await check.hosted("under_score.org")
        assert not await check.hosted("example.org")
        farm.stop_ldap()
        try:
            with pytest.raises(DirectoryUnavailable):
                await check.hosted("never-asked.test")
            assert await check.hosted("example.co.uk")  # cached
        finally:
            farm.start_ldap()
        assert not await check.hosted("never-asked.test")  # reconnects by itself
    finally:
        directory.close()


def test_tcp_map_chooses_what_a_tcp_table_serves(farm: Farm, tmp_path: Path) -> None:
    port = free_port()
    sections = farm_config(
        farm, ProxyPorts(), lookup={"tcp_listen": [f"127.0.0.1:{port}"], "tcp_map": "mailboxes"}
    )
    proc = MailfarmProcess(tmp_path, sections, "tcpmap").start()
    try:
        alice = farm.user("alice@example.co.uk")
        result = postmap("Alice+x@Example.co.uk", f"tcp:127.0.0.1:{port}")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == alice.uid
    finally:
        proc.stop()
    assert "tcp_table lookup service (mailboxes map)" in proc.log_text()


def _connect_from(source: str, port: int) -> socket.socket:
    """A client socket bound to ``source``: any 127/8 address reaches a loopback listener."""
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))


def _closed_without_answer(sock: socket.socket, request: bytes) -> bool:
    try:
        sock.sendall(request)
        return sock.recv(4096) == b""
    except ConnectionResetError:  # closed before our request arrived: just as refused
        return True


def test_allowed_networks_cover_both_listeners(farm: Farm, tmp_path: Path) -> None:
    """The lookup service tells anyone which addresses exist, so only [lookup]
    allowed_networks may ask: here 127.0.0.1 is allowed and 127.0.0.2 is not, on the
    socketmap listener and on the tcp_table one alike."""
    socketmap_port, tcp_port = free_port(), free_port()
    sections = farm_config(
        farm,
        ProxyPorts(),
        lookup={
            "listen": [f"127.0.0.1:{socketmap_port}"],
            "tcp_listen": [f"127.0.0.1:{tcp_port}"],
            "allowed_networks": ["127.0.0.1/32"],
        },
    )
    proc = MailfarmProcess(tmp_path, sections, "lookup-allowed").start()
    try:
        for port, request in (
            (socketmap_port, b"29:transport alice@example.co.uk,"),
            (tcp_port, b"get alice@example.co.uk\n"),
        ):
            with _connect_from("127.0.0.2", port) as sock:
                assert _closed_without_answer(sock, request)
        # Postfix's own client from an allowed address is served on both.
        assert postmap("alice@example.co.uk", f"tcp:127.0.0.1:{tcp_port}").returncode == 0
        found = postmap(
            "alice@example.co.uk", f"socketmap:inet:127.0.0.1:{socketmap_port}:mailboxes"
        )
        assert (found.returncode, found.stdout.strip()) == (0, "alice_example_co_uk")
        with _connect_from("127.0.0.1", tcp_port) as sock:
            sock.sendall(b"get bob@example.co.uk\n")
            assert sock.recv(4096).startswith(b"200 lmtp:inet:127.0.0.3:")
        deadline = time.monotonic() + 5
        while True:
            refused = [
                line
                for line in proc.log_text().splitlines()
                if "WARNING" in line and "lookup connection from 127.0.0.2:" in line
            ]
            if len(refused) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(refused) == 2, proc.log_text()[-2000:]  # one line per refused connection
        assert all("not in [lookup] allowed_networks" in line for line in refused)
    finally:
        proc.stop()
