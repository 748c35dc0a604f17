"""The dashboard's arithmetic: rates from counters, resets, sessions counted by backend."""

from __future__ import annotations

from web.dashboard import (
    Counters,
    add_counts,
    backend_host,
    counters_of,
    increase,
    login_rates,
    login_totals,
    per_minute,
    public_url,
    restarted,
    sessions_by_backend,
    sessions_by_protocol,
)
from web.promtext import parse

PAGE = """\
# TYPE mailfarm_logins_total counter
mailfarm_logins_total{protocol="imap",outcome="ok"} 10
mailfarm_logins_total{protocol="imap",outcome="auth-failed"} 4
mailfarm_logins_total{protocol="pop3",outcome="ok"} 2
mailfarm_logins_total{protocol="imap",outcome="too-many-failures"} 1
mailfarm_logins_total{protocol="imap",outcome="weird"} NaN
mailfarm_sessions{protocol="imap",state="preauth"} 1
mailfarm_sessions{protocol="imap",state="proxied"} 7
mailfarm_sessions{protocol="pop3",state="proxied"} 0
process_start_time_seconds 1000.25
"""


def counters(at: float, started: float | None = 1000.0, **logins: float) -> Counters:
    return Counters(at, started, {("imap", k.replace("_", "-")): v for k, v in logins.items()})


def test_counters_and_sessions_of_a_page() -> None:
    samples = parse(PAGE)
    c = counters_of(samples, at=5.0)
    assert c.at == 5.0 and c.started == 1000.25
    assert c.logins == {
        ("imap", "ok"): 10,
        ("imap", "auth-failed"): 4,
        ("pop3", "ok"): 2,
        ("imap", "too-many-failures"): 1,
    }
    assert login_totals(c) == (12, 4)
    assert sessions_by_protocol(samples) == {
        "imap": {"preauth": 1, "proxied": 7},
        "pop3": {"proxied": 0},
    }


def test_increase_and_counter_reset() -> None:
    before = {("imap", "ok"): 10.0, ("imap", "auth-failed"): 5.0}
    after = {("imap", "ok"): 16.0, ("imap", "auth-failed"): 2.0, ("pop3", "ok"): 3.0}
    # auth-failed went down: reset, all 2 are new; pop3 is a new series (started at 0)
    assert increase(before, after) == {
        ("imap", "ok"): 6.0,
        ("imap", "auth-failed"): 2.0,
        ("pop3", "ok"): 3.0,
    }
    assert increase(before, after, restarted=True) == after


def test_restart_seen_by_start_time_even_when_counters_grew_past() -> None:
    old = counters(0.0, started=1000.0, ok=5)
    new = counters(60.0, started=2000.0, ok=9)  # restarted, then 9 logins
    assert restarted(old, new)
    assert not restarted(old, counters(60.0, started=1000.4, ok=9))  # tick jitter
    assert not restarted(old, counters(60.0, started=None, ok=9))
    rates = login_rates(old, new)
    assert rates is not None and rates["logins_per_minute"] == 9.0


def test_rates_per_minute() -> None:
    assert login_rates(None, counters(0.0, ok=3)) is None  # measuring
    old = counters(100.0, ok=10, auth_failed=1, too_many_failures=0)
    new = counters(130.0, ok=16, auth_failed=4, too_many_failures=1)
    rates = login_rates(old, new)
    assert rates == {
        "seconds": 30.0,
        "logins_per_minute": 12.0,
        "failed_logins_per_minute": 6.0,  # too-many-failures is not counted twice
        "login_outcomes_per_minute": {"auth-failed": 6.0, "ok": 12.0, "too-many-failures": 2.0},
    }
    assert login_rates(new, counters(130.0, ok=20)) is None  # no time passed
    assert login_rates(new, counters(120.0, ok=20)) is None  # the clock went back
    assert per_minute(1, 0) is None and per_minute(5, 300) == 1.0


def test_rates_summed_over_protocols() -> None:
    old = Counters(0.0, 1.0, {("imap", "ok"): 1, ("pop3", "ok"): 1})
    new = Counters(60.0, 1.0, {("imap", "ok"): 3, ("pop3", "ok"): 4})
    rates = login_rates(old, new)
    assert rates is not None and rates["logins_per_minute"] == 5.0


def test_sessions_by_backend() -> None:
    listed = {
        "sessions": [
            {"protocol": "imap", "backend": "127.0.0.2:143"},
            {"protocol": "pop3", "backend": "127.0.0.2:110"},
            {"protocol": "imap", "backend": "[::1]:143"},
            {"protocol": "imap", "backend": "mail3"},
            {"protocol": "imap"},
            "junk",
        ]
    }
    assert sessions_by_backend(listed) == {"127.0.0.2": 2, "::1": 1, "mail3": 1}
    assert sessions_by_backend({"sessions": "no"}) is None
    assert sessions_by_backend([]) is None
    assert backend_host("host:") == "host:" and backend_host(":143") == ":143"


def test_add_counts_nested() -> None:
    total: dict[str, object] = {}
    add_counts(total, {"imap": {"proxied": 1, "preauth": 2}})
    add_counts(total, {"imap": {"proxied": 3}, "pop3": {"proxied": 1}})
    assert total == {"imap": {"proxied": 4, "preauth": 2}, "pop3": {"proxied": 1}}


def test_public_url_hides_credentials() -> None:
    assert public_url("http://admin:s3cret@mf1:9143/") == "http://mf1:9143/"
    assert public_url("http://mf1:9143") == "http://mf1:9143"
