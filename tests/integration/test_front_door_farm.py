"""The whole issue-16 picture at once: HAProxy in front of two mailfarm instances, each
reading the two syncrepl consumers over StartTLS with the farm's CA, the admin tool writing
to the provider (TLS on all three). A user added through the provider logs in through
HAProxy as soon as ``user add`` returns; a kick reaches the session on whichever instance
holds it; the session list covers both."""

from __future__ import annotations

import imaplib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.farm import BACKEND_HOSTS, Farm
from bench.ldapcluster import LdapCluster
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config, free_port, render_toml
from tests.integration.haproxy_helpers import HAProxy, Instance, render_config
from tests.integration.provision_helpers import Admin, provision_sections

TOKEN = "front-door-farm-token"


@dataclass
class Stack:
    cluster: LdapCluster
    haproxy: HAProxy
    front: int
    nodes: list[MailfarmProcess]
    admin_urls: list[str]


def _directory(farm: Farm, cluster: LdapCluster) -> dict[str, object]:
    return {
        "uri": cluster.uris,
        "tls": "starttls",
        "ca_file": str(farm.pki.ca_cert),
        "timeout": 2,
        "cache_ttl": 0,
        "negative_ttl": 0,
    }


@pytest.fixture(scope="module")
def stack(farm: Farm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("front-door-farm")
    with LdapCluster(farm, pki=farm.pki) as cluster:
        nodes, instances, urls = [], [], []
        try:
            for name in ("fd1", "fd2"):
                instance = Instance(name, {"imap": free_port()}, free_port())
                sections = farm_config(
                    farm,
                    ProxyPorts(),
                    directory=_directory(farm, cluster),
                    proxy={"haproxy_trusted_networks": ["127.0.0.1/32"], "shutdown_grace": 1},
                    imap={
                        "listen": [],
                        "tls_listen": [],
                        "proxy_protocol_listen": [f"127.0.0.1:{instance.ports['imap']}"],
                        # The farm's Dovecot asks the farm's slapd, not the cluster: the
                        # proxy user vouches for the user the cluster knows.
                        "backend_auth": "proxy",
                    },
                    admin={"listen": [f"127.0.0.1:{instance.admin_port}"], "token": TOKEN},
                )
                sections.pop("pop3", None)
                nodes.append(MailfarmProcess(workdir, sections, name).start())
                instances.append(instance)
                urls.append(f"http://127.0.0.1:{instance.admin_port}")
            front = free_port()
            sock = workdir / "admin.sock"
            haproxy = HAProxy(workdir, render_config(sock, {"imap": front}, instances), sock)
            haproxy.start()
            try:
                for instance in instances:
                    haproxy.wait_status(["imap"], instance.name, lambda r: r["status"] == "UP")
                yield Stack(cluster, haproxy, front, nodes, urls)
            finally:
                haproxy.stop()
        finally:
            for node in nodes:
                node.stop()


@pytest.fixture(scope="module")
def admin(farm: Farm, stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Admin:
    workdir = tmp_path_factory.mktemp("front-door-admin")
    sections = provision_sections(
        farm,
        directory={k: v for k, v in _directory(farm, stack.cluster).items() if "ttl" not in k},
        provision={
            "uri": [stack.cluster.member("provider").ldaps_uri],
            "replication_wait": 5.0,
            "admin_urls": stack.admin_urls,
        },
        admin={"token": TOKEN},
    )
    config = workdir / "admin.toml"
    config.write_text(render_toml(sections))
    return Admin(farm, config, workdir / "pycache")


def through_haproxy(stack: Stack, login: str, password: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", stack.front, timeout=15)
    client.login(login, password)
    return client


def test_user_added_through_the_provider_logs_in_through_haproxy_at_once(
    stack: Stack, admin: Admin
) -> None:
    address = f"fd{secrets.token_hex(3)}@example.com"
    password = f"pw-{secrets.token_hex(4)}"
    added = admin.ok(
        "user", "add", address, "--host", BACKEND_HOSTS["mail3"], "--password-file", "-",
        stdin=password + "\n",
    )  # fmt: skip
    try:
        assert added["not_replicated"] == [] and sorted(added["replicated"]) == sorted(
            stack.cluster.uris
        )
        for _ in range(4):  # both instances, whichever HAProxy picks
            client = through_haproxy(stack, address, password)
            assert client.select("INBOX")[0] == "OK"
            client.logout()
    finally:
        admin.run("user", "del", address)


def test_sessions_and_kick_across_the_instances(stack: Stack, admin: Admin, farm: Farm) -> None:
    user = farm.user("dave@example.com")
    held = [through_haproxy(stack, user.address, user.password) for _ in range(2)]
    listed = admin.ok("sessions", "--user", user.address)
    mine = [s for s in listed["sessions"] if s.get("mail") == user.address]
    assert len(mine) == 2, listed
    kicked = admin.ok("user", "kick", user.address)
    assert sum(i.get("kicked", 0) for i in kicked["instances"]) == 2, kicked
    for client in held:
        with pytest.raises((imaplib.IMAP4.abort, imaplib.IMAP4.error, OSError)):
            client.noop()
            client.noop()


def test_the_admin_tool_refuses_a_provider_with_the_wrong_ca(
    stack: Stack, admin: Admin, farm: Farm, tmp_path: Path
) -> None:
    from bench.pki import make_pki

    other = make_pki(tmp_path / "other-ca", ["localhost"])
    text = admin.config.read_text().replace(str(farm.pki.ca_cert), str(other.ca_cert))
    config = tmp_path / "wrong-ca.toml"
    config.write_text(text)
    wrong = Admin(farm, config, tmp_path / "pycache")
    result = wrong.run("user", "add", "nobody-fd@example.com", "--password-file", "-", stdin="x\n")
    assert result.code != 0 and "CERTIFICATE_VERIFY_FAILED" in result.stderr + result.stdout
