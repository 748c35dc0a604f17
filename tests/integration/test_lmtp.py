"""The LMTP proxy with smtplib.LMTP as Postfix's stand-in, delivering to the farm's Dovecots."""

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
    LMTP_PROXIED,
    RunningSmtpProxy,
    message,
    on_backend,
    other_backend,
    token,
    wait_in_mailbox,
)

pytestmark = pytest.mark.usefixtures("farm")


def lmtp(smtp_proxy: RunningSmtpProxy) -> smtplib.LMTP:
    client = smtplib.LMTP("127.0.0.1", smtp_proxy.ports.lmtp, timeout=30)
    code, _ = client.ehlo("postfix.mailfarm.test")
    assert code == 250
    return client


def transaction(
    client: smtplib.LMTP, rcpts: list[str], data: bytes
) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]:
    """RCPT replies, then the per-recipient replies after DATA (for accepted ones)."""
    assert client.mail("sender@elsewhere.test")[0] == 250
    rcpt_replies = [client.rcpt(r) for r in rcpts]
    accepted = sum(1 for code, _ in rcpt_replies if code == 250)
    code, _ = client.docmd("DATA")
    assert code == 354
    client.send(data.replace(b"\n.", b"\n..") + b".\r\n")
    return rcpt_replies, [client.getreply() for _ in range(accepted)]


def test_recipients_on_two_backends(farm: Farm, smtp_proxy: RunningSmtpProxy, proxy) -> None:  # type: ignore[no-untyped-def]
    subject = token()
    alice, bob = farm.user("alice@example.co.uk"), farm.user("bob@example.co.uk")
    rcpts = ["alice@example.co.uk", "nobody@example.co.uk", "Bob+lmtp@Example.co.uk"]
    with lmtp(smtp_proxy) as client:
        rcpt_replies, data_replies = transaction(client, rcpts, message("s@x.test", "x", subject))
    assert [code for code, _ in rcpt_replies] == [250, 550, 250]
    assert b"5.1.1" in rcpt_replies[1][1]
    assert [code for code, _ in data_replies] == [250, 250]
    # In RCPT order, each carrying its own backend's words (Dovecot names the recipient).
    assert b"<alice@example.co.uk>" in data_replies[0][1]
    assert b"<Bob+lmtp@Example.co.uk>" in data_replies[1][1]
    for user in (alice, bob):
        wait_in_mailbox(farm, proxy, user, subject)
        assert on_backend(farm, user.backend, user, subject)
        assert not on_backend(farm, other_backend(farm, user), user, subject)


def test_backend_down_defers_only_its_recipients(
    farm: Farm, smtp_proxy: RunningSmtpProxy, proxy
) -> None:  # type: ignore[no-untyped-def]
    subject = token()
    alice, bob, carol = (
        farm.user(a) for a in ("alice@example.co.uk", "bob@example.co.uk", "carol@example.com")
    )
    assert (alice.backend, bob.backend, carol.backend) == ("mail1", "mail2", "mail1")
    rcpts = [alice.address, bob.address, carol.address]
    farm.stop_backend("mail2")
    try:
        with lmtp(smtp_proxy) as client:
            rcpt_replies, data_replies = transaction(
                client, rcpts, message("s@x.test", "x", subject)
            )
    finally:
        farm.start_backend("mail2")
    assert [code for code, _ in rcpt_replies] == [250, 250, 250]
    codes = [code for code, _ in data_replies]
    assert codes[0] == 250 and codes[2] == 250, data_replies
    assert 400 <= codes[1] < 500 and b"4.4.1" in data_replies[1][1], data_replies
    wait_in_mailbox(farm, proxy, alice, subject)
    wait_in_mailbox(farm, proxy, carol, subject)
    assert not on_backend(farm, "mail2", bob, subject)  # deferred: Postfix would retry


def test_directory_down_defers_at_rcpt(farm: Farm, smtp_proxy: RunningSmtpProxy) -> None:
    key = f"dave+{token()}@example.com"  # nothing cached for it
    with lmtp(smtp_proxy) as client:
        assert client.mail("sender@elsewhere.test")[0] == 250
        farm.stop_ldap()
        try:
            code, text = client.rcpt(key)
        finally:
            farm.start_ldap()
        assert (code, text[:5]) == (451, b"4.3.0"), text
        code, _ = client.rcpt(key)  # LDAP is back: the same recipient is fine now
        assert code == 250
        client.rset()


def test_lmtp_refuses_helo_and_needs_lhlo(smtp_proxy: RunningSmtpProxy) -> None:
    with smtplib.SMTP("127.0.0.1", smtp_proxy.ports.lmtp, timeout=10) as client:
        assert client.docmd("EHLO x")[0] == 500
        assert client.docmd("MAIL FROM:<a@b.test>")[0] == 503
        assert client.docmd("LHLO x")[0] == 250


def test_data_line_too_long_gives_one_reply_per_recipient(
    farm: Farm, smtp_proxy: RunningSmtpProxy
) -> None:
    """aiosmtpd refuses an over-long line with one reply; LMTP needs one per recipient,
    or the client would wait for the missing ones forever."""
    rcpts = ["alice@example.co.uk", "bob@example.co.uk"]
    data = b"Subject: long\r\n\r\n" + b"x" * 5000 + b"\r\n"
    with lmtp(smtp_proxy) as client:
        _, data_replies = transaction(client, rcpts, data)
        assert [code for code, _ in data_replies] == [500, 500]
        assert client.noop()[0] == 250  # and the session is still in step


