"""``user move`` takes the user's Sieve scripts along (filters, vacation replies).

They live outside IMAP (Pigeonhole: the user's sieve directory; Cyrus: ``user.<uid>.#sieve``
and bytecode), so the move copies them over ManageSieve: same names, same bytes, the same
one active, checked on the target before the switch, and deleted from the old backend with
the old copy. Dovecot -> Dovecot, Dovecot -> Cyrus and Cyrus -> Dovecot; after a move to a
Dovecot backend a message delivered through mailfarm's LMTP proxy gets the vacation reply
from the new backend. A backend without ManageSieve stops the move unless ``--no-sieve``;
a script the target refuses (a Pigeonhole extension Cyrus lacks) rolls the move back.
"""

from __future__ import annotations

import hashlib
import secrets
import smtplib
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bench.farm import Farm
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config, free_port
from directory.provision.ldapwrite import LdapWriter
from directory.provision.move import MoveProgress, move_user
from tests.integration import provision_helpers as helpers
from tests.integration.provision_helpers import DISABLED_ATTRIBUTE, Admin, add_user
from tests.integration.sieveclient import SieveClient

admin = helpers.admin  # fixture
domain = helpers.domain  # fixture

VACATION = (
    'require "vacation";\r\nvacation :days 1 :subject "away after the move" "I am away.";\r\n'
)
FILTER = (  # inactive; LF line ends, as many clients upload them
    'require "fileinto";\nif header :contains "subject" "[sort]" {\n  fileinto "Sorted";\n}\n'
)
SCRIPTS = {"away": (VACATION, True), "sort rules": (FILTER, False)}
# Pigeonhole has "foreverypart" (RFC 5703); Cyrus 3.6 does not.
PIGEONHOLE_ONLY = 'require ["mime", "foreverypart"];\nforeverypart { keep; }\n'
DIRECTIONS = [("mail1", "mail2"), ("mail1", "mail3"), ("mail3", "mail1")]


def sieve_of(farm: Farm, backend: str, uid: str, password: str) -> SieveClient:
    """The user's own ManageSieve login, straight to a backend (by uid: Cyrus knows no other)."""
    b = farm.backends[backend]
    client = SieveClient(b.host, b.sieve_port, timeout=10)
    client.authenticate_plain(uid, password)
    return client


def upload(farm: Farm, backend: str, uid: str, password: str, scripts: dict) -> None:  # type: ignore[type-arg]
    with sieve_of(farm, backend, uid, password) as sieve:
        for name, (text, _active) in scripts.items():
            sieve.putscript(name, text)
        for name, (_text, active) in scripts.items():
            if active:
                sieve.setactive(name)
        sieve.logout()


def scripts_on(farm: Farm, backend: str, uid: str, password: str) -> dict[str, tuple[str, bool]]:
    with sieve_of(farm, backend, uid, password) as sieve:
        found = {name: (sieve.getscript(name), active) for name, active in sieve.listscripts()}
        sieve.logout()
    return found


def host_of(admin: Admin, login: str) -> str:
    return str(admin.ok("user", "show", login)["mailHost"])


def refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: connection refused


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def lmtp_front(farm: Farm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """mailfarm's LMTP proxy with no route cache, so it routes by the mailHost just set."""
    ports, lmtp = ProxyPorts(), free_port()
    sections = farm_config(
        farm,
        ports,
        directory={"cache_ttl": 0, "negative_ttl": 0, "disabled_attribute": DISABLED_ATTRIBUTE},
        lmtp={"listen": [f"127.0.0.1:{lmtp}"], "backend_port": farm.backends["mail1"].lmtp_port},
    )
    process = MailfarmProcess(tmp_path_factory.mktemp("move-sieve"), sections, "move-sieve")
    process.start()
    yield lmtp
    process.stop()


def assert_vacation_from(farm: Farm, backend: str, lmtp: int, address: str) -> None:
    before = len(farm.outbox(backend))
    sender = f"move-sieve-{secrets.token_hex(4)}@example.net"  # vacation answers once per sender
    message = (
        f"From: {sender}\r\nTo: {address}\r\nSubject: hello\r\n"
        f"Message-ID: <{secrets.token_hex(6)}@example.net>\r\n\r\nAre you there?\r\n"
    )
    with smtplib.LMTP("127.0.0.1", lmtp, timeout=15) as client:
        assert client.sendmail(sender, [address], message) == {}
    deadline = time.monotonic() + 15
    while len(farm.outbox(backend)) == before:
        assert time.monotonic() < deadline, f"no vacation reply from {backend}"
        time.sleep(0.2)
    reply = farm.outbox(backend)[-1]
    assert reply.recipients == (sender,)
    assert "Subject: away after the move" in reply.message


@pytest.mark.parametrize(("source", "target"), DIRECTIONS, ids=lambda b: b)
def test_move_copies_sieve_scripts(
    farm: Farm, admin: Admin, domain: str, lmtp_front: int, source: str, target: str
) -> None:
    src, dst = farm.backends[source], farm.backends[target]
    user = add_user(admin, f"sieve-{source}-{target}@{domain}", "sieve pw", "--host", src.host)
    uid = user["uid"]
    upload(farm, source, uid, "sieve pw", SCRIPTS)
    wanted = {name: (text, active) for name, (text, active) in SCRIPTS.items()}
    assert scripts_on(farm, source, uid, "sieve pw") == wanted

    result = admin.run("user", "move", user["mail"], "--to", dst.host, "--json")
    assert result.code == 0, result
    moved = result.json
    assert scripts_on(farm, target, uid, "sieve pw") == wanted  # same names, bytes, active
    assert moved["old_copy_deleted"] is True, moved["warnings"]
    assert moved["sieve_copied"] is True and moved["sieve_old_copy"] == "deleted"
    assert sorted(moved["sieve_scripts"], key=lambda s: s["name"]) == [
        {"name": "away", "bytes": len(VACATION.encode()), "active": True, "sha256": _sha(VACATION)},
        {
            "name": "sort rules",
            "bytes": len(FILTER.encode()),
            "active": False,
            "sha256": _sha(FILTER),
        },
    ]
    # The progress events on stderr carry the scripts too (JSON lines).
    assert '"phase": "sieve"' in result.stderr and '"name": "away"' in result.stderr
    if src.kind == "dovecot":  # the user still logs in there: no script left
        assert scripts_on(farm, source, uid, "sieve pw") == {}

    if dst.kind == "dovecot":  # Cyrus's lmtpd sends vacation replies through no outbox
        assert_vacation_from(farm, target, lmtp_front, user["mail"])


def test_user_without_scripts_moves_as_before(farm: Farm, admin: Admin, domain: str) -> None:
    src, dst = farm.backends["mail2"], farm.backends["mail1"]
    user = add_user(admin, f"noscripts@{domain}", "pw", "--host", src.host)
    moved = admin.ok("user", "move", user["mail"], "--to", dst.host)
    assert moved["sieve_scripts"] == [] and moved["sieve_copied"] is True
    assert moved["old_copy_deleted"] is True and moved["warnings"] == []
    assert scripts_on(farm, "mail1", user["uid"], "pw") == {}


def test_keep_old_keeps_the_scripts(farm: Farm, admin: Admin, domain: str) -> None:
    user = add_user(admin, f"keepsieve@{domain}", "pw", "--host", farm.backends["mail1"].host)
    upload(farm, "mail1", user["uid"], "pw", SCRIPTS)
    moved = admin.ok(
        "user", "move", user["mail"], "--to", farm.backends["mail2"].host, "--keep-old"
    )
    assert moved["sieve_old_copy"] == "kept (--keep-old)"
    assert scripts_on(farm, "mail1", user["uid"], "pw") == SCRIPTS
    assert scripts_on(farm, "mail2", user["uid"], "pw") == SCRIPTS


def test_unreachable_source_sieve_stops_the_move_unless_no_sieve(
    farm: Farm, admin: Admin, domain: str
) -> None:
    src, dst = farm.backends["mail1"], farm.backends["mail2"]
    user = add_user(admin, f"nosieve@{domain}", "pw", "--host", src.host)
    upload(farm, "mail1", user["uid"], "pw", SCRIPTS)
    down = admin.with_config("sievedown", sieve={"backend_port": refused_port()})

    failed = down.run("user", "move", user["mail"], "--to", dst.host, "--json")
    assert failed.code == 3, failed
    assert "Sieve scripts" in failed.stderr and "--no-sieve" in failed.stderr, failed.stderr
    assert host_of(admin, user["mail"]) == src.host
    assert scripts_on(farm, "mail1", user["uid"], "pw") == SCRIPTS  # nothing lost

    settings = down.settings
    events: list[MoveProgress] = []
    with LdapWriter(settings) as writer:
        report = move_user(
            settings, writer, user["uid"], dst.host, progress=events.append, no_sieve=True
        )
    shown: dict[str, Any] = report.as_dict()
    assert shown["sieve_copied"] is False and shown["sieve_scripts"] is None
    assert shown["sieve_old_copy"] == "not looked at (--no-sieve)"
    assert any("not copied (--no-sieve)" in w for w in report.warnings), report.warnings
    assert host_of(admin, user["mail"]) == dst.host
    assert scripts_on(farm, "mail2", user["uid"], "pw") == {}
    assert not any(e.phase == "sieve" for e in events)


def test_a_script_the_target_refuses_rolls_the_move_back(
    farm: Farm, admin: Admin, domain: str
) -> None:
    src, dst = farm.backends["mail1"], farm.backends["mail3"]
    user = add_user(admin, f"refused@{domain}", "pw", "--host", src.host)
    scripts = {**SCRIPTS, "parts": (PIGEONHOLE_ONLY, False)}
    upload(farm, "mail1", user["uid"], "pw", scripts)

    failed = admin.run("user", "move", user["mail"], "--to", dst.host, "--json")
    assert failed.code == 1, failed  # refused: retrying later would change nothing
    assert "refused Sieve script 'parts'" in failed.stderr, failed.stderr
    assert "foreverypart" in failed.stderr.lower() or "mime" in failed.stderr.lower()
    assert "nothing lost" in failed.stderr
    assert host_of(admin, user["mail"]) == src.host
    assert scripts_on(farm, "mail1", user["uid"], "pw") == scripts
    assert scripts_on(farm, "mail3", user["uid"], "pw") == {}  # the partial copy is undone


@pytest.mark.parametrize("backend", ["mail1", "mail3"])
def test_user_del_takes_the_scripts_too(
    farm: Farm, admin: Admin, domain: str, backend: str
) -> None:
    """A deleted user's vacation text and filters go with the mailbox: on Dovecot the sieve
    directory outlives the mailbox, so without this an address created again later would
    answer its senders with the old owner's vacation reply."""
    address = f"delsieve-{backend}-{secrets.token_hex(3)}@{domain}"
    host = farm.backends[backend].host
    user = add_user(admin, address, "pw one", "--host", host)
    upload(farm, backend, user["uid"], "pw one", SCRIPTS)
    deleted = admin.ok("user", "del", address)
    assert deleted["sieve_scripts_removed"] == len(SCRIPTS), deleted
    again = add_user(admin, address, "pw two", "--host", host)
    try:
        assert scripts_on(farm, backend, again["uid"], "pw two") == {}
    finally:
        admin.run("user", "del", address)
