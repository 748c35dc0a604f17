"""atheris target: SASL PLAIN/LOGIN decoding (proxy/sasl.py)."""

from __future__ import annotations

import atheris
from _harness import main

with atheris.instrument_imports():
    from proxy.sasl import (
        Credentials,
        SaslError,
        SaslExchange,
        decode_base64_response,
        decode_plain,
    )

MECHANISMS = ["PLAIN", "LOGIN", "plain", "login", "XOAUTH2", "PLAIN\x00"]


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    for decoder in (decode_base64_response, decode_plain):
        try:
            decoder(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 600)))
        except SaslError:
            pass
    mechanism = fdp.PickValueInList(MECHANISMS)
    initial = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300)) if fdp.ConsumeBool() else None
    try:
        exchange = SaslExchange(mechanism, initial)
        result = exchange.start()
        while not isinstance(result, Credentials) and fdp.remaining_bytes():
            result = exchange.step(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300)))
    except SaslError:
        return
    if isinstance(result, Credentials):
        assert result.authcid and result.password and "\x00" not in result.authcid


if __name__ == "__main__":
    main(test_one_input)
