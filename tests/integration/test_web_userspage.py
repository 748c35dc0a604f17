"""The users page against real slapd, with the sssvlv overlay (sorted by the server) and
without (sorted here, cached): the same order, totals and pages as the code it replaced."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import userspage as bench
from bench.farm_ldap import SBIN_PATH
from directory.provision.ldapwrite import LdapWriter
from directory.provision.users import USER_CLASSES, uid_for_address
from directory.settings import ToolConfig
from web import users

USERS = 120
DOMAIN = bench.DOMAIN


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, ToolConfig]]:
    if shutil.which("slapd", path=SBIN_PATH) is None:
        pytest.skip("slapd not installed")
    with tempfile.TemporaryDirectory(prefix="userspage-test-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        plain = bench.start_slapd(workdir / "plain", USERS, sssvlv=False)
        try:
            sorting = bench.start_slapd(workdir / "sssvlv", USERS, sssvlv=True)
            try:
                yield {
                    "plain": bench.settings_for(workdir / "plain", plain.uri),
                    "sssvlv": bench.settings_for(workdir / "sssvlv", sorting.uri),
                }
            finally:
                sorting.stop()
        finally:
            plain.stop()


def page(settings: ToolConfig, q: str = "", number: int = 1, old: bool = False) -> dict:
    fn = bench.baseline if old else users.users_page
    with LdapWriter(settings) as writer:
        return fn(settings, writer, DOMAIN, q, number)


ADDRESSES = sorted(bench.address(i) for i in range(USERS))


@pytest.mark.parametrize("kind", ["plain", "sssvlv"])
def test_pages_in_address_order(servers: dict[str, ToolConfig], kind: str) -> None:
    settings = servers[kind]
    users.forget_all()
    shown = []
    for number in (1, 2, 3):
        got = page(settings, number=number)
        assert got["total"] == USERS and got["page_size"] == 50 and got["page"] == number
        assert got == page(settings, number=number, old=True)
        shown += [u["mail"] for u in got["users"]]
    assert shown == ADDRESSES  # 50 + 50 + the last 20
    past = page(settings, number=4)
    assert past["users"] == [] and past["total"] == USERS
    first = page(settings)["users"][0]
    assert first["uid"] == uid_for_address(first["mail"]) and first["mailHost"] in bench.HOSTS


@pytest.mark.parametrize("kind", ["plain", "sssvlv"])
def test_search_by_uid_or_mail_substring(servers: dict[str, ToolConfig], kind: str) -> None:
    settings = servers[kind]
    name = bench.NAMES[7]
    got = page(settings, q=name.upper())
    assert [u["mail"] for u in got["users"]] == [a for a in ADDRESSES if name in a]
    assert got["total"] == 2 and got == page(settings, q=name.upper(), old=True)
    one = page(settings, q="000042")
    assert [u["mail"] for u in one["users"]] == [bench.address(42)] and one["total"] == 1
    by_uid = page(settings, q=uid_for_address(bench.address(42)))  # "_" only the uid has
    assert [u["mail"] for u in by_uid["users"]] == [bench.address(42)]
    assert page(settings, q="zzz") == {**page(settings, q="zzz", old=True), "total": 0}


def test_an_added_user_shows_at_once(
    servers: dict[str, ToolConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sorted by the server, always; sorted here, once :func:`users.forget_domain` is
    called, as the service does after adding a user (the list is cached even when small)."""
    monkeypatch.setattr(users, "CACHE_MIN_USERS", 1)
    mail = f"aaa.first@{DOMAIN}"
    for settings in servers.values():
        users.forget_all()
        assert page(settings)["total"] == USERS
        with LdapWriter(settings) as writer:
            uid = uid_for_address(mail)
            dn = f"uid={uid},ou=users,dc={DOMAIN},ou=domains,{bench.BASE_DN}"
            attrs = {"uid": uid, "mail": mail, "cn": mail, "sn": "aaa.first"}
            writer.add(dn, USER_CLASSES, {**attrs, "mailHost": bench.HOSTS[0]})
        try:
            users.forget_domain(DOMAIN.upper())
            got = page(settings)
            assert got["total"] == USERS + 1 and got["users"][0]["mail"] == mail
        finally:
            with LdapWriter(settings) as writer:
                writer.delete(dn)
            users.forget_domain(DOMAIN)
        assert page(settings)["total"] == USERS


def test_the_plain_server_list_is_cached_until_forgotten(
    servers: dict[str, ToolConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(users, "CACHE_MIN_USERS", 1)
    settings = servers["plain"]
    users.forget_all()
    page(settings)
    assert (DOMAIN, "") in users._sorted
    users.forget_domain(DOMAIN)
    assert (DOMAIN, "") not in users._sorted
    monkeypatch.setattr(users, "CACHE_MIN_USERS", USERS + 1)
    page(settings)
    assert not users._sorted  # a small domain is not cached: nothing to go stale
