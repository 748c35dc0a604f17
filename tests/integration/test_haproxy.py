"""HAProxy in front of two mailfarm instances, run as OPERATIONS.md says ("Scaling out"):
PROXY v2, ``/healthz`` checks on the admin port, drain at the balancer before a restart,
SIGHUP of every instance, a kick sent to every instance, while a client logs in through
HAProxy all along and must never see a failed login."""

from __future__ import annotations

import imaplib
import json
import poplib
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench.farm import Farm
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config, free_port
from directory.provision.adminapi import action_url
from directory.provision.adminhttp import fetch
from tests.integration.haproxy_helpers import SAMPLE, HAProxy, Instance, render_config
from tests.integration.waiting import eventually

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed")

TOKEN = "haproxy-test-admin-token"
BACKENDS = ("imap", "pop3")
LOOP_USER = "alice@example.co.uk"  # the login loop's user; the kick test uses another


@dataclass
class Node:
    """One mailfarm instance: the process and the ports HAProxy knows it by."""

    instance: Instance
    proc: MailfarmProcess

    @property
    def name(self) -> str:
        return self.instance.name

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.instance.admin_port}"

    def healthz(self) -> dict[str, int]:
        return json.loads(fetch(f"{self.admin_url}/healthz", "", limit=4096, timeout=2))


@dataclass
class Cluster:
    haproxy: HAProxy
    nodes: list[Node]
    front: dict[str, int]


def start_node(farm: Farm, workdir: Path, name: str) -> Node:
    """An instance reachable only through HAProxy: no plain listeners, a PROXY protocol port
    per protocol trusting 127.0.0.1 as the balancer, an admin port for checks and kicks."""
    instance = Instance(name, {proto: free_port() for proto in BACKENDS}, free_port())
    sections = farm_config(
        farm,
        ProxyPorts(),
        # trusted_networks 127.0.0.0/8: the (real) client may LOGIN without TLS.
        proxy={"haproxy_trusted_networks": ["127.0.0.1/32"], "shutdown_grace": 1},
        **{
            proto: {
                "listen": [],
                "tls_listen": [],
                "proxy_protocol_listen": [f"127.0.0.1:{instance.ports[proto]}"],
            }
            for proto in BACKENDS
        },
        admin={"listen": [f"127.0.0.1:{instance.admin_port}"], "token": TOKEN},
    )
    return Node(instance, MailfarmProcess(workdir, sections, name).start())


def all_up(row: dict[str, str]) -> bool:
    return row["status"] == "UP"


