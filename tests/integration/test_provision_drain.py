"""``mailfarm user move --from HOST`` / ``--list FILE``: batch moves, resumable by rerunning.

Other tests of the session put users on the same backends, so every ``--from`` here is
narrowed with ``--domain`` to the test's own domain.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.farm import BACKEND_HOSTS, Farm
from directory.provision.imapdata import Message
from directory.provision.ldapwrite import LdapWriter
from tests.integration import provision_helpers as helpers
from tests.integration.provision_helpers import (
    DISABLED_ATTRIBUTE,
    Admin,
    Result,
    add_user,
    backend_login,
    expected_digests,
    fill_mailbox,
    folder_names,
    mailbox_digests,
    make_messages,
)

admin = helpers.admin  # fixture
domain = helpers.domain  # fixture

SOURCE, TARGET, CYRUS = BACKEND_HOSTS["mail2"], BACKEND_HOSTS["mail1"], BACKEND_HOSTS["mail3"]
PASSWORD = "drain pw"


def users_with_mail(
    admin: Admin, domain: str, names: list[str], seed: int, host: str = SOURCE
) -> dict[str, dict[str, list[Message]]]:
    """Users on ``host`` with a few messages in INBOX and Work each: uid -> content."""
    out = {}
    for i, name in enumerate(names):
        uid = add_user(admin, f"{name}@{domain}", PASSWORD, "--host", host)["uid"]
        content = {
            "INBOX": make_messages("INBOX", 3, seed + 2 * i),
            "Work": make_messages("Work", 2, seed + 2 * i + 1),
        }
        fill_mailbox(admin.settings, host, uid, content)
        out[uid] = content
    return out


def assert_moved(farm: Farm, uid: str, content: dict[str, list[Message]], target: str) -> None:
    """Everything on ``target`` (Cyrus files Work as INBOX.Work), nothing left on SOURCE."""
    client = backend_login(farm, target, uid, PASSWORD)
    try:
        for name, messages in content.items():
            there = name if target != CYRUS or name == "INBOX" else f"INBOX.{name}"
            assert mailbox_digests(client, there) == expected_digests(messages), (uid, name)
    finally:
        client.logout()
    old = backend_login(farm, SOURCE, uid, PASSWORD)
    try:
        assert old.select("INBOX")[1] == [b"0"] and folder_names(old) == {"INBOX"}, uid
    finally:
        old.logout()


def events(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]


def host_of(admin: Admin, uid: str) -> str:
    return str(admin.ok("user", "show", uid)["mailHost"])


def drain(admin: Admin, domain: str, *extra: str, to: str = TARGET) -> Result:
    return admin.run("user", "move", "--from", SOURCE, "--domain", domain, "--to", to, *extra)


def test_drain_in_runs_until_nothing_is_left(farm: Farm, admin: Admin, domain: str) -> None:
    content = users_with_mail(admin, domain, [f"drain{n}" for n in range(6)], seed=300)
    uids = sorted(content)

    first = drain(admin, domain, "--limit", "4", "--jobs", "3", "--json")
    assert first.code == 0, first
    report = first.json
    assert report["ok"] is True and (report["from"], report["to"]) == (SOURCE, TARGET)
    assert (report["moved"], report["skipped"], report["failed"]) == (4, 0, 0)
    assert report["messages"] == 4 * 5 and report["messages_per_second"] > 0
    assert [u["uid"] for u in report["users"]] == uids[:4]  # stable: by uid
    for user in report["users"]:
        assert user["status"] == "moved" and user["messages"] == 5 and user["exit"] == 0
        assert user["old_copy_deleted"] is True and user["resumed"] is False
    seen = events(first)
    done = [e for e in seen if e["event"] == "user-done"]
    assert sorted(e["done"] for e in done) == [1, 2, 3, 4]
    assert {e["uid"] for e in done} == set(uids[:4]) and {e["total"] for e in done} == {4}
    progress = [e for e in seen if e["event"] == "progress"]
    assert {e["uid"] for e in progress if e["phase"] == "done"} == set(uids[:4])
    for uid in uids[:4]:
        assert_moved(farm, uid, content[uid], TARGET)
        assert host_of(admin, uid) == TARGET
    assert [host_of(admin, uid) for uid in uids[4:]] == [SOURCE, SOURCE]

    second = drain(admin, domain)  # the same command, without --limit and as text
    assert second.code == 0, second
    assert second.stdout.startswith("2 moved, 0 skipped, 0 failed: 10 messages in ")
    lines = second.stderr.splitlines()
    for uid in uids[4:]:
        assert any(line.startswith(f"{uid}: moved 5 messages in ") for line in lines), lines
    assert sum(line.endswith(("(1/2)", "(2/2)")) for line in lines) == 2
    for uid in uids[4:]:
        assert_moved(farm, uid, content[uid], TARGET)
        assert host_of(admin, uid) == TARGET

    third = drain(admin, domain, "--json")
    assert third.code == 0, third
    assert (third.json["moved"], third.json["failed"], third.json["users"]) == (0, 0, [])


def test_drain_finishes_a_move_interrupted_after_its_switch(
    farm: Farm, admin: Admin, domain: str
) -> None:
    content = users_with_mail(admin, domain, ["aaron", "zelda"], seed=400)
    aaron, zelda = sorted(content)
    # zelda's move died right after its switch: mailHost says the target, the old backend
    # still holds everything, and the entry carries the marker saying so.
    dn = admin.ok("user", "show", zelda)["dn"]
    marker = f"mailfarm-move-cleanup from={SOURCE}"
    farm.ldap_modify(dn, {"mailHost": [TARGET], DISABLED_ATTRIBUTE: [marker]})

    first = drain(admin, domain, "--limit", "1", "--json")
    assert first.code == 0, first
    [user] = first.json["users"]  # the half-done move first, although aaron sorts before
    assert user["uid"] == zelda and user["status"] == "moved" and user["resumed"] is True
    assert user["messages"] == 5 and user["old_copy_deleted"] is True
    assert_moved(farm, zelda, content[zelda], TARGET)
    with LdapWriter(admin.settings) as writer:
        entry = writer.get(dn, (DISABLED_ATTRIBUTE,))
        assert entry is not None and entry.values(DISABLED_ATTRIBUTE) == []
    assert host_of(admin, aaron) == SOURCE

    second = drain(admin, domain, "--json")
    assert second.code == 0, second
    assert [(u["uid"], u["resumed"]) for u in second.json["users"]] == [(aaron, False)]
    assert_moved(farm, aaron, content[aaron], TARGET)


def test_list_moves_skips_and_fails_per_user(
    farm: Farm, admin: Admin, domain: str, tmp_path: Path
) -> None:
    content = users_with_mail(admin, domain, ["lena", "mona"], seed=500)
    lena, mona = sorted(content)
    there = add_user(admin, f"there@{domain}", PASSWORD, "--host", CYRUS)
    listing = tmp_path / "users.txt"
    listing.write_text(
        "# drain of mail2 onto the Cyrus backend\n"
        f"{lena}\n"
        "\n"
        f"mona@{domain}   # by address\n"
        f"{there['mail']}\n"
        f"nobody@{domain}\n"
        f"{mona}\n"  # mona again, by uid: one move only
    )

    first = admin.run("user", "move", "--list", str(listing), "--to", CYRUS, "--json")
    assert first.code == 1, first  # the unknown user's exit status: no such user
    report = first.json
    assert (report["moved"], report["skipped"], report["failed"]) == (2, 2, 1)
    assert report["from"] is None and report["to"] == CYRUS and report["messages"] == 10
    by_login = {u["login"]: u for u in report["users"]}
    assert list(by_login) == [lena, f"mona@{domain}", there["mail"], f"nobody@{domain}", mona]
    assert by_login[lena]["status"] == by_login[f"mona@{domain}"]["status"] == "moved"
    assert by_login[there["mail"]]["status"] == "skipped"
    assert by_login[there["mail"]]["reason"] == "already there"
    assert by_login[mona]["status"] == "skipped"
    assert by_login[mona]["reason"] == f"listed twice (also as mona@{domain})"
    nobody = by_login[f"nobody@{domain}"]
    assert nobody["status"] == "failed" and nobody["exit"] == 1
    assert "no such user" in nobody["error"]
    for uid in (lena, mona):
        assert_moved(farm, uid, content[uid], CYRUS)
        assert host_of(admin, uid) == CYRUS

    again = admin.run("user", "move", "--list", "-", "--to", CYRUS, stdin=listing.read_text())
    assert again.code == 1, again
    assert again.stdout.splitlines()[0].startswith("0 moved, 4 skipped, 1 failed: 0 messages")
    assert f"nobody@{domain}: nobody@{domain}: no such user" in again.stdout
    assert f"{lena}: skipped (already there)" in again.stderr


def test_usage_errors(admin: Admin, tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("someone@example.com\n")
    cases = [
        ((), "give a LOGIN, --from HOST or --list FILE"),
        (("alice", "--from", SOURCE), "LOGIN and --from exclude each other"),
        (("--from", SOURCE, "--list", str(listing)), "--from and --list exclude each other"),
        (("--list", str(listing), "--limit", "2"), "--limit is for --from HOST"),
        (("alice", "--limit", "2"), "--limit is for --from HOST"),
        (("--list", str(listing), "--domain", "example.com"), "--domain is for --from HOST"),
        (("alice", "--jobs", "3"), "--jobs is for --from HOST or --list FILE"),
        (("--from", TARGET), f"--from and --to are both {TARGET}"),
        (("--list", str(tmp_path / "missing.txt")), "No such file or directory"),
    ]
    for args, text in cases:
        result = admin.run("user", "move", *args, "--to", TARGET, "--json")
        assert result.code == 2, (args, result)
        assert text in result.json["error"], (args, result.json)
    for args, text in [
        (("--from", SOURCE, "--jobs", "17"), "must be from 1 to 16"),
        (("--from", SOURCE, "--jobs", "0"), "must be from 1 to 16"),
        (("--from", SOURCE, "--limit", "0"), "must be at least 1"),
        (("--from", SOURCE, "--limit", "many"), "is not a whole number"),
    ]:
        result = admin.run("user", "move", *args, "--to", TARGET)
        assert result.code == 2 and text in result.stderr, (args, result)
    unconfigured = admin.with_config("drain-nodisable", directory={"disabled_attribute": ""})
    for args in (("--from", SOURCE), ("--list", str(listing))):
        result = unconfigured.run("user", "move", *args, "--to", TARGET)
        assert result.code == 2, (args, result)
        assert "disabled_attribute: must be set for moves" in result.stderr, result
