"""The bench result document rendered for people: a text summary and a self-contained HTML page.

Pure functions of the document built by :mod:`bench.run`. Charts are inline SVG drawn here,
with no plotting library: the report must open from a mail attachment or an air-gapped
admin host, and a chart of two series needs no more than rectangles and polylines.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from bench.charts import bar_chart, line_chart, xy_chart

# A blue, B orange, C grey (distinguishable for most colour-blind readers)
COLORS = ("#2563eb", "#ea580c", "#6b7280")


def _color(role: str) -> str:
    return COLORS["ABC".index(role) % len(COLORS)]


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}"


def _rate_columns(mode: str) -> tuple[str, str]:
    return {
        "fetch": ("fetches", "MB/s"),
        "idle": ("sessions", "setup/s"),
        "submit": ("messages", "msgs/s"),
    }.get(mode, ("logins", "logins/s"))


def _headline_rate(mode: str, t: dict[str, Any]) -> float | None:
    if mode == "fetch":
        return t.get("mb_per_s")
    if mode == "idle":
        return (t.get("idle") or {}).get("setup_per_s")
    return t.get("rate_per_s")


def render_text(doc: dict[str, Any]) -> str:
    mode = doc["mode"]
    count_name, rate_name = _rate_columns(mode)
    s = doc["settings"]
    lines = [
        f"mailfarm bench {mode}: {s.get('description', '')}".rstrip(),
        f"users: {doc['users']['count']} from {doc['users']['source']};"
        f" ran {doc['elapsed_s']:.1f} s",
        "",
        f"{'target':34} {count_name:>9} {'errors':>7} {rate_name:>10}"
        f" {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}",
    ]
    for t in doc["targets"]:
        lat = t.get("latency_ms") or {}
        name = f"{t['role']} {t['label']}"
        if t["label"] != t["address"]:
            name += f" ({t['address']})"
        lines.append(
            f"{name[:34]:34} {t['ok']:>9,} {t['error_total']:>7,}"
            f" {_fmt(_headline_rate(mode, t)):>10} {_fmt(lat.get('p50'), 2):>8}"
            f" {_fmt(lat.get('p90'), 2):>8} {_fmt(lat.get('p99'), 2):>8}"
            f" {_fmt(lat.get('max'), 2):>8}"
        )
    for t in doc["targets"]:
        details = _target_details(mode, t)
        if details:
            lines.append("")
            lines += [f"{t['role']}: {line}" for line in details]
    if doc.get("interrupted"):
        lines.append("")
        lines.append("interrupted (Ctrl-C): the figures cover the part that ran")
    comparisons = doc.get("comparisons") or ([doc["comparison"]] if doc.get("comparison") else [])
    for n, comparison in enumerate(comparisons, 1):
        lines.append("")
        lines.append(f"ratio: {comparison['text']}")
        p50, p99 = comparison.get("latency_p50_ratio"), comparison.get("latency_p99_ratio")
        if p50 is not None:
            lines.append(
                f"latency ratio {doc['targets'][0]['label']} / {doc['targets'][n]['label']}:"
                f" p50 {_fmt(p50, 2)}, p99 {_fmt(p99, 2)}"
            )
    return "\n".join(lines) + "\n"


def _target_details(mode: str, t: dict[str, Any]) -> list[str]:
    """Lines of detail about one target (phases, bytes, memory, CPU, errors), unprefixed."""
    out = []
    phases = t.get("phases_ms") or {}
    if phases:
        shown = "  ".join(
            f"{name} {_fmt(p['p50'], 2)}/{_fmt(p['p99'], 2)}" for name, p in phases.items() if p
        )
        out.append(f"phases p50/p99 ms: {shown}")
    if mode == "fetch":
        out.append(
            f"message {_fmt(t.get('message_size'))} B (asked {_fmt(t['requested_size'])}),"
            f" {t['fetches']:,} fetches, {t['bytes']:,} bytes, {_fmt(t['mb_per_s'], 2)} MB/s"
        )
    if mode == "submit":
        out.append(
            f"{t['messages']:,} messages of {_fmt(t['message_size'])} B submitted,"
            f" {t['bytes']:,} bytes"
        )
    resumption = t.get("tls_resumption")
    if resumption:
        share = resumption["share"]
        shown = f"{100 * share:.1f} %" if share is not None else "-"
        offered = "" if resumption["offered"] else " (--resume not given)"
        out.append(
            f"TLS sessions resumed: {resumption['resumed']:,} of"
            f" {resumption['connections']:,} ({shown}){offered}"
        )
    idle = t.get("idle")
    if idle:
        out.append(
            f"{idle['established']:,} of {idle['requested']:,} sessions established,"
            f" {idle['held']:,} held to the end, {idle['dropped']:,} dropped,"
            f" {idle['failed']:,} failed; {_fmt(idle['setup_per_s'])} set up per s"
        )
        for r in idle["rounds"]:
            if r["memory_before_kb"] is None:
                continue
            out.append(
                f"memory ({r['memory_kind']}) before {_fmt(r['memory_before_kb'] / 1024)}"
                f" MB ({r['processes_before']} processes),"
                f" holding {_fmt((r['memory_holding_kb'] or 0) / 1024)} MB"
                f" ({r['processes_holding']} processes), peak"
                f" {_fmt((r['memory_peak_kb'] or 0) / 1024)} MB;"
                f" {_fmt(r['kb_per_session'])} KB per session"
            )
    cpu = t.get("cpu")
    if cpu:
        unit, per = next(((k[7:], v) for k, v in cpu.items() if k.startswith("ms_per_")))
        tree = " and children" if cpu["tree"] else ""
        out.append(
            f"CPU of pid {','.join(map(str, cpu['pids']))}{tree}: {_fmt(cpu['seconds'], 2)}"
            f" s, {_fmt(per, 3)} ms per {unit}"
        )
        per_pid = cpu.get("per_pid") or {}
        if len(per_pid) > 1 and t["ok"]:
            out.append(
                "CPU ms per "
                + unit
                + " by process: "
                + ", ".join(
                    f"{v['name']}({pid}) {_fmt(1000 * v['seconds'] / t['ok'], 3)}"
                    for pid, v in per_pid.items()
                )
            )
    client = t.get("client_cpu") or {}
    if client.get("share_of_one_core") is not None:
        out.append(
            f"load generator CPU: {_fmt(client['seconds'], 2)} s"
            f" ({100 * client['share_of_one_core']:.0f}% of one core)"
        )
    for kind, count in t["errors"].items():
        sample = t["error_samples"].get(kind, "")
        out.append(f"error {kind}: {count:,}  e.g. {sample[:120]}")
    return out


# -- HTML ---------------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2937;
margin:0;background:#f8fafc}
main{max-width:1040px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.sub{color:#6b7280;margin:0 0 16px}
.card{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:16px;margin:12px 0}
table{border-collapse:collapse;width:100%}
th,td{padding:6px 10px;text-align:right;border-bottom:1px solid #f1f5f9;white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{color:#6b7280;font-weight:600}
.ratio{font-size:20px;font-weight:600}.swatch{display:inline-block;width:10px;height:10px;
border-radius:2px;margin-right:6px}
code{background:#f1f5f9;padding:1px 4px;border-radius:4px}
svg text{font:11px system-ui,sans-serif;fill:#4b5563}
"""