@pytest.fixture(scope="module")
def cluster(farm: Farm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("haproxy")
    nodes = [start_node(farm, workdir, name) for name in ("mf1", "mf2")]
    front = {proto: free_port() for proto in BACKENDS}
    sock = workdir / "admin.sock"
    haproxy = HAProxy(workdir, render_config(sock, front, [n.instance for n in nodes]), sock)
    try:
        haproxy.start()
        for node in nodes:
            haproxy.wait_status(BACKENDS, node.name, all_up)
        yield Cluster(haproxy, nodes, front)
    finally:
        haproxy.stop()
        for node in nodes:
            node.proc.stop()


@dataclass
class LoginLoop:
    """IMAP LOGIN + LOGOUT through HAProxy, over and over, on a thread; every error kept."""

    port: int
    login: str
    password: str
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def once(self) -> None:
        client = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        try:
            client.login(self.login, self.password)
        finally:
            client.logout()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.once()
                self.ok += 1
            except Exception as exc:  # any failure is what is counted
                self.failures.append(repr(exc))

    def __enter__(self) -> LoginLoop:
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        assert self.thread is not None
        self.thread.join(15)

    def wait_for(self, more: int, timeout: float = 20.0) -> None:
        """Until ``more`` further logins succeeded: the loop is really being served."""
        target = self.ok + more
        assert eventually(lambda: self.ok >= target or bool(self.failures), timeout), self.ok


def stot(cluster: Cluster, server: str) -> int:
    return int(cluster.haproxy.server("imap", server)["stot"])


def restart_drained(cluster: Cluster, node: Node) -> None:
    """OPERATIONS.md's planned restart: drain at the balancer, wait until the instance holds
    no session, restart it, let the check see it up, take it back in."""
    haproxy = cluster.haproxy
    haproxy.set_state(BACKENDS, node.name, "drain")
    haproxy.wait_status(BACKENDS, node.name, lambda row: row["status"] == "DRAIN")
    assert eventually(
        lambda: (
            all(int(haproxy.server(b, node.name)["scur"]) == 0 for b in BACKENDS)
            and node.healthz()["preauth"] == 0
            and node.healthz()["proxied"] == 0
        )
    )
    sent = stot(cluster, node.name)
    assert node.proc.stop() == 0
    node.proc.start()
    # Still drained, now with a passing check (it may or may not have been seen DOWN).
    haproxy.wait_status(
        BACKENDS, node.name, lambda row: row["status"] == "DRAIN" and row["check_status"] == "L7OK"
    )
    assert stot(cluster, node.name) == sent  # no client was sent to it meanwhile
    haproxy.set_state(BACKENDS, node.name, "ready")
    haproxy.wait_status(BACKENDS, node.name, all_up)


def test_sample_config_is_valid(farm: Farm, tmp_path: Path) -> None:
    """The shipped sample, with a certificate and socket path that exist here."""
    pem = tmp_path / "mail.pem"
    pem.write_bytes(farm.pki.cert.read_bytes() + farm.pki.key.read_bytes())
    text = SAMPLE.read_text()
    directives = [line.split("#")[0] for line in text.splitlines()]
    assert not any("on-marked-down" in line for line in directives)  # IDLE sessions survive
    text = text.replace("/etc/haproxy/mail.example.net.pem", str(pem))
    text = text.replace("/run/haproxy/admin.sock", str(tmp_path / "admin.sock"))
    (tmp_path / "haproxy.cfg").write_text(text)
    done = subprocess.run(
        ["haproxy", "-c", "-f", str(tmp_path / "haproxy.cfg")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_drain_and_restart_each_instance_without_a_failed_login(
    farm: Farm, cluster: Cluster
) -> None:
    user = farm.user(LOOP_USER)
    before = {n.name: stot(cluster, n.name) for n in cluster.nodes}
    with LoginLoop(cluster.front["imap"], user.address, user.password) as loop:
        loop.wait_for(10)
        for node in cluster.nodes:
            restart_drained(cluster, node)
            loop.wait_for(10)  # served again, by both, before the next one goes
    served = {n.name: stot(cluster, n.name) - before[n.name] for n in cluster.nodes}
    print(f"logins served {loop.ok}, failed {len(loop.failures)}, per instance {served}")
    assert loop.failures == []
    assert loop.ok >= 40
    assert all(count > 0 for count in served.values()), served
    for node in cluster.nodes:
        assert "mailfarm ready" in node.proc.log_text()


def test_restart_without_drain_is_redispatched(farm: Farm, cluster: Cluster) -> None:
    """An unplanned restart (no drain first): until the check marks the instance down,
    HAProxy still sends it clients; `retries` + `option redispatch` from the sample retry
    each refused connection on the other instance, so the loop sees no failure either."""
    user = farm.user(LOOP_USER)
    redispatched = redispatches(cluster)
    with LoginLoop(cluster.front["imap"], user.address, user.password) as loop:
        loop.wait_for(10)
        for node in cluster.nodes:
            node.proc.stop()
            loop.wait_for(10)
            node.proc.start()
            cluster.haproxy.wait_status(BACKENDS, node.name, all_up)
            loop.wait_for(10)
    redispatched = redispatches(cluster) - redispatched
    print(f"no drain: logins {loop.ok}, failed {len(loop.failures)}, redispatched {redispatched}")
    assert loop.failures == []
    assert redispatched > 0  # the retries were needed, not luck


def redispatches(cluster: Cluster) -> int:
    """Connections HAProxy redispatched: tcplog's retries field reads "+N" for them."""
    return len(re.findall(r"\d+/\d+/\d+/\d+/\+\d+ ", cluster.haproxy.log_path.read_text()))


def test_sighup_of_every_instance_without_a_failed_login(farm: Farm, cluster: Cluster) -> None:
    user = farm.user(LOOP_USER)
    with LoginLoop(cluster.front["imap"], user.address, user.password) as loop:
        loop.wait_for(10)
        flushed = {n.name: n.proc.log_text().count("route cache flushed") for n in cluster.nodes}
        for node in cluster.nodes:
            node.proc.signal(signal.SIGHUP)
        assert eventually(
            lambda: all(
                n.proc.log_text().count("route cache flushed") > flushed[n.name]
                for n in cluster.nodes
            )
        )
        loop.wait_for(20)
    print(f"logins served {loop.ok}, failed {len(loop.failures)}")
    assert loop.failures == []
    for node in cluster.nodes:
        node.healthz()  # still serving


def test_kick_reaches_the_session_wherever_it_is(farm: Farm, cluster: Cluster) -> None:
    """A session held through HAProxy, on an instance we do not choose; the kick goes to
    every instance's admin endpoint (as `[provision] admin_urls` are told), one of them holds
    it. Its session log line shows the client's own address and port: PROXY v2 carried them."""
    bob = farm.user("bob@example.co.uk")
    client = imaplib.IMAP4("127.0.0.1", cluster.front["imap"], timeout=10)
    client.login(bob.address, bob.password)
    client_port = client.sock.getsockname()[1]
    kicked = {
        node.name: json.loads(
            fetch(action_url(node.admin_url, "kick", bob.uid), TOKEN, method="POST", limit=4096)
        )["kicked"]
        for node in cluster.nodes
    }
    assert sorted(kicked.values()) == [0, 1], kicked
    with pytest.raises((imaplib.IMAP4.abort, OSError)):
        client.noop()
    client.shutdown()
    holder = next(n for n in cluster.nodes if kicked[n.name] == 1)
    line = re.compile(
        rf"session proto=imap client=127\.0\.0\.1:{client_port} login={re.escape(bob.address)}"
        rf" uid={bob.uid} "
    )
    assert eventually(lambda: line.search(holder.proc.log_text())), holder.proc.log_text()[-2000:]
    other = next(n for n in cluster.nodes if n is not holder)
    assert not line.search(other.proc.log_text())


def all_logs(cluster: Cluster) -> str:
    return "".join(n.proc.log_text() for n in cluster.nodes)


def test_pop3_through_haproxy_carries_the_client_address(farm: Farm, cluster: Cluster) -> None:
    carol = farm.user("carol@example.com")
    client = poplib.POP3("127.0.0.1", cluster.front["pop3"], timeout=10)
    client_port = client.sock.getsockname()[1]
    client.user(carol.address)
    client.pass_(carol.password)
    client.stat()
    client.quit()
    wanted = f"session proto=pop3 client=127.0.0.1:{client_port} "
    assert eventually(lambda: wanted in all_logs(cluster)), all_logs(cluster)[-2000:]
