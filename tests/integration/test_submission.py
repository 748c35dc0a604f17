"""The submission proxy: real clients (smtplib, curl, swaks) in, the real Postfix as relay."""

from __future__ import annotations

import base64
import shutil
import smtplib
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.farm import Farm
from bench.farm_postfix import PostfixInstance
from bench.proxyproc import MailfarmProcess, free_port
from tests.integration.smtp_fixtures import (
    RunningSmtpProxy,
    SmtpPorts,
    message,
    smtp_sections,
    token,
    wait_in_mailbox,
)

pytestmark = pytest.mark.usefixtures("farm", "postfix")

QUEUED = "Ok: queued as "


def tls_context(farm: Farm) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(farm.pki.ca_cert))


def wait_for_log(smtp_proxy: RunningSmtpProxy, text: str, timeout: float = 5.0) -> bool:
    """Session lines are written when the connection is gone, a moment after the client."""
    deadline = time.monotonic() + timeout
    while text not in smtp_proxy.process.log_text():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def submission(farm: Farm, smtp_proxy: RunningSmtpProxy, starttls: bool = True) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", smtp_proxy.ports.submission, timeout=30)
    client.ehlo("client.example.net")
    if starttls:
        client.starttls(context=tls_context(farm))
        client.ehlo("client.example.net")
    return client


def send(client: smtplib.SMTP, sender: str, rcpt: str, data: bytes) -> str:
    """MAIL, RCPT, DATA by hand, so the replies can be checked; returns the queue id."""
    assert client.mail(sender)[0] == 250
    code, text = client.rcpt(rcpt)
    assert code == 250, text
    code, text = client.data(data)
    assert code == 250, text
    return text.decode().split(QUEUED, 1)[1].split()[0]


def test_auth_after_starttls_is_relayed_with_xclient(
    farm: Farm, postfix: PostfixInstance, smtp_proxy: RunningSmtpProxy, proxy
) -> None:  # type: ignore[no-untyped-def]
    alice, bob = farm.user("alice@example.co.uk"), farm.user("bob@example.co.uk")
    subject = token()
    with submission(farm, smtp_proxy) as client:
        assert "PLAIN" in client.esmtp_features["auth"]
        client.login(alice.address, alice.password)
        # The DATA reply is Postfix's own ("queued as ..."): nothing is accepted before it.
        qid = send(client, alice.address, bob.address, message(alice.address, bob.address, subject))
    postfix.wait_for_log(
        rf" {qid}: client=\S+\[127\.0\.0\.1\], sasl_method=XCLIENT,"
        rf" sasl_username={alice.uid}$"
    )
    stored = wait_in_mailbox(farm, proxy, bob, subject)
    assert f"(Authenticated sender: {alice.uid})".encode() in stored
    # Postfix's Received line names the client's HELO and address, not mailfarm's.
    assert b"Received: from client.example.net (unknown [127.0.0.1])" in stored
    assert b"with ESMTPA" in stored
    assert wait_for_log(smtp_proxy, f"login={alice.address} uid={alice.uid} backend=127.0.0.1:")
    assert alice.password not in smtp_proxy.process.log_text()


def test_implicit_tls_and_auth_login(farm: Farm, smtp_proxy: RunningSmtpProxy, proxy) -> None:  # type: ignore[no-untyped-def]
    carol = farm.user("carol@example.com")
    subject = token()
    with smtplib.SMTP_SSL(
        "127.0.0.1", smtp_proxy.ports.submissions, context=tls_context(farm), timeout=30
    ) as client:
        client.ehlo("client.example.net")
        assert "starttls" not in client.esmtp_features
        client.user, client.password = carol.uid, carol.password
        code, _ = client.auth("LOGIN", client.auth_login, initial_response_ok=False)
        assert code == 235
        send(client, carol.address, carol.address, message(carol.address, carol.address, subject))
    wait_in_mailbox(farm, proxy, carol, subject)


