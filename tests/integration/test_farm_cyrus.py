"""The farm's Cyrus backend ``mail3``, spoken to directly: what the proxy must do differently.

Cyrus knows users by uid only (an address login or recipient is refused), and takes a front
end's login for a user as SASL PLAIN with the user as authzid and the proxy identity
``mfproxy`` as authcid; these tests pin both, and that the same proxy login works on Dovecot,
so the proxy can use one form for every backend.
"""

from __future__ import annotations

import base64
import imaplib
import poplib
import secrets
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager

import ldap3
import pytest

from bench.farm import Backend, Farm, FarmUser
from tests.integration.waiting import eventually

CYRUS_USERS = ["erin@example.co.uk", "frank@example.com"]


@pytest.fixture()
def mail3(farm: Farm) -> Backend:
    return farm.backends["mail3"]


@pytest.fixture()
def erin(farm: Farm) -> FarmUser:
    return farm.user("erin@example.co.uk")


def plain(authzid: str, authcid: str, password: str) -> bytes:
    return f"{authzid}\0{authcid}\0{password}".encode()


@contextmanager
def imap(backend: Backend, login: str | None = None, password: str = "") -> Iterator[imaplib.IMAP4]:
    client = imaplib.IMAP4(backend.host, backend.imap_port, timeout=10)
    try:
        if login is not None:
            client.login(login, password)
        yield client
    finally:
        try:
            client.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


@contextmanager
def pop3(backend: Backend) -> Iterator[poplib.POP3]:
    client = poplib.POP3(backend.host, backend.pop3_port, timeout=10)
    try:
        yield client
    finally:
        try:
            client.quit()
        except (poplib.error_proto, OSError):
            pass


