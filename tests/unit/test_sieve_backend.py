"""The ManageSieve backend login against scripted backends, without a socket: Pigeonhole's
and Cyrus timsieved's dialects (both RFC 5804, worded differently), as captured from the
farm's Dovecot 2.3 / Pigeonhole 0.5 and Cyrus 3.6.1 backends."""

from __future__ import annotations

import asyncio
import base64

import pytest

from proxy.actions import BackendInfo, DialogueEnv
from proxy.backend import BackendError, BackendTarget
from proxy.config import ProtocolSettings
from proxy.sasl import Credentials
from proxy.session import ClientInfo
from proxy.sieve.backend import make_sieve_backend_login
from proxy.sieve.capabilities import KnownCapabilities
from proxy.sieve.dialogue import SieveDialogue
from proxy.stream import Conn

TIMSIEVED_GREETING = (
    b'"IMPLEMENTATION" "Cyrus timsieved 3.6.1-Debian-3.6.1-4+deb12u5"\r\n'
    b'"VERSION" "1.0"\r\n'
    b'"SASL" "PLAIN LOGIN"\r\n'
    b'"SIEVE" "encoded-character comparator-i;ascii-numeric fileinto reject ereject vacation'
    b' vacation-seconds notify enotify include editheader envelope body imap4flags"\r\n'
    b'"NOTIFY" "mailto"\r\n'
    b'"EXTLISTS" "urn:ietf:params:sieve:addrbook"\r\n'
    b'"STARTTLS"\r\n'
    b'"UNAUTHENTICATE"\r\n'
    b"OK\r\n"
)
PIGEONHOLE_GREETING = (
    b'"IMPLEMENTATION" "Dovecot Pigeonhole"\r\n'
    b'"SIEVE" "fileinto reject envelope vacation"\r\n'
    b'"NOTIFY" "mailto"\r\n'
    b'"SASL" "PLAIN"\r\n'
    b'"STARTTLS"\r\n'
    b'"VERSION" "1.0"\r\n'
    b'OK "Dovecot ready."\r\n'
)


class ScriptedBackend(asyncio.Transport):
    """Feeds the connection the next scripted answer for each line written to it."""

    def __init__(self, conn: Conn, answers: list[bytes]) -> None:
        super().__init__()
        self.conn, self.answers, self.written = conn, list(answers), b""

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.written += data
        for _ in range(data.count(b"\n")):
            if self.answers:
                self.conn.data_received(self.answers.pop(0))

    def is_closing(self) -> bool:
        return False


def settings() -> ProtocolSettings:
    return ProtocolSettings(
        listen=(),
        tls_listen=(),
        proxy_protocol_listen=(),
        backend_port=4190,
        backend_tls="none",
        backend_tls_verify=True,
        backend_ca=None,
        backend_timeout=5.0,
        forward_client_ip=True,
    )


def login(
    greeting: bytes, answers: list[bytes], creds: Credentials, known: KnownCapabilities
) -> tuple[BackendInfo, bytes]:
    async def run() -> tuple[BackendInfo, bytes]:
        conn = Conn()
        backend = ScriptedBackend(conn, answers)
        conn.connection_made(backend)
        conn.data_received(greeting)
        client = ClientInfo("192.0.2.7", 40000, "127.0.0.1", 4190, True)
        info = await make_sieve_backend_login(known)(
            conn, creds, client, settings(), BackendTarget("127.0.0.4", 4190)
        )
        return info, backend.written

    return asyncio.run(run())


def plain_token(written: bytes) -> bytes:
    assert written.startswith(b'AUTHENTICATE "PLAIN" "') and written.endswith(b'"\r\n')
    return base64.b64decode(written[len(b'AUTHENTICATE "PLAIN" "') : -3])


@pytest.mark.parametrize(
    "creds, token",
    [
        (Credentials("", "erin_example_co_uk", "erin-pw"), b"\0erin_example_co_uk\0erin-pw"),
        (Credentials("erin_example_co_uk", "mfproxy", "s3"), b"erin_example_co_uk\0mfproxy\0s3"),
    ],
    ids=["password", "proxy"],
)
def test_timsieved_bare_ok_without_capabilities(creds: Credentials, token: bytes) -> None:
    """timsieved: a greeting ending in a bare ``OK``, VERSION before SASL, valueless
    ``"UNAUTHENTICATE"``, no XCLIENT; AUTHENTICATE answered with a bare ``OK`` and no
    capabilities (none are due without a security layer, RFC 5804 section 2.1)."""
    known = KnownCapabilities()
    info, written = login(TIMSIEVED_GREETING, [b"OK\r\n"], creds, known)
    assert plain_token(written) == token  # the whole token in one quoted string (SASL-IR)
    assert info.greeting == b""
    assert b"vacation-seconds" in known.learnt[b"SIEVE"]
    env = DialogueEnv(False, False, True, 8192, 8192)
    assert SieveDialogue(env, known).succeeded(info) == b'OK "Logged in."\r\n'


def test_pigeonhole_capabilities_after_authenticate_are_passed_on() -> None:
    resent = b'"IMPLEMENTATION" "Dovecot Pigeonhole"\r\n"SIEVE" "fileinto"\r\n'
    info, _ = login(
        PIGEONHOLE_GREETING,
        [resent + b'OK "Logged in."\r\n'],
        Credentials("", "alice_example_co_uk", "alice-pw"),
        KnownCapabilities(),
    )
    assert info.greeting == resent


@pytest.mark.parametrize(
    "answer", [b'NO "Authentication Error"\r\n', b'BYE "Too many failures"\r\n']
)
def test_timsieved_refusal_is_a_backend_error(answer: bytes) -> None:
    with pytest.raises(BackendError, match="refused login"):
        login(TIMSIEVED_GREETING, [answer], Credentials("", "erin", "x"), KnownCapabilities())
