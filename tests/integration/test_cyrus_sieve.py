"""ManageSieve on the farm's Cyrus backends (timsieved) and through mailfarm to them, next to
Dovecot's Pigeonhole on the same ``[sieve] backend_port``, as in a mixed farm.

timsieved's dialect differs from Pigeonhole's where RFC 5804 lets it: its AUTHENTICATE
answer is a bare ``OK`` with no capabilities re-sent (Pigeonhole re-sends none either for
PLAIN, but says more), its empty SASL challenge is the literal ``{0}``, it knows users by
uid only, and a front end vouches for a user with SASL PLAIN authzid (``proxyservers``).
"""

from __future__ import annotations

import imaplib
import shutil
import smtplib
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.farm import Farm, FarmUser
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config, free_port
from tests.integration.sieveclient import SieveClient, SieveError
from tests.integration.waiting import eventually

CYRUS_USER = "erin@example.co.uk"  # on mail3
DOVECOT_USER = "alice@example.co.uk"  # on mail1
FOLDER = "INBOX.Filtered"  # altnamespace: no, so a user's folders are under INBOX
FILTER = (
    'require "fileinto";\r\n'
    f'if header :contains "subject" "[sort]" {{\r\n  fileinto "{FOLDER}";\r\n}}\r\n'
)


def tls_context(farm: Farm) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(farm.pki.ca_cert))


def direct(farm: Farm, backend: str) -> SieveClient:
    b = farm.backends[backend]
    return SieveClient(b.host, b.sieve_port, timeout=10)


@dataclass
class Front:
    auth: str
    sieve: int
    lmtp: int
    ports: ProxyPorts


MODES = {
    "password": {"backend_auth": "password"},
    "proxy": {"backend_auth": "proxy"},
    "proxy-starttls": {"backend_auth": "proxy", "backend_tls": "starttls"},
}


@pytest.fixture(scope="module", params=sorted(MODES))
def front(
    request: pytest.FixtureRequest, farm: Farm, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Front]:
    """A mailfarm per backend login mode, in front of the whole (mixed) farm: one sieve
    backend_port for Dovecot and Cyrus alike."""
    ports, sieve, lmtp = ProxyPorts(), free_port(), free_port()
    mail1 = farm.backends["mail1"]
    settings = {
        "listen": [f"127.0.0.1:{sieve}"],
        "backend_port": mail1.sieve_port,
        "backend_timeout": 5,
        "backend_ca": str(farm.pki.ca_cert),
        **MODES[request.param],
    }
    sections = farm_config(
        farm,
        ports,
        sieve=settings,
        lmtp={"listen": [f"127.0.0.1:{lmtp}"], "backend_port": mail1.lmtp_port},
    )
    workdir = tmp_path_factory.mktemp(f"cyrus-sieve-{request.param}")
    process = MailfarmProcess(workdir, sections, f"cyrus-sieve-{request.param}").start()
    yield Front(request.param, sieve, lmtp, ports)
    process.stop()


@pytest.fixture
def erin(farm: Farm) -> Iterator[FarmUser]:
    """The Cyrus user, with no Sieve script left behind (other tests deliver to her)."""
    user = farm.user(CYRUS_USER)
    assert farm.backends[user.backend].kind == "cyrus"
    yield user
    with direct(farm, user.backend) as sieve:
        sieve.authenticate_plain(user.uid, user.password)
        sieve.setactive("")
        for name, _active in sieve.listscripts():
            sieve.deletescript(name)
        sieve.logout()


# -- the backends themselves --------------------------------------------------------------


@pytest.mark.parametrize("backend", ["mail3", "mail4"])
def test_cyrus_backends_speak_managesieve(farm: Farm, backend: str) -> None:
    b = farm.backends[backend]
    assert b.kind == "cyrus" and b.sieve_port == farm.backends["mail1"].sieve_port
    with direct(farm, backend) as sieve:
        caps = sieve.capabilities
        assert caps["IMPLEMENTATION"].startswith("Cyrus timsieved")
        assert {"fileinto", "vacation"} <= set(caps["SIEVE"].split())
        assert "PLAIN" in caps["SASL"].split()
        assert "STARTTLS" in caps
        sieve.starttls(tls_context(farm), f"{backend}.mailfarm.test")
        assert "STARTTLS" not in sieve.capabilities  # re-sent after the handshake
        assert "PLAIN" in sieve.capabilities["SASL"].split()
        sieve.logout()