def test_session_line_counts_bytes_both_ways(farm: Farm, smtp_proxy: RunningSmtpProxy) -> None:
    """As IMAP's does: what the client sent (in) and what it was told (out)."""
    dave = farm.user("dave@example.com")
    with smtplib.SMTP_SSL(
        "127.0.0.1", smtp_proxy.ports.submissions, context=tls_context(farm), timeout=30
    ) as client:
        client.ehlo("bytes.example.net")
        client.login(dave.uid, dave.password)
        client.noop()
    assert wait_for_log(smtp_proxy, f"login={dave.uid} uid={dave.uid}")
    line = next(
        ln
        for ln in reversed(smtp_proxy.process.log_text().splitlines())
        if f"login={dave.uid} " in ln and "proto=submission" in ln
    )
    sent = int(line.split(" in=")[1].split()[0])
    told = int(line.split(" out=")[1].split()[0])
    assert sent > len("EHLO bytes.example.net\r\n") and told > 100, line


def test_no_mail_without_auth(farm: Farm, smtp_proxy: RunningSmtpProxy) -> None:
    for starttls in (False, True):
        with submission(farm, smtp_proxy, starttls=starttls) as client:
            code, text = client.mail("alice@example.co.uk")
            assert (code, text[:5]) == (530, b"5.7.0")
            assert client.rcpt("bob@example.co.uk")[0] == 530
            assert client.docmd("DATA")[0] == 530


def test_no_plaintext_auth_from_untrusted_network(farm: Farm, smtp_proxy: RunningSmtpProxy) -> None:
    alice = farm.user("alice@example.co.uk")
    with submission(farm, smtp_proxy, starttls=False) as client:
        assert "auth" not in client.esmtp_features
        assert "starttls" in client.esmtp_features
        code, text = client.docmd("AUTH", f"PLAIN {plain(alice.address, alice.password)}")
        assert (code, text[:6]) == (538, b"5.7.11")


def plain(login: str, password: str) -> str:
    return base64.b64encode(f"\0{login}\0{password}".encode()).decode()


def test_bad_password_and_unknown_user(farm: Farm, smtp_proxy: RunningSmtpProxy) -> None:
    alice = farm.user("alice@example.co.uk")
    with submission(farm, smtp_proxy) as client:
        started = time.monotonic()
        code, text = client.docmd("AUTH", f"PLAIN {plain(alice.address, 'wrong')}")
        assert (code, text[:5]) == (535, b"5.7.8")
        assert time.monotonic() - started >= 0.2  # [proxy] auth_failure_delay
        code, _ = client.docmd("AUTH", f"PLAIN {plain('nobody@example.co.uk', 'x')}")
        assert code == 535  # the same answer: no user enumeration
        assert client.mail(alice.address)[0] == 530  # still not authenticated
        assert client.docmd("AUTH", f"PLAIN {plain(alice.uid, 'wrong')}")[0] == 535
        assert client.getreply()[0] == 421  # third failure: [proxy] max_auth_failures
    assert wait_for_log(smtp_proxy, "outcome=too-many-failures")
    assert "wrong" not in smtp_proxy.process.log_text()


def test_directory_down_is_temporary(farm: Farm, smtp_proxy: RunningSmtpProxy) -> None:
    dave = farm.user("dave@example.com")
    with submission(farm, smtp_proxy) as client:
        farm.stop_ldap()
        try:
            with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
                client.login(dave.address, dave.password)
        finally:
            farm.start_ldap()
        assert failed.value.smtp_code == 454 and failed.value.smtp_error.startswith(b"4.7.0")
        client.login(dave.address, dave.password)  # LDAP back: fine at once


