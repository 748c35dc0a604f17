"""bench.report and bench.charts: text and self-contained HTML with inline SVG (pure)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.charts import bar_chart, line_chart, nice_ticks, xy_chart
from bench.clients import BenchError, Endpoint
from bench.idle import IdleRound
from bench.load import Options, Recorder
from bench.report import only_while_running, render_html, render_text
from bench.run import Spec, Watch, build_document

VOID = {"meta", "br", "img", "input", "link", "hr"}


class Balanced(HTMLParser):
    """Checks that every non-void element is closed in order (a cheap validity check)."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.svgs = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "svg":
            self.svgs += 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "svg":
            self.svgs += 1

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-6:])
        self.stack.pop()


def fake_recorder(label: str, base: float, errors: int = 0) -> Recorder:
    rec = Recorder(Endpoint("127.0.0.1", 1143, label=label))
    for k in range(200):
        t = k * 0.05
        latency = base * (1 + (k % 17) / 10)
        rec.success(t, latency, {"connect": latency / 10, "login": latency / 2}, size=1000)
    for k in range(errors):
        rec.failure(k * 0.1, BenchError("auth-failed", "b1 NO [AUTHENTICATIONFAILED] <x>"))
    rec.active = 10.0
    rec.message_size = 1000
    return rec


def document(mode: str = "logins", compare: bool = True, label: str = "mailfarm") -> dict:
    recs = [fake_recorder(label, 0.010, errors=3)]
    if compare:
        recs.append(fake_recorder("direct", 0.008))
    spec = Spec(
        mode=mode,
        targets=tuple(r.endpoint for r in recs),
        users=(),
        users_source="test",
        workers=4,
        options=Options(),
        duration=10,
        size=1000,
        sessions=10,
        watches=(Watch(),),
        settings={"description": "IMAP test <run>", "workers": 4},
    )
    spans = [(0, 0.0, 5.0), (1, 5.0, 10.0)] if compare else [(0, 0.0, 10.0)]
    held = IdleRound(10, 10, 0, 10, 1.0, 3.0, "pss", 1000, 1400, 1500, [(1.0, 1200)], 2, 3)
    idle = [[held]]
    idle += [[IdleRound(10, 9, 1, 8, 1.0, 3.0)]] if compare else []
    return build_document(spec, recs, spans, idle, 10.0, "2026-01-01T00:00:00+00:00")


@pytest.mark.parametrize("mode", ["logins", "fetch", "idle"])
@pytest.mark.parametrize("compare", [True, False])
def test_html_is_balanced_and_has_svg(mode: str, compare: bool) -> None:
    page = render_html(document(mode, compare))
    assert page.startswith("<!DOCTYPE html>")
    parser = Balanced()
    parser.feed(page)
    parser.close()
    assert parser.stack == []
    assert parser.svgs >= 2
    for svg in re.findall(r"<svg.*?</svg>", page, re.S):
        ET.fromstring(svg)  # each chart is well-formed XML on its own
    assert "<script" not in page  # self-contained and inert
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_labels_are_escaped() -> None:
    page = render_html(document(label="<script>alert(1)</script>"))
    assert "<script>" not in page
    assert "&lt;script&gt;" in page


def test_text_summary_and_ratio() -> None:
    doc = document()
    text = render_text(doc)
    assert "mailfarm / direct = " in text
    assert "auth-failed: 3" in text
    assert doc["comparison"]["ratio"] == pytest.approx(20 / 20)
    assert doc["comparison"]["latency_p50_ratio"] == pytest.approx(10 / 8)
    json.dumps(doc)  # the document is JSON-able as is


def test_idle_document_and_text() -> None:
    doc = document("idle")
    idle = doc["targets"][0]["idle"]
    assert idle["held"] == 10
    assert idle["kb_per_session"] == pytest.approx(40.0)
    assert "40.0 KB per session" in render_text(doc)
    assert doc["comparison"]["metric"] == "idle sessions set up per s"


def test_fetch_document_counts_bytes() -> None:
    target = document("fetch")["targets"][0]
    assert target["bytes"] == 200 * 1000
    assert target["mb_per_s"] == pytest.approx(200 * 1000 / 10 / 1e6)


def test_only_while_running_blanks_other_rounds() -> None:
    assert only_while_running([1, 2, 3, 4], 1.0, [(0.0, 2.0)]) == [1, 2, None, None]
    assert only_while_running([1, 2], 1.0, []) == [1, 2]


@given(st.floats(-1e6, 1e6), st.floats(0, 1e6))
def test_nice_ticks_cover_the_range(lo: float, span: float) -> None:
    ticks = nice_ticks(lo, lo + span)
    assert ticks == sorted(ticks)
    assert 1 <= len(ticks) <= 50


def charts() -> list[str]:
    return [
        bar_chart([1, 2, 4], [("A", "#000", [1, 0]), ("B & C", "#111", [0, 2])], "ms", "n"),
        line_chart(0.5, [("A", "#000", [1.0, None, 2.0, 3.0])], "s", "/s", [(0, 1, "#000")]),
        line_chart(1.0, [], "s", "/s"),
        xy_chart([("A", "#000", [(0.0, 1.0), (2.0, 3.0)])], "s", "MB"),
        xy_chart([], "s", "MB"),
    ]


@pytest.mark.parametrize("index", range(5))
def test_charts_are_well_formed_svg(index: int) -> None:
    root: Any = ET.fromstring(charts()[index])
    assert root.tag.endswith("svg")
