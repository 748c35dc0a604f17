"""The ManageSieve pre-login dialogue, without a socket."""

from __future__ import annotations

import base64

from proxy.actions import Authenticate, BackendInfo, Close, DialogueEnv, Failure, Send, StartTls
from proxy.sieve.capabilities import KnownCapabilities, parse_capability_line
from proxy.sieve.dialogue import SieveDialogue

PLAIN = base64.b64encode(b"\x00alice@example.com\x00secret pw")


def dialogue(tls_offered: bool = True, plaintext: bool = True) -> SieveDialogue:
    env = DialogueEnv(tls_offered, False, plaintext, 8192, 8192)
    return SieveDialogue(env, KnownCapabilities())


def sent(actions: list) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, Send))


def test_greeting_is_a_capability_block() -> None:
    greeting = dialogue().greeting()
    lines = greeting.split(b"\r\n")
    assert lines[-2] == b'OK "mailfarm ready."'
    caps = dict(filter(None, map(parse_capability_line, lines[:-2])))
    assert caps[b"SASL"] == b"PLAIN LOGIN" and b"vacation" in caps[b"SIEVE"]
    assert b"STARTTLS" in caps and caps[b"VERSION"] == b"1.0"


def test_plaintext_refused_until_tls_then_capabilities_again() -> None:
    d = dialogue(plaintext=False)
    assert b'"SASL" ""' in d.greeting()
    assert b"ENCRYPT-NEEDED" in sent(d.receive(b'AUTHENTICATE "PLAIN" "' + PLAIN + b'"\r\n'))
    actions = d.receive(b"STARTTLS\r\nCAPABILITY\r\n")
    assert isinstance(actions[-1], StartTls)
    after = sent(d.tls_started())
    assert b'"SASL" "PLAIN LOGIN"' in after and b"STARTTLS" not in after
    assert after.endswith(b"OK \"TLS negotiation successful.\"\r\n")
    # The CAPABILITY pipelined in clear was discarded (RFC 5804 section 2.2).
    assert d.resume() == []


def test_authenticate_with_and_without_initial_response() -> None:
    d = dialogue()
    (auth,) = d.receive(b'AUTHENTICATE "PLAIN" {%d+}\r\n' % len(PLAIN) + PLAIN + b"\r\n")
    assert isinstance(auth, Authenticate) and auth.credentials.password == "secret pw"
    d = dialogue()
    assert sent(d.receive(b'AUTHENTICATE "PLAIN"\r\n')) == b'""\r\n'
    (auth,) = d.receive(b'"' + PLAIN + b'"\r\n')
    assert auth.credentials.authcid == "alice@example.com"


def test_login_mechanism_and_cancel() -> None:
    d = dialogue()
    assert sent(d.receive(b'AUTHENTICATE "LOGIN"\r\n')) == b'"VXNlcm5hbWU6"\r\n'
    assert sent(d.receive(b'"' + base64.b64encode(b"bob") + b'"\r\n')) == b'"UGFzc3dvcmQ6"\r\n'
    (auth,) = d.receive(b'"' + base64.b64encode(b"pw") + b'"\r\n')
    assert (auth.credentials.authcid, auth.credentials.password) == ("bob", "pw")
    d = dialogue()
    d.receive(b'AUTHENTICATE "PLAIN"\r\n')
    assert b"cancelled" in sent(d.receive(b'"*"\r\n'))


def test_broken_sasl_gets_no_and_the_session_goes_on() -> None:
    d = dialogue()
    assert sent(d.receive(b'AUTHENTICATE "PLAIN" "!!notbase64"\r\n')).startswith(b"NO ")
    assert sent(d.receive(b'AUTHENTICATE "CRAM-MD5"\r\n')).startswith(b"NO ")
    assert sent(d.receive(b"AUTHENTICATE PLAIN\r\n")).startswith(b"NO ")  # an atom
    assert sent(d.receive(b"NOOP\r\n")) == b'OK "NOOP completed."\r\n'


def test_noop_tag_logout_and_commands_of_later() -> None:
    d = dialogue()
    assert sent(d.receive(b'NOOP "t1"\r\n')) == b'OK (TAG "t1") "Done."\r\n'
    assert b"Authenticate first" in sent(d.receive(b"LISTSCRIPTS\r\n"))
    assert b"Unknown command" in sent(d.receive(b"FOO\r\n"))
    actions = d.receive(b"LOGOUT\r\n")
    assert isinstance(actions[-1], Close)


def test_outcomes() -> None:
    d = dialogue()
    d.receive(b'AUTHENTICATE "PLAIN" "' + PLAIN + b'"\r\nLISTSCRIPTS\r\n')
    assert d.failed(Failure.BACKEND_UNAVAILABLE).startswith(b"NO (TRYLATER)")
    assert d.failed(Failure.TOO_MANY_FAILURES).startswith(b"BYE")
    d = dialogue()
    d.receive(b'AUTHENTICATE "PLAIN" "' + PLAIN + b'"\r\nLISTSCRIPTS\r\n')
    resent = b'"IMPLEMENTATION" "Dovecot Pigeonhole"\r\n'
    assert d.succeeded(BackendInfo(greeting=resent)) == resent + b'OK "Logged in."\r\n'
    assert d.take_pending() == b"LISTSCRIPTS\r\n"


def test_known_capabilities_learn_from_a_backend() -> None:
    known = KnownCapabilities()
    known.learn([b'"IMPLEMENTATION" "Dovecot"\r\n', b'"SIEVE" "fileinto vacation"\r\n'])
    block = known.block(sasl=True, starttls=False)
    assert b'"SIEVE" "fileinto vacation"' in block and b"Dovecot" not in block
    known.learn([b'"IMPLEMENTATION" "x"\r\n'])  # no SIEVE: nothing learnt
    assert b"fileinto vacation" in known.block(True, False)