LATENCY_HEADERS = ("p50 ms", "p90 ms", "p99 ms", "max ms")


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _swatch(role: str) -> str:
    color = _color(role)
    return f'<span class="swatch" style="background:{color}"></span>'


def render_html(doc: dict[str, Any]) -> str:
    mode = doc["mode"]
    targets = doc["targets"]
    count_name, rate_name = _rate_columns(mode)
    rows = []
    for t in targets:
        lat = t.get("latency_ms") or {}
        rows.append(
            [
                _swatch(t["role"]) + escape(f"{t['role']} {t['label']}"),
                escape(t["address"]),
                _fmt(t["ok"]),
                _fmt(t["error_total"]),
                _fmt(_headline_rate(mode, t)),
                *(_fmt(lat.get(k), 2) for k in ("p50", "p90", "p99", "max")),
            ]
        )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>mailfarm bench {escape(mode)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>mailfarm bench {escape(mode)}</h1>",
        f'<p class="sub">{escape(doc["settings"].get("description", ""))} · started'
        f" {escape(doc['started'])} · {doc['elapsed_s']:.1f} s · {doc['users']['count']}"
        f" users from {escape(doc['users']['source'])}</p>",
    ]
    comparisons = doc.get("comparisons") or ([doc["comparison"]] if doc.get("comparison") else [])
    for comparison in comparisons:
        parts.append(f'<div class="card"><div class="ratio">{escape(comparison["text"])}</div>')
        if comparison.get("latency_p50_ratio") is not None:
            parts.append(
                f"<div>latency ratio p50 {_fmt(comparison['latency_p50_ratio'], 2)},"
                f" p99 {_fmt(comparison['latency_p99_ratio'], 2)}</div>"
            )
        parts.append("</div>")
    parts.append('<div class="card">')
    parts.append(
        _table(
            ["target", "address", count_name, "errors", rate_name, *LATENCY_HEADERS],
            rows,
        )
    )
    parts.append("</div>")
    parts += _charts(doc)
    parts += _detail_sections(doc)
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