def test_cyrus_logins_by_uid_and_by_proxy_user(farm: Farm, erin: FarmUser) -> None:
    """The two logins mailfarm makes: the uid with the user's password (saslauthd against
    LDAP), and the proxy user vouching for the uid (PLAIN authzid, ``proxyservers``)."""
    with direct(farm, "mail3") as sieve:
        sieve.authenticate_plain(erin.uid, erin.password)
        sieve.putscript("probe", "keep;\r\n")
        sieve.logout()
    with direct(farm, "mail3") as sieve:
        sieve.authenticate_plain(farm.proxy_user, farm.proxy_password, authzid=erin.uid)
        assert sieve.listscripts() == [("probe", False)]
        assert sieve.capability()["OWNER"] == erin.uid
        sieve.logout()
    with direct(farm, "mail3") as sieve:
        with pytest.raises(SieveError) as refused:
            sieve.authenticate_plain(farm.proxy_user, "wrong", authzid=erin.uid)
        assert refused.value.status == "NO"
    with direct(farm, "mail3") as sieve:  # an ordinary user may not act as another
        alice = farm.user(DOVECOT_USER)
        with pytest.raises(SieveError):
            sieve.authenticate_plain(alice.uid, alice.password, authzid=erin.uid)
    with direct(farm, "mail3") as sieve:  # Cyrus knows no address logins
        with pytest.raises(SieveError):
            sieve.authenticate_plain(erin.address, erin.password)


# -- through mailfarm ---------------------------------------------------------------------


def test_script_lifecycle_through_mailfarm(farm: Farm, front: Front, erin: FarmUser) -> None:
    script = 'require "fileinto";\r\nif size :over 1M { discard; stop; }\r\nkeep;\r\n'
    with SieveClient("127.0.0.1", front.sieve) as sieve:
        assert sieve.capabilities["IMPLEMENTATION"] == "mailfarm"
        sieve.authenticate_plain(erin.address, erin.password)
        caps = sieve.capability()  # now timsieved's own
        assert caps["IMPLEMENTATION"].startswith("Cyrus timsieved")
        assert caps["OWNER"] == erin.uid  # logged in by uid, whatever the client typed
        sieve.checkscript(script)
        sieve.putscript("rules", script)
        assert sieve.listscripts() == [("rules", False)]
        sieve.setactive("rules")
        assert sieve.listscripts() == [("rules", True)]
        assert sieve.getscript("rules") == script
        with pytest.raises(SieveError) as bad:
            sieve.putscript("broken", 'fileinto "x";\r\n')  # no require
        assert bad.value.status == "NO"
        sieve.setactive("")
        sieve.deletescript("rules")
        assert sieve.listscripts() == []
        with pytest.raises(SieveError) as missing:
            sieve.getscript("rules")
        assert missing.value.status == "NO"
        sieve.logout()


def test_wrong_password_is_refused(farm: Farm, front: Front, erin: FarmUser) -> None:
    with SieveClient("127.0.0.1", front.sieve) as sieve:
        with pytest.raises(SieveError) as refused:
            sieve.authenticate_plain(erin.address, "not-" + erin.password)
        assert refused.value.status == "NO" and refused.value.code != "TRYLATER"
        # The same connection may try again (without SASL-IR this time) and get in.
        sieve.authenticate_plain(erin.address, erin.password, initial=False)
        assert sieve.listscripts() == []
        sieve.logout()


