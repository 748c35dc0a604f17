"""The admin tool on a Cyrus backend (mail3): user add creates ``user.<uid>`` as Cyrus's admin,
user del removes it (saying whether Cyrus kept a copy), and a user moves between kinds."""

from __future__ import annotations

import imaplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.farm import BACKEND_HOSTS, Farm
from bench.proxyproc import render_toml
from tests.integration import provision_helpers as helpers
from tests.integration.provision_helpers import (
    Admin,
    add_user,
    backend_login,
    expected_digests,
    fill_mailbox,
    mailbox_digests,
    make_messages,
    provision_sections,
)
from tests.integration.smtp_fixtures import message, token

admin = helpers.admin  # fixture
domain = helpers.domain  # fixture

CYRUS = BACKEND_HOSTS["mail3"]
DOVECOT = BACKEND_HOSTS["mail1"]


def cyrus_mailboxes(farm: Farm, uid: str) -> list[str]:
    """What Cyrus itself lists for the user, as its admin sees it."""
    backend = farm.backends["mail3"]
    client = imaplib.IMAP4(backend.host, backend.imap_port, timeout=15)
    try:
        client.login(farm.cyrus_admin_user, farm.cyrus_admin_password)
        _, lines = client.list('""', f"user.{uid}*")
    finally:
        client.logout()
    return sorted(line.decode().rsplit(" ", 1)[1].strip('"') for line in lines if line)


