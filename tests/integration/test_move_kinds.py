"""``user move`` in all four kind directions, 1,000 messages in 10 folders each time.

Dovecot -> Dovecot, Dovecot -> Cyrus, Cyrus -> Dovecot and Cyrus -> Cyrus, with a tree that
has nested folders, the five special uses, a non-ASCII name and keywords on messages, and
one folder left unsubscribed. On the target every folder must be under the target's own
spelling of its name, carry its special use, and hold the same messages (body, flags and
internal date), with the same subscriptions; the source must be empty afterwards.
"""

from __future__ import annotations

import imaplib

import pytest

from bench.farm import Farm
from directory.mailstores import mailstore_for
from directory.provision.folders import append, create_folder
from tests.integration import provision_helpers as helpers
from tests.integration.provision_helpers import (
    Admin,
    add_user,
    backend_login,
    expected_digests,
    mailbox_digests,
    make_messages,
)

admin = helpers.admin  # fixture
domain = helpers.domain  # fixture

UMLAUT = "Gr&APYA3w-e &- Co"  # "Größe & Co" in modified UTF-7
TREE = {  # name below the personal namespace -> special use
    "INBOX": None,
    "Sent": "\\Sent",
    "Drafts": "\\Drafts",
    "Trash": "\\Trash",
    "Junk": "\\Junk",
    "Archive": "\\Archive",
    "Archive.2023": None,
    "Archive.2023.Q4": None,
    UMLAUT: None,
    "Work": None,
}
UNSUBSCRIBED = "Archive.2023.Q4"
PER_FOLDER = 100
DIRECTIONS = [("mail1", "mail2"), ("mail1", "mail3"), ("mail3", "mail1"), ("mail3", "mail4")]


def spelled(farm: Farm, backend: str, name: str) -> str:
    """How ``backend`` spells the folder: Cyrus keeps personal folders under INBOX."""
    cyrus = farm.backends[backend].kind == "cyrus"
    return f"INBOX.{name}" if cyrus and name != "INBOX" else name


def fill(farm: Farm, admin: Admin, backend: str, uid: str, seed: int) -> dict[str, list]:  # type: ignore[type-arg]
    content = {name: make_messages(name, PER_FOLDER, seed + i) for i, name in enumerate(TREE)}
    host = farm.backends[backend].host
    with mailstore_for(admin.settings, host).open_user(uid) as client:
        for name, use in TREE.items():
            there = spelled(farm, backend, name).encode()
            create_folder(client, there, subscribe=name != UNSUBSCRIBED, use=use)
            for i in range(0, PER_FOLDER, 50):
                append(client, there, content[name][i : i + 50])
    return content


def listing(client: imaplib.IMAP4, command: str) -> dict[str, str]:
    typ, data = getattr(client, command)()
    assert typ == "OK"
    out = {}
    for line in data:
        if isinstance(line, bytes):
            attrs, _, rest = line.partition(b") ")
            name = rest.split(b" ", 1)[1].strip(b'"')
            out[name.decode()] = attrs.lstrip(b"(").decode().upper()
    return out


@pytest.mark.parametrize(("source", "target"), DIRECTIONS, ids=lambda b: b)
def test_move_in_every_kind_direction(
    farm: Farm, admin: Admin, domain: str, source: str, target: str
) -> None:
    src, dst = farm.backends[source], farm.backends[target]
    created = add_user(admin, f"tree-{source}-{target}@{domain}", "pw", "--host", src.host)
    uid = created["uid"]
    content = fill(farm, admin, source, uid, seed=1000 + 10 * DIRECTIONS.index((source, target)))

    moved = admin.ok("user", "move", created["mail"], "--to", dst.host)
    assert moved["messages"] == PER_FOLDER * len(TREE), moved
    assert moved["old_copy_deleted"] is True, moved["warnings"]
    wanted = {spelled(farm, source, n): spelled(farm, target, n) for n in TREE}
    assert {name: f["to"] for name, f in moved["folders"].items()} == wanted

    client = backend_login(farm, dst.host, uid, "pw")
    try:
        folders = listing(client, "list")
        for name, use in TREE.items():
            there = spelled(farm, target, name)
            assert mailbox_digests(client, there) == expected_digests(content[name]), there
            if use is not None:
                assert use.upper() in folders[there], (there, folders[there])
        subscribed = set(listing(client, "lsub")) - {"INBOX"}
        expected = {spelled(farm, target, n) for n in TREE if n not in ("INBOX", UNSUBSCRIBED)}
        assert subscribed == expected
    finally:
        client.logout()

    if src.kind == "cyrus":  # the admin removed user.<uid> as a whole
        admin_client = imaplib.IMAP4(src.host, src.imap_port, timeout=15)
        admin_client.login(farm.cyrus_admin_user, farm.cyrus_admin_password)
        left = [line for line in admin_client.list('""', f"user.{uid}*")[1] if line]
        # Cyrus may keep a \Noselect placeholder for a parent deleted before its children
        # (an intermediate entry of its mailbox list): it holds no mail and cannot be opened.
        assert all(b"\\Noselect" in line for line in left), left
        admin_client.logout()
    else:  # Dovecot: a login finds an empty INBOX and nothing else
        old = backend_login(farm, src.host, uid, "pw")
        assert old.select("INBOX")[1] == [b"0"] and set(listing(old, "list")) == {"INBOX"}
        old.logout()

