"""Staff sign-in for the web console against the farm's real slapd (``ou=staff``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ldap3
import pytest

import web.staff
from bench.farm import Farm
from bench.proxyproc import free_port, render_toml
from directory.settings import DEFAULT_USER_FILTER
from proxy.config import Settings, load_config
from tests.integration.provision_helpers import provision_sections
from web.staff import StaffDirectoryDown, sign_in
from web.tokens import ADMIN, DOMAIN_ADMIN, HELPDESK, Principal


def settings_for(farm: Farm, tmp_path: Path, **directory: Any) -> Settings:
    path = tmp_path / "staff.toml"
    path.write_text(render_toml(provision_sections(farm, directory=directory)))
    return load_config(path)


@pytest.fixture(scope="module")
def settings(farm: Farm, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return settings_for(farm, tmp_path_factory.mktemp("staff"))


def attempt(settings: Settings, login: str, password: str) -> Principal | None:
    return sign_in(settings, settings.web, login, password)


def test_each_role_signs_in(farm: Farm, settings: Settings) -> None:
    by_role = {member.role: member for member in farm.staff}
    assert set(by_role) == {ADMIN, HELPDESK, DOMAIN_ADMIN}
    for role, member in by_role.items():
        principal = attempt(settings, member.uid, member.password)
        expected = frozenset({"example.co.uk"}) if role == DOMAIN_ADMIN else frozenset()
        assert principal == Principal(role, expected, source=f"staff:{member.uid}")
    dora = attempt(settings, by_role[DOMAIN_ADMIN].uid, by_role[DOMAIN_ADMIN].password)
    assert dora is not None and dora.owns("example.co.uk") and not dora.owns("example.com")


def test_uid_matches_case_insensitively(farm: Farm, settings: Settings) -> None:
    ada = farm.staff[0]
    principal = attempt(settings, ada.uid.upper(), ada.password)
    assert principal is not None and principal.source == f"staff:{ada.uid}"


def test_wrong_password(farm: Farm, settings: Settings) -> None:
    ada, hal = farm.staff[0], farm.staff[1]
    assert attempt(settings, ada.uid, "not-" + ada.password) is None
    assert attempt(settings, ada.uid, hal.password) is None  # another's password
    assert attempt(settings, ada.uid, ada.password + " ") is None  # octets, no trimming


def test_unknown_login(settings: Settings) -> None:
    assert attempt(settings, "nobody", "nobody-pw") is None


def test_empty_password_makes_no_ldap_connection(
    farm: Farm, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_connection(*args: object, **kwargs: object) -> None:
        raise AssertionError("an empty password must not reach LDAP")

    monkeypatch.setattr(web.staff, "Connection", no_connection)
    assert attempt(settings, farm.staff[0].uid, "") is None


@pytest.mark.parametrize("login", ["*", "ada*", "a*", "ada)(uid=*", "*)(uid=*))(|(uid=*", "\\2a"])
def test_filter_metacharacters_match_nothing(login: str, farm: Farm, settings: Settings) -> None:
    for member in farm.staff:
        assert attempt(settings, login, member.password) is None


@pytest.mark.parametrize("how", ["address", "uid"])
def test_mail_user_is_not_staff(how: str, farm: Farm, settings: Settings) -> None:
    alice = farm.user("alice@example.co.uk")
    login = alice.address if how == "address" else alice.uid
    assert attempt(settings, login, alice.password) is None


def test_staff_are_no_mail_logins(farm: Farm) -> None:
    """The proxies' default user filter must not find a staff member (a mail login as ada)."""
    server = ldap3.Server(farm.ldap_uri, connect_timeout=3)
    with ldap3.Connection(server, farm.service_dn, farm.service_password, auto_bind=True) as conn:
        for member in farm.staff:
            conn.search(farm.base_dn, DEFAULT_USER_FILTER.replace("%s", member.uid))
            assert conn.entries == [], member.uid
            conn.search(farm.base_dn, f"(uid={member.uid})", attributes=["employeeType"])
            [entry] = conn.entries
            assert entry.entry_dn == member.dn == f"uid={member.uid},ou=staff,{farm.base_dn}"
            assert entry.employeeType.value == member.role


def test_unreachable_directory(farm: Farm, tmp_path: Path) -> None:
    closed = f"ldap://127.0.0.1:{free_port()}"
    settings = settings_for(farm, tmp_path, uri=[closed], timeout=1)
    ada = farm.staff[0]
    with pytest.raises(StaffDirectoryDown) as info:
        attempt(settings, ada.uid, ada.password)
    message = str(info.value)
    assert "unavailable" in message and closed in message
    assert ada.password not in message and farm.service_password not in message


def test_refused_reader_is_directory_down(farm: Farm, tmp_path: Path) -> None:
    """A wrong ``[directory] bind_password`` is the operator's fault, not the person's."""
    settings = settings_for(farm, tmp_path, bind_password="wrong-reader-pw")
    ada = farm.staff[0]
    with pytest.raises(StaffDirectoryDown) as info:
        attempt(settings, ada.uid, ada.password)
    message = str(info.value)
    assert "bind_dn" in message
    assert ada.password not in message and "wrong-reader-pw" not in message


def test_next_server_when_the_first_is_down(farm: Farm, tmp_path: Path) -> None:
    closed = f"ldap://127.0.0.1:{free_port()}"
    settings = settings_for(farm, tmp_path, uri=[closed, farm.ldap_uri], timeout=1)
    ada = farm.staff[0]
    principal = attempt(settings, ada.uid, ada.password)
    assert principal is not None and principal.role == ADMIN
    assert attempt(settings, ada.uid, "wrong") is None
