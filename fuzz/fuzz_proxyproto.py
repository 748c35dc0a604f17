"""atheris target: PROXY protocol v1/v2 headers (proxy/proxyproto.py)."""

from __future__ import annotations

import atheris
from _harness import main, split_input

with atheris.instrument_imports():
    from proxy import proxyproto


def verdict(buf: bytes) -> object:
    try:
        return proxyproto.parse(buf)
    except proxyproto.ProxyProtocolError:
        return "error"


def test_one_input(data: bytes) -> None:
    fdp, payload = split_input(data)
    if fdp.ConsumeBool():  # steer towards the interesting formats
        payload = (b"PROXY " if fdp.ConsumeBool() else proxyproto.SIGNATURE_V2) + payload
    final = verdict(payload)
    # Reading more must never change a verdict already given.
    cut = fdp.ConsumeIntInRange(0, len(payload))
    early = verdict(payload[:cut])
    if not isinstance(early, proxyproto.NeedMore):
        assert early == final, (early, final)
    if isinstance(final, proxyproto.ProxyHeader):
        assert 0 < final.consumed <= len(payload)
        if final.source is not None and final.destination is not None:
            rebuilt = proxyproto.build_v2(*final.source, *final.destination)
            again = proxyproto.parse(rebuilt)
            assert isinstance(again, proxyproto.ProxyHeader)
            assert (again.source, again.destination) == (final.source, final.destination)


if __name__ == "__main__":
    main(test_one_input)
