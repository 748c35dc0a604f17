"""The farm's Dovecot backends run Pigeonhole: ManageSieve on ``sieve_port``, Sieve at LMTP
delivery, and vacation replies that land in the backend's outbox (its ``sendmail_path``)."""

from __future__ import annotations

import email
import email.policy
import shutil
import smtplib
import ssl
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from bench.farm import Farm, FarmUser, SentMail
from tests.integration.sieveclient import SieveClient, SieveError
from tests.integration.waiting import eventually

USER = "carol@example.com"  # on mail1
SENDER = "sender@example.net"
VACATION = 'require "vacation";\r\nvacation :days 1 :subject "away" "I am away";\r\n'


def connect(farm: Farm, backend: str = "mail1") -> SieveClient:
    b = farm.backends[backend]
    return SieveClient(b.host, b.sieve_port, timeout=10)


def tls_context(farm: Farm) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(farm.pki.ca_cert))


def message(sender: str, to: str, subject: str, extra: str = "") -> bytes:
    return (
        f"From: Someone <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@example.net>\r\n{extra}\r\nHello.\r\n"
    ).encode()


def lmtp_deliver(farm: Farm, sender: str, rcpt: str, data: bytes) -> None:
    """Straight to mail1's LMTP; Sieve (and any vacation reply) has run once it returns."""
    b = farm.backends["mail1"]
    with smtplib.LMTP(b.host, b.lmtp_port, timeout=10) as lmtp:
        assert lmtp.sendmail(sender, [rcpt], data) == {}


def replies_to(farm: Farm, address: str) -> list[SentMail]:
    return [sent for sent in farm.outbox("mail1") if address in sent.recipients]


@pytest.fixture
def carol(farm: Farm) -> Iterator[FarmUser]:
    """The user, with no Sieve script left behind (other tests deliver to her)."""
    user = farm.user(USER)
    yield user
    with connect(farm) as sieve:
        sieve.authenticate_plain(user.address, user.password)
        sieve.setactive("")
        for name, _active in sieve.listscripts():
            sieve.deletescript(name)
        sieve.logout()


def test_dovecot_backends_speak_managesieve(farm: Farm) -> None:
    for name, backend in farm.backends.items():
        if backend.kind != "dovecot":  # Cyrus's timsieved: tests/integration/test_cyrus_sieve.py
            assert backend.sieve_port == farm.backends["mail1"].sieve_port, name
            continue
        with connect(farm, name) as sieve:
            caps = sieve.capabilities
            assert "Pigeonhole" in caps["IMPLEMENTATION"]
            assert "vacation" in caps["SIEVE"].split()
            assert "PLAIN" in caps["SASL"].split()
            assert "STARTTLS" in caps
            sieve.starttls(tls_context(farm), f"{name}.mailfarm.test")
            assert "STARTTLS" not in sieve.capabilities  # re-sent after the handshake
            assert "vacation" in sieve.capabilities["SIEVE"].split()
            sieve.logout()


def test_wrong_password_is_a_clear_error(farm: Farm, carol: FarmUser) -> None:
    with connect(farm) as sieve:
        with pytest.raises(SieveError) as refused:
            sieve.authenticate_plain(carol.address, "not-" + carol.password)
        assert refused.value.status == "NO"
        assert refused.value.command == "AUTHENTICATE"
    # Without SASL-IR: the credentials answer the server's empty challenge. (Dovecot 2.3
    # refuses that form on a connection that already had a failed attempt: a fresh one.)
    with connect(farm) as sieve:
        sieve.authenticate_plain(carol.address, carol.password, initial=False)
        with pytest.raises(SieveError) as missing:
            sieve.getscript("no-such-script")
        assert (missing.value.status, missing.value.code) == ("NO", "NONEXISTENT")
        sieve.logout()


