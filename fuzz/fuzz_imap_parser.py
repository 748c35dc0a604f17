"""atheris target: the IMAP pre-login command reader (proxy/imap/parser.py)."""

from __future__ import annotations

import atheris
from _harness import chunks, main, split_input

with atheris.instrument_imports():
    from proxy.imap.parser import (
        Command,
        CommandReader,
        ContinuationNeeded,
        LiteralTooLong,
        Malformed,
        RawLine,
        TooLong,
    )

EVENTS = Command | ContinuationNeeded | TooLong | LiteralTooLong | Malformed | RawLine


def run(pieces: list[bytes], max_line: int, max_literal: int) -> list[object]:
    reader = CommandReader(max_line, max_literal)
    events: list[object] = []
    for piece in pieces:
        reader.feed(piece)
        while (event := reader.next_event()) is not None:
            assert isinstance(event, EVENTS), event
            events.append(event)
            if isinstance(event, Command) and event.name == "AUTHENTICATE":
                reader.expect_raw_line()
        # Drained: one partial command at most, plus the chunk just fed.
        assert len(reader._buf) <= max_line + 2 * max_literal + max(len(piece), 32)
    return events


def test_one_input(data: bytes) -> None:
    fdp, payload = split_input(data)
    max_line = fdp.ConsumeIntInRange(1, 200)
    max_literal = fdp.ConsumeIntInRange(0, 64)
    pieces = chunks(fdp, payload)
    assert run(pieces, max_line, max_literal) == run([payload], max_line, max_literal)


if __name__ == "__main__":
    main(test_one_input)
