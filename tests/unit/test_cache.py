from __future__ import annotations

from directory.cache import RouteCache
from directory.model import Route

ALICE = Route(
    uid="alice_example_co_uk",
    dn="uid=alice_example_co_uk,dc=x",
    host="mail1",
    mail="alice@example.co.uk",
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock) -> RouteCache:
    return RouteCache(ttl=60, negative_ttl=10, stale_ttl=600, timer=clock)


def test_positive_entry_expires_after_ttl_but_stays_stale() -> None:
    clock = Clock()
    cache = make(clock)
    cache.put("alice@example.co.uk", ALICE)
    answer = cache.get("alice@example.co.uk")
    assert answer is not None and answer.route == ALICE
    clock.now += 61
    assert cache.get("alice@example.co.uk") is None
    assert cache.get_stale("alice@example.co.uk") == ALICE
    clock.now += 600
    assert cache.get_stale("alice@example.co.uk") is None


def test_negative_entry_is_shorter() -> None:
    clock = Clock()
    cache = make(clock)
    cache.put("nobody@x", None)
    answer = cache.get("nobody@x")
    assert answer is not None and answer.route is None
    clock.now += 11
    assert cache.get("nobody@x") is None


def test_flush_one_user_by_any_name() -> None:
    clock = Clock()
    cache = make(clock)
    cache.put("alice@example.co.uk", ALICE)
    cache.put("alice_example_co_uk", ALICE)
    cache.put("bob@x", Route(uid="bob_x", dn="uid=bob_x", host="mail2"))
    assert cache.flush("ALICE_EXAMPLE_CO_UK") == 4  # two fresh + two stale
    assert cache.get("alice@example.co.uk") is None
    assert cache.get_stale("alice_example_co_uk") is None
    assert cache.get("bob@x") is not None
    cache.flush()
    assert cache.get("bob@x") is None


def test_put_route_clears_negative() -> None:
    cache = make(Clock())
    cache.put("alice@example.co.uk", None)
    cache.put("alice@example.co.uk", ALICE)
    answer = cache.get("alice@example.co.uk")
    assert answer is not None and answer.route == ALICE
