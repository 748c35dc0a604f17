"""The move's progress line and JSON events (what an operator or a script sees)."""

from __future__ import annotations

import io
import json

from directory.provision.move import MoveProgress
from directory.provision.progressview import ProgressView, bar_line, human_bytes


def event(**changes: object) -> MoveProgress:
    base = dict(
        uid="alice_x",
        phase="copy",
        folder="Sent",
        messages_done=250,
        messages_total=1000,
        bytes_done=5 * 1024 * 1024,
        bytes_total=20 * 1024 * 1024,
        seconds=2.0,
    )
    return MoveProgress(**{**base, **changes})  # type: ignore[arg-type]


def test_bar_shows_share_rate_and_time_left() -> None:
    line = bar_line(event())
    assert line.startswith("copy     [######------------------] 250/1000 messages, 5.0 MB")
    assert "2.5 MB/s" in line and "6 s left" in line and line.endswith("Sent")


def test_without_sizes_the_bar_counts_messages() -> None:
    line = bar_line(event(bytes_total=0, messages_done=500))
    assert "[############------------]" in line


def test_json_events_are_one_object_per_line() -> None:
    out = io.StringIO()
    view = ProgressView(out, json_events=True)
    view.update(event())
    view.update(event(phase="done", folder=None))
    view.close()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["phase"] for e in lines] == ["copy", "done"]
    assert lines[0]["event"] == "progress" and lines[0]["bytes_total"] == 20 * 1024 * 1024


def test_quiet_when_not_a_terminal() -> None:
    out = io.StringIO()
    view = ProgressView(out, json_events=False)
    view.update(event())
    view.close()
    assert out.getvalue() == ""


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (512, 2048, 3 * 1024**3)] == ["512 B", "2.0 KB", "3.0 GB"]
