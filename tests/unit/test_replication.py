"""Read-your-writes after a provisioning write: the polling, the verdicts and the settings.

The polling runs on a fake clock and fake consumers, so each case states exactly what each
consumer shows on each poll; the real slapd cluster is in tests/integration.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from directory.provision.replication import (
    POLL_INTERVAL,
    Probe,
    ProbeError,
    Replication,
    Seen,
    caught_up,
    wait_for,
)
from proxy.config import ConfigError, load_config

A, B = "ldap://a", "ldap://b"
DN = "uid=x,dc=t"
OLD = "20240101000000.000001Z#000000#000#000000"
NEW = "20240101000000.500000Z#000000#000#000000"


class Clock:
    """Time that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def scripted(script: dict[str, list[Seen | Exception]]) -> tuple[Probe, dict[str, int]]:
    """A probe answering each consumer's polls in turn (the last answer repeats)."""
    calls = {uri: 0 for uri in script}

    def probe(uri: str, dn: str) -> Seen:
        assert dn == DN
        answers = script[uri]
        answer = answers[min(calls[uri], len(answers) - 1)]
        calls[uri] += 1
        if isinstance(answer, Exception):
            raise answer
        return answer

    return probe, calls


def test_csn_ordering_and_deletions() -> None:
    assert caught_up(NEW, NEW) and caught_up(NEW, OLD)
    assert not caught_up(OLD, NEW) and not caught_up(None, NEW)
    assert caught_up(None, None) and not caught_up(OLD, None)  # None wanted: deleted
    assert caught_up("", "")  # a server keeping no entryCSN: present is enough


def test_all_consumers_caught_up_at_once_need_no_sleep() -> None:
    clock = Clock()
    probe, calls = scripted({A: [NEW], B: [NEW]})
    result = wait_for([A, B], DN, NEW, 5.0, probe, clock, clock.sleep)
    assert result == Replication((A, B), ())
    assert clock.sleeps == [] and calls == {A: 1, B: 1}
    assert result.warnings("x") == ()


def test_a_lagging_consumer_is_polled_until_it_shows_the_change() -> None:
    clock = Clock()
    probe, calls = scripted({A: [NEW], B: [None, OLD, NEW]})
    result = wait_for([A, B], DN, NEW, 5.0, probe, clock, clock.sleep)
    assert result.replicated == (A, B) and result.not_replicated == ()
    assert calls == {A: 1, B: 3}  # A, once caught up, is not asked again
    assert clock.sleeps == [POLL_INTERVAL, POLL_INTERVAL]


def test_the_wait_is_bounded_and_names_who_did_not_catch_up() -> None:
    clock = Clock()
    probe, _ = scripted({A: [OLD], B: [NEW]})
    result = wait_for([A, B], DN, NEW, 1.0, probe, clock, clock.sleep)
    assert result.replicated == (B,) and result.not_replicated == (A,)
    assert 1.0 <= clock.now < 1.0 + POLL_INTERVAL
    assert result.as_dict() == {"replicated": [B], "not_replicated": [A]}
    (warning,) = result.warnings("password of x changed")
    assert "ldap://a" in warning and OLD in warning and "ldap://b" not in warning


def test_an_unreachable_consumer_counts_as_not_replicated_with_its_reason() -> None:
    clock = Clock()
    probe, _ = scripted({A: [ProbeError("connection refused")], B: [NEW]})
    result = wait_for([A, B], DN, NEW, 0.2, probe, clock, clock.sleep)
    assert result.not_replicated == (A,)
    assert result.problems == ("ldap://a: connection refused",)


def test_a_deletion_is_seen_when_the_entry_is_gone() -> None:
    clock = Clock()
    probe, _ = scripted({A: [NEW, None], B: [NEW]})
    result = wait_for([A, B], DN, None, 0.5, probe, clock, clock.sleep)
    assert result.replicated == (A,) and result.not_replicated == (B,)
    assert result.problems == ("ldap://b: still has the entry",)


def test_each_consumer_is_asked_once_even_with_no_time_left() -> None:
    clock = Clock()
    probe, calls = scripted({A: [OLD], B: [NEW]})
    result = wait_for([A, B, A], DN, NEW, 0.0, probe, clock, clock.sleep)
    assert calls == {A: 1, B: 1} and result.not_replicated == (A,)


MINIMAL = '[directory]\nuri = ["ldap://c1", "ldap://c2"]\nbase = "dc=x"\n'


def test_provision_uri_and_wait_settings(tmp_path: Path) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text(MINIMAL)
    p = load_config(path).provision
    assert p.uri == () and p.replication_wait == 5.0
    path.write_text(MINIMAL + '[provision]\nuri = "ldap://p"\nreplication_wait = 0\n')
    p = load_config(path).provision
    assert p.uri == ("ldap://p",) and p.replication_wait == 0.0


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ('uri = "http://p"', "uri"),
        (f'uri = "ldif:{__file__}"', "not ldif"),
        ("replication_wait = -1", "replication_wait"),
    ],
)
def test_bad_provision_replication_keys(tmp_path: Path, line: str, fragment: str) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text(MINIMAL + f"[provision]\n{line}\n")
    with pytest.raises(ConfigError, match=fragment):
        load_config(path)
