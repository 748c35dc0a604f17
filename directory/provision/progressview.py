"""How a move's progress is shown: a bar on a terminal, JSON lines for scripts, or nothing.

With ``--json`` the final result is one object on stdout, so progress goes to stderr as
one JSON object per line (``{"event": "progress", "phase": "copy", ...}``), which a
script or a test can follow while the move runs. On a terminal without ``--json``: one
line redrawn in place, with messages and bytes copied, the rate and the time left.
"""

from __future__ import annotations

import json
import time
from typing import TextIO

from directory.provision.move import MoveProgress

BAR = 24


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def bar_line(event: MoveProgress) -> str:
    """One terminal line for ``event`` (pure, so it can be tested)."""
    total = event.bytes_total or event.messages_total
    done = event.bytes_done if event.bytes_total else event.messages_done
    share = min(1.0, done / total) if total else 1.0
    filled = int(share * BAR)
    bar = "#" * filled + "-" * (BAR - filled)
    rate = event.bytes_done / event.seconds if event.seconds > 0 else 0.0
    left = ""
    if event.phase == "copy" and 0 < share < 1 and event.seconds > 0:
        left = f", {int(event.seconds * (1 - share) / share)} s left"
    where = f" {event.folder}" if event.folder else ""
    return (
        f"{event.phase:<8} [{bar}] {event.messages_done}/{event.messages_total} messages, "
        f"{human_bytes(event.bytes_done)}, {human_bytes(rate)}/s{left}{where}"
    )


class ProgressView:
    def __init__(self, stream: TextIO, json_events: bool) -> None:
        self.stream = stream
        self.json_events = json_events
        self.tty = stream.isatty()
        self._shown = 0.0
        self._width = 0

    def update(self, event: MoveProgress) -> None:
        if self.json_events:
            print(json.dumps(event.as_dict()), file=self.stream, flush=True)
            return
        if not self.tty:
            return
        now = time.monotonic()
        if event.phase == "copy" and now - self._shown < 0.1:  # redraw at most 10 times/s
            return
        self._shown = now
        line = bar_line(event)
        pad = " " * max(0, self._width - len(line))
        self._width = len(line)
        print(f"\r{line}{pad}", end="", file=self.stream, flush=True)

    def close(self) -> None:
        if self.tty and not self.json_events and self._width:
            print(file=self.stream, flush=True)
