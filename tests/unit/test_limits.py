from __future__ import annotations

import dataclasses
import weakref

import pytest

from proxy.config import ProxySettings
from proxy.limits import PENALTY_CAP, Limits, address_group


def settings(**kw: object) -> ProxySettings:
    base = dict(
        workers=1, trusted_networks=(), haproxy_trusted_networks=(), max_connections=5,
        max_connections_per_ip=2, ipv6_prefix=64, auth_cache_ttl=0.0, plaintext_auth=False,
        auth_failure_delay=1.0, max_auth_failures=3, max_line=8192, max_literal=8192,
        preauth_timeout=60.0, idle_timeout=3600.0, shutdown_grace=1.0, log_level="info",
    )
    base.update(kw)
    return ProxySettings(**base)  # type: ignore[arg-type]


def test_per_ip_and_total_limits() -> None:
    limits = Limits(settings())
    a1, a2 = limits.admit("10.0.0.1", False), limits.admit("10.0.0.1", False)
    assert a1 and a2
    assert limits.admit("10.0.0.1", False) is None  # third from one address
    trusted = limits.admit("10.0.0.1", True)  # trusted: no per-address limit
    assert trusted
    for slot in (a1, a2, trusted):
        slot.logged_in()  # logged-in sessions are never evicted
    b, c = limits.admit("10.0.0.2", False), limits.admit("10.0.0.3", False)
    assert b and c
    for slot in (b, c):
        slot.logged_in()
    assert limits.total == 5 and limits.admit("10.0.0.4", False) is None  # total reached
    a1.release()
    a1.release()  # a second release changes nothing
    d = limits.admit("10.0.0.4", False)
    assert d
    for slot in (a2, trusted, b, c, d):
        slot.release()
    assert limits.total == 0 and limits._per_ip == {}


def test_the_oldest_connection_not_logged_in_makes_room() -> None:
    limits = Limits(settings(max_connections=3, max_connections_per_ip=3))
    evicted: list[str] = []
    slots = []
    for name in ("old", "logged-in", "young"):
        slot = limits.admit("10.0.0.1", False)
        assert slot is not None
        slot.evict = lambda name=name: evicted.append(name)
        slots.append(slot)
    slots[1].logged_in()
    newcomer = limits.admit("10.0.0.9", False)
    assert newcomer is not None and evicted == ["old"]
    assert slots[0].released and limits.total == 3 and limits.evicted == 1
    slots[0].release()  # the evicted session ending later does not count twice
    assert limits.total == 3
    last = limits.admit("10.0.0.8", False)
    assert last is not None and evicted == ["old", "young"]
    newcomer.logged_in()
    last.logged_in()
    # Nothing left to evict: every connection is logged in, so the newcomer is refused.
    assert limits.admit("10.0.0.7", False) is None and limits.total == 3


def test_a_logged_in_slot_lets_go_of_the_login_phase() -> None:
    """The evict callback closes over the login's connection, task and dialogue: kept on a
    logged-in slot it would hold them for the whole (often days-long, idle) session."""

    class LoginPhase:
        def evict(self) -> None:
            raise AssertionError("a logged-in session is never evicted")

    limits = Limits(settings())
    slot = limits.admit("10.0.0.1", False)
    assert slot is not None
    phase = LoginPhase()
    slot.evict = phase.evict
    gone = weakref.ref(phase)
    del phase
    assert gone() is not None  # still reachable through the slot
    slot.logged_in()
    assert gone() is None


def test_an_address_over_its_own_limit_evicts_nobody() -> None:
    limits = Limits(settings(max_connections=2, max_connections_per_ip=1))
    first = limits.admit("10.0.0.1", False)
    assert first is not None
    first.evict = lambda: pytest.fail("evicted for an address over its limit")
    assert limits.admit("10.0.0.1", False) is None


def test_ipv6_addresses_count_per_prefix() -> None:
    limits = Limits(settings(max_connections_per_ip=2))
    assert limits.admit("2001:db8:1:2::1", False)
    assert limits.admit("2001:db8:1:2:ffff::9", False)
    assert limits.admit("2001:db8:1:2::77", False) is None  # same /64
    assert limits.admit("2001:db8:1:3::1", False)  # the next /64
    assert address_group("::ffff:10.1.2.3") == "10.1.2.3"
    assert address_group("2001:db8::1", 128) == "2001:db8::1"
    limits.failure_delay("2001:db8:1:2::1", "x", False)
    assert limits.penalty("2001:db8:1:2::99", False) == 1.0  # the penalty is per /64 too


def test_penalty_applies_before_any_check_and_resets_on_success() -> None:
    limits = Limits(settings())
    assert limits.penalty("10.0.0.1", False) == 0.0
    for _ in range(3):
        limits.failure_delay("10.0.0.1", "alice", False)
    assert limits.penalty("10.0.0.1", False) == 4.0
    assert limits.penalty("10.0.0.1", True) == 0.0  # trusted networks are exempt
    assert limits.penalty("10.0.0.2", False) == 0.0
    limits.login_succeeded("10.0.0.1", "alice")
    assert limits.penalty("10.0.0.1", False) == 0.0


def test_penalty_grows_per_ip_and_per_login_and_resets() -> None:
    limits = Limits(settings())
    delays = [limits.failure_delay("10.0.0.1", "alice", False) for _ in range(6)]
    assert delays == [1.0, 2.0, 4.0, 8.0, PENALTY_CAP, PENALTY_CAP]
    # Another address guessing the same login is slowed down too.
    assert limits.failure_delay("10.9.9.9", "ALICE", False) == PENALTY_CAP
    limits.login_succeeded("10.0.0.1", "alice")
    assert limits.failure_delay("10.0.0.1", "alice", False) == 1.0  # counting starts afresh
    assert limits.failure_delay("10.0.0.7", "bob", True) == 1.0  # trusted: base delay only


def test_zero_base_delay_means_none() -> None:
    limits = Limits(dataclasses.replace(settings(), auth_failure_delay=0.0))
    assert [limits.failure_delay("1.2.3.4", "x", False) for _ in range(3)] == [0.0, 0.0, 0.0]
