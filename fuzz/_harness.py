"""Shared by the atheris targets: how TCP may split bytes, and the fuzzer's main loop.

Every target checks two things on each input: the parser raises nothing but its own
protocol error, and cutting the same bytes into different chunks changes nothing (the
bugs that matter in an incremental parser hide at chunk boundaries).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import atheris


def chunks(fdp: atheris.FuzzedDataProvider, data: bytes) -> list[bytes]:
    """``data`` cut where the fuzzer says: the same input can be tried at every split."""
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        size = fdp.ConsumeIntInRange(1, 64) if fdp.remaining_bytes() else len(data)
        out.append(data[pos : pos + size])
        pos += size
    return out


def split_input(data: bytes) -> tuple[atheris.FuzzedDataProvider, bytes]:
    """The first bytes steer (limits, chunk sizes); the rest is what the peer sends."""
    fdp = atheris.FuzzedDataProvider(data)
    payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 4096))
    return fdp, payload


def main(test_one_input: Callable[[bytes], None]) -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


def drive(dialogue: object, pieces: list[bytes], fdp: atheris.FuzzedDataProvider) -> list[bytes]:
    """Play the session core against a pure pre-login dialogue (proxy.actions contract),
    letting the fuzzer decide whether each login succeeds."""
    from proxy.actions import Authenticate, BackendInfo, Close, Failure, Send, StartTls

    out = [dialogue.greeting()]  # type: ignore[attr-defined]
    for piece in pieces:
        pending = dialogue.receive(piece)  # type: ignore[attr-defined]
        while pending:
            action = pending.pop(0)
            if isinstance(action, Send):
                out.append(action.data)
            elif isinstance(action, Close):
                return out
            elif isinstance(action, StartTls):
                dialogue.tls_started()  # type: ignore[attr-defined]
            else:
                assert isinstance(action, Authenticate), action
                if fdp.ConsumeBool():
                    out.append(dialogue.succeeded(BackendInfo()))  # type: ignore[attr-defined]
                    dialogue.take_pending()  # type: ignore[attr-defined]
                    return out
                failure = fdp.PickValueInList(list(Failure))
                out.append(dialogue.failed(failure))  # type: ignore[attr-defined]
                pending.extend(dialogue.resume())  # type: ignore[attr-defined]
    return out


def dialogue_target(make: Callable[[object], object]) -> Callable[[bytes], None]:
    from proxy.actions import DialogueEnv

    def test_one_input(data: bytes) -> None:
        fdp, payload = split_input(data)
        env = DialogueEnv(
            tls_offered=fdp.ConsumeBool(),
            tls_active=fdp.ConsumeBool(),
            plaintext_allowed=fdp.ConsumeBool(),
            max_line=fdp.ConsumeIntInRange(8, 300),
            max_literal=fdp.ConsumeIntInRange(0, 300),
        )
        for reply in drive(make(env), chunks(fdp, payload), fdp):
            assert reply.endswith(b"\r\n") and b"\x00" not in reply, reply

    return test_one_input
