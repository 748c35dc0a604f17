"""``mailfarm user add|del|passwd|list|show`` against the real slapd and Dovecot backends."""

from __future__ import annotations

import imaplib

import pytest

from bench.farm import Farm
from tests.integration import provision_helpers as helpers
from tests.integration.provision_helpers import (
    HOSTS,
    NAME_OF,
    Admin,
    add_user,
    backend_login,
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
