"""Every front end against both kinds of backend: Dovecot (mail1) and Cyrus (mail3).

Cyrus knows a mailbox only as ``user.<uid>`` and checks passwords through saslauthd
against the same LDAP; the proxy must log in by uid, may vouch for the user as the host's
proxy user (``backend_auth = "proxy"``), and must hand Cyrus's lmtpd the uid.
"""

from __future__ import annotations

import base64
import imaplib
import poplib
import smtplib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench.farm import Farm, FarmUser
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_backends, farm_config
from tests.integration.smtp_fixtures import (
    RunningSmtpProxy,
    message,
    on_backend,
    token,
)
from tests.integration.waiting import eventually

USERS = {"dovecot": "alice@example.co.uk", "cyrus": "erin@example.co.uk"}


@dataclass
class Proxy:
    ports: ProxyPorts
    process: MailfarmProcess


def _sections(farm: Farm, ports: ProxyPorts, auth: str, **overrides: dict) -> dict:  # type: ignore[type-arg]
    sections = farm_config(
        farm,
        ports,
        proxy={"auth_cache_ttl": 600},
        imap={"backend_auth": auth},
        pop3={"backend_auth": auth},
    )
    for name, table in overrides.items():
        if isinstance(table, list):
            sections[name] = table
        else:
            sections.setdefault(name, {}).update(table)
    return sections


def _start(farm: Farm, workdir: Path, auth: str) -> Proxy:
    ports = ProxyPorts()
    process = MailfarmProcess(workdir, _sections(farm, ports, auth), f"kinds-{auth}").start()
    return Proxy(ports, process)


@pytest.fixture(scope="module", params=["password", "proxy"])
def front(
    request: pytest.FixtureRequest, farm: Farm, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proxy]:
    """A mailfarm per backend_auth mode, each in front of the whole farm."""
    running = _start(farm, tmp_path_factory.mktemp(f"kinds-{request.param}"), request.param)
    yield running
    running.process.stop()


