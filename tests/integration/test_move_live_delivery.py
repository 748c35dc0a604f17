"""No delivery is lost while a user moves (Dovecot mail1 -> Cyrus mail3).

Two senders run for the whole move, one message every 50 ms each:

* through mailfarm's LMTP proxy, which defers the recipient (451) while the move's lease
  refuses logins; the sender keeps a deferred message and tries it again, as Postfix does;
* "Postfix asking LDAP directly": it looks up ``mailHost`` in LDAP for every message and
  delivers straight to that backend's LMTP (the address to Dovecot, the uid to Cyrus), so
  it keeps delivering to the old backend while mail is copied, and a delivery that looked
  up the old host just before the switch may arrive just after it.

Afterwards every message that was accepted is in the INBOX on the new backend, once.
"""

from __future__ import annotations

import imaplib
import smtplib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import ldap3
import pytest

from bench.farm import BACKEND_HOSTS, Farm, FarmUser
from bench.proxyproc import MailfarmProcess, free_port, render_toml
from tests.integration import provision_helpers as helpers
from tests.integration.provision_helpers import (
    ADMIN_TOKEN,
    DISABLED_ATTRIBUTE,
    Admin,
    add_user,
    backend_login,
    fill_mailbox,
    make_messages,
    provision_sections,
)
from tests.integration.smtp_fixtures import RunningSmtpProxy, SmtpPorts, smtp_sections

admin = helpers.admin  # fixture
domain = helpers.domain  # fixture

SOURCE, TARGET = BACKEND_HOSTS["mail1"], BACKEND_HOSTS["mail3"]


@dataclass
class Sender:
    """One delivery path in a thread; ``accepted`` holds the Message-IDs a server took."""

    name: str
    deliver: object  # Callable[[str, bytes], bool]: True accepted, False try again later
    accepted: list[str] = field(default_factory=list)
    deferred: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        pending: list[tuple[str, bytes]] = []
        n = 0
        while not self.stop.is_set() or pending:
            if not self.stop.is_set():
                n += 1
                mid = f"<{self.name}-{n}@live.test>"
                body = f"Message-ID: {mid}\r\nSubject: {self.name} {n}\r\n\r\nlive\r\n"
                pending.append((mid, body.encode()))
            still = []
            for mid, body in pending:
                if self.deliver(mid, body):  # type: ignore[operator]
                    self.accepted.append(mid)
                else:
                    self.deferred += 1
                    still.append((mid, body))
            pending = still
            time.sleep(0.05)


def lmtp_send(host: str, port: int, rcpt: str, body: bytes) -> bool:
    try:
        with smtplib.LMTP(host, port, timeout=10) as lmtp:
            lmtp.sendmail("live@elsewhere.test", [rcpt], body)
        return True
    except smtplib.SMTPRecipientsRefused as exc:
        (code, _), = exc.recipients.values()
        assert 400 <= code < 500, exc.recipients  # deferred, never refused
        return False


def message_ids(farm: Farm, host: str, uid: str) -> list[str]:
    client = backend_login(farm, host, uid, "pw")
    try:
        client.select("INBOX", readonly=True)
        _, data = client.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        ids = []
        for item in data:
            if isinstance(item, tuple):
                text = item[1].decode().strip()
                if text:
                    ids.append(text.split(":", 1)[1].strip())
        return ids
    finally:
        client.logout()


@pytest.fixture
def lmtp_proxy(farm: Farm, tmp_path: Path) -> Iterator[tuple[RunningSmtpProxy, str]]:
    """mailfarm's LMTP proxy knowing disabled_attribute, so a move's lease defers mail, and
    the URL of its admin endpoint, which the move flushes as it flushes every instance."""
    ports, admin_port = SmtpPorts(), free_port()
    sections = smtp_sections(
        farm,
        ports,
        directory={"disabled_attribute": DISABLED_ATTRIBUTE},
        admin={"listen": [f"127.0.0.1:{admin_port}"], "token": ADMIN_TOKEN},
    )
    process = MailfarmProcess(tmp_path, sections, "live-lmtp").start()
    yield RunningSmtpProxy(ports, process), f"http://127.0.0.1:{admin_port}"
    process.stop()


def test_deliveries_during_a_move_all_land_on_the_new_backend(
    farm: Farm,
    admin: Admin,
    domain: str,
    lmtp_proxy: tuple[RunningSmtpProxy, str],
    tmp_path: Path,
) -> None:
    proxy, proxy_admin = lmtp_proxy
    # The move flushes the LMTP proxy's route cache when it takes the lease (as it does every
    # instance in admin_urls), so the proxy defers from then on, however short the copy;
    # Postfix's own LDAP lookups (the second sender) no flush reaches: the settle outlasts
    # the delivery that looked up the old host just before the switch.
    config = tmp_path / "live.toml"
    provision = {"move_settle": 2.0, "admin_urls": [proxy_admin]}
    config.write_text(render_toml(provision_sections(farm, provision=provision)))
    live_admin = Admin(farm, config, admin.pycache)
    created = add_user(live_admin, f"live@{domain}", "pw", "--host", SOURCE)
    uid, mail, dn = created["uid"], created["mail"], created["dn"]
    initial = make_messages("INBOX", 300, seed=900)
    fill_mailbox(live_admin.settings, SOURCE, uid, {"INBOX": initial})
    initial_ids = {
        line.split(b":", 1)[1].strip().decode()
        for m in initial
        for line in m.body.split(b"\r\n")
        if line.lower().startswith(b"message-id:")
    }
    user = FarmUser(mail, uid, "pw", "mail1")

    def via_proxy(mid: str, body: bytes) -> bool:
        return lmtp_send("127.0.0.1", proxy.ports.lmtp, mail, body)

    server = ldap3.Server(farm.ldap_uri)
    lookups = ldap3.Connection(server, farm.admin_dn, farm.admin_password, auto_bind=True)
    lock = threading.Lock()

    def via_ldap(mid: str, body: bytes) -> bool:
        with lock:
            lookups.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["mailHost"])
            host = str(lookups.entries[0].mailHost)
        backend = next(b for b in farm.backends.values() if b.host == host)
        rcpt = user.uid if backend.kind == "cyrus" else user.address
        return lmtp_send(host, backend.lmtp_port, rcpt, body)

    senders = [Sender("proxy", via_proxy), Sender("ldap", via_ldap)]
    threads = [threading.Thread(target=s.run, daemon=True) for s in senders]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    try:
        moved = live_admin.ok("user", "move", mail, "--to", TARGET)
        time.sleep(1.5)  # go on delivering after the move, to the new backend now
    finally:
        for sender in senders:
            sender.stop.set()
        for thread in threads:
            thread.join(30)
        lookups.unbind()
    assert moved["old_copy_deleted"] is True, moved["warnings"]

    on_target = message_ids(farm, TARGET, uid)
    accepted = [mid for s in senders for mid in s.accepted]
    assert all(s.accepted for s in senders)
    assert senders[0].deferred > 0  # the proxy path really was held back during the move
    assert initial_ids <= set(on_target)
    assert sorted(set(on_target) - initial_ids) == sorted(accepted)
    assert len(on_target) == len(set(on_target))  # nothing doubled
    assert len(on_target) == 300 + len(accepted)
    client = imaplib.IMAP4(SOURCE, farm.backends["mail1"].imap_port, timeout=15)
    client.login(uid, "pw")
    assert client.select("INBOX")[1] == [b"0"]  # the old copy is gone
    client.logout()