def subjects(client: imaplib.IMAP4) -> list[str]:
    client.select("INBOX", readonly=True)
    _, data = client.search(None, "ALL")
    found = []
    for num in data[0].split():
        _, parts = client.fetch(num, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        raw = parts[0][1].decode().strip()  # type: ignore[index,union-attr]
        found.append(raw.removeprefix("Subject:").strip())
    return found


def message(subject: str) -> bytes:
    return f"From: farm@mailfarm.test\r\nSubject: {subject}\r\n\r\nhello\r\n".encode()


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def logged(farm: Farm, text: str) -> bool:
    """Syslog lines arrive through the receiver a moment after the fact: poll for them."""
    return eventually(lambda: text in farm.log_file("mail3").read_text(errors="replace"), 5)


# -- the backend itself ----------------------------------------------------------------------


def test_mail3_is_cyrus_on_its_own_address_with_the_shared_ports(
    farm: Farm, mail3: Backend
) -> None:
    mail1 = farm.backends["mail1"]
    assert (mail3.kind, mail3.host) == ("cyrus", "127.0.0.4")
    assert (mail1.kind, farm.backends["mail2"].kind) == ("dovecot", "dovecot")
    ports = ("imap_port", "imaps_port", "pop3_port", "pop3s_port", "lmtp_port")
    assert [getattr(mail3, p) for p in ports] == [getattr(mail1, p) for p in ports]
    assert [u.address for u in farm.users if u.backend == "mail3"] == CYRUS_USERS


def test_greetings_name_mail3(mail3: Backend) -> None:
    with imap(mail3) as client:
        assert b"mail3 Cyrus IMAP 3.6" in client.welcome
    with pop3(mail3) as client:
        assert client.getwelcome().startswith(b"+OK mail3 Cyrus POP3 3.6")
    with smtplib.LMTP(mail3.host, mail3.lmtp_port, timeout=10) as lmtp:
        code, banner = lmtp.ehlo("farm.test")
        assert code == 250 and banner.startswith(b"mail3")


def test_tls_with_the_farm_ca(farm: Farm, mail3: Backend) -> None:
    # The farm certificate names mail3.mailfarm.test, but its IP list stops at 127.0.0.3:
    # verify by name (imaplib.IMAP4_SSL(host="127.0.0.4") would fail on the IP).
    context = ssl.create_default_context(cafile=str(farm.pki.ca_cert))
    for port, greeting in ((mail3.imaps_port, b"* OK"), (mail3.pop3s_port, b"+OK mail3")):
        with socket.create_connection((mail3.host, port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="mail3.mailfarm.test") as tls:
                assert tls.recv(256).startswith(greeting)


@pytest.mark.parametrize("address", CYRUS_USERS)
def test_login_by_uid(farm: Farm, mail3: Backend, address: str) -> None:
    user = farm.user(address)
    with imap(mail3, user.uid, user.password) as client:
        typ, _ = client.select("INBOX")
        assert typ == "OK"
    with pop3(mail3) as client:
        client.user(user.uid)
        assert client.pass_(user.password).startswith(b"+OK")
        client.stat()


def test_wrong_password_fails_fast(mail3: Backend, erin: FarmUser) -> None:
    started = time.monotonic()
    with pytest.raises(imaplib.IMAP4.error), imap(mail3, erin.uid, "nope"):
        pass
    with pop3(mail3) as client:
        client.user(erin.uid)
        with pytest.raises(poplib.error_proto):
            client.pass_("nope")
    assert time.monotonic() - started < 1.5  # failedloginpause: 0


def test_login_by_address_is_refused(farm: Farm, mail3: Backend, erin: FarmUser) -> None:
    """Why the proxy logs in to Cyrus by uid: an address is no uid in LDAP, so saslauthd's
    ``(uid=%u)`` finds nobody, whatever the password; pop3d refuses it before PASS."""
    with pytest.raises(imaplib.IMAP4.error), imap(mail3, erin.address, erin.password):
        pass
    assert logged(farm, f"plaintext ({erin.address}) [SASL(-13): authentication failure")
    with pop3(mail3) as client:
        with pytest.raises(poplib.error_proto, match="Invalid user"):
            client.user(erin.address)


def test_password_change_shows_at_once(farm: Farm, mail3: Backend) -> None:
    frank = farm.user("frank@example.com")
    try:
        farm.set_password(frank, "new frank pw")
        with imap(mail3, frank.uid, "new frank pw"):
            pass
        with pytest.raises(imaplib.IMAP4.error), imap(mail3, frank.uid, frank.password):
            pass
    finally:
        farm.set_password(frank, frank.password)
    with imap(mail3, frank.uid, frank.password):
        pass


def test_service_logins_are_no_mail_users(farm: Farm) -> None:
    proxy_filter = "(&(objectClass=inetLocalMailRecipient)(|(uid={0})(mail={0})))"
    server = ldap3.Server(farm.ldap_uri, connect_timeout=3)
    with ldap3.Connection(server, farm.service_dn, farm.service_password, auto_bind=True) as conn:
        for name in (farm.cyrus_admin_user, farm.proxy_user):
            conn.search(farm.base_dn, proxy_filter.format(name), attributes=["uid"])
            assert conn.entries == [], name
            conn.search(farm.base_dn, f"(uid={name})", attributes=["uid"])
            [entry] = conn.entries
            assert entry.entry_dn.endswith(f",ou=services,{farm.base_dn}")
    # Nor can they log in to Dovecot as themselves: the master passdb only vouches for others.
    with pytest.raises(imaplib.IMAP4.error):
        with imap(farm.backends["mail1"], farm.proxy_user, farm.proxy_password):
            pass


# -- proxy authorization -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mail3", "mail1"])
def test_proxy_login_imap(farm: Farm, name: str) -> None:
    """AUTHENTICATE PLAIN ``uid\\0mfproxy\\0secret`` opens the user's own mailbox, on Cyrus
    (proxyservers) and on Dovecot (a master user) alike."""
    backend = farm.backends[name]
    user = next(u for u in farm.users if u.backend == name)
    subject = unique("proxied")
    farm.deliver(user.address, message(subject))
    with imap(backend) as client:
        typ, _ = client.authenticate(
            "PLAIN", lambda _: plain(user.uid, farm.proxy_user, farm.proxy_password)
        )
        assert typ == "OK"
        assert subject in subjects(client)


@pytest.mark.parametrize("name", ["mail3", "mail1"])
def test_proxy_login_pop3(farm: Farm, name: str) -> None:
    backend = farm.backends[name]
    user = next(u for u in farm.users if u.backend == name)
    farm.deliver(user.uid, message(unique("proxied-pop")))
    with pop3(backend) as client:
        client.user(user.uid)
        client.pass_(user.password)
        direct = client.stat()
    with pop3(backend) as client:
        token = base64.b64encode(plain(user.uid, farm.proxy_user, farm.proxy_password))
        assert client._shortcmd("AUTH PLAIN " + token.decode()).startswith(b"+OK")
        assert client.stat() == direct


@pytest.mark.parametrize("name", ["mail3", "mail1"])
def test_proxy_login_needs_the_proxy_password(farm: Farm, name: str) -> None:
    backend = farm.backends[name]
    user = next(u for u in farm.users if u.backend == name)
    with pytest.raises(imaplib.IMAP4.error), imap(backend) as client:
        client.authenticate("PLAIN", lambda _: plain(user.uid, farm.proxy_user, "wrong"))


@pytest.mark.parametrize("name", ["mail3", "mail1"])
def test_ordinary_user_may_not_proxy(farm: Farm, name: str) -> None:
    backend = farm.backends[name]
    victim, *others = [u for u in farm.users if u.backend == name]
    other = others[0]
    with pytest.raises(imaplib.IMAP4.error), imap(backend) as client:
        client.authenticate("PLAIN", lambda _: plain(victim.uid, other.uid, other.password))
    with pop3(backend) as client:
        token = base64.b64encode(plain(victim.uid, other.uid, other.password)).decode()
        with pytest.raises(poplib.error_proto):
            client._shortcmd("AUTH PLAIN " + token)
    if name == "mail3":  # Cyrus tells the client only "authentication failure"; the log says why
        assert logged(farm, f"user {other.uid} is not allowed to proxy")


def test_cyrus_does_not_know_dovecots_master_login(
    farm: Farm, mail3: Backend, erin: FarmUser
) -> None:
    with pytest.raises(imaplib.IMAP4.error):
        with imap(
            mail3, f"{erin.uid}{farm.master_separator}{farm.proxy_user}", farm.proxy_password
        ):
            pass


# -- delivery --------------------------------------------------------------------------------


def test_lmtp_to_uid_lands_in_inbox(farm: Farm, mail3: Backend, erin: FarmUser) -> None:
    by_uid, by_uid_at = unique("lmtp-uid"), unique("lmtp-uid-at-domain")
    with smtplib.LMTP(mail3.host, mail3.lmtp_port, timeout=10) as lmtp:
        assert lmtp.sendmail("farm@mailfarm.test", [erin.uid], message(by_uid)) == {}
        # With virtdomains off the domain part is ignored: uid@anything is the uid.
        rcpt = f"{erin.uid}@{erin.domain}"
        assert lmtp.sendmail("farm@mailfarm.test", [rcpt], message(by_uid_at)) == {}
    with imap(mail3, erin.uid, erin.password) as client:
        found = subjects(client)
    assert by_uid in found and by_uid_at in found
    assert logged(farm, f"to mailbox: user.{erin.uid}")


def test_lmtp_to_address_is_refused(mail3: Backend, erin: FarmUser) -> None:
    with smtplib.LMTP(mail3.host, mail3.lmtp_port, timeout=10) as lmtp:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            lmtp.sendmail("farm@mailfarm.test", [erin.address], message("lost"))
    code, text = refused.value.recipients[erin.address]
    assert code == 550 and b"5.1.1" in text


def test_farm_deliver_sends_cyrus_the_uid(farm: Farm, mail3: Backend) -> None:
    frank = farm.user("frank@example.com")
    subject = unique("deliver")
    farm.deliver(frank.address, message(subject))
    with imap(mail3, frank.uid, frank.password) as client:
        assert subject in subjects(client)
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        farm.deliver("nobody@example.com", message("lost"), backend="mail3")


def test_idle_sees_a_delivery(farm: Farm, mail3: Backend, erin: FarmUser) -> None:
    with socket.create_connection((mail3.host, mail3.imap_port), timeout=10) as sock:
        stream = sock.makefile("rwb")

        def until(tag: bytes) -> list[bytes]:
            lines = []
            while not (lines and lines[-1].startswith(tag)):
                lines.append(stream.readline())
            return lines

        stream.readline()
        stream.write(f"a LOGIN {erin.uid} {erin.password}\r\nb SELECT INBOX\r\n".encode())
        stream.flush()
        until(b"a ")
        assert until(b"b ")[-1].startswith(b"b OK")
        stream.write(b"c IDLE\r\n")
        stream.flush()
        assert stream.readline().startswith(b"+")
        farm.deliver(erin.uid, message(unique("idle")))
        sock.settimeout(5)  # idled pushes at once; polling would take imapidlepoll (60 s)
        while not stream.readline().rstrip().endswith(b"EXISTS"):
            pass  # e.g. a RECENT or FETCH line first
        stream.write(b"DONE\r\n")
        stream.flush()
        assert until(b"c ")[-1].startswith(b"c OK")


# -- administration and failure injection -------------------------------------------------


def test_admin_creates_and_deletes_a_user_mailbox(farm: Farm, mail3: Backend) -> None:
    box = f"user.someone{secrets.token_hex(3)}"
    with imap(mail3, farm.cyrus_admin_user, farm.cyrus_admin_password) as admin:
        assert admin.create(box)[0] == "OK"
        _, listing = admin.list('""', box)
        assert any(box.encode() in line for line in listing if line)
        assert admin.setacl(box, farm.cyrus_admin_user, "lrswipkxtecda")[0] == "OK"
        assert admin.delete(box)[0] == "OK"
        _, listing = admin.list('""', "*")
        # delete_mode: immediate, so no DELETED.* copy lingers
        assert not any(box.encode() in line for line in listing if line), listing
    erin = farm.user("erin@example.co.uk")
    with imap(mail3, erin.uid, erin.password) as client:  # users are no admins
        assert client.create(f"user.nobody{secrets.token_hex(3)}")[0] == "NO"


def test_log_file_is_cyrus_syslog(farm: Farm, erin: FarmUser, mail3: Backend) -> None:
    with imap(mail3, erin.uid, erin.password):
        pass
    log = farm.log_file("mail3")
    assert log.name == "syslog.log"
    assert logged(farm, "mail3/imap[") and logged(farm, f"{erin.uid} plaintext User logged in")
    assert logged(farm, "saslauthd[")


def test_stop_start_and_kill(farm: Farm, mail3: Backend, erin: FarmUser) -> None:
    subject = unique("survives")
    farm.deliver(erin.uid, message(subject))
    try:
        farm.stop_backend("mail3")
        for port in (mail3.imap_port, mail3.pop3_port, mail3.lmtp_port):
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((mail3.host, port), timeout=2).close()
        with imap(farm.backends["mail1"], "alice_example_co_uk", "alice-pw"):
            pass  # the Dovecots are untouched
    finally:
        farm.start_backend("mail3")
    client = imaplib.IMAP4(mail3.host, mail3.imap_port, timeout=10)
    client.login(erin.uid, erin.password)
    client.select("INBOX")
    try:
        old_pid = farm.pids()["mail3"]
        farm.kill_backend("mail3")
        with pytest.raises((imaplib.IMAP4.abort, OSError)):
            client.noop()
    finally:
        farm.start_backend("mail3")
    assert farm.pids()["mail3"] != old_pid
    with imap(mail3, erin.uid, erin.password) as again:
        assert subject in subjects(again)
