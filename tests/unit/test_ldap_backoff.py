"""A hung directory server never hangs logins: the per-server down/back-off state
(directory.serverhealth), the ``down_backoff`` key, and the one deadline the directory
facade puts on a login's lookup and bind (with a source that never answers: no sockets)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import directory.service as service
from directory.authcache import AuthCache
from directory.cache import RouteCache
from directory.model import AuthOutcome, DirectoryUnavailable, Route
from directory.serverhealth import ServerHealth
from directory.service import Directory
from proxy.config import ConfigError, DirectorySettings, load_config

A, B, C = "ldap://a", "ldap://b", "ldap://c"
ALICE = Route(uid="alice_x", dn="uid=alice_x,dc=x", host="mail1")


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- ServerHealth ---------------------------------------------------------------------------


def test_a_server_that_timed_out_is_skipped_until_marked_up() -> None:
    clock = Clock()
    health = ServerHealth(5, clock)
    assert health.candidates([A, B, C]) == [A, B, C]
    assert health.mark_down(A) is True  # newly down: worth one log line
    assert health.mark_down(A) is False  # still down: not another one
    assert health.is_down(A) and health.down() == [A]
    assert health.candidates([A, B, C]) == [B, C]  # order kept, A skipped
    clock.now += 60
    assert health.candidates([A, B, C]) == [B, C]  # no trial asked for: stays skipped
    assert health.down_for(A) == 60
    assert health.mark_up(A) is True and health.mark_up(A) is False
    assert health.candidates([A, B, C]) == [A, B, C]
    assert health.down_for(A) == 0 and health.retry_in(A) == 0


def test_retry_in_counts_down_the_back_off() -> None:
    clock = Clock()
    health = ServerHealth(5, clock)
    health.mark_down(B)
    assert health.retry_in(B) == 5
    clock.now += 2
    assert health.retry_in(B) == 3
    health.mark_down(B)  # failed again (a probe that timed out): a new period from now
    assert health.retry_in(B) == 5 and health.down_for(B) == 2  # outage still dated from start
    clock.now += 9
    assert health.retry_in(B) == 0


def test_one_trial_per_back_off_period() -> None:
    clock = Clock()
    health = ServerHealth(5, clock)
    health.mark_down(A)
    assert health.candidates([A, B], trial=True) == [B]  # back-off not over yet
    clock.now += 5
    assert health.candidates([A, B], trial=True) == [A, B]  # this caller tries A ...
    assert health.candidates([A, B], trial=True) == [B]  # ... the others keep skipping it
    assert health.is_down(A)  # until the trial says otherwise
    clock.now += 5
    assert health.candidates([A, B], trial=True) == [A, B]  # the trial never reported: again


def test_every_server_down_leaves_nothing_to_try() -> None:
    health = ServerHealth(5, Clock())
    for uri in (A, B):
        health.mark_down(uri)
    assert health.candidates([A, B]) == []


# -- the down_backoff key -------------------------------------------------------------------

MINIMAL = '[directory]\nuri = "ldap://127.0.0.1:389"\nbase = "dc=x"\n'


def test_down_backoff_default_and_set(tmp_path: Path) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text(MINIMAL)
    assert load_config(path).directory.down_backoff == 5.0
    path.write_text(MINIMAL + "down_backoff = 1.5\n")
    assert load_config(path).directory.down_backoff == 1.5


@pytest.mark.parametrize("value", ["0", "-1", "'soon'"])
def test_down_backoff_must_be_positive(tmp_path: Path, value: str) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text(MINIMAL + f"down_backoff = {value}\n")
    with pytest.raises(ConfigError, match=r"\[directory\] down_backoff"):
        load_config(path)


# -- the login deadline ---------------------------------------------------------------------

TIMEOUT = 0.2
MARGIN = 0.1


class HangingSource:
    """An async source that never answers, or answers when told to."""

    is_async = True

    def __init__(self, route: Route | None = ALICE) -> None:
        self.route = route
        self.release = asyncio.Event()
        self.hang_find = True
        self.hang_bind = True
        self.finds = 0

    async def find(self, login: str) -> Route | None:
        self.finds += 1
        if self.hang_find:
            await self.release.wait()
        return self.route

    async def bind(self, dn: str, password: str) -> bool:
        if self.hang_bind:
            await self.release.wait()
        return password == "pw"

    async def find_domain(self, domain: str) -> bool:
        await self.release.wait()
        return True

    def close(self) -> None:
        pass


@pytest.fixture()
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DirectorySettings:
    monkeypatch.setattr(service, "DEADLINE_MARGIN", MARGIN)
    path = tmp_path / "proxy.toml"
    path.write_text(MINIMAL + f"timeout = {TIMEOUT}\n")
    return load_config(path).directory


BOUND = TIMEOUT + MARGIN + 0.5  # generous: a loaded machine


async def test_many_logins_against_a_hung_source_are_all_answered_in_time(
    settings: DirectorySettings,
) -> None:
    d = Directory(settings, HangingSource())  # type: ignore[arg-type]
    started = time.monotonic()
    results = await asyncio.gather(*(d.authenticate(f"user{i}@x", "pw") for i in range(200)))
    assert {r.outcome for r in results} == {AuthOutcome.UNAVAILABLE}
    assert time.monotonic() - started < BOUND
    d.close()


async def test_the_deadline_covers_lookup_and_bind_together(settings: DirectorySettings) -> None:
    source = HangingSource()
    source.hang_find = False
    d = Directory(settings, source)  # type: ignore[arg-type]
    started = time.monotonic()
    result = await d.authenticate("alice@x", "pw")
    assert result.outcome is AuthOutcome.UNAVAILABLE and result.route == ALICE
    assert time.monotonic() - started < BOUND
    with pytest.raises(DirectoryUnavailable):
        await d.find_domain("x.test")
    d.close()


async def test_a_hung_bind_is_still_vouched_for_by_the_auth_cache(
    settings: DirectorySettings,
) -> None:
    clock = Clock()
    d = Directory(settings, HangingSource())  # type: ignore[arg-type]
    d.auth_cache = AuthCache(10, 3600, timer=clock)
    d.auth_cache.remember(ALICE, "pw")
    clock.now += 11  # past the fresh TTL: the login asks LDAP, which hangs
    d.cache.put("alice@x", ALICE)
    result = await d.authenticate("alice@x", "pw")
    assert result.ok and result.from_cache
    assert (await d.authenticate("alice@x", "wrong")).outcome is AuthOutcome.UNAVAILABLE
    d.close()


async def test_a_hung_lookup_serves_stale_routes_to_every_waiter(
    settings: DirectorySettings,
) -> None:
    clock = Clock()
    source = HangingSource()
    d = Directory(settings, source)  # type: ignore[arg-type]
    d.cache = RouteCache(60, 5, 3600, 100, timer=clock)
    d.auth_cache = AuthCache(60, 3600, timer=clock)
    d.cache.put("alice@x", ALICE)
    d.auth_cache.remember(ALICE, "pw")
    clock.now += 61  # both expired, still stale-servable
    found = await asyncio.gather(*(d.lookup("alice@x") for _ in range(10)))
    assert all(f.route == ALICE and f.stale for f in found)
    assert source.finds == 1  # one shared query, not ten
    # The login as a whole: stale route, no bind possible, vouched by the auth cache.
    assert (await d.authenticate("alice@x", "pw")).ok
    d.close()


async def test_a_caller_giving_up_leaves_the_shared_query_to_the_others(
    settings: DirectorySettings,
) -> None:
    source = HangingSource()
    d = Directory(settings, source)  # type: ignore[arg-type]
    first = asyncio.ensure_future(d.lookup("alice@x"))
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(d.lookup("alice@x"))
    await asyncio.sleep(0.01)
    first.cancel()  # its client went away
    await asyncio.sleep(0.01)
    source.release.set()
    assert (await second).route == ALICE
    assert source.finds == 1
    assert d.cache.get("alice@x") is not None  # and the answer was cached
    d.close()