def test_pipelined_session_log_line(smtp_proxy: RunningSmtpProxy) -> None:
    with socket.create_connection(("127.0.0.1", smtp_proxy.ports.lmtp), timeout=10) as sock:
        f = sock.makefile("rb")
        assert f.readline().startswith(b"220 ")
        sock.sendall(b"LHLO a\r\nMAIL FROM:<>\r\nRCPT TO:<nobody@example.com>\r\nQUIT\r\n")
        lines = [f.readline() for _ in range(8)]
    assert any(line.startswith(b"550 5.1.1") for line in lines), lines
    log = smtp_proxy.process.log_text()
    assert "session proto=lmtp" in log and "rcpt-unknown=1" in log


def test_null_sender_bounce_is_delivered(farm: Farm, smtp_proxy: RunningSmtpProxy, proxy) -> None:  # type: ignore[no-untyped-def]
    dave = farm.user("dave@example.com")
    subject = token()
    with lmtp(smtp_proxy) as client:
        assert client.docmd("MAIL FROM:<>")[0] == 250
        assert client.rcpt(dave.address)[0] == 250
        assert client.docmd("DATA")[0] == 354
        client.send(message("MAILER-DAEMON@x.test", dave.address, subject) + b".\r\n")
        assert client.getreply()[0] == 250
    assert wait_in_mailbox(farm, proxy, dave, subject).startswith(b"Return-Path: <>\r\n")


def test_postfix_delivers_through_the_lmtp_proxy(
    farm: Farm, postfix: PostfixInstance, smtp_proxy: RunningSmtpProxy, proxy
) -> None:  # type: ignore[no-untyped-def]
    """Postfix's own LMTP client against the proxy (its transport sends LMTP_PROXIED here)."""
    user = farm.user(LMTP_PROXIED)
    subject = token()
    qid = postfix.send("sender@elsewhere.test", user.address, message("s@x.test", "x", subject))
    [delivery] = postfix.wait_delivered(qid)
    assert delivery.status == "sent", delivery.line
    assert delivery.relay == f"127.0.0.1[127.0.0.1]:{smtp_proxy.ports.lmtp}"
    assert "2.0.0" in delivery.line and "Saved" in delivery.line  # Dovecot's words, passed on
    wait_in_mailbox(farm, proxy, user, subject)
    assert on_backend(farm, user.backend, user, subject)


def _connect_from(source: str, port: int) -> socket.socket:
    """A client socket bound to ``source``: any 127/8 address reaches a loopback listener."""
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))


def _warnings(proc: MailfarmProcess, fragment: str) -> list[str]:
    return [line for line in proc.log_text().splitlines() if "WARNING" in line and fragment in line]


def test_allowed_networks_refuse_others_at_accept(farm: Farm, tmp_path: Path) -> None:
    """Anyone who can speak LMTP to the proxy can drop mail into any mailbox, so only
    [lmtp] allowed_networks may: here 127.0.0.2 is, 127.0.0.1 (the default source) is not."""
    port = free_port()
    lmtp_port = next(iter(farm.backends.values())).lmtp_port
    sections = farm_config(
        farm,
        ProxyPorts(),
        lmtp={
            "listen": [f"127.0.0.1:{port}"],
            "backend_port": lmtp_port,
            "hostname": "lmtp.mailfarm.test",
            "allowed_networks": ["127.0.0.2/32"],
        },
    )
    proc = MailfarmProcess(tmp_path, sections, "lmtp-allowed").start()
    try:
        with _connect_from("127.0.0.1", port) as sock:
            client = f"lmtp connection from 127.0.0.1:{sock.getsockname()[1]} "
            f = sock.makefile("rb")
            assert f.readline().startswith(b"421 4.7.1 ")
            assert f.read() == b""  # and closed: no greeting, no session
        refused = []
        for _ in range(50):
            refused = _warnings(proc, client)
            if refused:
                break
            time.sleep(0.05)
        assert len(refused) == 1, proc.log_text()[-2000:]  # one line per refused client
        assert "refused: not in [lmtp] allowed_networks" in refused[0]
        # (mailfarm's readiness probe from 127.0.0.1 was refused too, no session either)
        assert "session proto=lmtp" not in proc.log_text()

        # From an allowed address the proxy is all there (and says who it is).
        with _connect_from("127.0.0.2", port) as sock:
            f = sock.makefile("rb")
            assert f.readline().startswith(b"220 lmtp.mailfarm.test")
            sock.sendall(b"LHLO postfix.test\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.co.uk>\r\n")
            lines = [f.readline()]
            while lines[-1] and not lines[-1].startswith((b"250 2.1.5", b"4", b"5")):
                lines.append(f.readline())
            assert lines[-1].startswith(b"250 2.1.5"), lines
            sock.sendall(b"QUIT\r\n")
        assert not _warnings(proc, "lmtp connection from 127.0.0.2:")
    finally:
        proc.stop()
