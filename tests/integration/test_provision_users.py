"""``mailfarm user add|del|passwd|list|show`` against the real slapd and Dovecot backends."""

from __future__ import annotations

import imaplib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.farm import Farm
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config, free_port, render_toml
from directory.provision.ldapwrite import LdapWriter
from tests.integration import provision_helpers as helpers
from tests.integration.provision_helpers import (
    ADMIN_TOKEN,
    DISABLED_ATTRIBUTE,
    HOSTS,
    NAME_OF,
    Admin,
    add_user,
    backend_login,
    provision_sections,
)

admin = helpers.admin  # fixture
domain = helpers.domain  # fixture


def proxy_login(proxy, login: str, password: str) -> imaplib.IMAP4:  # type: ignore[no-untyped-def]
    client = imaplib.IMAP4("127.0.0.1", proxy.ports.imap, timeout=15)
    client.login(login, password)
    return client


def test_add_on_chosen_host_creates_mailbox_and_proxy_login(
    farm: Farm,
    admin: Admin,
    domain: str,
    proxy,  # type: ignore[no-untyped-def]
) -> None:
    address = f"Alice.Smith@{domain.upper()}"
    created = add_user(admin, address, "s3cret pw", "--host", HOSTS[1])
    uid = f"alice_smith_{domain.replace('.', '_')}"
    assert created["uid"] == uid
    assert created["mail"] == address.lower()
    assert created["mailHost"] == HOSTS[1]
    # The mailbox was made on that backend, and only there (both backends would accept a
    # login for any user, so look at their storage before anyone logs in).
    for host in HOSTS:
        store = farm.workdir / NAME_OF[host] / "storage" / uid / "Maildir"
        assert store.is_dir() == (host == HOSTS[1]), host
    client = backend_login(farm, HOSTS[1], uid, "s3cret pw")
    assert client.select("INBOX")[0] == "OK"
    client.logout()
    # The password is hashed with [provision] password_scheme ({SSHA512}) and slapd checks
    # it (pw-sha2): the user logs in through the IMAP proxy, by uid and by address.
    for login in (created["uid"], created["mail"]):
        session = proxy_login(proxy, login, "s3cret pw")
        typ, _ = session.select("INBOX")
        assert typ == "OK"
        session.logout()
    shown = admin.ok("user", "show", created["mail"])
    assert shown["mailHost"] == HOSTS[1] and shown["login_disabled"] is False
    listed = admin.ok("user", "list", "--domain", domain)["users"]
    assert [u["mail"] for u in listed] == [created["mail"]]


def test_add_without_host_picks_the_least_loaded(admin: Admin, domain: str) -> None:
    # Make mail1 busier than mail2 by two users, whatever the farm holds already.
    for i in range(2):
        add_user(admin, f"load{i}@{domain}", "pw", "--host", HOSTS[0])
    counts = {host: 0 for host in HOSTS}
    for user in admin.ok("user", "list")["users"]:
        if user["mailHost"] in counts:
            counts[user["mailHost"]] += 1
    expected = min(HOSTS, key=lambda h: (counts[h], HOSTS.index(h)))
    created = add_user(admin, f"auto@{domain}", "pw")
    assert created["mailHost"] == expected
    counts[expected] += 1
    expected2 = min(HOSTS, key=lambda h: (counts[h], HOSTS.index(h)))
    assert add_user(admin, f"auto2@{domain}", "pw")["mailHost"] == expected2


def test_add_refusals(admin: Admin, domain: str) -> None:
    add_user(admin, f"taken@{domain}", "pw")
    again = admin.run("user", "add", f"TAKEN@{domain}", "--password-file", "-", stdin="x\n")
    assert again.code == 1 and "exists already" in again.stderr
    missing = admin.run(
        "user", "add", "who@no-such-domain.test", "--json", "--password-file", "-", stdin="x\n"
    )
    assert missing.code == 1 and missing.json == {
        "ok": False,
        "error": "domain no-such-domain.test does not exist (add it with: mailfarm domain add)",
        "exit": 1,
    }
    bad = admin.run("user", "add", "not an address", "--password-file", "-", stdin="x\n")
    assert bad.code == 2 and "is not a mail address" in bad.stderr
    # No password on a non-interactive stdin and no --password-file: a usage error, no entry.
    nopw = admin.run("user", "add", f"nopw@{domain}", stdin="")
    assert nopw.code == 2 and "--password-file" in nopw.stderr
    empty = admin.run("user", "add", f"nopw@{domain}", "--password-file", "-", stdin="\n")
    assert empty.code == 2 and "empty password" in empty.stderr
    assert admin.run("user", "show", f"nopw@{domain}").code == 1


