"""``deploy/grafana-dashboard.json`` and ``deploy/prometheus-alerts.yml`` against the code.

A dashboard or an alert naming a metric the proxy does not export shows an empty panel, or
an alert that can never fire, and nobody notices until the day it should have. So every
PromQL expression in both files may name only series that :class:`proxy.metrics.Metrics`
registers, read from a registry built as the proxy builds it; and every alert OPERATIONS.md
describes is a rule, with its threshold.

PyYAML is not a dependency of mailfarm, so the rules file keeps to a small subset of YAML
(block mappings and lists, double-quoted and plain scalars, ``|`` blocks) read by the
parser here. Prometheus's own ``promtool`` (unpacked by ``.ci/fetch-promtool``) then checks
the file in full and runs every alert on made-up series, so a threshold, a ``for:`` or an
annotation template that does not do what OPERATIONS.md says fails here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from proxy.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana-dashboard.json"
ALERTS = REPO / "deploy" / "prometheus-alerts.yml"
OPERATIONS = REPO / "OPERATIONS.md"

# -- a parser for the subset of YAML the rules file uses -----------------------------------


def _scalar(text: str) -> Any:
    if text.startswith('"'):
        return json.loads(text)  # the file's double-quoted strings use only JSON escapes
    if text.startswith("'"):
        assert text.endswith("'"), text
        return text[1:-1].replace("''", "'")
    if re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    assert not text.startswith(("{", "[", "&", "*", "!", "|", ">")), f"not in the subset: {text}"
    return text


def _lines(text: str) -> list[tuple[int, str]]:
    out = []
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        assert "\t" not in raw[: len(raw) - len(raw.lstrip())], "tabs in indentation"
        out.append((len(raw) - len(raw.lstrip(" ")), raw.rstrip()))
    return out


def _block(lines: list[tuple[int, str]], i: int, indent: int) -> tuple[Any, int]:
    if lines[i][1].strip().startswith("- ") or lines[i][1].strip() == "-":
        items = []
        while i < len(lines) and lines[i][0] == indent and lines[i][1].strip().startswith("-"):
            rest = lines[i][1].strip()[1:].lstrip()
            if ":" in rest and not rest.startswith('"'):  # a mapping as the item
                lines[i] = (indent + 2, " " * (indent + 2) + rest)
                value, i = _block(lines, i, indent + 2)
            else:
                value, i = _scalar(rest), i + 1
            items.append(value)
        return items, i
    mapping: dict[str, Any] = {}
    while i < len(lines) and lines[i][0] == indent:
        key, colon, rest = lines[i][1].strip().partition(":")
        assert colon and key and " " not in key, f"not a key: {lines[i][1]!r}"
        assert key not in mapping, f"{key} twice"
        rest = rest.strip()
        if rest == "|":
            body = []
            i += 1
            while i < len(lines) and lines[i][0] > indent:
                body.append(lines[i][1])
                i += 1
            margin = min(len(b) - len(b.lstrip(" ")) for b in body)
            mapping[key] = "".join(b[margin:] + "\n" for b in body)
        elif rest:
            mapping[key], i = _scalar(rest), i + 1
        else:
            assert i + 1 < len(lines) and lines[i + 1][0] > indent, f"{key}: nothing under it"
            mapping[key], i = _block(lines, i + 1, lines[i + 1][0])
    return mapping, i


def load_yaml_subset(text: str) -> Any:
    lines = _lines(text)
    value, end = _block(lines, 0, lines[0][0])
    assert end == len(lines), f"unparsed from line {lines[end][1]!r}"
    return value


def test_the_subset_parser() -> None:
    text = 'a:\n  - b: 1\n    c: "x \\" y"\n  - d\ne: |\n  one\n    two\nf: plain text\n'
    assert load_yaml_subset(text) == {
        "a": [{"b": 1, "c": 'x " y'}, "d"],
        "e": "one\n  two\n",
        "f": "plain text",
    }


# -- the metric names the proxy exports ----------------------------------------------------


class _Cache:
    hits = misses = 0

    def __len__(self) -> int:
        return 0


class _Directory:
    cache = _Cache()


def exported_names() -> set[str]:
    """Every series name ``/metrics`` can show, from the registry the proxy builds (the
    route cache collector and the process collector included)."""
    metrics = Metrics(_Directory())
    return {sample.name for family in metrics.registry.collect() for sample in family.samples}


_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "atan2", "inf", "nan",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The series an expression reads: identifiers that are neither functions, aggregation
    or matching clauses, label names inside ``{...}``, durations, nor strings."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values, regexes
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges, $__rate_interval
    clause = r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
    text = re.sub(clause, " ", text)
    names = set()
    for m in re.finditer(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        if re.match(r"\s*\(", text[m.end() :]) or m.group() in _KEYWORDS:
            continue
        names.add(m.group())
    return names


def test_metric_names_parser() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, protocol) (rate(x_bucket{a="b",c=~"d|e"}'
        "[$__rate_interval]))) / on (instance) y > 0.8 and count by (i) (z)"
    )
    assert metric_names(expr) == {"x_bucket", "y", "z"}


# -- the dashboard -------------------------------------------------------------------------


def dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


def test_dashboard_parses_and_names_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["schemaVersion"] >= 36  # Grafana 9/10 dashboards
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert variables["instance"]["type"] == "query"
    exported = exported_names()
    definition = variables["instance"]["definition"]
    m = re.fullmatch(r"label_values\((\w+),\s*instance\)", definition)
    assert m and m.group(1) in exported, definition

    exprs = dashboard_exprs(dashboard)
    titles = {title for title, _ in exprs}
    for wanted in (
        "Sessions by protocol and state",
        "Logins/s by outcome",
        "Failed-login ratio",
        "Backend connect latency",
        "Directory lookups by result",
        "Connections refused by reason",
        "Bytes in/out",
    ):
        assert wanted in titles
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for title, expr in exprs:
        assert 'instance=~"$instance"' in expr, (title, expr)
        names = metric_names(expr)
        assert names, (title, expr)
        assert names <= exported, (title, names - exported)
    latency = [e for t, e in exprs if t == "Backend connect latency"]
    assert [re.search(r"histogram_quantile\(([0-9.]+)", e).group(1) for e in latency] == [  # type: ignore[union-attr]
        "0.5",
        "0.95",
        "0.99",
    ]


# -- the alert rules -----------------------------------------------------------------------


def alert_rules() -> dict[str, dict[str, Any]]:
    document = load_yaml_subset(ALERTS.read_text(encoding="utf-8"))
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    by_name = {rule["alert"]: rule for rule in rules}
    assert len(by_name) == len(rules), "an alert name twice"
    return by_name


def test_alert_rules_parse_and_name_only_exported_metrics() -> None:
    exported = exported_names()
    for name, rule in alert_rules().items():
        assert re.fullmatch(r"Mailfarm[A-Z][A-Za-z]+", name)
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, name
        assert re.fullmatch(r"[0-9]+[smh]", rule["for"]), name
        assert rule["labels"]["severity"] in ("page", "critical", "warning"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        names = metric_names(rule["expr"])
        assert names and names <= exported, (name, names - exported)


def test_every_alert_of_operations_md_is_a_rule_with_its_threshold() -> None:
    """OPERATIONS.md's "Queries and alerts worth having" are the contract: each one with a
    threshold there is a rule here, over the same series and with the same threshold."""
    rules = alert_rules()
    text = OPERATIONS.read_text(encoding="utf-8")
    block = text[text.index("Queries and alerts worth having") :]
    block = block[: block.index("```", block.index("```promql") + 3)]
    assert "deploy/prometheus-alerts.yml" in text and "deploy/grafana-dashboard.json" in text
    expected = {
        # alert: (words of OPERATIONS.md, series, threshold in the expression)
        "MailfarmLoginInfrastructureFailures": (
            "share of logins failing for infrastructure reasons",
            "mailfarm_logins_total",
            "> 0.05",
        ),
        "MailfarmDirectoryDown": ("directory down", "mailfarm_directory_lookups_total", "> 0"),
        "MailfarmRouteCacheHitRatioLow": (
            "route cache hit ratio",
            "mailfarm_route_cache_hits_total",
            "< 0.9",
        ),
        "MailfarmFileDescriptorsRunningOut": (
            "descriptors running out",
            "process_open_fds",
            "> 0.8",
        ),
    }
    assert set(rules) == set(expected)
    for name, (words, series, threshold) in expected.items():
        assert words in block.lower(), words
        rule = rules[name]
        assert series in rule["expr"], name
        assert threshold in " ".join(rule["expr"].split()), (name, threshold)
        assert words in rule["annotations"]["description"].lower(), name
    assert "(5 %)" in rules["MailfarmLoginInfrastructureFailures"]["annotations"]["description"]
    assert "5 %" in block


def promtool() -> str | None:
    """Prometheus's own checker: on PATH, or where .ci/fetch-promtool unpacks it."""
    root = os.environ.get("MAILFARM_PROMTOOL_ROOT", "/var/cache/mailfarm/prometheus")
    unpacked = Path(root) / "usr" / "bin" / "promtool"
    return shutil.which("promtool") or (str(unpacked) if unpacked.is_file() else None)


