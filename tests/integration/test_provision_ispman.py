"""``mailfarm import --ispman``: an ISPMan directory in, users logging in through mailfarm."""

from __future__ import annotations

import imaplib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from directory.provision.ldapwrite import REPLACE, LdapWriter
from tests.integration import provision_helpers as helpers
from tests.integration.provision_helpers import REPO, Admin, Result
from tests.integration.proxies import RunningProxy

admin = helpers.admin  # fixture

SAMPLE = REPO / "tests" / "data" / "ispman-sample.ldif"
DOMAINS = ("ispman-example.net", "ispman-shop.co.uk")
# every userPassword value of the sample: none may ever be printed
HASHES = [
    line.split(":", 1)[1].strip()
    for line in SAMPLE.read_text().splitlines()
    if line.lower().startswith("userpassword:")
]
ALICE = ("alice@ispman-example.net", "alice_ispman-example_net", "alice-ispman-pw")
Snapshot = dict[str, dict[str, list[str]]]


def snapshot(admin: Admin) -> Snapshot:
    """Every entry of the directory, with modifyTimestamp: any write shows."""
    with LdapWriter(admin.settings) as writer:
        entries = writer.search(writer.base, "(objectClass=*)", "sub", ("*", "modifyTimestamp"))
        return {e.dn.lower(): e.attrs for e in entries}


