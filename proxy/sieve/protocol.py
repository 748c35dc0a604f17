"""ManageSieve as a dialect of the shared session core: its dialogue, backend login and
goodbyes; everything else (directory, routing, limits, relay, metrics, the session's log
line) is the code IMAP and POP3 run."""

from __future__ import annotations

from proxy.actions import DialogueEnv, Failure
from proxy.config import ProtocolSettings
from proxy.session import Dialect
from proxy.sieve.backend import make_sieve_backend_login
from proxy.sieve.capabilities import KnownCapabilities
from proxy.sieve.dialogue import FAILURE_REPLIES, SieveDialogue


def sieve_bye(failure: Failure) -> bytes:
    """An unasked goodbye: ManageSieve's BYE, from the dialogue's one table."""
    reply = FAILURE_REPLIES[failure]
    return reply if reply.startswith(b"BYE") else b"BYE" + reply[2:]


def sieve_farewell(client_tail: bytes, backend_tail: bytes) -> bytes:
    """The backend closed: after LOGOUT that is the normal end (it said OK or BYE)."""
    last = client_tail.rstrip(b"\r\n").rsplit(b"\n", 1)[-1].strip().upper()
    said = backend_tail.rstrip(b"\r\n").rsplit(b"\n", 1)[-1].strip().upper()
    if last.startswith(b"LOGOUT") or said.startswith(b"BYE"):
        return b""
    return b'BYE (TRYLATER) "Connection to the mailbox server was lost."\r\n'


def sieve_dialect(settings: ProtocolSettings) -> Dialect:
    known = KnownCapabilities()

    def new_dialogue(env: DialogueEnv) -> SieveDialogue:
        return SieveDialogue(env, known)

    return Dialect(
        "sieve", settings, new_dialogue, make_sieve_backend_login(known), sieve_bye, sieve_farewell
    )