def test_vacation_reply_through_lmtp(farm: Farm, carol: FarmUser) -> None:
    with connect(farm) as sieve:
        sieve.starttls(tls_context(farm), "mail1.mailfarm.test")
        sieve.authenticate_plain(carol.address, carol.password)
        sieve.checkscript(VACATION)
        sieve.putscript("away", VACATION)
        sieve.setactive("away")
        assert sieve.listscripts() == [("away", True)]
        assert sieve.getscript("away") == VACATION
        sieve.logout()

    lmtp_deliver(farm, SENDER, carol.address, message(SENDER, carol.address, "lunch?"))
    assert eventually(lambda: replies_to(farm, SENDER), timeout=5), farm.outbox("mail1")
    (reply,) = replies_to(farm, SENDER)
    assert reply.recipients == (SENDER,)
    assert reply.args[reply.args.index("-f") + 1] in ("<>", "")  # a null return path
    parsed = email.message_from_string(reply.message, policy=email.policy.default)
    assert parsed["Subject"] == "away"
    assert parsed["To"].addresses[0].addr_spec == SENDER
    assert parsed["Auto-Submitted"].startswith("auto-replied")
    assert parsed.get_content().strip() == "I am away"

    # Once per sender within :days; never to automatic or list mail, nor to mail whose
    # headers do not name the recipient (e.g. a Bcc). Each was still stored: LMTP said 250.
    lmtp_deliver(farm, SENDER, carol.address, message(SENDER, carol.address, "again"))
    robot, lister, bcc = "robot@example.net", "lister@example.net", "bcc@example.net"
    lmtp_deliver(
        farm,
        robot,
        carol.address,
        message(robot, carol.address, "x", "Auto-Submitted: auto-generated\r\n"),
    )
    lmtp_deliver(
        farm,
        lister,
        carol.address,
        message(lister, carol.address, "x", "List-Id: <l.example.net>\r\n"),
    )
    lmtp_deliver(farm, bcc, carol.address, message(bcc, "someone@example.org", "x"))
    assert len(replies_to(farm, SENDER)) == 1
    assert not [s for s in farm.outbox("mail1") if {robot, lister, bcc} & set(s.recipients)]
    log = farm.log_file("mail1").read_text(errors="replace")
    assert "sent vacation response to <sender@example.net>" in log
    assert not [line for line in log.splitlines() if "sieve" in line and "Error" in line]


def test_master_and_proxy_logins(farm: Farm, carol: FarmUser) -> None:
    """As for IMAP: ``user*admin`` with the master password, and SASL PLAIN with the user as
    authzid and mfproxy (the front end's identity) as authcid both act as the user."""
    master = f"{carol.address}{farm.master_separator}{farm.master_user}"
    with connect(farm) as sieve:
        sieve.authenticate_plain(master, farm.master_password)
        sieve.putscript("probe", "keep;\r\n")
        sieve.logout()
    with connect(farm) as sieve:
        sieve.authenticate_plain(farm.proxy_user, farm.proxy_password, authzid=carol.address)
        assert sieve.listscripts() == [("probe", False)]
        sieve.logout()
    with connect(farm) as sieve:
        sieve.authenticate_plain(carol.address, carol.password)
        assert sieve.listscripts() == [("probe", False)]
        sieve.logout()
    with connect(farm) as sieve, pytest.raises(SieveError):
        sieve.authenticate_plain(farm.proxy_user, "wrong", authzid=carol.address)


@pytest.mark.skipif(shutil.which("sieve-connect") is None, reason="sieve-connect not installed")
def test_sieve_connect_client(farm: Farm, carol: FarmUser) -> None:
    """Debian's sieve-connect (STARTTLS, then PLAIN) against the farm, as a person would."""
    b = farm.backends["mail1"]

    def sieve_connect(user: str, password: str, *args: str) -> str:
        argv = [
            "sieve-connect", "--server", b.host, "--port", str(b.sieve_port),
            "--tlscafile", str(farm.pki.ca_cert), "--tlshostname", "mail1.mailfarm.test",
            "--authmech", "PLAIN", "--user", user, "--passwordfd", "0", *args,
        ]  # fmt: skip
        done = subprocess.run(
            argv, input=password + "\n", capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    with connect(farm) as sieve:
        sieve.authenticate_plain(carol.address, carol.password)
        sieve.putscript("filed", 'require "fileinto";\r\nfileinto "INBOX";\r\n')
        sieve.setactive("filed")
        sieve.logout()
    assert sieve_connect(carol.address, carol.password, "--list").split() == ['"filed"', "ACTIVE"]
    proxied = sieve_connect(
        farm.proxy_user, farm.proxy_password, "--authzid", carol.address, "--list"
    )
    assert proxied.split() == ['"filed"', "ACTIVE"]
    downloaded = sieve_connect(
        carol.address, carol.password, "--download", "--remotesieve", "filed", "--localsieve", "-"
    )
    assert 'fileinto "INBOX";' in downloaded
