"""The bench's peer, a Dovecot proxy in front of the farm's backends, routes as mailfarm
does: so a comparison between the two measures the proxies, not different work."""

from __future__ import annotations

import imaplib
import poplib
import secrets
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.dovecotproxy import DovecotProxy, PeerPorts, start_peer
from bench.farm import Farm
from bench.proxyproc import free_port
from tests.integration.sieveclient import SieveClient, SieveError


@pytest.fixture(scope="module")
def peer(farm: Farm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotProxy]:
    ports = PeerPorts(free_port(), free_port(), free_port(), free_port())
    started = start_peer(farm, tmp_path_factory.mktemp("dovecot-proxy"), ports)
    yield started
    started.stop()


def test_every_user_reaches_its_own_backend(farm: Farm, peer: DovecotProxy) -> None:
    tag = secrets.token_hex(4)
    for user in farm.users:
        farm.deliver(user.address, f"Subject: peer {tag}\r\n\r\nfor {user.address}\r\n".encode())
    context = ssl.create_default_context(cafile=str(farm.pki.ca_cert))
    for user in farm.users:  # Dovecot and Cyrus backends, addresses and uids
        for client in (
            imaplib.IMAP4("127.0.0.1", peer.peer_ports.imap, timeout=15),
            imaplib.IMAP4_SSL(
                "localhost", peer.peer_ports.imaps, ssl_context=context, timeout=15
            ),
        ):
            client.login(user.uid if client.port == peer.peer_ports.imap else user.address,
                         user.password)  # fmt: skip
            client.select("INBOX", readonly=True)
            _, found = client.search(None, "SUBJECT", f'"peer {tag}"')
            assert len(found[0].split()) == 1, (user.address, found)
            client.logout()


def test_pop3_and_a_wrong_password(farm: Farm, peer: DovecotProxy) -> None:
    user = farm.user("alice@example.co.uk")
    pop = poplib.POP3("127.0.0.1", peer.peer_ports.pop3, timeout=15)
    pop.user(user.address)
    pop.pass_(user.password)
    assert pop.stat()[0] >= 0
    pop.quit()
    client = imaplib.IMAP4("127.0.0.1", peer.peer_ports.imap, timeout=15)
    with pytest.raises(imaplib.IMAP4.error):
        client.login(user.address, "wrong")
    client.logout()
    assert isinstance(peer, DovecotProxy) and Path(peer.log).exists()


def test_sieve_reaches_the_users_own_backend(farm: Farm, peer: DovecotProxy) -> None:
    """A script uploaded through the peer is on the user's backend and only there (each
    backend accepts every user, so a misrouted login would put it on the other one)."""
    name = f"peer-{secrets.token_hex(4)}"
    context = ssl.create_default_context(cafile=str(farm.pki.ca_cert))
    for backend, other in (("mail1", "mail2"), ("mail2", "mail1")):
        user = next(u for u in farm.users if u.backend == backend and "@" in u.address)
        with SieveClient("127.0.0.1", peer.peer_ports.sieve) as client:
            assert "STARTTLS" in client.capabilities
            client.starttls(context, server_hostname="localhost")
            client.authenticate_plain(user.address, user.password)
            client.putscript(name, "keep;\n")
            client.logout()
        for where, present in ((backend, True), (other, False)):
            b = farm.backends[where]
            with SieveClient(b.host, b.sieve_port) as client:
                client.authenticate_plain(user.uid, user.password)
                assert ((name, False) in client.listscripts()) is present, (user, where)
                if present:
                    client.deletescript(name)
                client.logout()
    with SieveClient("127.0.0.1", peer.peer_ports.sieve) as client:
        with pytest.raises(SieveError) as refused:
            client.authenticate_plain(user.address, "wrong")
        assert refused.value.status == "NO"
