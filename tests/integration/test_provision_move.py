"""``mailfarm user move``: every folder, message, flag and date arrives; failures lose nothing.

Route caching: the session ``proxy`` fixture caches routes for 60 s and has no admin
endpoint, so most tests here run their own ``mailfarm serve`` with ``cache_ttl = 0`` (every
login reads LDAP): it sees the login switch and the new mailHost at once, whatever the move
sends. What the move sends (``POST /flush`` and ``/kick`` with the bearer token) is recorded
by a tiny local HTTP server; one test runs the real thing, a mailfarm with a 60 s cache and
its admin endpoint, to show that the flush and the kick take effect.
"""

from __future__ import annotations

import imaplib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench.farm import Farm
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config, free_port
from directory.provision import Unavailable
from directory.provision.imapdata import Message
from directory.provision.ldapwrite import LdapWriter
from directory.provision.move import MoveProgress, move_user
from tests.integration import provision_helpers as helpers
from tests.integration.provision_helpers import (
    ADMIN_TOKEN,
    DISABLED_ATTRIBUTE,
    HOSTS,
    NAME_OF,
    Admin,
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

SOURCE, TARGET = HOSTS
FOLDERS = [
    "INBOX", "Sent", "Drafts", "Trash", "Archive", "Archive.2023", "Lists.python dev",
    "&AMQ-rger", "Work", "Family",
]  # fmt: skip


class AdminEndpoint:
    """A stand-in for mailfarm's admin endpoint: records each POST, answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[tuple[str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.requests.append((self.path, self.headers.get("Authorization")))
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/admin"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def refused_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # closed again: connection refused


@pytest.fixture
def endpoint() -> Iterator[AdminEndpoint]:
    server = AdminEndpoint()
    yield server
    server.close()


fresh_proxy = helpers.uncached_proxy  # fixture


def proxy_inbox(ports: ProxyPorts, login: str, password: str) -> int:
    client = imaplib.IMAP4("127.0.0.1", ports.imap, timeout=15)
    try:
        client.login(login, password)
        typ, data = client.select("INBOX", readonly=True)
        assert typ == "OK"
        return int(data[0])
    finally:
        try:
            client.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def mailbox(per_folder: int, folders: list[str], seed: int) -> dict[str, list[Message]]:
    return {name: make_messages(name, per_folder, seed + i) for i, name in enumerate(folders)}


def assert_mailbox(farm: Farm, host: str, uid: str, password: str, content: dict) -> None:  # type: ignore[type-arg]
    client = backend_login(farm, host, uid, password)
    try:
        assert set(content) <= folder_names(client)
        for name, messages in content.items():
            assert mailbox_digests(client, name) == expected_digests(messages), name
    finally:
        client.logout()


def test_move_1000_messages(
    farm: Farm, admin: Admin, domain: str, endpoint: AdminEndpoint, fresh_proxy: ProxyPorts
) -> None:
    user = add_user(admin, f"mover@{domain}", "move pw", "--host", SOURCE)
    content = mailbox(100, FOLDERS, seed=1)
    filled = fill_mailbox(admin.settings, SOURCE, user["uid"], content)
    print(f"\nfilled 1000 messages in {filled:.2f} s")
    assert proxy_inbox(fresh_proxy, user["mail"], "move pw") == 100

    config = admin.with_config("move", provision={"admin_urls": [endpoint.url, refused_url()]})
    report = config.ok("user", "move", user["mail"], "--to", TARGET)
    print(f"moved {report['messages']} messages in {report['seconds']} s")
    assert report["from"] == SOURCE and report["to"] == TARGET
    assert report["messages"] == 1000 and set(report["folders"]) == set(FOLDERS)
    assert all(f["messages"] == 100 for f in report["folders"].values())
    assert report["old_copy_deleted"] is True
    assert any("connection refused" in w.lower() for w in report["warnings"])

    # Identical on the new backend: counts, bodies, flags and internal dates per folder.
    assert_mailbox(farm, TARGET, user["uid"], "move pw", content)
    # The old copy is gone (a fresh login there finds an empty INBOX and nothing else).
    old = backend_login(farm, SOURCE, user["uid"], "move pw")
    assert old.select("INBOX")[1] == [b"0"]
    assert folder_names(old) == {"INBOX"}
    old.logout()

    shown = admin.ok("user", "show", user["uid"])
    assert shown["mailHost"] == TARGET and shown["login_disabled"] is False
    assert proxy_inbox(fresh_proxy, user["mail"], "move pw") == 100  # routed to the new host

    paths = [path for path, _ in endpoint.requests]
    query = f"?user={user['uid']}"
    assert paths[:2] == [f"/admin/flush{query}", f"/admin/kick{query}"]
    assert paths[-1] == f"/admin/flush{query}"  # after the switch
    assert {auth for _, auth in endpoint.requests} == {f"Bearer {ADMIN_TOKEN}"}


def test_interrupted_move_loses_nothing(
    farm: Farm, admin: Admin, domain: str, fresh_proxy: ProxyPorts
) -> None:
    user = add_user(admin, f"halfway@{domain}", "pw", "--host", SOURCE)
    content = mailbox(60, ["INBOX", "Sent", "Archive", "Archive.old"], seed=7)
    fill_mailbox(admin.settings, SOURCE, user["uid"], content)
    settings = admin.settings
    seen: dict[str, str] = {}

    def progress(event: MoveProgress) -> None:
        if event.messages_done >= event.messages_total // 2 and "stopped" not in seen:
            # Meanwhile logins are refused with "being moved", through a real proxy...
            with pytest.raises(imaplib.IMAP4.error) as refused:
                proxy_inbox(fresh_proxy, user["mail"], "pw")
            seen["refusal"] = str(refused.value)
            # ...and then the target dies half-way through the copy.
            farm.stop_backend(NAME_OF[TARGET])
            seen["stopped"] = "yes"

    try:
        with LdapWriter(settings) as writer, pytest.raises(Unavailable) as failed:
            move_user(settings, writer, user["uid"], TARGET, progress=progress)
    finally:
        farm.start_backend(NAME_OF[TARGET])
    assert "UNAVAILABLE" in seen["refusal"] and "being moved" in seen["refusal"]
    message = str(failed.value)
    assert f"it stays on {SOURCE}, nothing lost, logins allowed" in message
    assert "partial copy" in message

    shown = admin.ok("user", "show", user["uid"])
    assert shown["mailHost"] == SOURCE and shown["login_disabled"] is False
    assert proxy_inbox(fresh_proxy, user["mail"], "pw") == 60
    assert_mailbox(farm, SOURCE, user["uid"], "pw", content)

    # The partial copy on the target blocks a plain retry; --force replaces it.
    retry = admin.run("user", "move", user["uid"], "--to", TARGET, "--json")
    assert retry.code == 1 and "--force replaces it" in retry.json["error"]
    done = admin.ok("user", "move", user["uid"], "--to", TARGET, "--force")
    assert done["messages"] == 240
    assert_mailbox(farm, TARGET, user["uid"], "pw", content)
    assert proxy_inbox(fresh_proxy, user["mail"], "pw") == 60


def test_failures_before_the_copy_change_nothing(
    farm: Farm, admin: Admin, domain: str, fresh_proxy: ProxyPorts, tmp_path: Path
) -> None:
    user = add_user(admin, f"stay@{domain}", "pw", "--host", SOURCE)
    content = mailbox(5, ["INBOX", "Sent"], seed=11)
    fill_mailbox(admin.settings, SOURCE, user["uid"], content)

    farm.stop_backend(NAME_OF[TARGET])
    try:
        down = admin.run("user", "move", user["uid"], "--to", TARGET, "--json")
    finally:
        farm.start_backend(NAME_OF[TARGET])
    assert down.code == 3 and f"backend {TARGET}" in down.json["error"]

    broken = AdminEndpoint(status=500)  # a proxy that cannot flush: sessions may go on
    try:
        config = admin.with_config("broken", provision={"admin_urls": [broken.url]})
        result = config.run("user", "move", user["uid"], "--to", TARGET, "--json")
    finally:
        broken.close()
    assert result.code == 3 and "HTTP 500" in result.json["error"]
    assert "nothing lost, logins allowed" in result.json["error"]

    for args, code, text in [
        (("user", "move", user["uid"], "--to", SOURCE), 1, "already"),
        (("user", "move", f"nobody@{domain}", "--to", TARGET), 1, "no such user"),
    ]:
        refused = admin.run(*args, "--json")
        assert refused.code == code and text in refused.json["error"], refused
    unconfigured = admin.with_config("nodisable", directory={"disabled_attribute": ""})
    no_attr = unconfigured.run("user", "move", user["uid"], "--to", TARGET)
    assert no_attr.code == 2 and "disabled_attribute: must be set for moves" in no_attr.stderr

    shown = admin.ok("user", "show", user["uid"])
    assert shown["mailHost"] == SOURCE and shown["login_disabled"] is False
    assert proxy_inbox(fresh_proxy, user["mail"], "pw") == 5
    assert_mailbox(farm, SOURCE, user["uid"], "pw", content)
    target = backend_login(farm, TARGET, user["uid"], "pw")
    assert target.select("INBOX")[1] == [b"0"] and folder_names(target) == {"INBOX"}
    target.logout()


def test_a_disabled_user_needs_force(farm: Farm, admin: Admin, domain: str) -> None:
    user = add_user(admin, f"locked@{domain}", "pw", "--host", SOURCE)
    farm.ldap_modify(user["dn"], {DISABLED_ATTRIBUTE: ["TRUE"]})
    refused = admin.run("user", "move", user["uid"], "--to", TARGET, "--json")
    assert refused.code == 1 and "disabled" in refused.json["error"]
    moved = admin.ok("user", "move", user["uid"], "--to", TARGET, "--force")
    assert moved["to"] == TARGET
    shown = admin.ok("user", "show", user["uid"])
    assert shown["login_disabled"] is True  # an operator's "user disable" outlives the move


def test_mail_delivered_during_the_move_follows(farm: Farm, admin: Admin, domain: str) -> None:
    user = add_user(admin, f"busy@{domain}", "pw", "--host", SOURCE)
    content = mailbox(20, ["INBOX", "Sent"], seed=21)
    fill_mailbox(admin.settings, SOURCE, user["uid"], content)
    settings = admin.settings
    late = b"From: late@example.net\r\nSubject: delivered mid-move\r\n\r\nstill here\r\n"
    sent: list[str] = []

    def progress(event: MoveProgress) -> None:
        # INBOX copied already: LMTP (which ignores the login switch) delivers
        if event.phase == "copy" and event.messages_done == 20 and "sent" not in sent:
            sent.append("sent")
            farm.deliver(user["mail"], late, backend=NAME_OF[SOURCE])

    with LdapWriter(settings) as writer:
        report = move_user(settings, writer, user["uid"], TARGET, progress=progress)
    assert report.caught_up == 1 and report.old_copy_deleted
    client = backend_login(farm, TARGET, user["uid"], "pw")
    assert client.select("INBOX")[1] == [b"21"]
    typ, found = client.search(None, "SUBJECT", '"delivered mid-move"')
    assert typ == "OK" and found[0]
    client.logout()


def test_real_admin_endpoint_flushes_and_kicks(
    farm: Farm, admin: Admin, domain: str, tmp_path: Path
) -> None:
    """Against mailfarm's own admin endpoint: a cached route (60 s) is flushed and an open
    session is kicked, so the next login lands on the new backend at once."""
    ports, admin_port = ProxyPorts(), free_port()
    sections = farm_config(
        farm,
        ports,
        directory={"cache_ttl": 60, "disabled_attribute": DISABLED_ATTRIBUTE},
        admin={"listen": [f"127.0.0.1:{admin_port}"], "token": ADMIN_TOKEN},
    )
    sections.pop("pop3", None)
    process = MailfarmProcess(tmp_path, sections, "cached").start()
    try:
        user = add_user(admin, f"cached@{domain}", "pw", "--host", SOURCE)
        fill_mailbox(admin.settings, SOURCE, user["uid"], mailbox(10, ["INBOX"], seed=31))
        assert proxy_inbox(ports, user["mail"], "pw") == 10  # the route is cached now
        open_session = imaplib.IMAP4("127.0.0.1", ports.imap, timeout=15)
        open_session.login(user["uid"], "pw")
        open_session.select("INBOX")

        config = admin.with_config(
            "real-admin", provision={"admin_urls": [f"http://127.0.0.1:{admin_port}"]}
        )
        report = config.ok("user", "move", user["uid"], "--to", TARGET)
        assert report["warnings"] == [] and report["old_copy_deleted"] is True

        with pytest.raises((imaplib.IMAP4.abort, imaplib.IMAP4.error, OSError)):
            open_session.noop()  # kicked during the move
            open_session.noop()
        # Not flushed, the cached route would lead to the old backend, now empty.
        assert proxy_inbox(ports, user["mail"], "pw") == 10
        assert proxy_inbox(ports, user["uid"], "pw") == 10
        assert "admin: kicked 1 sessions" in process.log_text()
    finally:
        process.stop()