def session(where: tuple[str, int], login: str, password: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4(*where, timeout=15)
    client.login(login, password)
    return client


def inbox_subjects(where: tuple[str, int], login: str, password: str) -> list[str]:
    client = session(where, login, password)
    try:
        client.select("INBOX", readonly=True)
        _, found = client.search(None, "ALL")
        out = []
        for num in found[0].split():
            _, data = client.fetch(num, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            out.append(data[0][1].decode().split(":", 1)[1].strip())
        return sorted(out)
    finally:
        client.logout()


def test_add_creates_the_cyrus_mailbox_and_the_user_logs_in(
    farm: Farm,
    admin: Admin,
    domain: str,
    proxy,  # type: ignore[no-untyped-def]
) -> None:
    created = add_user(admin, f"carl@{domain}", "carl pw", "--host", CYRUS)
    uid = created["uid"]
    assert created["mailHost"] == CYRUS
    assert cyrus_mailboxes(farm, uid) == [f"user.{uid}"]
    for login in (created["mail"], uid):
        client = session(("127.0.0.1", proxy.ports.imap), login, "carl pw")
        assert client.select("INBOX")[0] == "OK"
        client.logout()


def test_del_removes_the_cyrus_mailbox(
    farm: Farm,
    admin: Admin,
    domain: str,
) -> None:
    created = add_user(admin, f"dora@{domain}", "dora pw", "--host", CYRUS)
    uid = created["uid"]
    for _ in range(2):
        farm.deliver(uid, message("s@x.test", created["mail"], token()), backend="mail3")
    deleted = admin.ok("user", "del", created["mail"])
    assert deleted["messages_removed"] == 2
    # The farm's Cyrus runs delete_mode: immediate, so nothing is kept (and none claimed).
    assert "backend_kept_copy" not in deleted
    assert cyrus_mailboxes(farm, uid) == []
    assert admin.run("user", "show", created["mail"]).code == 1


def test_move_from_dovecot_to_cyrus_and_back(
    farm: Farm,
    admin: Admin,
    domain: str,
    proxy,  # type: ignore[no-untyped-def]
) -> None:
    created = add_user(admin, f"emil@{domain}", "emil pw", "--host", DOVECOT)
    subjects = sorted(token() for _ in range(3))
    for subject in subjects:
        farm.deliver(created["mail"], message("s@x.test", created["mail"], subject), "mail1")
    moved = admin.ok("user", "move", created["mail"], "--to", CYRUS)
    assert moved["messages"] == 3 and moved["old_copy_deleted"] is True, moved
    # The move asked timsieved for the user's (no) scripts, which makes Cyrus's hidden
    # script mailbox; the user's own LIST does not show it, and it goes with user.<uid>.
    assert cyrus_mailboxes(farm, created["uid"]) in (
        [f"user.{created['uid']}"],
        [f"user.{created['uid']}", f"user.{created['uid']}.#sieve"],
    )
    assert inbox_subjects(("127.0.0.1", proxy.ports.imap), created["mail"], "emil pw") == subjects
    back = admin.ok("user", "move", created["mail"], "--to", DOVECOT)
    assert back["messages"] == 3 and back["old_copy_deleted"] is True, back
    assert cyrus_mailboxes(farm, created["uid"]) == []
    # Straight to mail1: the session proxy is not among [provision] admin_urls, so its
    # route cache still says mail3 (the move tests show flushing on every instance).
    dovecot = farm.backends["mail1"]
    where = (dovecot.host, dovecot.imap_port)
    assert inbox_subjects(where, created["uid"], "emil pw") == subjects


@pytest.fixture
def delayed_delete(farm: Farm) -> Iterator[None]:
    """mail3 with ``delete_mode: delayed`` for one test (the farm is shared: put back)."""
    conf = farm.workdir / "mail3" / "imapd.conf"
    original = conf.read_text()
    farm.stop_backend("mail3")
    conf.write_text(original.replace("delete_mode: immediate", "delete_mode: delayed"))
    farm.start_backend("mail3")
    try:
        yield
    finally:
        farm.stop_backend("mail3")
        conf.write_text(original)
        farm.start_backend("mail3")


def test_del_says_when_cyrus_keeps_a_copy(
    farm: Farm, admin: Admin, domain: str, delayed_delete: None
) -> None:
    created = add_user(admin, f"fritz@{domain}", "fritz pw", "--host", CYRUS)
    uid = created["uid"]
    farm.deliver(uid, message("s@x.test", created["mail"], token()), backend="mail3")
    result = admin.run("user", "del", created["mail"], "--json")
    assert result.code == 0, result
    deleted = result.json
    assert deleted["messages_removed"] == 1
    assert deleted["backend_kept_copy"].startswith(f"DELETED.user.{uid}."), deleted
    text = admin.run("user", "del", created["mail"])  # gone from LDAP: nothing to delete
    assert text.code == 1


def test_a_move_the_target_refuses_rolls_back(
    farm: Farm, admin: Admin, domain: str, tmp_path: Path
) -> None:
    """Cyrus refuses the copy (the user's quota, from [directory] quota_attribute, is far
    too small): the move is undone and says so. Rebuilding that refusal for the message
    used to crash the rollback with a TypeError, leaving logins disabled."""
    config = tmp_path / "quota.toml"
    config.write_text(
        render_toml(provision_sections(farm, directory={"quota_attribute": "roomNumber"}))
    )
    quota_admin = Admin(farm, config, admin.pycache)
    created = add_user(quota_admin, f"gus@{domain}", "gus pw", "--host", DOVECOT)
    for _ in range(3):
        body = message("s@x.test", created["mail"], token(), body="x" * 4000 + "\n")
        farm.deliver(created["mail"], body, "mail1")
    farm.ldap_modify(created["dn"], {"roomNumber": ["1"]})  # 1 KiB
    result = quota_admin.run("user", "move", created["mail"], "--to", CYRUS, "--json")
    assert result.code == 3, result
    error = result.json["error"]
    assert "aborted" in error and "nothing lost, logins allowed" in error, error
    assert "quota" in error.lower(), error
    assert "Traceback" not in result.stderr
    shown = quota_admin.ok("user", "show", created["mail"])
    assert shown["mailHost"] == DOVECOT and shown["login_disabled"] is False
    assert inbox_count(farm, "mail1", created["uid"], "gus pw") == 3


def inbox_count(farm: Farm, backend: str, uid: str, password: str) -> int:
    b = farm.backends[backend]
    client = session((b.host, b.imap_port), uid, password)
    try:
        return int(client.select("INBOX", readonly=True)[1][0])
    finally:
        client.logout()


UMLAUT = "Gr&APYA3w-e &- Co"  # "Größe & Co" in modified UTF-7
TREE = ["INBOX", "Sent", "Drafts", "Archive", "Archive.2023", UMLAUT, "Work", "Work.Projects"]
USES = {"Sent": "\\Sent", "Drafts": "\\Drafts", "Archive": "\\Archive"}


def on_cyrus(name: str) -> str:
    return name if name == "INBOX" else f"INBOX.{name}"


def listing(client: imaplib.IMAP4, command: str) -> dict[str, str]:
    """Folder name -> its attributes, from LIST or LSUB."""
    typ, data = getattr(client, command)()
    assert typ == "OK"
    out = {}
    for line in data:
        if isinstance(line, bytes):
            attrs, _, rest = line.partition(b") ")
            name = rest.split(b" ", 1)[1].strip(b'"').replace(b'\\"', b'"')
            out[name.decode()] = attrs.lstrip(b"(").decode()
    return out


def assert_tree(farm: Farm, host: str, uid: str, password: str, content: dict, names) -> None:  # type: ignore[no-untyped-def,type-arg]
    """Every folder under its name there, with the same messages (body, flags, date), the
    special uses on the right folders and the same subscriptions."""
    client = backend_login(farm, host, uid, password)
    try:
        folders = listing(client, "list")
        for name, messages in content.items():
            assert mailbox_digests(client, names(name)) == expected_digests(messages), name
            if name in USES:
                assert USES[name] in folders[names(name)], (name, folders)
        subscribed = set(listing(client, "lsub"))
        wanted = {names(n) for n in TREE if n not in ("Work.Projects",)}
        assert subscribed - {"INBOX"} == wanted - {"INBOX"}
    finally:
        client.logout()


def test_move_between_kinds_maps_folders_uses_and_subscriptions(
    farm: Farm, admin: Admin, domain: str
) -> None:
    """Dovecot -> Cyrus -> Dovecot with a nested, special-use, non-ASCII tree: names go
    through both NAMESPACEs (Sent <-> INBOX.Sent), uses follow, nothing else changes."""
    created = add_user(admin, f"hilde@{domain}", "hilde pw", "--host", DOVECOT)
    uid, mail = created["uid"], created["mail"]
    content = {name: make_messages(name, 12, seed=70 + i) for i, name in enumerate(TREE)}
    fill_mailbox(admin.settings, DOVECOT, uid, content)
    client = backend_login(farm, DOVECOT, uid, "hilde pw")
    assert client.unsubscribe('"Work.Projects"')[0] == "OK"
    assert "\\Sent" in listing(client, "list")["Sent"]  # the farm's Dovecot marks it
    client.logout()

    there = admin.ok("user", "move", mail, "--to", CYRUS)
    assert there["messages"] == 12 * len(TREE), there
    assert {k: v["to"] for k, v in there["folders"].items()} == {n: on_cyrus(n) for n in TREE}
    assert_tree(farm, CYRUS, uid, "hilde pw", content, on_cyrus)

    back = admin.ok("user", "move", mail, "--to", DOVECOT)
    assert {k: v["to"] for k, v in back["folders"].items()} == {on_cyrus(n): n for n in TREE}
    assert back["old_copy_deleted"] is True
    assert_tree(farm, DOVECOT, uid, "hilde pw", content, lambda n: n)
    assert cyrus_mailboxes(farm, uid) == []
