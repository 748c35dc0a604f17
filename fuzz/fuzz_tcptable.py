"""atheris target: Postfix tcp_table requests (proxy/smtp/tcptable.py)."""

from __future__ import annotations

import atheris
from _harness import chunks, main, split_input

with atheris.instrument_imports():
    from proxy.smtp.tcptable import Get, LineDecoder, TcpTableError, decode, encode, parse_request


def test_one_input(data: bytes) -> None:
    fdp, payload = split_input(data)
    max_line = fdp.ConsumeIntInRange(1, 300)
    decoder = LineDecoder(max_line)
    try:
        for piece in chunks(fdp, payload):
            for line in decoder.feed(piece):
                assert b"\n" not in line and len(line) <= max_line
                try:
                    request = parse_request(line)
                except TcpTableError:
                    continue
                assert isinstance(request, Get) and request.key
                assert parse_request(b"get " + encode(request.key)) == request
    except TcpTableError:
        pass
    assert decode(encode(payload)) == payload


if __name__ == "__main__":
    main(test_one_input)
