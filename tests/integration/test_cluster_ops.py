"""Cluster-wide operations: ``mailfarm sessions``, ``user kick`` and ``user flush`` across
every instance in ``[provision] admin_urls`` and every worker of each, with one result per
worker URL; an instance that cannot be reached is reported without hiding the others.

Two real ``mailfarm serve`` processes in front of the farm: ``one`` with a single worker,
``two`` with ``[proxy] workers = 2`` (admin ports P and P + 1). The admin tool is given one
URL per instance and must find the second worker by itself.
"""

from __future__ import annotations

import imaplib
import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import tests.integration.provision_helpers as helpers
from bench.farm import Farm, FarmUser
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config
from tests.integration.provision_helpers import ADMIN_TOKEN, Admin

admin = helpers.admin  # fixture


def free_pair() -> int:
    """A port P with P + 1 free as well (worker 1's admin port)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return int(port)
    raise RuntimeError("no two consecutive free ports")


def unreachable_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def worker_sessions(port: int) -> list[dict[str, object]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/sessions")
    request.add_header("Authorization", f"Bearer {ADMIN_TOKEN}")
    with urllib.request.urlopen(request, timeout=5) as answer:
        return list(json.loads(answer.read())["sessions"])


def wait_listening(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@dataclass
class Instance:
    ports: ProxyPorts
    admin_port: int
    workers: int
    process: MailfarmProcess

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def worker_url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.admin_port + i}"

    def login(self, user: FarmUser) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.ports.imap, timeout=15)
        client.login(user.address, user.password)
        return client


@dataclass
class Cluster:
    one: Instance
    two: Instance


def start_instance(farm: Farm, workdir: Path, name: str, workers: int) -> Instance:
    ports, admin_port = ProxyPorts(), free_pair()
    sections = farm_config(
        farm,
        ports,
        proxy={"workers": workers},
        admin={"listen": [f"127.0.0.1:{admin_port}"], "token": ADMIN_TOKEN},
    )
    sections.pop("pop3", None)
    process = MailfarmProcess(workdir, sections, name).start()
    for i in range(workers):
        wait_listening(admin_port + i)
    return Instance(ports, admin_port, workers, process)


@pytest.fixture(scope="module")
def cluster(farm: Farm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("cluster")
    one = start_instance(farm, workdir, "one", 1)
    try:
        two = start_instance(farm, workdir, "two", 2)
    except BaseException:
        one.process.stop()
        raise
    yield Cluster(one, two)
    two.process.stop()
    one.process.stop()


@dataclass
class LoggedIn:
    alice: imaplib.IMAP4  # on instance one
    bob: list[imaplib.IMAP4]  # on instance two, on both of its workers
    bob_by_worker: dict[int, int]  # worker -> bob's sessions there


@pytest.fixture
def logged_in(farm: Farm, cluster: Cluster) -> Iterator[LoggedIn]:
    """alice logged in on ``one``; bob on ``two`` until both of its workers hold one of
    his sessions (the kernel spreads connections over the workers' SO_REUSEPORT sockets)."""
    alice, bob = farm.user("alice@example.co.uk"), farm.user("bob@example.co.uk")
    clients = [cluster.one.login(alice)]
    by_worker: dict[int, int] = {}
    try:
        for _ in range(24):
            clients.append(cluster.two.login(bob))
            by_worker = {i: len(worker_sessions(cluster.two.admin_port + i)) for i in range(2)}
            if all(by_worker.values()) and len(clients) >= 3:
                break
        assert all(by_worker.values()), f"bob's sessions all on one worker: {by_worker}"
        yield LoggedIn(clients[0], clients[1:], by_worker)
    finally:
        for client in clients:
            try:
                client.shutdown()
            except OSError:
                pass


def cluster_admin(admin: Admin, name: str, *urls: str) -> Admin:
    return admin.with_config(name, provision={"admin_urls": list(urls)})


def test_sessions_lists_every_worker_of_every_instance(
    farm: Farm, admin: Admin, cluster: Cluster, logged_in: LoggedIn
) -> None:
    alice, bob = farm.user("alice@example.co.uk"), farm.user("bob@example.co.uk")
    tool = cluster_admin(admin, "cluster-two", cluster.one.url, cluster.two.url)
    data = tool.ok("sessions")
    assert data["unreachable"] == []
    where = sorted((s["uid"], s["instance"], s["worker"]) for s in data["sessions"])
    bobs = [
        (bob.uid, cluster.two.worker_url(w), w)
        for w, count in logged_in.bob_by_worker.items()
        for _ in range(count)
    ]
    assert where == sorted([(alice.uid, cluster.one.url, 0), *bobs])
    for entry in data["sessions"]:
        assert entry["protocol"] == "imap"
        host = farm.backend_of(alice if entry["uid"] == alice.uid else bob).host
        assert str(entry["backend"]).startswith(host)

    only = tool.ok("sessions", "--user", alice.address)
    assert [(s["uid"], s["instance"]) for s in only["sessions"]] == [(alice.uid, cluster.one.url)]

    text = tool.run("sessions", "--user", bob.uid)
    assert text.code == 0, text
    lines = text.stdout.splitlines()
    assert lines[0].split() == [
        "USER", "PROTOCOL", "BACKEND", "CLIENT", "DURATION", "INSTANCE", "WORKER"
    ]  # fmt: skip
    rows = [line.split() for line in lines[1:] if line.startswith(bob.address)]
    assert len(rows) == len(logged_in.bob)
    assert {(row[5], row[6]) for row in rows} == {
        (cluster.two.worker_url(w), str(w)) for w in (0, 1)
    }
    assert f"{len(logged_in.bob)} sessions of {bob.uid}" in text.stdout


def test_dashboard_counts_every_worker_from_one_url(
    farm: Farm, admin: Admin, cluster: Cluster, logged_in: LoggedIn
) -> None:
    """The console's dashboard is given one admin URL per instance, as the CLI is: an
    instance with two workers must show both, each with its own sessions."""
    from proxy.config import load_config
    from web.dashboard import Dashboard

    tool = cluster_admin(admin, "cluster-dash", cluster.one.url, cluster.two.url)
    snapshot = Dashboard(load_config(tool.config)).snapshot()
    shown = [i["url"] for i in snapshot["instances"]]
    assert shown == [cluster.one.url, *(cluster.two.worker_url(w) for w in (0, 1))]
    assert all(i["up"] for i in snapshot["instances"])
    proxied = snapshot["totals"]["sessions"]["imap"]["proxied"]
    assert proxied == 1 + len(logged_in.bob)
    by_backend = snapshot["totals"]["sessions_by_backend"]
    assert sum(by_backend.values()) == 1 + len(logged_in.bob)


def test_kick_ends_the_sessions_on_whichever_worker_holds_them(
    farm: Farm, admin: Admin, cluster: Cluster, logged_in: LoggedIn
) -> None:
    bob = farm.user("bob@example.co.uk")
    tool = cluster_admin(admin, "cluster-kick", cluster.one.url, cluster.two.url)
    data = tool.ok("user", "kick", bob.address)
    assert data["kicked"] == len(logged_in.bob)
    assert [(i["instance"], i["ok"], i["kicked"]) for i in data["instances"]] == [
        (cluster.one.url, True, 0),
        (cluster.two.worker_url(0), True, logged_in.bob_by_worker[0]),
        (cluster.two.worker_url(1), True, logged_in.bob_by_worker[1]),
    ]
    for client in logged_in.bob:
        with pytest.raises((imaplib.IMAP4.abort, OSError)):
            client.noop()
            client.noop()  # the BYE may come as the answer to the first one
    logged_in.alice.noop()  # alice, on the other instance, is left alone
    assert tool.ok("sessions", "--user", bob.uid)["sessions"] == []

    text = tool.run("user", "kick", bob.uid)  # nothing left to kick: still told everywhere
    assert text.code == 0, text
    lines = text.stdout.splitlines()
    assert lines[:3] == [
        f"{cluster.one.url}\tok, 0 sessions kicked",
        f"{cluster.two.worker_url(0)}\tok, 0 sessions kicked",
        f"{cluster.two.worker_url(1)}\tok, 0 sessions kicked",
    ]


def test_flush_reports_every_worker(farm: Farm, admin: Admin, cluster: Cluster) -> None:
    tool = cluster_admin(admin, "cluster-flush", cluster.one.url, cluster.two.url)
    data = tool.ok("user", "flush", "bob@example.co.uk")
    assert [(i["instance"], i["ok"]) for i in data["instances"]] == [
        (cluster.one.url, True),
        (cluster.two.worker_url(0), True),
        (cluster.two.worker_url(1), True),
    ]
    assert all(isinstance(i["flushed"], int) for i in data["instances"])
    assert tool.run("user", "flush").code == 2  # neither a LOGIN nor --all


def test_an_unreachable_instance_does_not_hide_the_others(
    farm: Farm, admin: Admin, cluster: Cluster, logged_in: LoggedIn
) -> None:
    alice, bob = farm.user("alice@example.co.uk"), farm.user("bob@example.co.uk")
    dead = unreachable_url()
    tool = cluster_admin(admin, "cluster-dead", cluster.one.url, dead, cluster.two.url)

    result = tool.run("sessions", "--json")
    assert result.code == 3, result
    data = result.json
    assert data["ok"] is False
    assert [u["instance"] for u in data["unreachable"]] == [dead]
    assert "connection refused" in data["unreachable"][0]["problem"]
    assert {s["uid"] for s in data["sessions"]} == {alice.uid, bob.uid}
    assert len(data["sessions"]) == 1 + len(logged_in.bob)

    text = tool.run("sessions")
    assert text.code == 3
    assert alice.address in text.stdout and bob.address in text.stdout
    assert f"unreachable: {dead}: " in text.stdout

    result = tool.run("user", "kick", alice.uid, "--json")
    assert result.code == 3, result
    told = {i["instance"]: i for i in result.json["instances"]}
    assert list(told) == [
        cluster.one.url,
        dead,
        cluster.two.worker_url(0),
        cluster.two.worker_url(1),
    ]
    assert told[cluster.one.url]["kicked"] == 1
    assert told[dead]["ok"] is False and "connection refused" in told[dead]["problem"]
    assert result.json["kicked"] == 1
    text = tool.run("user", "kick", alice.uid)
    assert text.code == 3
    assert f"{dead}\tproblem: kick on {dead}: connection refused" in text.stdout


# -- how one URL becomes every worker's (no farm needed) ------------------------------------


@pytest.fixture
def healthz(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """``/healthz`` answers by URL, instead of real instances; adminapi's memory of what
    instances said is emptied before and after."""
    from directory.provision import adminapi
    from directory.provision.adminhttp import Unreachable

    answers: dict[str, object] = {}

    def fetch(url: str, token: str = "", **kwargs: object) -> bytes:
        assert url.endswith("/healthz") and not token
        answer = answers.get(url.removesuffix("/healthz"))
        if answer is None:
            raise Unreachable("connection refused", True)
        return json.dumps(answer).encode()

    monkeypatch.setattr(adminapi, "fetch", fetch)
    monkeypatch.setattr(adminapi, "_workers_seen", {})
    return answers


def test_worker_urls_from_any_worker(healthz: dict[str, object]) -> None:
    from directory.provision.adminapi import expand, worker_urls

    healthz["http://u:pw@h:9144"] = {"status": "ok", "worker": 1, "workers": 3}
    assert worker_urls("http://u:pw@h:9144") == tuple(
        f"http://u:pw@h:{port}" for port in (9143, 9144, 9145)
    )
    healthz["http://[::1]:9143"] = {"status": "ok", "worker": 0, "workers": 2}
    healthz["http://[::1]:9144"] = {"status": "ok", "worker": 1, "workers": 2}
    # An older config lists every worker port: each one once, in order.
    assert expand(["http://[::1]:9143", "http://[::1]:9144", "http://down:1"]) == [
        "http://[::1]:9143",
        "http://[::1]:9144",
        "http://down:1",
    ]


@pytest.mark.parametrize(
    "url, answer",
    [
        ("http://h:9143", {"status": "ok"}),  # an older mailfarm: one worker
        ("http://h:9143", {"status": "ok", "worker": 0, "workers": 1}),
        ("http://h:9143", {"status": "ok", "worker": 2, "workers": 2}),  # nonsense
        ("http://h:9143", {"status": "ok", "worker": 0, "workers": "2"}),
        ("http://h:9143", [1, 2]),
        ("http://h:9143/mf1", {"status": "ok", "worker": 0, "workers": 4}),  # a reverse proxy
        ("http://h", {"status": "ok", "worker": 0, "workers": 4}),  # no port to count from
        ("http://h:1", {"status": "ok", "worker": 1, "workers": 2}),  # port 0 is no port
    ],
)
def test_worker_urls_left_alone(healthz: dict[str, object], url: str, answer: object) -> None:
    from directory.provision.adminapi import worker_urls

    healthz[url] = answer
    assert worker_urls(url) == (url,)


def test_worker_count_is_remembered(healthz: dict[str, object]) -> None:
    from directory.provision.adminapi import worker_urls

    healthz["http://h:9143"] = {"status": "ok", "worker": 0, "workers": 2}
    assert len(worker_urls("http://h:9143")) == 2
    healthz["http://h:9143"] = {"status": "ok", "worker": 0, "workers": 1}
    assert len(worker_urls("http://h:9143")) == 2  # until WORKERS_TTL passes