def test_backend_down_during_add_leaves_no_entry(farm: Farm, admin: Admin, domain: str) -> None:
    address = f"down@{domain}"
    farm.stop_backend(NAME_OF[HOSTS[0]])
    try:
        result = admin.run(
            "user",
            "add",
            address,
            "--host",
            HOSTS[0],
            "--json",
            "--password-file",
            "-",
            stdin="pw\n",
        )
    finally:
        farm.start_backend(NAME_OF[HOSTS[0]])
    assert result.code == 3, result
    assert "the entry was removed again" in result.json["error"]
    gone = admin.run("user", "show", address, "--json")
    assert gone.code == 1 and gone.json["ok"] is False
    # ...and nothing half-made blocks a retry once the backend is back.
    assert add_user(admin, address, "pw", "--host", HOSTS[0])["mailHost"] == HOSTS[0]


def test_backend_refusing_the_admin_during_add_leaves_no_entry(
    farm: Farm, admin: Admin, domain: str, tmp_path: Path
) -> None:
    """A backend that answers but refuses (here: a wrong master password) is an IMAP NO, not
    a dropped connection. Undoing the entry after it used to crash with a TypeError, as
    the refusal was rebuilt with one argument."""
    config = tmp_path / "refused.toml"
    sections = provision_sections(farm)
    for backend in sections["backends"]:  # the admin credentials come from [[backends]]
        backend["admin_password"] = "not-the-master-pw"
    config.write_text(render_toml(sections))
    refusing = Admin(farm, config, admin.pycache)
    address = f"refused@{domain}"
    result = refusing.run(
        "user", "add", address, "--host", HOSTS[0], "--json", "--password-file", "-", stdin="pw\n"
    )
    assert result.code == 3, result
    assert "LOGIN as" in result.json["error"] and "NO" in result.json["error"]
    assert "the entry was removed again" in result.json["error"]
    assert "Traceback" not in result.stderr
    assert admin.run("user", "show", address).code == 1


def test_passwd_and_del(farm: Farm, admin: Admin, domain: str, proxy, tmp_path) -> None:  # type: ignore[no-untyped-def]
    created = add_user(admin, f"bob@{domain}", "old-pw", "--host", HOSTS[0])
    secret = tmp_path / "pw"
    secret.write_text("new pw\n")
    admin.ok("user", "passwd", created["uid"], "--password-file", str(secret))
    with pytest.raises(imaplib.IMAP4.error):
        proxy_login(proxy, created["mail"], "old-pw")
    session = proxy_login(proxy, created["mail"], "new pw")
    assert session.create("Keep")[0] == "OK"
    assert session.append("INBOX", None, None, b"Subject: hi\r\n\r\nbody\r\n")[0] == "OK"
    session.logout()
    assert admin.run("user", "passwd", f"nobody@{domain}", "--password-file", str(secret)).code == 1

    deleted = admin.ok("user", "del", created["mail"])
    assert deleted["messages_removed"] == 1
    assert admin.run("user", "show", created["uid"]).code == 1
    assert admin.run("user", "del", created["uid"]).code == 1
    # The mailbox went with the entry: the same address made again starts empty.
    add_user(admin, f"bob@{domain}", "pw", "--host", HOSTS[0])
    client = backend_login(farm, HOSTS[0], created["uid"], "pw")
    typ, data = client.select("INBOX")
    assert typ == "OK" and data == [b"0"]
    _, folders = client.list()
    assert not any(b"Keep" in line for line in folders if line)
    client.logout()


