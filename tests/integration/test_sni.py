"""Certificates per SNI name and the default domain from the name the client used, against
the real farm with real clients (openssl s_client, curl, imaplib) on every TLS path:
implicit TLS and STARTTLS, IMAP and POP3; a certificate renewed on disk and SIGHUP."""

from __future__ import annotations

import imaplib
import re
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.certs import IssuedCert, issue_cert
from bench.farm import Farm
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config, free_port, render_toml
from tests.integration.waiting import eventually

REPO = Path(__file__).resolve().parents[2]
COUK = "mail.example.co.uk"


@dataclass
class SniProxy:
    ports: ProxyPorts
    process: MailfarmProcess
    couk: IssuedCert
    wild: IssuedCert
    certs: Path
    sections: dict[str, Any]


@pytest.fixture(scope="module")
def sni(farm: Farm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SniProxy]:
    workdir = tmp_path_factory.mktemp("sni")
    certs = workdir / "certs"
    couk = issue_cert(farm.pki, certs, "couk", [COUK])
    wild = issue_cert(farm.pki, certs, "wild", ["*.example.com"])
    ports = ProxyPorts()
    sections = farm_config(farm, ports, trusted=False, proxy={"default_domain_from_sni": True})
    sections["tls.certificates"] = [  # type: ignore[assignment]
        {"cert": str(couk.cert), "key": str(couk.key)},
        {"cert": str(wild.cert), "key": str(wild.key)},
    ]
    process = MailfarmProcess(workdir, sections, "sni").start()
    yield SniProxy(ports, process, couk, wild, certs, sections)
    process.stop()


def served_subject(port: int, name: str, starttls: str | None = None) -> str:
    """The subject line of the certificate ``openssl s_client`` is shown for ``name``."""
    args = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", name]
    if starttls:
        args += ["-starttls", starttls]
    result = subprocess.run(args, input="", capture_output=True, text=True, timeout=20, check=False)
    match = re.search(r"^subject=(.*)$", result.stdout, re.MULTILINE)
    assert match, result.stdout + result.stderr
    return match.group(1)


def _cn(subject: str) -> str:
    match = re.search(r"CN\s*=\s*([^,/]+)", subject)
    assert match, subject
    return match.group(1).strip()


@pytest.mark.parametrize(
    ("listener", "starttls"),
    [("imaps", None), ("imap", "imap"), ("pop3s", None), ("pop3", "pop3")],
)
def test_certificate_by_sni(sni: SniProxy, listener: str, starttls: str | None) -> None:
    port = getattr(sni.ports, listener)
    assert _cn(served_subject(port, COUK, starttls)) == COUK
    assert _cn(served_subject(port, "MAIL.Example.CO.UK", starttls)) == COUK  # any case
    assert _cn(served_subject(port, "imap.example.com", starttls)) == "*.example.com"
    # a wildcard covers one label: neither a deeper name nor the apex
    assert _cn(served_subject(port, "a.b.example.com", starttls)) == "mailfarm.test"
    assert _cn(served_subject(port, "unknown.test", starttls)) == "mailfarm.test"


