"""Staff sign-in without a directory: the failed-login delay, the ``[web]`` staff keys, and
the refusals :func:`web.staff.sign_in` makes before any LDAP I/O."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.configschema import ConfigError
from proxy.config import load_config
from web.settings import DEFAULT_STAFF_FILTER
from web.staff import FailedLogins, StaffDirectoryDown, failure_keys, sign_in


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def logins(**kw: float) -> tuple[FailedLogins, Clock]:
    clock = Clock()
    return FailedLogins(now=clock, **kw), clock  # type: ignore[arg-type]


def test_no_failures_no_delay() -> None:
    failed, _ = logins()
    assert failed.delay("ip:192.0.2.1") == 0.0
    assert len(failed) == 0


def test_delay_doubles_then_caps() -> None:
    failed, _ = logins(base=0.5, cap=30.0)
    delays = []
    for _ in range(9):
        failed.failed("login:ada")
        delays.append(failed.delay("login:ada"))
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_many_failures_do_not_overflow() -> None:
    failed, _ = logins(base=0.5, cap=30.0)
    for _ in range(2000):
        failed.failed("k")
    assert failed.failures("k") == 2000 and failed.delay("k") == 30.0


def test_keys_are_separate() -> None:
    failed, _ = logins(base=1.0)
    ip, login = failure_keys("192.0.2.1", "Ada")
    assert (ip, login) == ("ip:192.0.2.1", "login:ada")
    failed.failed(ip)
    failed.failed(ip)
    failed.failed(login)
    assert failed.delay(ip) == 2.0 and failed.delay(login) == 1.0
    assert failed.delay(failure_keys("192.0.2.2", "ada")[0]) == 0.0
    assert failure_keys("192.0.2.1", "ADA")[1] == login  # one counter, however it is typed


def test_forgotten_after_quiet_period() -> None:
    failed, clock = logins(base=1.0, forget_after=900.0)
    for _ in range(3):
        failed.failed("k")
    clock.t += 899.0
    assert failed.delay("k") == 4.0  # still remembered
    failed.failed("k")  # a new failure restarts the quiet period
    clock.t += 899.0
    assert failed.delay("k") == 8.0
    clock.t += 1.0
    assert failed.delay("k") == 0.0 and len(failed) == 0
    failed.failed("k")
    assert failed.delay("k") == 1.0  # counts from one again


def test_expired_keys_are_dropped_without_being_asked_for() -> None:
    failed, clock = logins(forget_after=10.0)
    for i in range(50):
        failed.failed(f"old{i}")
    clock.t += 11.0
    failed.failed("new")
    assert len(failed) == 1


def test_memory_is_bounded_oldest_dropped_first() -> None:
    failed, clock = logins(base=1.0, max_keys=100)
    failed.failed("victim")
    failed.failed("victim")
    for i in range(10_000):
        clock.t += 0.001
        failed.failed(f"flood{i}")
    assert len(failed) == 100
    assert failed.delay("victim") == 0.0  # evicted: the oldest failure
    assert failed.delay("flood9999") == 1.0 and failed.delay("flood9900") == 1.0
    assert failed.delay("flood9899") == 0.0


def test_a_repeated_failure_keeps_its_key_from_eviction() -> None:
    failed, clock = logins(base=1.0, max_keys=3)
    for key in ("a", "b", "c"):
        clock.t += 1
        failed.failed(key)
    clock.t += 1
    failed.failed("a")  # now the newest
    clock.t += 1
    failed.failed("d")  # evicts b, the oldest
    assert failed.delay("b") == 0.0
    assert failed.delay("a") == 2.0 and failed.delay("c") == 1.0 and failed.delay("d") == 1.0


def test_success_resets() -> None:
    failed, _ = logins(base=1.0)
    for _ in range(5):
        failed.failed("k")
    failed.succeeded("k")
    assert failed.delay("k") == 0.0
    failed.succeeded("never-failed")  # no error
    failed.failed("k")
    assert failed.delay("k") == 1.0


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        FailedLogins(max_keys=0)
    with pytest.raises(ValueError):
        FailedLogins(forget_after=0)


# -- [web] staff_filter / role_attribute -------------------------------------------------------

MINIMAL = '[directory]\nuri = "ldap://127.0.0.1:9"\nbase = "dc=x"\ntimeout = 1\n'


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "proxy.toml"
    p.write_text(MINIMAL + text)
    return p


def test_staff_defaults(tmp_path: Path) -> None:
    web = load_config(write(tmp_path, "")).web
    assert web.staff_filter == DEFAULT_STAFF_FILTER
    assert web.staff_filter == "(&(objectClass=inetOrgPerson)(employeeType=*)(uid=%s))"
    assert web.role_attribute == "employeeType"


def test_staff_keys_set(tmp_path: Path) -> None:
    text = '[web]\nstaff_filter = "(&(objectClass=person)(cn=%s))"\nrole_attribute = "title"\n'
    web = load_config(write(tmp_path, text)).web
    assert web.staff_filter == "(&(objectClass=person)(cn=%s))"
    assert web.role_attribute == "title"


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("staff_filter", '"(uid=ada)"', "exactly once"),
        ("staff_filter", '"(|(uid=%s)(mail=%s))"', "exactly once"),
        ("staff_filter", '"uid=%s"', "in parentheses"),
        ("staff_filter", '"(uid=%s"', "in parentheses"),
        ("staff_filter", "3", "must be a string"),
        ("role_attribute", '""', "attribute name"),
        ("role_attribute", '"employee type"', "attribute name"),
    ],
)
def test_staff_keys_invalid(tmp_path: Path, key: str, value: str, fragment: str) -> None:
    path = write(tmp_path, f"[web]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert (err.file, err.section, err.key) == (str(path), "web", key)
    assert str(path) in str(err) and f"[web] {key}" in str(err) and fragment in str(err)


# -- refusals before any I/O ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("login", "password"), [("ada", ""), ("", "pw"), ("ada", "pw\0"), ("ada\0", "pw")]
)
def test_refused_before_any_ldap_io(tmp_path: Path, login: str, password: str) -> None:
    # Port 9 (discard) on loopback is closed here: reaching it would raise, not return None.
    settings = load_config(write(tmp_path, ""))
    assert sign_in(settings, settings.web, login, password) is None


def test_ldif_directory_is_not_for_staff(tmp_path: Path) -> None:
    ldif = tmp_path / "users.ldif"
    ldif.write_text("")
    path = tmp_path / "proxy.toml"
    path.write_text(f'[directory]\nuri = "ldif:{ldif}"\nbase = "dc=x"\n')
    settings = load_config(path)
    with pytest.raises(StaffDirectoryDown, match="ldif"):
        sign_in(settings, settings.web, "ada", "ada-pw")
