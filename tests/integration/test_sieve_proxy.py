"""ManageSieve through mailfarm to the farm's Pigeonhole, with sieve-connect (Debian's, a
client nobody here wrote) and the tests' own client; a vacation script uploaded through
the proxy then answers mail delivered through mailfarm's LMTP proxy."""

from __future__ import annotations

import base64
import secrets
import smtplib
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.farm import Farm
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config, free_port
from tests.integration.sieveclient import SieveClient, SieveError

VACATION = 'require "vacation";\nvacation :days 1 :subject "away" "I am away.";\n'


class SievePorts:
    def __init__(self) -> None:
        self.sieve, self.lmtp = free_port(), free_port()


@pytest.fixture(scope="module")
def proxy(farm: Farm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SievePorts]:
    ports, extra = ProxyPorts(), SievePorts()
    mail1 = farm.backends["mail1"]
    sections = farm_config(
        farm,
        ports,
        sieve={
            "listen": [f"127.0.0.1:{extra.sieve}"],
            "backend_port": mail1.sieve_port,
            "backend_timeout": 5,
        },
        lmtp={"listen": [f"127.0.0.1:{extra.lmtp}"], "backend_port": mail1.lmtp_port},
    )
    process = MailfarmProcess(tmp_path_factory.mktemp("sieve"), sections, "sieve").start()
    yield extra
    process.stop()


def user_on(farm: Farm, backend: str):  # type: ignore[no-untyped-def]
    return next(u for u in farm.users if u.backend == backend and "@" in u.address)


def tls_context(farm: Farm) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(farm.pki.ca_cert))


def test_vacation_script_through_the_proxy_answers_lmtp_mail(
    farm: Farm, proxy: SievePorts
) -> None:
    user = user_on(farm, "mail1")
    with SieveClient("127.0.0.1", proxy.sieve) as client:
        assert client.capabilities["IMPLEMENTATION"] == "mailfarm"
        assert "vacation" in client.capabilities["SIEVE"].split()
        assert "STARTTLS" in client.capabilities
        client.starttls(tls_context(farm), server_hostname="localhost")
        client.authenticate_plain(user.address, user.password)
        # Now the backend speaks: its own capabilities.
        assert "Pigeonhole" in client.capability()["IMPLEMENTATION"]
        client.putscript("away", VACATION)
        client.setactive("away")
        assert ("away", True) in client.listscripts()
        assert client.getscript("away").replace("\r\n", "\n") == VACATION
        client.logout()
    before = len(farm.outbox("mail1"))
    # A sender of its own: vacation answers each sender once per :days, for every test.
    sender = f"proxy-{secrets.token_hex(4)}@example.net"
    message = (
        f"From: {sender}\r\nTo: {user.address}\r\nSubject: hello\r\n"
        f"Message-ID: <{secrets.token_hex(6)}@example.net>\r\n\r\nAre you there?\r\n"
    )
    with smtplib.LMTP("127.0.0.1", proxy.lmtp, timeout=15) as lmtp:
        lmtp.sendmail(sender, [user.address], message)
    deadline = time.monotonic() + 15
    while len(farm.outbox("mail1")) == before:
        assert time.monotonic() < deadline, "no vacation reply"
        time.sleep(0.2)
    reply = farm.outbox("mail1")[-1]
    assert reply.recipients == (sender,)
    assert "Subject: away" in reply.message and "Auto-Submitted: auto-replied" in reply.message
    with SieveClient("127.0.0.1", proxy.sieve) as client:  # tidy for the other tests
        client.starttls(tls_context(farm), server_hostname="localhost")
        client.authenticate_plain(user.address, user.password)
        client.setactive("")
        client.deletescript("away")
        client.logout()