def test_relay_verdicts_reach_the_client(farm: Farm, smtp_proxy: RunningSmtpProxy) -> None:
    alice = farm.user("alice@example.co.uk")
    with submission(farm, smtp_proxy) as client:
        client.login(alice.uid, alice.password)
        assert client.mail(alice.address)[0] == 250
        code, text = client.rcpt("nobody@example.co.uk")
        assert code == 550 and b"User unknown in virtual mailbox table" in text  # Postfix's words
        code, text = client.docmd("DATA")
        assert code == 503 or code == 554, (code, text)  # the relay has no recipient either
        assert client.rset()[0] == 250
        assert client.mail(alice.address)[0] == 250  # the relay's transaction was reset too
        assert client.rcpt("bob@example.co.uk")[0] == 250
        client.rset()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_submits_over_starttls(
    farm: Farm, smtp_proxy: RunningSmtpProxy, proxy, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    jo = farm.user("jo_anne@under_score.org")
    subject = token()
    mail = tmp_path / "mail.eml"
    mail.write_bytes(message(jo.address, jo.address, subject))
    result = subprocess.run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--ssl-reqd",
            "--cacert",
            str(farm.pki.ca_cert),
            f"smtp://127.0.0.1:{smtp_proxy.ports.submission}/client.example.net",
            "--mail-from",
            jo.address,
            "--mail-rcpt",
            jo.address,
            "--user",
            f"{jo.address}:{jo.password}",
            "--upload-file",
            str(mail),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    wait_in_mailbox(farm, proxy, jo, subject)


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed")
def test_swaks_over_implicit_tls(farm: Farm, smtp_proxy: RunningSmtpProxy, proxy) -> None:  # type: ignore[no-untyped-def]
    quote = farm.user("quote@example.com")  # password with quote, backslash and space
    subject = token()
    result = subprocess.run(
        [
            "swaks",
            "--server",
            f"127.0.0.1:{smtp_proxy.ports.submissions}",
            "--tlsc",
            "--tls-verify",
            "--tls-ca-path",
            str(farm.pki.ca_cert),
            "--from",
            quote.address,
            "--to",
            quote.address,
            "--auth",
            "PLAIN",
            "--auth-user",
            quote.uid,
            "--auth-password",
            quote.password,
            "--header",
            f"Subject: {subject}",
            "--ehlo",
            "client.example.net",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "<~  250 2.0.0 Ok: queued as" in result.stdout
    wait_in_mailbox(farm, proxy, quote, subject)


@pytest.fixture(scope="module")
def dead_relay_proxy(farm: Farm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A second mailfarm whose relay is a port nobody listens on; it trusts loopback, so
    plaintext AUTH is allowed there (the trusted_networks path)."""
    ports = SmtpPorts()
    ports.relay = free_port()  # never listened on
    sections = smtp_sections(farm, ports, trusted=True)
    for name in ("lookup", "lmtp"):
        sections.pop(name)
    process = MailfarmProcess(tmp_path_factory.mktemp("deadrelay"), sections, "deadrelay").start()
    yield ports.submission
    process.stop()


def test_relay_down_accepts_nothing(farm: Farm, dead_relay_proxy: int) -> None:
    alice = farm.user("alice@example.co.uk")
    with smtplib.SMTP("127.0.0.1", dead_relay_proxy, timeout=30) as client:
        client.ehlo("client.example.net")
        assert "PLAIN" in client.esmtp_features["auth"]  # trusted: no TLS needed
        client.login(alice.address, alice.password)
        code, text = client.mail(alice.address)
        assert (code, text[:5]) == (451, b"4.4.1"), text
        assert client.rcpt("bob@example.co.uk")[0] == 503  # no transaction was opened
        assert client.docmd("DATA")[0] == 503
        assert client.noop()[0] == 250


def test_sasl_challenges_and_cancel(farm: Farm, smtp_proxy: RunningSmtpProxy) -> None:
    bob = farm.user("bob@example.co.uk")
    with submission(farm, smtp_proxy) as client:
        assert client.docmd("AUTH", "PLAIN") == (334, b"")
        code, text = client.docmd("*")
        assert (code, text[:5]) == (501, b"5.7.0")
        assert client.docmd("AUTH", "CRAM-MD5")[0] == 504
        assert client.docmd("AUTH", "LOGIN") == (334, base64.b64encode(b"Username:"))
        assert client.docmd(base64.b64encode(bob.uid.encode()).decode()) == (
            334,
            base64.b64encode(b"Password:"),
        )
        code, _ = client.docmd(base64.b64encode(bob.password.encode()).decode())
        assert code == 235
        assert client.docmd("AUTH", "PLAIN")[0] == 503  # once per session


def test_bare_login_gets_the_default_domain(farm: Farm, tmp_path: Path) -> None:
    """[proxy] default_domain applies to submission's AUTH as to IMAP's and POP3's."""
    ports = SmtpPorts()
    sections = smtp_sections(farm, ports)
    sections["proxy"]["default_domain"] = "example.com"
    process = MailfarmProcess(tmp_path, sections, "smtp-default-domain").start()
    try:
        carol = farm.user("carol@example.com")
        local = carol.address.split("@")[0]
        with smtplib.SMTP_SSL(
            "127.0.0.1", ports.submissions, context=tls_context(farm), timeout=30
        ) as client:
            client.ehlo("client.example.net")
            assert client.login(local, carol.password)[0] == 235
        assert wait_for_log(
            RunningSmtpProxy(ports, process), f"login={local} uid={carol.uid}"
        )
    finally:
        process.stop()
