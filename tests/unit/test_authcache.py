from __future__ import annotations

from directory.authcache import AuthCache
from directory.model import Route

ALICE = Route(uid="alice_x", dn="uid=alice_x,dc=x", host="mail1", mail="alice@x")


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_exact_password_only_and_fresh_only() -> None:
    clock = Clock()
    cache = AuthCache(ttl=10, stale_ttl=100, timer=clock)
    assert not cache.check(ALICE, "pw")
    cache.remember(ALICE, "pw")
    assert cache.check(ALICE, "pw")
    assert not cache.check(ALICE, "pw ")
    assert not cache.check(ALICE, "PW")
    clock.now += 11
    assert not cache.check(ALICE, "pw")  # expired for normal use ...
    assert cache.check(ALICE, "pw", stale_ok=True)  # ... still vouches while LDAP is down
    clock.now += 100
    assert not cache.check(ALICE, "pw", stale_ok=True)


def test_disabled_and_flush() -> None:
    off = AuthCache(ttl=0, stale_ttl=100)
    off.remember(ALICE, "pw")
    assert not off.check(ALICE, "pw") and not off.enabled
    cache = AuthCache(ttl=10, stale_ttl=0)
    cache.remember(ALICE, "pw")
    assert cache.flush("ALICE@X") == 1
    assert not cache.check(ALICE, "pw")


def test_password_not_stored_in_clear() -> None:
    cache = AuthCache(ttl=10, stale_ttl=0)
    cache.remember(ALICE, "s3cret-password")
    assert b"s3cret-password" not in repr(cache._entries).encode()