def test_sieve_connect_lists_uploads_and_downloads(
    farm: Farm, proxy: SievePorts, tmp_path: Path
) -> None:
    user = user_on(farm, "mail1")
    script = tmp_path / "filter.sieve"
    script.write_text('require "fileinto";\nif header :contains "subject" "x" { fileinto "X"; }\n')
    common = [
        "sieve-connect",
        "--server", "localhost",
        "--port", str(proxy.sieve),
        "--user", user.address,
        "--passwordfd", "0",
        "--tlscafile", str(farm.pki.ca_cert),
        "--authmech", "PLAIN",
    ]  # fmt: skip

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*common, *args], input=user.password + "\n", capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip

    uploaded = run("--upload", "--localsieve", str(script), "--remotesieve", "filter")
    assert uploaded.returncode == 0, uploaded.stderr
    listed = run("--list")
    assert listed.returncode == 0 and "filter" in listed.stdout, listed.stdout + listed.stderr
    back = tmp_path / "back.sieve"
    fetched = run("--download", "--remotesieve", "filter", "--localsieve", str(back))
    assert fetched.returncode == 0 and back.read_text() == script.read_text(), fetched.stderr
    assert run("--delete", "--remotesieve", "filter").returncode == 0
    wrong = subprocess.run(
        [*common, "--list"], input="wrong-password\n", capture_output=True, text=True, timeout=60
    )
    assert wrong.returncode != 0


def raw(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    greeting = b""
    while not greeting.endswith(b'OK "mailfarm ready."\r\n'):
        greeting += sock.recv(4096)
    return sock


def until_final(sock: socket.socket | ssl.SSLSocket) -> bytes:
    """Read up to and including the first OK/NO/BYE line."""
    data = b""
    while True:
        lines = data.split(b"\r\n")[:-1]
        if any(line.startswith((b"OK", b"NO", b"BYE")) for line in lines):
            return data
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
    return data


def test_starttls_discards_commands_pipelined_in_clear(farm: Farm, proxy: SievePorts) -> None:
    user = user_on(farm, "mail1")
    plain = base64.b64encode(f"\0{user.address}\0{user.password}".encode())
    sock = raw(proxy.sieve)
    sock.sendall(b'STARTTLS\r\nAUTHENTICATE "PLAIN" "' + plain + b'"\r\n')
    assert sock.recv(4096).startswith(b"OK")
    tls = tls_context(farm).wrap_socket(sock, server_hostname="localhost")
    after = until_final(tls)
    assert b'"SASL" "PLAIN LOGIN"' in after and b"STARTTLS" not in after
    tls.sendall(b"LISTSCRIPTS\r\n")
    # The AUTHENTICATE sent in clear was dropped: not logged in.
    assert b"Authenticate first" in tls.recv(4096)
    tls.close()


def test_bad_sasl_and_wrong_passwords(farm: Farm, proxy: SievePorts) -> None:
    user = user_on(farm, "mail1")
    sock = raw(proxy.sieve)
    sock.sendall(b'AUTHENTICATE "PLAIN" "%%%not-base64"\r\n')
    assert sock.recv(4096).startswith(b"NO ")
    sock.sendall(b'AUTHENTICATE "PLAIN" {99999999+}\r\n')
    assert sock.recv(4096).startswith(b"NO ")
    sock.close()
    with SieveClient("127.0.0.1", proxy.sieve) as client:
        with pytest.raises(SieveError) as refused:
            client.authenticate_plain(user.address, "wrong")
        assert refused.value.status == "NO"
        client.authenticate_plain(user.address, user.password, initial=False)
        assert client.listscripts() is not None
        client.logout()


def test_backend_down_is_trylater(farm: Farm, tmp_path: Path) -> None:
    ports, port = ProxyPorts(), free_port()
    sections = farm_config(
        farm, ports, sieve={"listen": [f"127.0.0.1:{port}"], "backend_port": free_port()}
    )
    process = MailfarmProcess(tmp_path, sections, "sieve-down").start()
    try:
        user = user_on(farm, "mail1")
        with SieveClient("127.0.0.1", port) as client:
            with pytest.raises(SieveError) as refused:
                client.authenticate_plain(user.address, user.password)
            assert refused.value.code == "TRYLATER"
        deadline = time.monotonic() + 10  # the session's line comes when it has ended
        while "proto=sieve client" not in (log := process.log_text()).split("unavailable", 1)[-1]:
            assert time.monotonic() < deadline, log[-2000:]
            time.sleep(0.1)
        assert "uid=alice_example_co_uk" in log.split("unavailable", 1)[-1]
    finally:
        process.stop()
