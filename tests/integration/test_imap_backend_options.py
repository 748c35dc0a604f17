"""Backend-side options: STARTTLS or implicit TLS to the backend, forwarding the client IP."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.farm import Farm
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config
from tests.integration.imapwire import Wire
from tests.integration.waiting import eventually


def start(farm: Farm, workdir: Path, name: str, imap: dict) -> tuple[ProxyPorts, MailfarmProcess]:  # type: ignore[type-arg]
    ports = ProxyPorts()
    sections = farm_config(farm, ports, imap=imap)
    sections.pop("pop3", None)
    return ports, MailfarmProcess(workdir, sections, name).start()


@pytest.fixture(scope="module")
def tls_backends(
    farm: Farm, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ProxyPorts]]:
    workdir = tmp_path_factory.mktemp("backend-tls")
    backend = farm.backends["mail1"]
    ca = str(farm.pki.ca_cert)
    procs = {
        "starttls": start(
            farm,
            workdir,
            "starttls",
            {"backend_tls": "starttls", "backend_ca": ca, "forward_client_ip": True},
        ),
        "tls": start(
            farm,
            workdir,
            "tls",
            {"backend_tls": "tls", "backend_ca": ca, "backend_port": backend.imaps_port},
        ),
        "untrusted-ca": start(
            farm, workdir, "untrusted", {"backend_tls": "tls", "backend_port": backend.imaps_port}
        ),
    }
    yield {name: ports for name, (ports, _) in procs.items()}
    for _, proc in procs.values():
        proc.stop()


def login(port: int, user, source: str = "127.0.0.1") -> bytes:  # type: ignore[no-untyped-def]
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    w = Wire.__new__(Wire)
    w.sock, w.buf = sock, b""
    with w:
        w.line()
        w.send(b"a1 LOGIN " + user.uid.encode() + b" " + user.password.encode() + b"\r\n")
        reply = w.until(b"a1 ")[-1]
        if reply.startswith(b"a1 OK"):
            w.send(b"a2 SELECT INBOX\r\n")
            assert w.until(b"a2 ")[-1].startswith(b"a2 OK")
        return reply


@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_tls_to_backend(farm: Farm, tls_backends: dict[str, ProxyPorts], mode: str) -> None:
    for address in ("alice@example.co.uk", "bob@example.co.uk"):
        user = farm.user(address)
        assert login(tls_backends[mode].imap, user).startswith(b"a1 OK [CAPABILITY ")
    # Dovecot says "secured" for TLS sessions; the log shows the proxied login was one.
    def tls_login_logged() -> bool:
        log = farm.log_file("mail1").read_text(errors="replace")
        return any("user=<alice_example_co_uk>" in ln and "TLS" in ln for ln in log.splitlines())

    assert eventually(tls_login_logged)


def test_backend_certificate_is_verified(farm: Farm, tls_backends: dict[str, ProxyPorts]) -> None:
    """Without the farm's CA the backend's certificate is untrusted: refuse, don't log in."""
    user = farm.user("alice@example.co.uk")
    assert login(tls_backends["untrusted-ca"].imap, user).startswith(b"a1 NO [UNAVAILABLE]")


def test_client_ip_forwarded_to_backend(farm: Farm, tls_backends: dict[str, ProxyPorts]) -> None:
    user = farm.user("carol@example.com")
    assert login(tls_backends["starttls"].imap, user, source="127.0.0.9").startswith(b"a1 OK")
    def last_login() -> str:
        log = farm.log_file("mail1").read_text(errors="replace").splitlines()
        logins = [line for line in log if "Login: user=<carol_example_com>" in line]
        return logins[-1] if logins else ""

    assert eventually(lambda: "rip=127.0.0.9" in last_login()), last_login()