needs_promtool = pytest.mark.skipif(
    promtool() is None, reason="promtool not found (bash .ci/fetch-promtool)"
)


@needs_promtool
def test_promtool_check_rules() -> None:
    done = subprocess.run(
        [promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _alert_case(
    series: dict[str, str], alert: str, quiet_at: str, firing_at: str, labels: dict[str, str],
    summary: str,
) -> dict[str, Any]:
    """One promtool unit test: the alert is silent at ``quiet_at`` (its ``for:`` not yet
    over) and fires at ``firing_at`` with these labels and this rendered summary. The
    description is the rule's own, rendered for the labels the same way."""
    rule = alert_rules()[alert]
    description = rule["annotations"]["description"]
    for name, value in labels.items():
        description = description.replace("{{ $labels." + name + " }}", value)
    return {
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in series.items()],
        "alert_rule_test": [
            {"eval_time": quiet_at, "alertname": alert, "exp_alerts": []},
            {
                "eval_time": firing_at,
                "alertname": alert,
                "exp_alerts": [
                    {
                        "exp_labels": {**labels, "severity": rule["labels"]["severity"]},
                        "exp_annotations": {"summary": summary, "description": description},
                    }
                ],
            },
        ],
    }


@needs_promtool
def test_alerts_fire_on_their_thresholds_and_not_below(tmp_path: Path) -> None:
    """Each alert of OPERATIONS.md, run by Prometheus's own rule engine on made-up series:
    it fires above its threshold once its ``for:`` has passed, with the annotations an
    operator reads, and stays silent just below the threshold."""
    mf1 = 'instance="mf1:9100"'
    logins = 'mailfarm_logins_total{' + mf1 + ',protocol="imap",outcome="%s"}'
    lookups = 'mailfarm_directory_lookups_total{' + mf1 + ',result="%s"}'
    tests = [
        # 10 of 110 logins a minute fail for infrastructure reasons: 9.1 % > 5 %.
        _alert_case(
            {logins % "ok": "0+100x40", logins % "directory-unavailable": "0+10x40"},
            "MailfarmLoginInfrastructureFailures", "4m", "12m", {},
            "9.091% of logins fail for infrastructure reasons",
        ),
        # Just below: 5 of 105 (4.8 %) never fires.
        {
            "interval": "1m",
            "input_series": [
                {"series": logins % "ok", "values": "0+100x40"},
                {"series": logins % "backend-unavailable", "values": "0+5x40"},
            ],
            "alert_rule_test": [
                {"eval_time": "30m", "alertname": "MailfarmLoginInfrastructureFailures",
                 "exp_alerts": []},
            ],
        },
        _alert_case(
            {lookups % "found": "0+50x20", lookups % "stale": "0+1x20"},
            "MailfarmDirectoryDown", "1m", "5m", {"instance": "mf1:9100"},
            "Directory down for mf1:9100: logins served stale or refused",
        ),
        # Half the logins miss the route cache for longer than 30 minutes.
        _alert_case(
            {
                "mailfarm_route_cache_hits_total{" + mf1 + "}": "0+50x60",
                "mailfarm_route_cache_misses_total{" + mf1 + "}": "0+50x60",
            },
            "MailfarmRouteCacheHitRatioLow", "20m", "40m", {"instance": "mf1:9100"},
            "Route cache hit ratio of mf1:9100 is 50%",
        ),
        # 900 of 1,024 descriptors in use on a proxy that has sessions.
        _alert_case(
            {
                "process_open_fds{" + mf1 + "}": "900x30",
                "process_max_fds{" + mf1 + "}": "1024x30",
                "mailfarm_sessions{" + mf1 + ',protocol="imap",state="proxied"}': "440x30",
            },
            "MailfarmFileDescriptorsRunningOut", "5m", "15m", {"instance": "mf1:9100"},
            "mf1:9100 uses 87.89% of its file descriptors",
        ),
    ]
    covered = {t["alert_rule_test"][0]["alertname"] for t in tests}
    assert covered == set(alert_rules()), "every alert needs a case"
    cases = tmp_path / "alerts-test.yml"  # JSON is YAML: promtool reads it as such
    cases.write_text(
        json.dumps({"rule_files": [str(ALERTS)], "evaluation_interval": "1m", "tests": tests})
    )
    done = subprocess.run(
        [promtool(), "test", "rules", str(cases)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
