"""POP3 as a dialect of the shared session core: its dialogue, backend login and goodbyes.

Everything else a POP3 session needs (directory, routing, failure delay, relay, logging)
lives in :mod:`proxy.session` and is the same code IMAP runs.
"""

from __future__ import annotations

from proxy.actions import Failure
from proxy.config import ProtocolSettings
from proxy.pop3.backend import pop3_backend_login
from proxy.pop3.dialogue import FAILURE_REPLIES, Pop3Dialogue
from proxy.session import Dialect


def pop3_bye(failure: Failure) -> bytes:
    """An unasked goodbye (timeout, shutdown); POP3 has no untagged replies, so it is the
    same ``-ERR`` line a failed command would get, from the dialogue's one table."""
    return FAILURE_REPLIES[failure]


def pop3_farewell(client_tail: bytes, backend_tail: bytes) -> bytes:
    """The backend closed: after QUIT that is the normal end; otherwise the server vanished."""
    last = client_tail.rstrip(b"\r\n").rsplit(b"\n", 1)[-1].strip().upper()
    if last.startswith(b"QUIT"):
        return b""
    return b"-ERR [SYS/TEMP] Connection to the mailbox server was lost.\r\n"


def pop3_dialect(settings: ProtocolSettings) -> Dialect:
    return Dialect("pop3", settings, Pop3Dialogue, pop3_backend_login, pop3_bye, pop3_farewell)
