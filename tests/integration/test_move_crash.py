"""``mailfarm user move`` SIGKILLed in each phase, then run again: nothing lost or doubled.

The command runs as a real process with ``--json``, so its progress events arrive on
stderr as it works; the test kills it with SIGKILL on the event of the phase under test.
Between the kill and the rerun the user must be able to log in and read all mail on
exactly one backend (after a kill during the copy, once the move's lease has run out).
"""

from __future__ import annotations

import imaplib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from bench.farm import BACKEND_HOSTS, Farm
from bench.proxyproc import ProxyPorts, render_toml
from directory.provision.ldapwrite import LdapWriter
from tests.integration import provision_helpers as helpers
from tests.integration.provision_helpers import (
    DISABLED_ATTRIBUTE,
    REPO,
    Admin,
    add_user,
    backend_login,
    expected_digests,
    fill_mailbox,
    folder_names,
    mailbox_digests,
    make_messages,
    provision_sections,
)
from tests.integration.waiting import eventually

admin = helpers.admin  # fixture
domain = helpers.domain  # fixture

LEASE = 3.0  # seconds: the tests wait for a dead move's lease to run out
SOURCE, TARGET = BACKEND_HOSTS["mail1"], BACKEND_HOSTS["mail3"]  # Dovecot -> Cyrus
FOLDERS = ["INBOX", "Sent", "Archive", "Archive.2024"]
MOVE = [sys.executable, "-m", "proxy.cli", "user", "move"]


@pytest.fixture(scope="module")
def crash_admin(farm: Farm, admin: Admin, tmp_path_factory: pytest.TempPathFactory) -> Admin:
    config = tmp_path_factory.mktemp("crash") / "crash.toml"
    sections = provision_sections(farm, provision={"move_lease": LEASE, "move_settle": 0.5})
    config.write_text(render_toml(sections))
    return Admin(farm, config, admin.pycache)


proxy_ports = helpers.uncached_proxy  # fixture


def content_for(seed: int) -> dict[str, list]:  # type: ignore[type-arg]
    return {name: make_messages(name, 120, seed + i) for i, name in enumerate(FOLDERS)}


def on_cyrus(name: str) -> str:
    return name if name == "INBOX" else f"INBOX.{name}"