def test_del_with_backend_down_keeps_the_entry(farm: Farm, admin: Admin, domain: str) -> None:
    add_user(admin, f"stay@{domain}", "pw", "--host", HOSTS[1])
    farm.stop_backend(NAME_OF[HOSTS[1]])
    try:
        result = admin.run("user", "del", f"stay@{domain}")
    finally:
        farm.start_backend(NAME_OF[HOSTS[1]])
    assert result.code == 3 and f"backend {HOSTS[1]}" in result.stderr
    assert admin.ok("user", "show", f"stay@{domain}")["mailHost"] == HOSTS[1]


def test_list_and_show_failures(admin: Admin) -> None:
    assert admin.run("user", "list", "--domain", "no-such-domain.test").code == 1
    missing = admin.run("user", "show", "nobody_nowhere_test", "--json")
    assert missing.code == 1 and missing.json["error"] == "nobody_nowhere_test: no such user"
    # A filter-looking login is escaped: it matches nothing rather than everyone.
    assert admin.run("user", "show", "*").code == 1
    everyone = admin.ok("user", "list")["users"]
    assert {"alice@example.co.uk", "bob@example.co.uk"} <= {u["mail"] for u in everyone}


# -- changes take effect at once on every instance -----------------------------------------


@dataclass
class CachedProxy:
    """A mailfarm that remembers routes and logins for 5 minutes, with an admin endpoint."""

    ports: ProxyPorts
    admin_url: str
    process: MailfarmProcess


@pytest.fixture(scope="module")
def cached_proxy(farm: Farm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CachedProxy]:
    ports, admin_port = ProxyPorts(), free_port()
    sections = farm_config(
        farm,
        ports,
        directory={"cache_ttl": 300, "disabled_attribute": DISABLED_ATTRIBUTE},
        proxy={"auth_cache_ttl": 300},
        admin={"listen": [f"127.0.0.1:{admin_port}"], "token": ADMIN_TOKEN},
    )
    sections.pop("pop3", None)
    process = MailfarmProcess(tmp_path_factory.mktemp("cached"), sections, "cached").start()
    yield CachedProxy(ports, f"http://127.0.0.1:{admin_port}", process)
    process.stop()


