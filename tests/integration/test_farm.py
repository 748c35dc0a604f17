"""The farm itself: real slapd and Dovecot answering the way the proxy's tests assume."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import ldap3
import pytest
from ldap3.core.exceptions import LDAPException

from bench.farm import QUOTE_PASSWORD, Backend, Farm, FarmUser, uid_for
from tests.integration.waiting import eventually

# The named users on the Dovecot backends; the tests below log in to Dovecot (by address
# too, which Cyrus refuses). Cyrus's users and quirks: test_farm_cyrus.py.
NAMED = [
    ("alice@example.co.uk", "mail1"),
    ("bob@example.co.uk", "mail2"),
    ("carol@example.com", "mail1"),
    ("dave@example.com", "mail2"),
    ("jo_anne@under_score.org", "mail1"),
    ("quote@example.com", "mail2"),
]
NAMED_CYRUS = [("erin@example.co.uk", "mail3"), ("frank@example.com", "mail3")]


def ldap_conn(farm: Farm, dn: str, password: str) -> ldap3.Connection:
    server = ldap3.Server(farm.ldap_uri, connect_timeout=3)
    return ldap3.Connection(server, dn, password, auto_bind=True, receive_timeout=5)


@contextmanager
def imap(backend: Backend, login: str, password: str) -> Iterator[imaplib.IMAP4]:
    client = imaplib.IMAP4(backend.host, backend.imap_port, timeout=10)
    try:
        client.login(login, password)
        yield client
    finally:
        try:
            client.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def inbox_subjects(backend: Backend, login: str, password: str) -> list[str]:
    with imap(backend, login, password) as client:
        client.select("INBOX", readonly=True)
        _, data = client.search(None, "ALL")
        subjects = []
        for num in data[0].split():
            _, parts = client.fetch(num, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            raw = parts[0][1].decode().strip()  # type: ignore[index,union-attr]
            subjects.append(raw.removeprefix("Subject:").strip())
        return subjects


def other(farm: Farm, name: str) -> Backend:
    """Another Dovecot backend (Cyrus has no mailbox for Dovecot's users)."""
    return next(b for b in farm.backends.values() if b.name != name and b.kind == "dovecot")


def refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


# -- the data --------------------------------------------------------------------------------


def test_named_users_and_backends(farm: Farm) -> None:
    assert [(u.address, u.backend) for u in farm.users] == NAMED + NAMED_CYRUS
    assert farm.user("jo_anne@under_score.org").uid == "jo_anne_under_score_org"
    assert farm.user("ALICE_example_co_uk") == farm.user("alice@example.co.uk")
    assert farm.user("quote@example.com").password == 'p"a\\ss w0rd' == QUOTE_PASSWORD
    assert farm.user("alice@example.co.uk").dn == (
        "uid=alice_example_co_uk,ou=users,dc=example.co.uk,ou=domains,dc=mailfarm,dc=test"
    )
    mail1, mail2, mail3 = farm.backends["mail1"], farm.backends["mail2"], farm.backends["mail3"]
    assert (mail1.host, mail2.host, mail3.host) == ("127.0.0.2", "127.0.0.3", "127.0.0.4")
    assert (mail1.kind, mail2.kind, mail3.kind) == ("dovecot", "dovecot", "cyrus")
    assert mail1.imap_port == mail2.imap_port == mail3.imap_port
    assert mail1.lmtp_port == mail2.lmtp_port == mail3.lmtp_port
    assert (
        len({mail1.imap_port, mail1.imaps_port, mail1.pop3_port, mail1.pop3s_port, mail1.lmtp_port})
        == 5
    )
    assert farm.ldap_uri.startswith("ldap://127.0.0.1:")
    with pytest.raises(KeyError):
        farm.user("nobody@example.com")


@pytest.mark.parametrize("attr", ["uid", "mail"])
def test_service_account_finds_alice(farm: Farm, attr: str) -> None:
    alice = farm.user("alice@example.co.uk")
    value = alice.uid if attr == "uid" else alice.address
    with ldap_conn(farm, farm.service_dn, farm.service_password) as conn:
        conn.search(
            farm.base_dn,
            f"(&(objectClass=inetOrgPerson)({attr}={value}))",
            attributes=["uid", "mail", "mailHost", "userPassword"],
        )
        [entry] = conn.entries
    assert entry.entry_dn == alice.dn
    assert entry.uid.value == alice.uid and entry.mail.value == alice.address
    assert entry.mailHost.value == "127.0.0.2"
    assert not entry.userPassword.values, "nobody may read userPassword"


def test_domain_entry(farm: Farm) -> None:
    with ldap_conn(farm, farm.service_dn, farm.service_password) as conn:
        conn.search(
            f"ou=domains,{farm.base_dn}",
            "(associatedDomain=example.co.uk)",
            attributes=["dc", "objectClass"],
        )
        [entry] = conn.entries
    assert entry.entry_dn == "dc=example.co.uk,ou=domains,dc=mailfarm,dc=test"
    assert {"dNSDomain", "domainRelatedObject"} <= set(entry.objectClass.values)


@pytest.mark.parametrize("address", ["alice@example.co.uk", "quote@example.com"])
def test_user_bind(farm: Farm, address: str) -> None:
    user = farm.user(address)
    with ldap_conn(farm, user.dn, user.password) as conn:
        assert conn.extend.standard.who_am_i() == f"dn:{user.dn}"
    with pytest.raises(LDAPException):
        ldap_conn(farm, user.dn, user.password + "x")


def test_bulk_users() -> None:
    with Farm(bulk_users=20) as bulk:
        user = bulk.user("u3@d3.test")
        assert (user.uid, user.password, user.backend) == ("u3_d3_test", "pw3", "mail2")
        assert bulk.user("u4_d4_test").backend == "mail1"
        with pytest.raises(KeyError):
            bulk.user("u20@d0.test")
        with imap(bulk.backend_of(user), user.address, user.password) as client:
            assert b"mail2 ready." in client.welcome


# -- the backends ----------------------------------------------------------------------------


@pytest.mark.parametrize(("address", "backend"), NAMED)
@pytest.mark.parametrize("by", ["uid", "address"])
def test_imap_login(farm: Farm, address: str, backend: str, by: str) -> None:
    user = farm.user(address)
    login = user.uid if by == "uid" else user.address
    with imap(farm.backends[backend], login, user.password) as client:
        assert f"{backend} ready.".encode() in client.welcome
        _, [box] = client.select("INBOX", readonly=True)
        assert box is not None


@pytest.mark.parametrize(("address", "backend"), NAMED)
def test_pop3_login(farm: Farm, address: str, backend: str) -> None:
    user = farm.user(address)
    target = farm.backends[backend]
    for login in (user.uid, user.address):
        client = poplib.POP3(target.host, target.pop3_port, timeout=10)
        try:
            assert f"{backend} ready.".encode() in client.getwelcome()
            client.user(login)
            assert client.pass_(user.password).startswith(b"+OK")
            client.stat()
        finally:
            client.quit()


def test_wrong_password_fails_fast(farm: Farm) -> None:
    alice = farm.user("alice@example.co.uk")
    started = time.monotonic()
    with pytest.raises(imaplib.IMAP4.error), imap(farm.backend_of(alice), alice.uid, "nope"):
        pass
    assert time.monotonic() - started < 1.5


def test_master_user_login(farm: Farm) -> None:
    alice = farm.user("alice@example.co.uk")
    backend = farm.backend_of(alice)
    for target in (alice.uid, alice.address):
        login = f"{target}{farm.master_separator}{farm.master_user}"
        with imap(backend, login, farm.master_password) as client:
            _, [who] = client.namespace()
            assert who is not None
    client = poplib.POP3(backend.host, backend.pop3_port, timeout=10)
    try:
        client.user(f"{alice.uid}*{farm.master_user}")
        assert client.pass_(farm.master_password).startswith(b"+OK")
    finally:
        client.quit()
    with pytest.raises(imaplib.IMAP4.error), imap(backend, f"{alice.uid}*admin", "wrong"):
        pass


def test_tls_verifies_against_farm_ca(farm: Farm) -> None:
    context = ssl.create_default_context(cafile=str(farm.pki.ca_cert))
    alice = farm.user("alice@example.co.uk")
    backend = farm.backend_of(alice)
    client = imaplib.IMAP4_SSL(backend.host, backend.imaps_port, ssl_context=context, timeout=10)
    try:
        client.login(alice.uid, alice.password)
    finally:
        client.logout()
    client = imaplib.IMAP4(backend.host, backend.imap_port, timeout=10)
    try:
        client.starttls(context)
        client.login(alice.address, alice.password)
    finally:
        client.logout()
    pop = poplib.POP3_SSL(backend.host, backend.pop3s_port, context=context, timeout=10)
    pop.quit()


def test_backends_trust_forwarded_client_ip(farm: Farm) -> None:
    """The proxy's ID x-originating-ip / XCLIENT must reach Dovecot's logs and anvil."""
    carol = farm.user("carol@example.com")
    backend = farm.backend_of(carol)
    client = imaplib.IMAP4(backend.host, backend.imap_port, timeout=10)
    try:
        typ, _ = client.xatom("ID", '("x-originating-ip" "192.0.2.7")')
        assert typ == "OK"
        client.login(carol.uid, carol.password)
    finally:
        client.logout()
    pop = poplib.POP3(backend.host, backend.pop3_port, timeout=10)
    try:
        # Dovecot 2.3 accepts XCLIENT from trusted networks without listing it in CAPA.
        assert pop._shortcmd("XCLIENT ADDR=192.0.2.8 PORT=4242").startswith(b"+OK")
        pop.user(carol.uid)
        pop.pass_(carol.password)
    finally:
        pop.quit()
    # Dovecot's login processes log through its log process: the line lands a moment later.
    for rip in ("192.0.2.7", "192.0.2.8"):
        line = f"user=<carol_example_com>, method=PLAIN, rip={rip}"
        assert eventually(lambda line=line: line in farm.log_file(backend.name).read_text()), line


# -- delivery and changes ------------------------------------------------------------------


def message(subject: str) -> bytes:
    return f"From: farm@mailfarm.test\nSubject: {subject}\n\nhello\n".encode()


@pytest.mark.parametrize("address", ["alice@example.co.uk", "quote@example.com"])
def test_deliver_lands_on_the_right_backend_only(farm: Farm, address: str) -> None:
    user = farm.user(address)
    by_address, by_uid = f"by-address-{uuid.uuid4()}", f"by-uid-{uuid.uuid4()}"
    farm.deliver(user.address, message(by_address))
    farm.deliver(user.uid, message(by_uid))
    subjects = inbox_subjects(farm.backend_of(user), user.uid, user.password)
    assert by_address in subjects and by_uid in subjects
    wrong = other(farm, user.backend)
    assert not {by_address, by_uid} & set(inbox_subjects(wrong, user.uid, user.password))


def test_deliver_to_unknown_user_raises(farm: Farm) -> None:
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        farm.deliver("nobody@example.com", message("lost"))


def test_set_password_and_ldap_modify(farm: Farm) -> None:
    bob = farm.user("bob@example.co.uk")
    backend = farm.backend_of(bob)
    try:
        changed = farm.set_password(bob.address, "new bob pw")
        assert farm.user(bob.uid) == changed
        with imap(backend, bob.uid, "new bob pw"):
            pass
        with pytest.raises(imaplib.IMAP4.error), imap(backend, bob.uid, bob.password):
            pass
    finally:
        farm.set_password(bob, bob.password)  # a FarmUser works as well as a login
    assert farm.user(bob.uid) == bob
    farm.ldap_modify(bob.dn, {"mailRoutingAddress": ["bob@elsewhere.test"]})
    with ldap_conn(farm, farm.service_dn, farm.service_password) as conn:
        conn.search(bob.dn, "(objectClass=*)", ldap3.BASE, attributes=["mailRoutingAddress"])
        assert conn.entries[0].mailRoutingAddress.value == "bob@elsewhere.test"
    farm.ldap_modify(bob.dn, {"mailRoutingAddress": None})
    with ldap_conn(farm, farm.service_dn, farm.service_password) as conn:
        conn.search(bob.dn, "(objectClass=*)", ldap3.BASE, attributes=["mailRoutingAddress"])
        assert not conn.entries[0].mailRoutingAddress.values


# -- failure injection -----------------------------------------------------------------------


def test_stop_and_start_ldap(farm: Farm) -> None:
    carol = farm.user("carol@example.com")
    try:
        farm.stop_ldap()
        with pytest.raises(LDAPException):
            ldap_conn(farm, carol.dn, carol.password)
        with (
            pytest.raises(imaplib.IMAP4.error),
            imap(farm.backend_of(carol), carol.uid, carol.password),
        ):
            pass
    finally:
        farm.start_ldap()
    with ldap_conn(farm, carol.dn, carol.password) as conn:
        assert conn.bound
    with imap(farm.backend_of(carol), carol.uid, carol.password):
        pass  # Dovecot reconnects to LDAP by itself


def test_stop_and_start_backend(farm: Farm) -> None:
    dave = farm.user("dave@example.com")
    mail2, mail1 = farm.backends["mail2"], farm.backends["mail1"]
    try:
        farm.stop_backend("mail2")
        for port in (mail2.imap_port, mail2.pop3_port, mail2.lmtp_port):
            assert refused(mail2.host, port)
        with imap(mail1, farm.user("alice@example.co.uk").uid, "alice-pw"):
            pass  # the other backend is untouched
    finally:
        farm.start_backend("mail2")
    with imap(mail2, dave.uid, dave.password) as client:
        assert b"mail2 ready." in client.welcome


def test_uid_scheme() -> None:
    assert uid_for("alice@example.co.uk") == "alice_example_co_uk"
    assert uid_for("jo_anne@under_score.org") == "jo_anne_under_score_org"
    assert FarmUser("a@b.c", "a_b_c", "pw", "mail1").domain == "b.c"
