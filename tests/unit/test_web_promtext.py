"""The console's Prometheus text parser: what mailfarm pages hold, and never raising."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from proxy.metrics import Metrics
from web.promtext import Sample, parse, parse_line


def test_plain_and_labelled_samples() -> None:
    text = (
        "# HELP mailfarm_logins_total Login attempts by outcome.\n"
        "# TYPE mailfarm_logins_total counter\n"
        'mailfarm_logins_total{protocol="imap",outcome="ok"} 3.0\n'
        "mailfarm_route_cache_entries 12\n"
        "\n"
        'with_ts{a="1"} 2 1712345678901\n'
        "empty_braces{} 1\n"
        'trailing_comma{a="x",} 1e3\n'
    )
    assert parse(text) == [
        Sample("mailfarm_logins_total", (("protocol", "imap"), ("outcome", "ok")), 3.0),
        Sample("mailfarm_route_cache_entries", (), 12.0),
        Sample("with_ts", (("a", "1"),), 2.0, 1712345678901),
        Sample("empty_braces", (), 1.0),
        Sample("trailing_comma", (("a", "x"),), 1000.0),
    ]
    assert parse(text)[0].label("outcome") == "ok"
    assert parse(text)[0].label("missing", "-") == "-"


def test_escaped_label_values() -> None:
    (sample,) = parse('m{path="C:\\\\dir",q="say \\"hi\\"",nl="a\\nb",brace="}{,"} 1\n')
    assert dict(sample.labels) == {
        "path": "C:\\dir",
        "q": 'say "hi"',
        "nl": "a\nb",
        "brace": "}{,",
    }


def test_special_values() -> None:
    values = [s.value for s in parse("a +Inf\nb -Inf\nc NaN\nd 1.5e-3\ne -0\nf .5\n")]
    assert values[0] == math.inf and values[1] == -math.inf and math.isnan(values[2])
    assert values[3:] == [0.0015, 0.0, 0.5]


def test_bytes_and_crlf() -> None:
    assert parse(b"a 1\r\nb 2\r\n\xff\xfe 3\n") == [Sample("a", (), 1.0), Sample("b", (), 2.0)]


def test_malformed_lines_are_skipped_and_the_rest_kept() -> None:
    bad = [
        "no_value",
        "1name 2",
        'm{a="x"}1',  # no blank before the value
        'm {a="x"} 1',  # blank before the brace
        'm{a="x" 1',  # unclosed
        "m{a=x} 1",  # unquoted
        'm{a="x\\q"} 1',  # unknown escape
        'm{a="1",a="2"} 1',  # label twice
        'm{a="x"b="y"} 1',  # no comma
        'm{="x"} 1',
        "m 1_000",  # Python reads underscores, Prometheus does not
        "m 0x10",
        "m 1 2 3",
        "m 1 1.5",  # timestamps are integers
        "m 1 " + "9" * 5000,  # would be an int() too big to convert
        "m abc",
        'm{a="unterminated} 1',
    ]
    text = "\n".join(["good 1", *bad, "good 2"])
    assert parse(text) == [Sample("good", (), 1.0), Sample("good", (), 2.0)]
    for line in bad:
        assert parse_line(line) is None, line


def test_limit() -> None:
    assert len(parse("a 1\n" * 50, limit=10)) == 10


def test_same_samples_as_prometheus_client_on_a_mailfarm_page() -> None:
    metrics = Metrics()
    metrics.session_started("imap")
    metrics.login("imap", "ok")
    metrics.backend_connect("imap", 0.003)
    body, _ = metrics.render()
    ours = sorted((s.name, tuple(sorted(s.labels)), s.value) for s in parse(body))
    theirs = sorted(
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    )
    assert ours == theirs and ours


_PIECES = st.sampled_from(
    ["m", "{", "}", '"', "\\", ",", "=", " ", "\t", "\n", "\r", "a", "1", ".", "e", "+", "-",
     "Inf", "NaN", "#", "_", ":", "\x00", "é", 'l="v"', "\\n", "\\\"", "9" * 30]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECES, max_size=60).map("".join))
def test_never_raises_on_near_miss_input(text: str) -> None:
    for sample in parse(text):
        assert isinstance(sample.value, float) and isinstance(sample.name, str)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=500) | st.text(max_size=500))
def test_never_raises_on_anything(data: bytes | str) -> None:
    parse(data)


@given(
    st.dictionaries(
        st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True),
        st.text(max_size=20),
        max_size=4,
    ),
    st.floats(allow_nan=False),
)
def test_round_trip_of_escaped_values(labels: dict[str, str], value: float) -> None:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    inner = ",".join(f'{k}="{esc(v)}"' for k, v in labels.items())
    samples = parse(f"metric{{{inner}}} {value!r}\n")
    assert samples == [Sample("metric", tuple(labels.items()), value)]