def test_dovecot_and_cyrus_users_on_one_listener(farm: Farm, front: Front, erin: FarmUser) -> None:
    """A mixed farm: one [sieve] backend_port, each user reaching their own backend."""
    alice = farm.user(DOVECOT_USER)
    seen = {}
    for user in (alice, erin):
        with SieveClient("127.0.0.1", front.sieve) as sieve:
            if front.auth == "proxy-starttls":  # the client side may use TLS as well
                sieve.starttls(tls_context(farm), "localhost")
            sieve.authenticate_plain(user.address, user.password)
            seen[user.backend] = sieve.capability()["IMPLEMENTATION"]
            sieve.logout()
    assert "Pigeonhole" in seen["mail1"]
    assert seen["mail3"].startswith("Cyrus timsieved")


def test_active_script_files_lmtp_mail(farm: Farm, front: Front, erin: FarmUser) -> None:
    """Uploaded and activated through mailfarm, the script sorts mail delivered through
    mailfarm's LMTP proxy into a folder, as seen over mailfarm's IMAP."""
    imap = imaplib.IMAP4("127.0.0.1", front.ports.imap, timeout=15)
    try:
        imap.login(erin.address, erin.password)
        typ, data = imap.create(FOLDER)
        assert typ == "OK" or b"exists" in b" ".join(data).lower(), data
        with SieveClient("127.0.0.1", front.sieve) as sieve:
            sieve.authenticate_plain(erin.address, erin.password)
            sieve.putscript("sort", FILTER)
            sieve.setactive("sort")
            sieve.logout()
        sorted_subject, kept_subject = f"[sort] {uuid.uuid4().hex}", uuid.uuid4().hex
        with smtplib.LMTP("127.0.0.1", front.lmtp, timeout=15) as lmtp:
            for subject in (sorted_subject, kept_subject):
                message = (
                    f"From: someone@example.net\r\nTo: {erin.address}\r\nSubject: {subject}\r\n"
                    f"Message-ID: <{uuid.uuid4().hex}@example.net>\r\n\r\nHello.\r\n"
                )
                assert lmtp.sendmail("someone@example.net", [erin.address], message) == {}

        def found(folder: str, subject: str) -> bool:
            assert imap.select(folder, readonly=True)[0] == "OK"
            typ, hits = imap.search(None, "SUBJECT", f'"{subject}"')
            return typ == "OK" and bool(hits[0].split())

        assert eventually(lambda: found(FOLDER, sorted_subject), timeout=5)
        assert not found("INBOX", sorted_subject)
        assert found("INBOX", kept_subject) and not found(FOLDER, kept_subject)
    finally:
        try:
            imap.close()
        except imaplib.IMAP4.error:
            pass
        imap.delete(FOLDER)
        imap.logout()


@pytest.mark.skipif(shutil.which("sieve-connect") is None, reason="sieve-connect not installed")
def test_sieve_connect_through_mailfarm(
    farm: Farm, front: Front, erin: FarmUser, tmp_path: Path
) -> None:
    """Debian's sieve-connect (STARTTLS, then PLAIN) for a Cyrus user, as a person would."""
    script = tmp_path / "filter.sieve"
    script.write_text(FILTER.replace("\r\n", "\n"))
    common = [
        "sieve-connect", "--server", "localhost", "--port", str(front.sieve),
        "--user", erin.address, "--passwordfd", "0", "--tlscafile", str(farm.pki.ca_cert),
        "--authmech", "PLAIN",
    ]  # fmt: skip

    def run(*args: str, password: str = erin.password) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*common, *args], input=password + "\n", capture_output=True, text=True, timeout=60
        )

    uploaded = run("--upload", "--localsieve", str(script), "--remotesieve", "filter")
    assert uploaded.returncode == 0, uploaded.stderr
    assert run("--activate", "--remotesieve", "filter").returncode == 0
    listed = run("--list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ['"filter"', "ACTIVE"]
    back = tmp_path / "back.sieve"
    fetched = run("--download", "--remotesieve", "filter", "--localsieve", str(back))
    assert fetched.returncode == 0, fetched.stderr
    assert back.read_text() == script.read_text()
    assert run("--deactivate").returncode == 0
    assert run("--delete", "--remotesieve", "filter").returncode == 0
    assert run("--list", password="wrong-password").returncode != 0