def test_san_of_the_served_certificate(sni: SniProxy) -> None:
    shown = subprocess.run(
        f"openssl s_client -connect 127.0.0.1:{sni.ports.imaps} -servername {COUK} "
        "</dev/null 2>/dev/null | openssl x509 -noout -ext subjectAltName",
        shell=True, capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert f"DNS:{COUK}" in shown.stdout


def curl(
    farm: Farm, url: str, user: str, password: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    """curl to ``url``'s host name (sent as SNI, checked against the farm CA) on 127.0.0.1."""
    host, port = re.match(r"\w+://([^:/]+):(\d+)", url).groups()  # type: ignore[union-attr]
    return subprocess.run(
        [
            "curl", "-sS", "--max-time", "20", "--cacert", str(farm.pki.ca_cert),
            "--connect-to", f"{host}:{port}:127.0.0.1:{port}",
            "-u", f"{user}:{password}", url, *extra,
        ],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def session_lines(sni: SniProxy, login: str) -> list[str]:
    return [
        line
        for line in sni.process.log_text().splitlines()
        if " session " in line and f" login={login} " in line
    ]


def _logged(sni: SniProxy, login: str, fragment: str) -> bool:
    return eventually(lambda: any(fragment in line for line in session_lines(sni, login)))


def test_bare_login_uses_the_sni_domain_imaps(farm: Farm, sni: SniProxy) -> None:
    alice = farm.user("alice@example.co.uk")
    url = f"imaps://{COUK}:{sni.ports.imaps}/INBOX"
    result = curl(farm, url, "alice", alice.password, "-X", "STATUS INBOX (MESSAGES)")
    assert result.returncode == 0, result.stderr
    assert "MESSAGES" in result.stdout
    assert _logged(sni, "alice", f"uid={alice.uid} ")


def test_bare_login_after_starttls_and_pop3(farm: Farm, sni: SniProxy) -> None:
    bob = farm.user("bob@example.co.uk")
    url = f"imap://{COUK}:{sni.ports.imap}/INBOX"
    result = curl(farm, url, "bob", bob.password, "--ssl-reqd", "-X", "STATUS INBOX (MESSAGES)")
    assert result.returncode == 0, result.stderr
    carol = farm.user("carol@example.com")
    pop3 = (
        f"pop3s://pop.example.com:{sni.ports.pop3s}/",
        f"pop3://pop3.example.com:{sni.ports.pop3}/",
    )
    for url in pop3:
        result = curl(farm, url, "carol", carol.password, "--ssl-reqd")
        assert result.returncode == 0, f"{url}: {result.stderr}"
    assert _logged(sni, "bob", f"uid={bob.uid} ")
    assert _logged(sni, "carol", f"uid={carol.uid} ")


def test_login_with_domain_unchanged(farm: Farm, sni: SniProxy) -> None:
    carol = farm.user("carol@example.com")
    url = f"imaps://{COUK}:{sni.ports.imaps}/INBOX"
    result = curl(farm, url, carol.address, carol.password, "-X", "STATUS INBOX (MESSAGES)")
    assert result.returncode == 0, result.stderr
    assert _logged(sni, carol.address, f"uid={carol.uid} ")
    # ... and never given the SNI domain: carol is not at example.co.uk, yet she logged in;
    # alice's address under example.com's name stays alice's
    alice = farm.user("alice@example.co.uk")
    url = f"imaps://imap.example.com:{sni.ports.imaps}/INBOX"
    result = curl(farm, url, alice.address, alice.password, "-X", "STATUS INBOX (MESSAGES)")
    assert result.returncode == 0, result.stderr


def test_bare_login_with_unhosted_sni_fails_like_unknown_user(farm: Farm, sni: SniProxy) -> None:
    alice = farm.user("alice@example.co.uk")
    # the default certificate does not name mail.unhosted.test: -k, this is about the login
    url = f"imaps://mail.unhosted.test:{sni.ports.imaps}/"
    unhosted = curl(farm, url, "alice", alice.password, "-k")
    unknown = curl(farm, f"imaps://{COUK}:{sni.ports.imaps}/", "nobody", "x")
    assert unhosted.returncode == unknown.returncode == 67, (unhosted.stderr, unknown.stderr)
    assert _logged(sni, "alice", "outcome=auth-failed")
    assert _logged(sni, "nobody", "outcome=auth-failed")
    # a bare uid still works with the feature on: uid@domain finds no one, the uid does
    result = curl(farm, f"imaps://{COUK}:{sni.ports.imaps}/", alice.uid, alice.password)
    assert result.returncode == 0, result.stderr


class SniImap(imaplib.IMAP4_SSL):
    """IMAP4_SSL to 127.0.0.1 that still sends a server name (imaplib sends its host)."""

    def __init__(self, port: int, name: str, context: ssl.SSLContext) -> None:
        self._sni = name
        super().__init__("127.0.0.1", port, ssl_context=context, timeout=15)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname=self._sni)


def _serial(port: int, name: str) -> str:
    shown = subprocess.run(
        f"openssl s_client -connect 127.0.0.1:{port} -servername {name} </dev/null 2>/dev/null"
        " | openssl x509 -noout -serial",
        shell=True, capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    return shown.stdout.strip()


def test_renewed_certificate_served_after_sighup_session_kept(farm: Farm, sni: SniProxy) -> None:
    context = ssl.create_default_context(cafile=str(farm.pki.ca_cert))
    held = SniImap(sni.ports.imaps, COUK, context)
    alice = farm.user("alice@example.co.uk")
    assert held.login("alice", alice.password)[0] == "OK"
    assert held.select("INBOX")[0] == "OK"
    old_serial = _serial(sni.ports.imaps, COUK)
    assert _cn(served_subject(sni.ports.imaps, "mail2.example.co.uk")) == "mailfarm.test"
    # the renewal: new files in place, one more name, then SIGHUP
    issue_cert(farm.pki, sni.certs, "couk", [COUK, "mail2.example.co.uk"])
    reloads = sni.process.log_text().count("TLS certificate reloaded")
    sni.process.signal(signal.SIGHUP)
    assert eventually(lambda: sni.process.log_text().count("TLS certificate reloaded") > reloads)
    assert "TLS certificate reloaded (3 certificates)" in sni.process.log_text()
    assert _serial(sni.ports.imaps, COUK) != old_serial
    assert _cn(served_subject(sni.ports.imaps, "mail2.example.co.uk")) == COUK  # names re-read
    assert held.noop()[0] == "OK"  # the open session never noticed
    held.logout()


def check_config(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", "check-config", "-c", str(config)],
        capture_output=True, text=True, timeout=30, cwd=REPO, check=False,
    )  # fmt: skip


def test_check_config_lists_names_and_warns_before_expiry(
    farm: Farm, sni: SniProxy, tmp_path: Path
) -> None:
    short = issue_cert(farm.pki, tmp_path, "short", ["mail.example.com"], days=5)
    sections = dict(sni.sections)
    sections["tls.certificates"] = [
        *sni.sections["tls.certificates"],
        {"cert": str(short.cert), "key": str(short.key)},
    ]
    config = tmp_path / "check.toml"
    config.write_text(render_toml(sections))
    result = check_config(config)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"# [tls] {farm.pki.cert}: names mailfarm.test, " in out
    assert f"# [tls.certificates[0]] {sni.couk.cert}: names {COUK}" in out
    assert f"# [tls.certificates[1]] {sni.wild.cert}: names *.example.com; notAfter 20" in out
    assert f"# [tls.certificates[2]] {short.cert}: names mail.example.com; notAfter" in out
    assert re.search(r"\(in [45] days\)", out)
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "[tls.certificates[2]]" in warnings[0], result.stderr
    assert str(short.cert) in warnings[0] and "expires" in warnings[0]


def test_check_config_refuses_a_mismatched_pair(farm: Farm, sni: SniProxy, tmp_path: Path) -> None:
    sections = dict(sni.sections)
    sections["tls.certificates"] = [{"cert": str(sni.couk.cert), "key": str(sni.wild.key)}]
    config = tmp_path / "bad.toml"
    config.write_text(render_toml(sections))
    result = check_config(config)
    assert result.returncode == 2
    assert f"{config}: [tls.certificates[0]] key: " in result.stderr
    assert "does not match" in result.stderr


def _imap_login_behind_balancer(port: int, authority: bytes | None, password: str) -> bytes:
    """What a login as bare ``alice`` gets through a PROXY v2 header that says the
    balancer ended the client's TLS, with or without the SNI name it saw."""
    from proxy.proxyproto import PP2_TYPE_AUTHORITY, PP2_TYPE_SSL, build_v2

    tlvs = {PP2_TYPE_SSL: b"\x01\x00\x00\x00\x00"}
    if authority is not None:
        tlvs[PP2_TYPE_AUTHORITY] = authority
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(build_v2("198.51.100.7", 40000, "127.0.0.1", port, tlvs=tlvs))
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"* OK")
        sock.sendall(b'a1 LOGIN alice "' + password.encode() + b'"\r\n')
        while not (line := reader.readline()).startswith(b"a1 "):
            pass
        return line


def test_sni_name_from_the_balancer_picks_the_domain(farm: Farm, tmp_path: Path) -> None:
    alice = farm.user("alice@example.co.uk")
    ports, port = ProxyPorts(), free_port()
    sections = farm_config(
        farm,
        ports,
        trusted=False,
        proxy={"default_domain_from_sni": True, "haproxy_trusted_networks": ["127.0.0.1/32"]},
    )
    sections["imap"]["proxy_protocol_listen"] = [f"127.0.0.1:{port}"]
    process = MailfarmProcess(tmp_path, sections, "balancer-sni").start()
    try:
        answer = _imap_login_behind_balancer(port, COUK.encode(), alice.password)
        assert answer.startswith(b"a1 OK"), answer
        refused = _imap_login_behind_balancer(port, None, alice.password)
        assert refused.startswith(b"a1 NO"), refused  # no name: a bare login is nobody
        junk = _imap_login_behind_balancer(port, b"mail.exa\xffmple.co.uk", alice.password)
        assert junk.startswith(b"a1 NO"), junk
    finally:
        process.stop()