def unreachable_url() -> str:
    """An admin URL nobody listens on (a port bound, then closed again)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def cached_login(cached: CachedProxy, login: str, password: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", cached.ports.imap, timeout=15)
    client.login(login, password)
    return client


def assert_refused(cached: CachedProxy, login: str, password: str) -> None:
    """Refused by the proxy itself, as a wrong password: not accepted from its auth cache
    and then turned away by the backend (the client would see "[UNAVAILABLE]", and a
    backend that trusts the proxy would let the old password in)."""
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        cached_login(cached, login, password)


def test_passwd_takes_effect_at_once_on_every_instance(
    admin: Admin, domain: str, cached_proxy: CachedProxy, tmp_path: Path
) -> None:
    """With auth_cache_ttl = 300 the proxy would take the old password for five minutes;
    ``user passwd`` flushes the user on every [provision] admin_urls instance, and one that
    cannot be reached is named, with exit 3 (the password is changed all the same)."""
    created = add_user(admin, f"carol@{domain}", "old-pw", "--host", HOSTS[0])
    for _ in range(2):  # the second login is vouched for by the auth cache
        cached_login(cached_proxy, created["mail"], "old-pw").logout()
    dead = unreachable_url()
    two = admin.with_config("passwd-two", provision={"admin_urls": [cached_proxy.admin_url, dead]})
    secret = tmp_path / "pw"
    secret.write_text("new pw\n")

    result = two.run("user", "passwd", created["uid"], "--password-file", str(secret))
    assert result.code == 3, result
    assert dead in result.stderr and "could not be reached" in result.stderr, result.stderr
    assert f"password of {created['mail']} changed" in result.stderr
    assert "1 of 2 mailfarm instances" in result.stderr  # the other one was flushed
    assert_refused(cached_proxy, created["mail"], "old-pw")
    cached_login(cached_proxy, created["mail"], "new pw").logout()
    cached_login(cached_proxy, created["uid"], "new pw").logout()

    # --json: the same failure as data; every instance reached: exit 0, each one named.
    secret.write_text("newer pw\n")
    failed = two.run("user", "passwd", created["mail"], "--password-file", str(secret), "--json")
    assert failed.code == 3
    data = failed.json
    assert (data["ok"], data["exit"], data["uid"]) == (False, 3, created["uid"])
    assert data["flushed"] == [cached_proxy.admin_url] and data["unreachable"] == [dead]
    assert dead in data["error"]
    assert_refused(cached_proxy, created["mail"], "new pw")
    secret.write_text("newest pw\n")
    one = admin.with_config("passwd-one", provision={"admin_urls": [cached_proxy.admin_url]})
    done = one.ok("user", "passwd", created["mail"], "--password-file", str(secret))
    assert done["flushed"] == [cached_proxy.admin_url] and done["unreachable"] == []
    assert_refused(cached_proxy, created["mail"], "newer pw")
    cached_login(cached_proxy, created["mail"], "newest pw").logout()


def disabled_values(admin: Admin, dn: str) -> list[str]:
    with LdapWriter(admin.settings) as writer:
        entry = writer.get(dn, (DISABLED_ATTRIBUTE,))
    assert entry is not None
    return entry.values(DISABLED_ATTRIBUTE)


def test_disable_enable_and_del_take_effect_at_once(
    farm: Farm, admin: Admin, domain: str, cached_proxy: CachedProxy
) -> None:
    created = add_user(admin, f"dan@{domain}", "pw", "--host", HOSTS[1])
    # The farm borrows `description` as its disabled attribute: other values stay.
    farm.ldap_modify(created["dn"], {DISABLED_ATTRIBUTE: ["a note"]})
    one = admin.with_config("disable-one", provision={"admin_urls": [cached_proxy.admin_url]})
    cached_login(cached_proxy, created["mail"], "pw").logout()  # route and login cached
    open_session = cached_login(cached_proxy, created["uid"], "pw")
    assert open_session.select("INBOX")[0] == "OK"

    disabled = one.ok("user", "disable", created["mail"])
    assert disabled["login_disabled"] is True and disabled["flushed"] == [cached_proxy.admin_url]
    with pytest.raises(imaplib.IMAP4.error, match="being moved"):  # [directory] disabled
        cached_login(cached_proxy, created["mail"], "pw")
    with pytest.raises((imaplib.IMAP4.abort, imaplib.IMAP4.error, OSError)):
        open_session.noop()  # kicked: a disabled login keeps no session either
        open_session.noop()
    assert admin.ok("user", "show", created["uid"])["login_disabled"] is True
    assert one.ok("user", "disable", created["uid"])["login_disabled"] is True  # idempotent
    assert disabled_values(admin, created["dn"]) == ["TRUE", "a note"]

    enabled = one.ok("user", "enable", created["uid"])
    assert enabled["login_disabled"] is False
    assert disabled_values(admin, created["dn"]) == ["a note"]
    cached_login(cached_proxy, created["mail"], "pw").logout()  # at once, not in 5 minutes
    assert one.ok("user", "enable", created["uid"])["login_disabled"] is False
    nowhere = one.run("user", "disable", f"nobody@{domain}")
    assert nowhere.code == 1 and "no such user" in nowhere.stderr
    unset = admin.with_config("no-attribute", directory={"disabled_attribute": ""})
    refused = unset.run("user", "disable", created["uid"])
    assert refused.code == 2 and "disabled_attribute" in refused.stderr

    # Deleted: refused at once where the instance could be told; the other one is named.
    dead = unreachable_url()
    two = admin.with_config("del-two", provision={"admin_urls": [cached_proxy.admin_url, dead]})
    result = two.run("user", "del", created["mail"], "--json")
    assert result.code == 3, result
    assert result.json["unreachable"] == [dead] and dead in result.json["error"]
    assert result.json["messages_removed"] == 0
    assert admin.run("user", "show", created["uid"]).code == 1  # the entry is gone anyway
    assert_refused(cached_proxy, created["mail"], "pw")