def move_killed_at(admin: Admin, uid: str, phase: str) -> list[dict]:  # type: ignore[type-arg]
    """Start the move, SIGKILL it at the first progress event of ``phase``; its events."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(admin.pycache)
    proc = subprocess.Popen(
        [*MOVE, uid, "--to", TARGET, "--json", "-c", str(admin.config)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    events = []
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            if not line.startswith("{"):
                continue
            event = json.loads(line)
            events.append(event)
            if event["phase"] == phase and (phase != "copy" or event["messages_done"] > 0):
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.wait(30)
    assert any(e["phase"] == phase for e in events), events
    return events


def proxy_counts(ports: ProxyPorts, login: str, password: str) -> dict[str, int] | None:
    """Messages per folder as the user sees them through mailfarm; None if refused."""
    client = imaplib.IMAP4("127.0.0.1", ports.imap, timeout=15)
    try:
        try:
            client.login(login, password)
        except imaplib.IMAP4.error:
            return None
        out = {}
        for name in folder_names(client):
            _, data = client.select(f'"{name}"', readonly=True)
            out[name.removeprefix("INBOX.") if name != "INBOX" else name] = int(data[0])
        return out
    finally:
        client.logout()


def assert_everything_on(farm: Farm, host: str, uid: str, content: dict, names) -> None:  # type: ignore[no-untyped-def,type-arg]
    client = backend_login(farm, host, uid, "pw")
    try:
        for name, messages in content.items():
            assert mailbox_digests(client, names(name)) == expected_digests(messages), name
    finally:
        client.logout()


def assert_gone_from(farm: Farm, host: str, uid: str) -> None:
    client = backend_login(farm, host, uid, "pw")
    try:
        assert client.select("INBOX")[1] == [b"0"] and folder_names(client) == {"INBOX"}
    finally:
        client.logout()


def test_killed_while_copying_then_rerun(
    farm: Farm, crash_admin: Admin, domain: str, proxy_ports: ProxyPorts
) -> None:
    user = add_user(crash_admin, f"kill-copy@{domain}", "pw", "--host", SOURCE)
    content = content_for(seed=300)
    fill_mailbox(crash_admin.settings, SOURCE, user["uid"], content)
    move_killed_at(crash_admin, user["uid"], "copy")

    shown = crash_admin.ok("user", "show", user["uid"])
    assert shown["mailHost"] == SOURCE
    # Refused while the dead move's lease lasts, then everything is there on the source.
    wanted = {name: len(msgs) for name, msgs in content.items()}
    assert eventually(lambda: proxy_counts(proxy_ports, user["mail"], "pw") == wanted, LEASE + 5)
    assert_everything_on(farm, SOURCE, user["uid"], content, lambda n: n)

    done = crash_admin.ok("user", "move", user["uid"], "--to", TARGET)
    assert done["messages"] == 480 and done["old_copy_deleted"] is True, done
    assert any("interrupted move" in w for w in done["warnings"]), done["warnings"]
    assert_everything_on(farm, TARGET, user["uid"], content, on_cyrus)  # once, not twice
    assert_gone_from(farm, SOURCE, user["uid"])
    assert proxy_counts(proxy_ports, user["mail"], "pw") == wanted


def test_killed_after_the_switch_then_rerun(
    farm: Farm, crash_admin: Admin, domain: str, proxy_ports: ProxyPorts
) -> None:
    user = add_user(crash_admin, f"kill-switch@{domain}", "pw", "--host", SOURCE)
    content = content_for(seed=400)
    fill_mailbox(crash_admin.settings, SOURCE, user["uid"], content)
    move_killed_at(crash_admin, user["uid"], "switched")

    # The user is on the target at once (the switch was one modify) with all mail.
    shown = crash_admin.ok("user", "show", user["uid"])
    assert shown["mailHost"] == TARGET and shown["login_disabled"] is False
    wanted = {name: len(msgs) for name, msgs in content.items()}
    assert proxy_counts(proxy_ports, user["mail"], "pw") == wanted
    # A late delivery to the old backend (Postfix with a route looked up before the switch).
    late = b"From: late@example.net\r\nSubject: after the kill\r\n\r\nlate\r\n"
    farm.deliver(user["mail"], late, backend="mail1")

    done = crash_admin.ok("user", "move", user["uid"], "--to", TARGET)
    assert done["caught_up"] == 1 and done["old_copy_deleted"] is True, done["warnings"]
    client = backend_login(farm, TARGET, user["uid"], "pw")
    assert client.select("INBOX")[1] == [b"121"]
    assert client.search(None, "SUBJECT", '"after the kill"')[1][0]
    client.logout()
    assert_gone_from(farm, SOURCE, user["uid"])
    again = crash_admin.run("user", "move", user["uid"], "--to", TARGET, "--json")
    assert again.code == 1 and "already" in again.json["error"]  # finished: marker cleared


def test_killed_during_cleanup_then_rerun(
    farm: Farm, crash_admin: Admin, domain: str, proxy_ports: ProxyPorts
) -> None:
    user = add_user(crash_admin, f"kill-clean@{domain}", "pw", "--host", SOURCE)
    content = content_for(seed=500)
    fill_mailbox(crash_admin.settings, SOURCE, user["uid"], content)
    move_killed_at(crash_admin, user["uid"], "cleanup")
    time.sleep(0.2)

    wanted = {name: len(msgs) for name, msgs in content.items()}
    assert crash_admin.ok("user", "show", user["uid"])["mailHost"] == TARGET
    assert proxy_counts(proxy_ports, user["mail"], "pw") == wanted
    rerun = crash_admin.run("user", "move", user["uid"], "--to", TARGET, "--json")
    # Killed mid-delete: the rerun finishes it; killed just after: it says so.
    assert rerun.code == 0 or "already" in rerun.json["error"], rerun
    if rerun.code == 0:
        assert rerun.json["caught_up"] == 0 and rerun.json["old_copy_deleted"] is True
    assert_everything_on(farm, TARGET, user["uid"], content, on_cyrus)
    assert_gone_from(farm, SOURCE, user["uid"])


def test_disable_and_enable_leave_a_moves_state_alone(
    farm: Farm, crash_admin: Admin, domain: str
) -> None:
    """A running move's lease refuses logins too, but ``user enable`` must not take it
    away (the move would go on copying while the user works on the old backend)."""
    user = add_user(crash_admin, f"marked@{domain}", "pw", "--host", SOURCE)
    lease = f"mailfarm-move to={TARGET} until={int(time.time()) + 600}"
    farm.ldap_modify(user["dn"], {DISABLED_ATTRIBUTE: [lease]})
    crash_admin.ok("user", "disable", user["uid"])
    crash_admin.ok("user", "enable", user["uid"])
    with LdapWriter(crash_admin.settings) as writer:
        entry = writer.get(user["dn"], (DISABLED_ATTRIBUTE,))
    assert entry is not None and entry.values(DISABLED_ATTRIBUTE) == [lease]