def _charts(doc: dict[str, Any]) -> list[str]:
    mode, targets = doc["mode"], doc["targets"]
    out = []
    hists = [t for t in targets if t.get("histogram")]
    if hists:
        edges = hists[0]["histogram"]["edges_ms"]
        series = [
            (f"{t['role']} {t['label']}", _color(t["role"]), t["histogram"]["counts"])
            for t in hists
        ]
        what = {"fetch": "fetch", "idle": "session set-up", "submit": "submission"}.get(
            mode, "login transaction"
        )
        out.append(f"<h2>Latency of each {escape(what)} (ms, log scale)</h2>")
        out.append('<div class="card">' + bar_chart(edges, series, "ms", "count") + "</div>")
    key = "mb_per_s" if mode == "fetch" else "ok"
    width = targets[0]["timeline"]["width_s"]
    series_t = []
    rounds = doc.get("rounds", [])
    for index, t in enumerate(targets):
        values = [v / width for v in t["timeline"][key]] if key == "ok" else t["timeline"][key]
        own = [(r["start_s"], r["end_s"]) for r in rounds if r["target"] == index]
        values = only_while_running(values, width, own)
        series_t.append((f"{t['role']} {t['label']}", _color(t["role"]), values))
    unit = {"fetch": "MB/s", "idle": "sessions set up/s", "submit": "messages/s"}.get(
        mode, "logins/s"
    )
    spans = [(r["start_s"], r["end_s"], COLORS[r["target"]]) for r in doc.get("rounds", [])]
    out.append(f"<h2>Throughput over time ({escape(unit)}, {width:g} s buckets)</h2>")
    out.append('<div class="card">' + line_chart(width, series_t, "s", unit, spans) + "</div>")
    if mode == "idle":
        mem_series = []
        for t in targets:
            points = [p for r in t["idle"]["rounds"] for p in r["memory_samples"]]
            if points:
                color = _color(t["role"])
                mem_series.append((f"{t['role']} {t['label']}", color, points))
        if mem_series:
            out.append("<h2>Memory of the watched processes while holding (MB)</h2>")
            out.append('<div class="card">' + _memory_chart(mem_series) + "</div>")
    return out


def only_while_running(
    values: list[float], width: float, spans: list[tuple[float, float]]
) -> list[float | None]:
    """Blank the buckets where the target had no round, so its line breaks instead of
    dropping to zero while the other target runs."""
    if not spans:
        return list(values)
    out: list[float | None] = []
    for k, v in enumerate(values):
        lo, hi = k * width, (k + 1) * width
        out.append(v if any(a < hi and b > lo for a, b in spans) else None)
    return out


def _memory_chart(series: list[tuple[str, str, list[tuple[float, int]]]]) -> str:
    scaled = [(name, color, [(x, kb / 1024) for x, kb in pts]) for name, color, pts in series]
    return xy_chart(scaled, "s", "MB")


def _detail_sections(doc: dict[str, Any]) -> list[str]:
    out = ["<h2>Details</h2>"]
    for t in doc["targets"]:
        items = [escape(line) for line in _target_details(doc["mode"], t)]
        if not items:
            continue
        out.append(
            f'<div class="card"><b>{_swatch(t["role"])}{escape(t["role"] + " " + t["label"])}'
            f"</b><ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul></div>"
        )
    settings = doc["settings"]
    rows = [[escape(str(k)), f"<code>{escape(str(v))}</code>"] for k, v in settings.items()]
    out.append('<div class="card">' + _table(["setting", "value"], rows) + "</div>")
    return out
