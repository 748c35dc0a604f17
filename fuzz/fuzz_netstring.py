"""atheris target: Postfix socketmap framing and requests (proxy/smtp/netstring.py,
proxy/smtp/maps.py)."""

from __future__ import annotations

import atheris
from _harness import chunks, main, split_input

with atheris.instrument_imports():
    from proxy.smtp.maps import BadRequest, parse_socketmap
    from proxy.smtp.netstring import NetstringDecoder, NetstringError, encode


def run(pieces: list[bytes], limit: int) -> tuple[list[bytes], bool]:
    decoder = NetstringDecoder(limit)
    payloads: list[bytes] = []
    try:
        for piece in pieces:
            payloads += decoder.feed(piece)
            assert decoder.buffered <= limit + len(str(limit)) + 1
    except NetstringError:
        return payloads, True
    return payloads, False


def test_one_input(data: bytes) -> None:
    fdp, payload = split_input(data)
    limit = fdp.ConsumeIntInRange(0, 200)
    payloads, failed = run(chunks(fdp, payload), limit)
    reference, ref_failed = run([payload[i : i + 1] for i in range(len(payload))], limit)
    assert failed == ref_failed
    assert reference[: len(payloads)] == payloads
    if not failed:
        assert payloads == reference
        assert run([b"".join(map(encode, payloads))], limit) == (payloads, False)
    for request in payloads:
        try:
            name, key = parse_socketmap(request)
        except BadRequest:
            continue
        assert name and key


if __name__ == "__main__":
    main(test_one_input)