@pytest.fixture(scope="module")
def vouching(farm: Farm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """backend_auth = "proxy" only, for what that mode alone promises."""
    running = _start(farm, tmp_path_factory.mktemp("kinds-vouching"), "proxy")
    yield running
    running.process.stop()


@pytest.fixture(params=sorted(USERS))
def user(request: pytest.FixtureRequest, farm: Farm) -> FarmUser:
    found = farm.user(USERS[request.param])
    assert farm.backends[found.backend].kind == request.param
    return found


def _imap(proxy: Proxy) -> imaplib.IMAP4:
    return imaplib.IMAP4("127.0.0.1", proxy.ports.imap, timeout=15)


@pytest.mark.parametrize("how", ["address", "uid"])
def test_imap_session_by_address_and_uid(front: Proxy, user: FarmUser, how: str) -> None:
    client = _imap(front)
    try:
        typ, _ = client.login(user.address if how == "address" else user.uid, user.password)
        assert typ == "OK"
        subject = token()
        body = message("t@mailfarm.test", user.address, subject)
        assert client.append("INBOX", None, None, body)[0] == "OK"
        client.select("INBOX")
        _, found = client.search(None, "SUBJECT", f'"{subject}"')
        assert len(found[0].split()) == 1
        _, data = client.fetch(found[0].split()[0], "(BODY.PEEK[])")
        assert data[0][1].replace(b"\r\n", b"\n") == body.replace(b"\r\n", b"\n")
    finally:
        client.logout()


def test_backend_capabilities_after_login(front: Proxy, farm: Farm, user: FarmUser) -> None:
    """After login the client sees the backend's own capabilities (Cyrus's differ)."""
    client = _imap(front)
    try:
        client.login(user.address, user.password)
        caps = set(client.capability()[1][0].upper().split())
    finally:
        client.logout()
    backend = farm.backends[user.backend]
    direct = imaplib.IMAP4(backend.host, backend.imap_port, timeout=15)
    try:
        direct.login(user.uid, user.password)
        expected = set(direct.capability()[1][0].upper().split())
    finally:
        direct.logout()
    assert caps == expected


def test_pop3_session(front: Proxy, farm: Farm, user: FarmUser) -> None:
    subject = token()
    farm.deliver(user.address, message("t@mailfarm.test", user.address, subject))
    client = poplib.POP3("127.0.0.1", front.ports.pop3, timeout=15)
    try:
        client.user(user.address)
        assert client.pass_(user.password).startswith(b"+OK")
        count, _ = client.stat()
        assert count >= 1
        texts = [b"\n".join(client.retr(i)[1]) for i in range(1, count + 1)]
        assert any(subject.encode() in text for text in texts)
    finally:
        client.quit()


def test_other_identity_is_still_refused(vouching: Proxy, farm: Farm, user: FarmUser) -> None:
    """The proxy vouches for users itself; a client asking to act for someone else (authzid
    != authcid) is refused as before, whatever the backend would allow mfproxy."""
    other = farm.user("bob@example.co.uk")
    client = _imap(vouching)
    try:
        blob = f"{other.uid}\0{user.address}\0{user.password}".encode()
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.authenticate("PLAIN", lambda _: blob)
    finally:
        client.shutdown()


def test_wrong_password_is_refused_by_the_proxy_not_vouched(
    vouching: Proxy, user: FarmUser
) -> None:
    client = _imap(vouching)
    try:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.login(user.address, user.password + "-wrong")
    finally:
        client.shutdown()


def test_cached_user_gets_in_while_ldap_is_down(vouching: Proxy, farm: Farm) -> None:
    """The auth cache vouches for a user it has seen; with backend_auth = proxy the backend
    does not ask LDAP for the user's password (Cyrus checks mfproxy in its own sasldb).

    Cyrus only: the farm's Dovecot looks its users up in LDAP (userdb) even for a master
    login, so it needs a userdb of its own for this (OPERATIONS.md says so)."""
    user = farm.user(USERS["cyrus"])
    client = _imap(vouching)
    client.login(user.address, user.password)  # warms the route and auth caches
    client.logout()
    farm.stop_ldap()
    try:
        client = _imap(vouching)
        try:
            assert client.login(user.address, user.password)[0] == "OK"
            assert client.select("INBOX")[0] == "OK"
        finally:
            client.logout()
    finally:
        farm.start_ldap()


# -- no user password reaches the backend ------------------------------------------------------


@dataclass
class Tap:
    """A TCP relay in front of one backend port, keeping what the proxy sent through it."""

    listen: tuple[str, int]
    target: tuple[str, int]
    sent: bytearray = field(default_factory=bytearray)

    def __post_init__(self) -> None:
        self._server = socket.create_server(self.listen)
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            backend = socket.create_connection(self.target, timeout=10)
            threading.Thread(target=self._pump, args=(client, backend, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(backend, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, record: bool) -> None:
        try:
            while data := source.recv(65536):
                if record:
                    with self._lock:
                        self.sent += data
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        try:
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread (Linux)
        except OSError:
            pass
        self._server.close()


@pytest.mark.parametrize("kind", sorted(USERS))
def test_proxy_mode_sends_no_user_password(farm: Farm, tmp_path: Path, kind: str) -> None:
    """Through a tap on 127.0.0.9 in front of the user's real backend: in proxy mode the
    backend gets the uid and mfproxy's secret, and not one form of the user's password."""
    user = farm.user(USERS[kind])
    real = farm.backends[user.backend]
    tap_host = {"dovecot": "127.0.0.9", "cyrus": "127.0.0.10"}[kind]
    taps = [
        Tap((tap_host, real.imap_port), (real.host, real.imap_port)),
        Tap((tap_host, real.pop3_port), (real.host, real.pop3_port)),
    ]
    tapped = [{**b, "host": tap_host} for b in farm_backends(farm) if b["host"] == real.host]
    ports = ProxyPorts()
    sections = _sections(farm, ports, "proxy", backends=farm_backends(farm) + tapped)
    farm.ldap_modify(user.dn, {"mailHost": [tap_host]})
    try:
        with MailfarmProcess(tmp_path, sections, f"tap-{kind}"):
            client = imaplib.IMAP4("127.0.0.1", ports.imap, timeout=15)
            assert client.login(user.address, user.password)[0] == "OK"
            assert client.select("INBOX")[0] == "OK"
            client.logout()
            pop = poplib.POP3("127.0.0.1", ports.pop3, timeout=15)
            pop.user(user.address)
            pop.pass_(user.password)
            pop.stat()
            pop.quit()
    finally:
        farm.ldap_modify(user.dn, {"mailHost": [real.host]})
        for tap in taps:
            tap.close()
    vouched = base64.b64encode(f"{user.uid}\0{farm.proxy_user}\0{farm.proxy_password}".encode())
    for tap in taps:
        sent = bytes(tap.sent)
        assert vouched in sent, sent[:300]
        assert user.password.encode() not in sent
        for blob in (f"\0{user.uid}\0{user.password}", f"\0{user.address}\0{user.password}"):
            assert base64.b64encode(blob.encode()) not in sent


# -- delivery -----------------------------------------------------------------------------------


def test_lmtp_proxy_delivers_to_each_kind(
    farm: Farm, smtp_proxy: RunningSmtpProxy, user: FarmUser
) -> None:
    """Cyrus's lmtpd refuses alice@domain for user.<uid>; the proxy sends it the uid."""
    subject = token()
    with smtplib.LMTP("127.0.0.1", smtp_proxy.ports.lmtp, timeout=15) as lmtp:
        refused = lmtp.sendmail(
            "sender@elsewhere.test",
            [user.address],
            message("sender@elsewhere.test", user.address, subject),
        )
    assert refused == {}
    assert eventually(lambda: on_backend(farm, user.backend, user, subject), timeout=10)


def test_postfix_delivers_to_each_kind(farm: Farm, postfix, smtp_proxy, user: FarmUser) -> None:  # type: ignore[no-untyped-def]
    """Postfix asks mailfarm's maps (socketmap): for a Cyrus user the aliases map gives
    uid@domain, which the mailbox and transport maps accept, and Cyrus files it."""
    subject = token()
    qid = postfix.send(
        "sender@elsewhere.test", user.address, message("s@x.test", user.address, subject)
    )
    [delivery] = postfix.wait_delivered(qid)
    assert delivery.status == "sent", delivery.line
    assert eventually(lambda: on_backend(farm, user.backend, user, subject), timeout=10)
