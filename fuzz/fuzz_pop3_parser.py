"""atheris target: the POP3 pre-login line reader and command splitter
(proxy/pop3/parser.py)."""

from __future__ import annotations

import atheris
from _harness import chunks, main, split_input

with atheris.instrument_imports():
    from proxy.pop3.parser import LineReader, TooLong, parse_command


def run(pieces: list[bytes], max_line: int) -> list[object]:
    reader = LineReader(max_line)
    out: list[object] = []
    for piece in pieces:
        reader.feed(piece)
        while (line := reader.next_line()) is not None:
            if isinstance(line, bytes):
                assert b"\n" not in line and len(line) <= max_line
                command = parse_command(line)
                assert command is None or command.name.isascii()
            else:
                assert isinstance(line, TooLong)
            out.append(line)
        assert reader.buffered <= max_line + len(piece)
    return out


def test_one_input(data: bytes) -> None:
    fdp, payload = split_input(data)
    max_line = fdp.ConsumeIntInRange(2, 200)
    assert run(chunks(fdp, payload), max_line) == run([payload], max_line)


if __name__ == "__main__":
    main(test_one_input)
