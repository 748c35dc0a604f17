"""Read replicas and a write provider: the admin tool writes to a syncrepl provider, the
proxies read two refreshAndPersist consumers (bench.ldapcluster), and a change made with
``mailfarm user ...`` holds for a login through a proxy as soon as the command returns.

The proxy checks passwords against the consumers and vouches for the user at the backend
(``backend_auth = "proxy"``): the farm's backends read the farm's own slapd, not the
cluster, so with their own password check they would test that slapd instead. It caches
nothing (``cache_ttl``/``negative_ttl`` 0), so every login is a fresh read of a consumer.
"""

from __future__ import annotations

import imaplib
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.farm import BACKEND_HOSTS, Farm
from bench.ldapcluster import LdapCluster
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config, render_toml
from tests.integration.provision_helpers import Admin, provision_sections

DIRECTORY_TIMEOUT = 1.5


@pytest.fixture(scope="module")
def cluster(farm: Farm) -> Iterator[LdapCluster]:
    # Its own temp dir, not pytest's: slapd runs as openldap, which must traverse the path.
    with LdapCluster(farm) as running:
        yield running


@pytest.fixture(scope="module")
def proxy(
    farm: Farm, cluster: LdapCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyPorts]:
    ports = ProxyPorts()
    sections = farm_config(
        farm,
        ports,
        directory={
            "uri": cluster.uris,
            "cache_ttl": 0,
            "negative_ttl": 0,
            "timeout": DIRECTORY_TIMEOUT,
        },
        imap={"backend_auth": "proxy"},
        pop3={"backend_auth": "proxy"},
    )
    with MailfarmProcess(tmp_path_factory.mktemp("replicas"), sections, "replicas") as process:
        assert process.proc is not None
        yield ports


def _admin(farm: Farm, cluster: LdapCluster, workdir: Path, wait: float) -> Admin:
    sections = provision_sections(
        farm,
        directory={"uri": cluster.uris, "timeout": DIRECTORY_TIMEOUT},
        provision={"uri": [cluster.provider_uri], "replication_wait": wait},
    )
    config = workdir / f"replicas-{wait}.toml"
    config.write_text(render_toml(sections))
    return Admin(farm, config, workdir / "pycache")


@pytest.fixture(scope="module")
def admin(farm: Farm, cluster: LdapCluster, tmp_path_factory: pytest.TempPathFactory) -> Admin:
    return _admin(farm, cluster, tmp_path_factory.mktemp("replicas-admin"), 5.0)


@pytest.fixture(scope="module")
def impatient(farm: Farm, cluster: LdapCluster, admin: Admin) -> Admin:
    """The same, waiting only a second for the consumers."""
    return _admin(farm, cluster, admin.config.parent, 1.0)


def login(ports: ProxyPorts, user: str, password: str) -> tuple[str, Any]:
    """One IMAP login through the proxy; (status, data), with LOGOUT after a success."""
    client = imaplib.IMAP4("127.0.0.1", ports.imap, timeout=15)
    try:
        typ, data = client.login(user, password)
    except imaplib.IMAP4.error as exc:
        return "NO", str(exc)
    try:
        assert client.select("INBOX")[0] == "OK"  # the backend accepted the vouching too
    finally:
        client.logout()
    return typ, data


def passwd(admin: Admin, login_name: str, password: str) -> dict[str, Any]:
    data: dict[str, Any] = admin.ok(
        "user", "passwd", login_name, "--password-file", "-", stdin=password + "\n"
    )
    return data


def add_on_mail3(admin: Admin, address: str, password: str) -> dict[str, Any]:
    """``user add`` on the Cyrus backend mail3, which creates the mailbox without asking
    LDAP: the farm's slapd need not know the user, only the cluster does."""
    data: dict[str, Any] = admin.ok(
        "user", "add", address, "--host", BACKEND_HOSTS["mail3"], "--password-file", "-",
        stdin=password + "\n",
    )  # fmt: skip
    return data


def test_added_user_logs_in_through_the_proxy_at_once(
    admin: Admin, cluster: LdapCluster, proxy: ProxyPorts
) -> None:
    address = f"rr{secrets.token_hex(3)}@example.com"
    password = f"pw-{secrets.token_hex(4)}"
    added = add_on_mail3(admin, address, password)
    try:
        assert added["replicated"] == cluster.uris and added["not_replicated"] == []
        assert login(proxy, address, password)[0] == "OK"
    finally:
        deleted = admin.ok("user", "del", address)
    assert deleted["replicated"] == cluster.uris and deleted["not_replicated"] == []
    assert login(proxy, address, password)[0] == "NO"


