"""The backend-unavailable warning always says why, even for exceptions without text."""

from __future__ import annotations

import ssl

import pytest

from proxy.backend import BackendError
from proxy.session import _reason
from proxy.stream import ConnectionClosed, TlsFailed


@pytest.mark.parametrize(
    "exc",
    [TimeoutError(), ConnectionClosed(), OSError(), TlsFailed(), ssl.SSLError(), ValueError()],
)
def test_reason_is_never_empty(exc: BaseException) -> None:
    assert _reason(exc).strip()


def test_reason_names_the_kind_and_keeps_the_text() -> None:
    assert _reason(TimeoutError()) == "no answer within backend_timeout"
    assert _reason(ConnectionRefusedError(111, "Connection refused")) == (
        "ConnectionRefusedError: [Errno 111] Connection refused"
    )
    assert _reason(BackendError("backend said b'* BYE'")) == "BackendError: backend said b'* BYE'"
