"""The directory against real slapd, and the embedded LDIF source on the same data."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.farm import Farm
from bench.proxyproc import free_port, render_toml
from directory.model import AuthOutcome
from directory.service import Directory
from proxy.config import load_config

REPO = Path(__file__).resolve().parents[2]


def config_file(tmp_path: Path, farm: Farm, source: str, **directory: Any) -> Path:
    table: dict[str, Any] = {"base": farm.base_dn, "timeout": 2}
    if source in ("ldap", "ldap3"):
        table["driver"] = "native" if source == "ldap" else "ldap3"
        table |= {
            "uri": [farm.ldap_uri],
            "bind_dn": farm.service_dn,
            "bind_password": farm.service_password,
        }
    else:
        table["uri"] = "ldif:" + str(farm.workdir / "ldap" / "farm.ldif")
    table |= directory
    path = tmp_path / f"{source}.toml"
    path.write_text(render_toml({"directory": table}))
    return path


@pytest.fixture(params=["ldap", "ldap3", "ldif"])
def directory(request: pytest.FixtureRequest, farm: Farm, tmp_path: Path) -> Iterator[Directory]:
    d = Directory(load_config(config_file(tmp_path, farm, request.param)).directory)
    yield d
    d.close()


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


@pytest.mark.parametrize(
    "login",
    ["alice@example.co.uk", "alice_example_co_uk", "ALICE@Example.CO.UK", " alice_EXAMPLE_co_uk "],
)
def test_lookup_by_uid_and_address(farm: Farm, directory: Directory, login: str) -> None:
    found = run(directory.lookup(login))
    alice = farm.user("alice@example.co.uk")
    assert found.route is not None
    assert found.route.uid == alice.uid
    assert found.route.dn.lower() == alice.dn.lower()
    assert found.route.host == farm.backends[alice.backend].host
    assert found.route.port is None


def test_underscores_and_two_part_tld(farm: Farm, directory: Directory) -> None:
    jo = farm.user("jo_anne@under_score.org")
    for login in (jo.address, jo.uid):
        route = run(directory.lookup(login)).route
        assert route is not None and route.uid == "jo_anne_under_score_org"
    bob = run(directory.lookup("bob@example.co.uk")).route
    assert bob is not None and bob.host == farm.backends["mail2"].host


@pytest.mark.parametrize(
    "login", ["*", "*)(uid=*", "alice*", "*@example.co.uk", "(", ")", "\\", "alice\x00", "a\\2a"]
)
def test_injection_strings_match_nothing(directory: Directory, login: str) -> None:
    assert run(directory.lookup(login)).route is None


def test_authenticate_outcomes(farm: Farm, directory: Directory) -> None:
    alice = farm.user("alice@example.co.uk")
    quote = farm.user("quote@example.com")

    async def go() -> list[AuthOutcome]:
        return [
            (await directory.authenticate(alice.address, alice.password)).outcome,
            (await directory.authenticate(alice.uid, alice.password)).outcome,
            (await directory.authenticate(quote.address, quote.password)).outcome,
            (await directory.authenticate(alice.address, "wrong")).outcome,
            (await directory.authenticate(alice.address, "")).outcome,
            (await directory.authenticate("nobody@example.co.uk", "x")).outcome,
        ]

    assert run(go()) == [
        AuthOutcome.OK,
        AuthOutcome.OK,
        AuthOutcome.OK,
        AuthOutcome.BAD_PASSWORD,
        AuthOutcome.BAD_PASSWORD,
        AuthOutcome.NO_USER,
    ]


def test_second_lookup_comes_from_cache(directory: Directory) -> None:
    async def go() -> tuple[bool, bool]:
        first = await directory.lookup("carol@example.com")
        second = await directory.lookup("CAROL@example.com")
        return first.from_cache, second.from_cache

    assert run(go()) == (False, True)


@pytest.mark.parametrize("source", ["ldap", "ldap3"])
def test_ldap_down_is_unavailable_and_stale_routes_served(
    farm: Farm, tmp_path: Path, source: str
) -> None:
    settings = load_config(config_file(tmp_path, farm, source, cache_ttl=0.3)).directory
    d = Directory(settings)
    alice = farm.user("alice@example.co.uk")

    async def go() -> None:
        assert (await d.lookup(alice.address)).route is not None
        await asyncio.sleep(0.4)  # the route is now past its TTL
        farm.stop_ldap()
        try:
            stale = await d.lookup(alice.address)
            assert stale.route is not None and stale.stale and stale.from_cache
            # Never "bad password" because LDAP is down.
            result = await d.authenticate(alice.address, alice.password)
            assert result.outcome is AuthOutcome.UNAVAILABLE
            result = await d.authenticate("never-seen@example.com", "x")
            assert result.outcome is AuthOutcome.UNAVAILABLE
        finally:
            farm.start_ldap()
        result = await d.authenticate(alice.address, alice.password)
        assert result.outcome is AuthOutcome.OK

    try:
        run(go())
    finally:
        d.close()


@pytest.mark.parametrize("source", ["ldap", "ldap3"])
def test_failover_to_second_uri(farm: Farm, tmp_path: Path, source: str) -> None:
    dead = f"ldap://127.0.0.1:{free_port()}"
    settings = load_config(config_file(tmp_path, farm, source, uri=[dead, farm.ldap_uri])).directory
    d = Directory(settings)
    alice = farm.user("alice@example.co.uk")
    try:
        result = run(d.authenticate(alice.address, alice.password))
        assert result.outcome is AuthOutcome.OK
    finally:
        d.close()


def test_ldapi_socket(farm: Farm, tmp_path: Path) -> None:
    settings = load_config(config_file(tmp_path, farm, "ldap", uri=[farm.ldapi_uri])).directory
    d = Directory(settings)
    alice = farm.user("alice@example.co.uk")
    try:
        assert run(d.authenticate(alice.address, alice.password)).ok
    finally:
        d.close()


def test_native_connections_are_reused(farm: Farm, tmp_path: Path) -> None:
    settings = load_config(config_file(tmp_path, farm, "ldap", cache_ttl=0)).directory
    d = Directory(settings)
    alice = farm.user("alice@example.co.uk")

    async def go() -> None:
        await d.authenticate(alice.address, alice.password)
        first = d.source._search_conn  # type: ignore[attr-defined]
        for _ in range(20):
            assert (await d.authenticate(alice.address, alice.password)).ok
        assert d.source._search_conn is first  # type: ignore[attr-defined]
        assert len(d.source._idle_auth) == 1  # type: ignore[attr-defined]
        d.close()

    run(go())


def test_connections_are_reused(farm: Farm, tmp_path: Path) -> None:
    settings = load_config(config_file(tmp_path, farm, "ldap3", cache_ttl=0)).directory
    d = Directory(settings)
    alice = farm.user("alice@example.co.uk")

    async def go() -> None:
        for _ in range(20):
            assert (await d.authenticate(alice.address, alice.password)).ok

    try:
        run(go())
        pools = d.source._search, d.source._auth  # type: ignore[attr-defined]
        # 20 sequential logins: one search and one auth connection, not 20 of each.
        assert [p._idle.qsize() for p in pools] == [1, 1]
    finally:
        d.close()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", *args], capture_output=True, text=True, cwd=REPO
    )


@pytest.mark.parametrize("source", ["ldap", "ldif"])
def test_lookup_command(farm: Farm, tmp_path: Path, source: str) -> None:
    path = str(config_file(tmp_path, farm, source))
    bob = farm.user("bob@example.co.uk")
    found = cli("lookup", bob.address.upper(), "-c", path)
    assert found.returncode == 0, found.stderr
    assert f"uid: {bob.uid}" in found.stdout
    assert f"mailHost: {farm.backends['mail2'].host}" in found.stdout
    assert "cached: no" in found.stdout
    as_json = json.loads(cli("lookup", bob.uid, "-c", path, "--json").stdout)
    assert as_json["mailHost"] == farm.backends["mail2"].host and as_json["dn"]
    missing = cli("lookup", "nobody@example.co.uk", "-c", path)
    assert missing.returncode == 1
    assert "no such user" in missing.stderr


def test_lookup_command_ldap_down(farm: Farm, tmp_path: Path) -> None:
    path = str(config_file(tmp_path, farm, "ldap", uri=f"ldap://127.0.0.1:{free_port()}"))
    result = cli("lookup", "alice@example.co.uk", "-c", path)
    assert result.returncode == 3
    assert "directory unavailable" in result.stderr


def test_auth_cache_skips_bind_and_survives_ldap_outage(farm: Farm, tmp_path: Path) -> None:
    settings = load_config(config_file(tmp_path, farm, "ldap")).directory
    d = Directory(settings, auth_cache_ttl=60)
    alice = farm.user("alice@example.co.uk")
    bob = farm.user("bob@example.co.uk")

    async def go() -> None:
        first = await d.authenticate(alice.address, alice.password)
        assert first.ok and not first.from_cache
        again = await d.authenticate(alice.uid, alice.password)
        assert again.ok and again.from_cache  # no bind this time
        assert (await d.lookup(bob.address)).route is not None  # route known, login not
        farm.stop_ldap()
        try:
            cached = await d.authenticate(alice.address, alice.password)
            assert cached.ok and cached.from_cache
            # A wrong password is never answered from the cache: LDAP is down, so UNAVAILABLE.
            wrong = await d.authenticate(alice.address, "wrong")
            assert wrong.outcome is AuthOutcome.UNAVAILABLE
            # A user whose password was never seen cannot be vouched for.
            unseen = await d.authenticate(bob.address, bob.password)
            assert unseen.outcome is AuthOutcome.UNAVAILABLE
        finally:
            farm.start_ldap()
        assert d.flush(alice.uid) >= 1
        after = await d.authenticate(alice.address, alice.password)
        assert after.ok and not after.from_cache

    try:
        run(go())
    finally:
        d.close()


def test_native_pool_recovers_after_ldap_restart(farm: Farm, tmp_path: Path) -> None:
    """Several pooled bind connections all die with slapd; the next login must not fail."""
    settings = load_config(config_file(tmp_path, farm, "ldap", pool_size=4)).directory
    d = Directory(settings)
    alice = farm.user("alice@example.co.uk")

    async def go() -> None:
        logins = [d.authenticate(alice.address, alice.password) for _ in range(8)]
        assert all(r.ok for r in await asyncio.gather(*logins))
        assert len(d.source._idle_auth) >= 2  # type: ignore[attr-defined]
        farm.stop_ldap()
        farm.start_ldap()
        assert (await d.authenticate(alice.address, alice.password)).ok
        d.close()

    run(go())
