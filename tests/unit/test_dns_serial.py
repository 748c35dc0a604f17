"""The SOA serial (YYYYMMDDnn) must grow on every change, whatever the old value was."""

from __future__ import annotations

from datetime import date

from hypothesis import given
from hypothesis import strategies as st

from directory.provision.dns import Soa, bump_serial, soa_with_serial

TODAY = date(2024, 6, 15)


def test_first_change_of_the_day_is_01() -> None:
    assert bump_serial(0, TODAY) == 2024061501
    assert bump_serial(2024061423, TODAY) == 2024061501


def test_later_changes_count_up() -> None:
    assert bump_serial(2024061501, TODAY) == 2024061502
    assert bump_serial(2024061598, TODAY) == 2024061599


def test_a_hundredth_change_runs_into_tomorrow_not_backwards() -> None:
    assert bump_serial(2024061599, TODAY) == 2024061600
    assert bump_serial(2024061600, TODAY) == 2024061601


def test_a_serial_ahead_of_the_clock_still_grows() -> None:
    assert bump_serial(2030010101, TODAY) == 2030010102


def test_soa_with_serial_keeps_the_timers() -> None:
    soa = Soa("ns1.example.com.", "hostmaster.example.com.", 2024061507, 1, 2, 3, 4)
    bumped = soa_with_serial(soa, TODAY)
    assert bumped.serial == 2024061508
    assert (bumped.refresh, bumped.retry, bumped.expire, bumped.minimum) == (1, 2, 3, 4)


@given(
    old=st.integers(min_value=0, max_value=2**31),
    day=st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31)),
)
def test_always_strictly_greater(old: int, day: date) -> None:
    new = bump_serial(old, day)
    assert new > old
    assert new >= int(day.strftime("%Y%m%d")) * 100 + 1
