"""``mailfarm domain add|list|del`` and the failure paths every admin command shares."""

from __future__ import annotations

import secrets

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
DMARC = "v=DMARC1; p=none; rua=mailto:postmaster@"


def test_add_list_del(admin: Admin) -> None:
    name = f"dom-{secrets.token_hex(4)}.test"
    added = admin.ok("domain", "add", name.upper(), "--mx", "mx1.example.net:5")
    assert added == {
        "ok": True,
        "domain": name,
        "dn": f"dc={name},ou=domains,dc=mailfarm,dc=test",
        "users": 0,
        "mail_dns": [  # [provision] default_spf and default_dmarc; no front_door, dkim_dir
            {"name": "@", "type": "TXT", "value": '"v=spf1 mx -all"'},
            {"name": "_dmarc", "type": "TXT", "value": f'"{DMARC}{name}"'},
        ],
        "dkim": None,
    }
    listed = {d["domain"]: d for d in admin.ok("domain", "list")["domains"]}
    assert listed[name]["users"] == 0
    assert listed["example.com"]["users"] >= 3  # the farm's own domains are listed too
    zone = admin.run("dns", "export", name).stdout
    assert "@\tIN\tMX\t5 mx1.example.net." in zone
    assert "@\tIN\tNS\tns1.mailfarm.test." in zone  # [provision] default_ns
    assert admin.run("domain", "add", name).code == 1  # exists
    assert admin.ok("domain", "del", name)["domain"] == name
    assert name not in {d["domain"] for d in admin.ok("domain", "list")["domains"]}
    assert admin.run("domain", "del", name).code == 1  # gone


def test_del_refused_with_users_unless_force(farm: Farm, admin: Admin) -> None:
    name = f"dom-{secrets.token_hex(4)}.test"
    admin.ok("domain", "add", name)
    users = [add_user(admin, f"u{i}@{name}", "pw", "--host", HOSTS[i % 2]) for i in range(2)]
    session = backend_login(farm, HOSTS[0], users[0]["uid"], "pw")
    session.append("INBOX", None, None, b"Subject: x\r\n\r\nkeep me?\r\n")
    session.logout()
    refused = admin.run("domain", "del", name, "--json")
    assert refused.code == 1 and "has 2 users" in refused.json["error"]
    assert len(admin.ok("user", "list", "--domain", name)["users"]) == 2
    deleted = admin.ok("domain", "del", name, "--force")
    assert sorted(deleted["deleted_users"]) == sorted(u["mail"] for u in users)
    assert admin.run("user", "show", users[0]["uid"]).code == 1
    # Mailboxes went too: the maildir of the user with mail is empty again.
    store = farm.workdir / NAME_OF[HOSTS[0]] / "storage" / users[0]["uid"] / "Maildir"
    assert not any((store / "new").iterdir()) and not any((store / "cur").iterdir())


def test_bad_arguments_and_config(admin: Admin) -> None:
    bad = admin.run("domain", "add", "no_dots", "--json")
    assert bad.code == 2 and bad.json["error"] == "'no_dots' is not a domain name"
    assert admin.run("domain", "add", "x.test", "--mx", "nopriority").code == 2
    assert admin.run("domain", "add", "x.test", "--a", "www:999.1.1.1").code == 2
    assert admin.run("domain", "del", "x.test").code == 1
    # No [provision] bind_dn: a configuration error naming the key, exit 2.
    unconfigured = admin.with_config("nobind", provision={"bind_dn": ""})
    result = unconfigured.run("domain", "list")
    assert result.code == 2
    assert f"{unconfigured.config}: [provision] bind_dn: is required" in result.stderr
    wrong = admin.with_config("wrongpw", provision={"bind_password": "wrong"})
    refused = wrong.run("domain", "list", "--json")
    assert refused.code == 3 and "bind as [provision] bind_dn refused" in refused.json["error"]


def test_directory_down_is_exit_3(farm: Farm, admin: Admin) -> None:
    farm.stop_ldap()
    try:
        results = [
            admin.run("domain", "list", "--json"),
            admin.run("user", "show", "alice@example.co.uk", "--json"),
        ]
    finally:
        farm.start_ldap()
    for result in results:
        assert result.code == 3, result
        assert result.json["ok"] is False and "directory unavailable" in result.json["error"]