def statuses(data: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {(item["kind"], item["name"]): item["status"] for item in data["items"]}


@dataclass
class Imported:
    dry_run: dict[str, Any]
    dry_text: Result
    before: Snapshot
    after_dry_run: Snapshot
    first: dict[str, Any]
    first_text: str


@pytest.fixture(scope="module")
def imported(admin: Admin) -> Iterator[Imported]:
    """The sample imported once (after a dry run), and its domains removed afterwards."""
    for name in DOMAINS:  # left over from an interrupted run against a kept farm
        admin.run("domain", "del", name, "--force")
    before = snapshot(admin)
    dry_run = admin.ok("import", "--ispman", str(SAMPLE), "--dry-run")
    dry_text = admin.run("import", "--ispman", str(SAMPLE), "--dry-run")
    after_dry_run = snapshot(admin)
    first = admin.run("import", "--ispman", str(SAMPLE), "--json")
    assert first.code == 0, first
    yield Imported(
        dry_run, dry_text, before, after_dry_run, first.json, first.stdout + first.stderr
    )
    for name in DOMAINS:
        admin.run("domain", "del", name, "--force")


EXPECTED = {
    ("domain", "ispman-example.net"): "created",
    ("dns", "ispman-example.net"): "created",
    ("domain", "ispman-shop.co.uk"): "created",
    ("dns", "ispman-shop.co.uk"): "created",
    ("user", "alice@ispman-example.net"): "created",
    ("user", "bob@ispman-example.net"): "created",
    ("user", "carol@ispman-shop.co.uk"): "created",
    ("user", "dave@ispman-shop.co.uk"): "created",
}


def test_dry_run_reports_everything_and_writes_nothing(imported: Imported) -> None:
    assert imported.dry_run["dry_run"] is True
    assert statuses(imported.dry_run) == EXPECTED
    assert imported.after_dry_run == imported.before
    text = imported.dry_text
    assert text.code == 0, text
    assert "user alice@ispman-example.net: would be created as alice_ispman-example_net" in (
        text.stdout
    )
    assert "dry run: nothing was written" in text.stdout
    assert not any(h in text.stdout + text.stderr for h in HASHES)


def test_import_creates_domains_users_and_dns(admin: Admin, imported: Imported) -> None:
    assert imported.first["dry_run"] is False
    assert statuses(imported.first) == EXPECTED
    assert imported.first["failed"] == 0
    assert not any(h in imported.first_text for h in HASHES)
    alice = admin.ok("user", "show", ALICE[0])
    assert (alice["uid"], alice["mailHost"], alice["login_disabled"]) == (
        ALICE[1],
        "127.0.0.2",
        False,
    )
    assert admin.ok("user", "show", "bob_ispman-example_net")["mailHost"] == "127.0.0.3"
    assert admin.ok("user", "show", "dave@ispman-shop.co.uk")["login_disabled"] is True
    users = admin.ok("user", "list", "--domain", "ispman-shop.co.uk")["users"]
    assert [u["uid"] for u in users] == ["carol_ispman-shop_co_uk", "dave_ispman-shop_co_uk"]

    old = admin.run("dns", "export", "ispman-example.net")  # ISPMan 0.x's ou=dnsdata
    assert old.code == 0, old
    for line in (
        "@\tIN\tNS\tns1.ispman-example.net.",
        "@\tIN\tMX\t10 mx1.ispman-example.net.",
        "@\tIN\tMX\t20 mx2.ispman-example.net.",
        "@\tIN\tA\t192.0.2.10",
        "ns2\tIN\tA\t198.51.100.53",
        "webmail\tIN\tCNAME\twww.ispman-example.net.",
        "ftp\tIN\tCNAME\twww.ispman-example.net.",
        "@\tIN\tSOA\tns1.ispman-example.net. hostmaster.ispman-example.net. (",
        "\t\t\t10800\t; refresh",
        "\t\t\t3600\t; retry",
    ):
        assert line in old.stdout.splitlines(), (line, old.stdout)
    new = admin.run("dns", "export", "ispman-shop.co.uk")  # ISPMan 1.x's dnsZone entries
    assert new.code == 0, new
    for line in (
        "@\tIN\tSOA\tns1.ispman-shop.co.uk. dnsmaster.ispman-shop.co.uk. (",
        "\t\t\t1118412001\t; serial",  # one past ISPMan's, so secondaries take it as newer
        "\t\t\t10800\t; refresh",  # 3H
        "\t\t\t1800\t; retry",  # 30M
        "\t\t\t604800\t; expire",  # 1W
        "\t\t\t86400 )\t; minimum",  # 1D
        "@\tIN\tNS\tns2.ispman-example.net.",
        "@\tIN\tMX\t20 mx2.ispman-example.net.",
        "www\tIN\tA\t192.0.2.20",
        "shop\tIN\tCNAME\twww.ispman-shop.co.uk.",
    ):
        assert line in new.stdout.splitlines(), (line, new.stdout)
    assert "TXT" not in new.stdout
    shop = next(i for i in imported.first["items"] if i["name"] == "ispman-shop.co.uk")
    assert any("TXT record at @ not imported" in n for n in shop["notes"])


def test_a_second_run_changes_nothing(admin: Admin, imported: Imported) -> None:
    before = snapshot(admin)
    again = admin.ok("import", "--ispman", str(SAMPLE))
    assert set(statuses(again).values()) == {"unchanged"}
    assert (again["created"], again["updated"], again["failed"]) == (0, 0, 0)
    assert snapshot(admin) == before
    assert not any(h in str(again) for h in HASHES)


def imap_login(proxy: RunningProxy, login: str, password: str) -> None:
    client = imaplib.IMAP4("127.0.0.1", proxy.ports.imap, timeout=15)
    try:
        assert client.login(login, password)[0] == "OK"
        assert client.select("INBOX")[0] == "OK"  # Dovecot made it at the first login
    finally:
        client.logout()


def test_imported_users_log_in_through_the_proxy(imported: Imported, proxy: RunningProxy) -> None:
    address, uid, password = ALICE
    imap_login(proxy, address, password)  # {SSHA}, kept verbatim
    imap_login(proxy, uid, password)
    imap_login(proxy, "carol@ispman-shop.co.uk", "carol-ispman-pw")  # ISPMan's unsalted {md5}
    imap_login(proxy, "bob_ispman-example_net", "bob-ispman-pw")  # {crypt}, on the other backend
    client = imaplib.IMAP4("127.0.0.1", proxy.ports.imap, timeout=15)
    with pytest.raises(imaplib.IMAP4.error):
        client.login(address, "not-" + password)
    client.logout()


def test_what_mailfarm_changed_since_is_reported_not_overwritten(
    admin: Admin, imported: Imported
) -> None:
    dn = f"uid={ALICE[1]},ou=users,dc=ispman-example.net,ou=domains,{admin.farm.base_dn}"
    with LdapWriter(admin.settings) as writer:  # as if `user move` and a hand edit had run
        writer.modify(dn, {"mailHost": [(REPLACE, ["127.0.0.3"])], "cn": [(REPLACE, ["A. A."])]})
    assert admin.run("dns", "del", "ispman-example.net", "ftp", "CNAME").code == 0
    try:
        dry = admin.ok("import", "--ispman", str(SAMPLE), "--dry-run")
        again = admin.ok("import", "--ispman", str(SAMPLE))
    finally:
        with LdapWriter(admin.settings) as writer:
            writer.modify(dn, {"mailHost": [(REPLACE, ["127.0.0.2"])]})
    for data in (dry, again):
        found = statuses(data)
        assert found[("user", ALICE[0])] == "differs"
        assert found[("dns", "ispman-example.net")] == "updated"
        assert found[("user", "bob@ispman-example.net")] == "unchanged"
        alice = next(i for i in data["items"] if i["name"] == ALICE[0])
        assert "cn set from the file" in alice["details"]
        assert any(d.startswith("mailHost is 127.0.0.3 here, 127.0.0.2") for d in alice["details"])
        dns = next(i for i in data["items"] if i["kind"] == "dns" and i["name"] == DOMAINS[0])
        assert dns["details"] == ["added CNAME www.ispman-example.net. at ftp"]
    shown = admin.ok("user", "show", ALICE[0])
    assert shown["mailHost"] == "127.0.0.2"  # restored above; the import had kept .3
    exported = admin.run("dns", "export", "ispman-example.net").stdout
    assert "ftp\tIN\tCNAME\twww.ispman-example.net." in exported.splitlines()
    final = admin.ok("import", "--ispman", str(SAMPLE))
    assert set(statuses(final).values()) == {"unchanged"}


def test_bad_usage_and_bad_files(admin: Admin, imported: Imported, tmp_path: Any) -> None:
    csv = tmp_path / "users.csv"
    csv.write_text("someone@ispman-example.net,pw\n")
    dry = admin.run("import", str(csv), "--dry-run")
    assert dry.code == 2 and "--dry-run" in dry.stderr
    broken = tmp_path / "broken.ldif"
    broken.write_text("dn: ispmanDomain=ispman-example.net, o=ispman\nnot a line\n")
    result = admin.run("import", "--ispman", str(broken))
    assert result.code == 2 and f"{broken}: line 2" in result.stderr, result
    partial = tmp_path / "partial.ldif"
    partial.write_text(
        SAMPLE.read_text()
        + "\ndn: uid=eve_ispman-example_net, ou=users, ispmanDomain=ispman-example.net,"
        " o=ispman\nobjectClass: ispmanDomainUser\nuid: eve_ispman-example_net\n"
        "ispmanUserId: eve\nuserPassword: {crypt}Ab1cD2eF3gH4i\n"
    )
    result = admin.run("import", "--ispman", str(partial), "--json")
    assert result.code == 2, result
    failed = [i for i in result.json["items"] if i["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["kind"] == "entry", failed
    assert failed[0]["name"].startswith("uid=eve_ispman-example_net")
    assert "no mailHost" in failed[0]["error"]
    assert {i["status"] for i in result.json["items"] if i["status"] != "failed"} == {"unchanged"}
