"""Batch moves without a farm: the --list file, the per-user lines and events, the summary."""

from __future__ import annotations

import io
import json
import threading

import pytest

from directory.provision import UsageError
from directory.provision.drain import (
    FAILED,
    MOVED,
    SKIPPED,
    BatchView,
    DrainReport,
    UserResult,
    done_line,
    parse_list,
)
from directory.provision.move import MoveProgress, MoveReport


def test_list_file_comments_blanks_and_duplicates() -> None:
    text = (
        "# users of mail2, exported 2024-06-01\r\n"
        "alice_example_com\r\n"
        "\r\n"
        "   bob@example.com   # the one who complained\n"
        "\t# indented comment\n"
        "ALICE_EXAMPLE_COM\n"  # the same login in another case
        "carol@example.com\t# tab before the comment\n"
        "bob@example.com\n"
        "d#ve@example.com\n"  # '#' inside a local part is no comment
        "   \n"
    )
    assert parse_list(text) == [
        "alice_example_com",
        "bob@example.com",
        "carol@example.com",
        "d#ve@example.com",
    ]


def test_an_empty_list_is_empty() -> None:
    assert parse_list("") == []
    assert parse_list("# nothing yet\n\n") == []


def test_a_line_with_two_logins_is_refused_with_its_number() -> None:
    with pytest.raises(UsageError, match=r"line 3: 'bob carol' is not one uid or address"):
        parse_list("# header\nalice\nbob carol\n")


def moved(uid: str, messages: int, caught_up: int = 0, seconds: float = 2.0) -> UserResult:
    report = MoveReport(uid, "127.0.0.3", "127.0.0.2", messages=messages, caught_up=caught_up)
    report.seconds = seconds
    return UserResult(uid, MOVED, uid, report=report, resumed=messages == 0)


def test_summary_totals_rate_and_worst_exit_code() -> None:
    results = [
        moved("a", 10),
        moved("b", 0, caught_up=4),  # a finished interrupted move: what it copied then
        UserResult("c", SKIPPED, "c", reason="already there"),
        UserResult("nobody", FAILED, error="nobody: no such user", exit_code=1),
        UserResult("d", FAILED, "d", error="backend 127.0.0.2 unavailable", exit_code=3),
    ]
    report = DrainReport("127.0.0.2", "127.0.0.3", results, seconds=7.0)
    assert report.messages == 14 and report.rate == 2.0
    assert report.exit_code() == 3
    assert report.summary() == "2 moved, 1 skipped, 2 failed: 14 messages in 7.0 s (2.0 messages/s)"
    data = report.as_dict()
    assert (data["moved"], data["skipped"], data["failed"]) == (2, 1, 2)
    assert [u["status"] for u in data["users"]] == [MOVED, MOVED, SKIPPED, FAILED, FAILED]
    assert data["users"][1]["resumed"] is True and data["users"][1]["messages"] == 4
    assert data["users"][3] == {
        "login": "nobody",
        "uid": None,
        "status": FAILED,
        "error": "nobody: no such user",
        "exit": 1,
        "seconds": 0.0,
    }
    ok = DrainReport("127.0.0.2", None, results[:3], seconds=0.0)
    assert ok.exit_code() == 0 and ok.rate == 0.0
    assert DrainReport("127.0.0.2", None).exit_code() == 0


def test_done_lines() -> None:
    assert done_line(moved("a", 10, seconds=1.25), 3, 6) == "a: moved 10 messages in 1.2 s (3/6)"
    assert done_line(moved("b", 0, 4), 4, 6) == (
        "b: moved 4 messages in 2.0 s, finishing an interrupted move (4/6)"
    )
    skipped = UserResult("c@x.test", SKIPPED, "c_x_test", reason="already there")
    assert done_line(skipped, 5, 6) == "c_x_test: skipped (already there) (5/6)"
    failed = UserResult("n@x.test", FAILED, error="n@x.test: no such user", exit_code=1)
    assert done_line(failed, 6, 6) == "n@x.test: FAILED: n@x.test: no such user (6/6)"


def test_json_events_stay_whole_lines_across_threads() -> None:
    stream = io.StringIO()
    view = BatchView(stream, json_events=True)
    event = MoveProgress("u", "copy", "INBOX", 1, 2, 10, 20, 0.5)

    def work(n: int) -> None:
        for _ in range(200):
            view.progress(event)
        view.done(moved(f"u{n}", 5), n, 8)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(events) == 8 * 201
    assert sum(e["event"] == "progress" and e["uid"] == "u" for e in events) == 1600
    done = [e for e in events if e["event"] == "user-done"]
    assert sorted(e["uid"] for e in done) == [f"u{n}" for n in range(8)]
    assert all(e["status"] == MOVED and e["messages"] == 5 and e["total"] == 8 for e in done)


def test_text_view_prints_a_line_per_user_and_its_warnings() -> None:
    stream = io.StringIO()
    view = BatchView(stream, json_events=False)
    view.progress(MoveProgress("u", "copy", "INBOX", 1, 2, 10, 20, 0.5))  # no bars in a batch
    result = moved("a", 3, seconds=0.5)
    assert result.report is not None
    result.report.warnings.append("old copy kept")
    view.done(result, 1, 1)
    assert stream.getvalue() == (
        "a: moved 3 messages in 0.5 s (1/1)\nmailfarm: warning: a: old copy kept\n"
    )