def test_a_deleted_domain_is_gone_from_the_consumers_when_del_returns(
    admin: Admin, cluster: LdapCluster, proxy: ProxyPorts
) -> None:
    domain = f"rd{secrets.token_hex(3)}.test"
    address, password = f"u@{domain}", f"pw-{secrets.token_hex(4)}"
    admin.ok("domain", "add", domain, "--no-mail-dns")
    try:
        add_on_mail3(admin, address, password)
        assert login(proxy, address, password)[0] == "OK"
    finally:
        deleted = admin.ok("domain", "del", domain, "--force")
    assert deleted["deleted_users"] == [address]
    assert deleted["replicated"] == cluster.uris and deleted["not_replicated"] == []
    assert login(proxy, address, password)[0] == "NO"


def test_an_import_is_checked_for_replication_once_and_logs_in_at_once(
    admin: Admin, cluster: LdapCluster, proxy: ProxyPorts, tmp_path: Path
) -> None:
    tag = secrets.token_hex(3)
    users = [(f"imp{tag}{i}@example.com", f"pw-{secrets.token_hex(4)}") for i in range(3)]
    csv = tmp_path / "users.csv"
    host = BACKEND_HOSTS["mail3"]  # Cyrus: the mailbox is made without asking LDAP
    csv.write_text("".join(f"{a},{p},{host}\n" for a, p in users))
    imported = admin.ok("import", str(csv))
    try:
        assert imported["created"] == 3
        # one check, after the last user: every consumer shows it, hence all before it
        assert imported["replicated"] == cluster.uris and imported["not_replicated"] == []
        for address, password in (users[0], users[-1]):
            assert login(proxy, address, password)[0] == "OK"
    finally:
        for address, _ in users:
            admin.run("user", "del", address)


def test_a_new_password_holds_through_the_proxy_at_once(
    admin: Admin, cluster: LdapCluster, proxy: ProxyPorts
) -> None:
    user = admin.farm.user("carol@example.com")
    for _ in range(3):  # each time the old one is refused and the new one works at once
        new = f"carol-{secrets.token_hex(4)}"
        changed = passwd(admin, user.address, new)
        assert changed["replicated"] == cluster.uris and changed["not_replicated"] == []
        assert login(proxy, user.address, new)[0] == "OK"
        assert login(proxy, user.address, user.password)[0] == "NO"
        user = type(user)(user.address, user.uid, new, user.backend)


def test_logins_keep_working_without_the_provider(
    cluster: LdapCluster, proxy: ProxyPorts, farm: Farm
) -> None:
    alice = farm.user("alice@example.co.uk")
    cluster.stop_member("provider")
    try:
        for _ in range(3):
            assert login(proxy, alice.address, alice.password)[0] == "OK"
    finally:
        cluster.start_member("provider")
        cluster.wait_caught_up()


def test_logins_fail_over_to_the_other_consumer(
    cluster: LdapCluster, proxy: ProxyPorts, farm: Farm
) -> None:
    alice = farm.user("alice@example.co.uk")
    assert login(proxy, alice.address, alice.password)[0] == "OK"  # both in use first
    cluster.stop_member("consumer1")
    try:
        for _ in range(3):
            assert login(proxy, alice.address, alice.password)[0] == "OK"
    finally:
        cluster.start_member("consumer1")
        cluster.wait_caught_up()


def test_a_consumer_that_misses_a_write_is_named(
    impatient: Admin, cluster: LdapCluster, proxy: ProxyPorts, farm: Farm
) -> None:
    dave = farm.user("dave@example.com")
    new = f"dave-{secrets.token_hex(4)}"
    down = cluster.member("consumer2")
    down.stop()
    try:
        result = impatient.run(
            "user", "passwd", dave.address, "--password-file", "-", "--json", stdin=new + "\n"
        )
        assert result.code == 0, result  # the write happened: a report, not a failure
        data = result.json
        assert data["replicated"] == [cluster.member("consumer1").uri]
        assert data["not_replicated"] == [down.uri]
        assert down.uri in result.stderr and "warning" in result.stderr
        # consumer1 has it, and the proxy reads there while consumer2 is down
        assert login(proxy, dave.address, new)[0] == "OK"
    finally:
        down.start()
        cluster.wait_caught_up()  # consumer2 catches up when it comes back
    for _ in range(2):
        assert login(proxy, dave.address, new)[0] == "OK"


def test_a_moved_user_logs_in_on_the_new_backend_at_once(
    admin: Admin, cluster: LdapCluster, proxy: ProxyPorts
) -> None:
    # Cyrus to Cyrus (mail3 -> mail4): neither asks LDAP, so only the cluster knows the user.
    address = f"rm{secrets.token_hex(3)}@example.com"
    password = f"pw-{secrets.token_hex(4)}"
    add_on_mail3(admin, address, password)
    try:
        moved = admin.ok("user", "move", address, "--to", BACKEND_HOSTS["mail4"])
        assert moved["replicated"] == cluster.uris and moved["not_replicated"] == []
        assert login(proxy, address, password)[0] == "OK"
        shown = admin.ok("user", "show", address)
        assert shown["mailHost"] == BACKEND_HOSTS["mail4"]
    finally:
        admin.run("user", "del", address)
