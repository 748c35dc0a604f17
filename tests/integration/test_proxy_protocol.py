"""PROXY protocol listeners: raw v1/v2 headers, untrusted senders, and real HAProxy in front
of two mailfarm instances."""

from __future__ import annotations

import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.farm import Farm
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config, free_port
from proxy.proxyproto import build_v1, build_v2
from tests.integration.imapwire import Wire
from tests.integration.waiting import eventually

TRUSTED_CLIENT = "10.1.2.3"
REMOTE_CLIENT = "192.0.2.7"


def start_instance(farm: Farm, workdir: Path, name: str) -> tuple[int, MailfarmProcess]:
    ports = ProxyPorts()
    pp_port = free_port()
    sections = farm_config(
        farm,
        ports,
        trusted=False,
        proxy={
            "haproxy_trusted_networks": ["127.0.0.1/32"],
            "trusted_networks": [f"{TRUSTED_CLIENT}/32"],
        },
        imap={"proxy_protocol_listen": [f"127.0.0.1:{pp_port}"], "forward_client_ip": True},
    )
    sections.pop("pop3", None)
    return pp_port, MailfarmProcess(workdir, sections, name).start()


@pytest.fixture(scope="module")
def instances(
    farm: Farm, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[tuple[int, MailfarmProcess]]]:
    workdir = tmp_path_factory.mktemp("pp")
    running = [start_instance(farm, workdir, f"pp{i}") for i in (1, 2)]
    yield running
    for _, proc in running:
        proc.stop()


def connect(port: int, header: bytes, source: str = "127.0.0.1") -> Wire:
    w = Wire.__new__(Wire)
    w.sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    w.buf = b""
    w.send(header)
    return w


@pytest.mark.parametrize("build", [build_v1, build_v2])
def test_header_sets_the_client_address(farm: Farm, instances, build) -> None:  # type: ignore[no-untyped-def]
    port, proc = instances[0]
    user = farm.user("carol@example.com")
    # A client in trusted_networks (as the header says) may log in without TLS ...
    with connect(port, build(TRUSTED_CLIENT, 40000, "127.0.0.1", port)) as w:
        assert b"AUTH=PLAIN" in w.line()
        w.send(b"a1 LOGIN " + user.uid.encode() + b" " + user.password.encode() + b"\r\n")
        assert w.until(b"a1 ")[-1].startswith(b"a1 OK")
    # ... a remote one may not, although both arrive from 127.0.0.1.
    with connect(port, build(REMOTE_CLIENT, 40001, "127.0.0.1", port)) as w:
        assert b"LOGINDISABLED" in w.line()
    assert eventually(lambda: f"client={REMOTE_CLIENT}:40001" in proc.log_text())
    assert f"client={TRUSTED_CLIENT}:40000" in proc.log_text()
    assert f"client={REMOTE_CLIENT}:40001" in proc.log_text()
    # The backend was told the real client address too.
    logins = [
        line
        for line in farm.log_file("mail1").read_text(errors="replace").splitlines()
        if "Login: user=<carol_example_com>" in line
    ]
    assert f"rip={TRUSTED_CLIENT}" in logins[-1]


def test_bytes_after_the_header_are_kept(farm: Farm, instances) -> None:  # type: ignore[no-untyped-def]
    port, _ = instances[0]
    with connect(port, build_v2(TRUSTED_CLIENT, 1, "127.0.0.1", 2) + b"a1 NOOP\r\n") as w:
        assert w.line().startswith(b"* OK")
        assert w.line().startswith(b"a1 OK")


def test_untrusted_sender_and_garbage_are_refused(instances) -> None:  # type: ignore[no-untyped-def]
    port, proc = instances[0]
    with connect(port, build_v2(TRUSTED_CLIENT, 1, "127.0.0.1", 2), source="127.0.0.5") as w:
        assert w.closed() and w.buf == b""
    with connect(port, b"GET / HTTP/1.0\r\n\r\n") as w:
        assert w.closed() and w.buf == b""
    assert eventually(lambda: "bad PROXY header from 127.0.0.1" in proc.log_text())
    assert "PROXY header from untrusted 127.0.0.5" in proc.log_text()
    assert "bad PROXY header from 127.0.0.1" in proc.log_text()


HAPROXY_CFG = """
global
    maxconn 1000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend imap
    bind 127.0.0.1:{front}
    default_backend mailfarm
backend mailfarm
    balance roundrobin
    server mf1 127.0.0.1:{p1} send-proxy-v2 check
    server mf2 127.0.0.1:{p2} send-proxy-v2 check
"""


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed")
def test_haproxy_in_front_of_two_instances(farm: Farm, instances, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (p1, proc1), (p2, proc2) = instances
    front = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(HAPROXY_CFG.format(front=front, p1=p1, p2=p2))
    haproxy = subprocess.Popen(
        ["haproxy", "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    user = farm.user("alice@example.co.uk")
    ctx = ssl.create_default_context(cafile=str(farm.pki.ca_cert))
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", front), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "haproxy did not start"
                time.sleep(0.05)
        for i in range(6):
            source = f"127.0.0.{20 + i}"
            with connect(front, b"", source=source) as w:
                assert b"LOGINDISABLED" in w.line()  # a remote client: TLS first
                w.send(b"a1 STARTTLS\r\n")
                assert w.line().startswith(b"a1 OK")
                w.sock = ctx.wrap_socket(w.sock, server_hostname="127.0.0.1")
                w.send(b"a2 LOGIN " + user.uid.encode() + b" " + user.password.encode() + b"\r\n")
                assert w.until(b"a2 ")[-1].startswith(b"a2 OK")
        assert eventually(
            lambda: all(
                f"client=127.0.0.{20 + i}:" in proc1.log_text() + proc2.log_text()
                for i in range(6)
            )
        )
        logs = proc1.log_text() + proc2.log_text()
        # Both instances served clients, and saw the real client addresses, not HAProxy's.
        for proc in (proc1, proc2):
            assert re.search(r"client=127\.0\.0\.2\d:", proc.log_text()), proc.log_text()[-1500:]
        assert all(f"client=127.0.0.{20 + i}:" in logs for i in range(6))
    finally:
        haproxy.terminate()
        haproxy.wait(10)
