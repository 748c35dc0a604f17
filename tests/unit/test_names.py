from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from directory.names import (
    BadLogin,
    escape_filter_value,
    normalise_login,
    render_filter,
    strip_extension,
)


def test_normalise_folds_case_and_trims() -> None:
    assert normalise_login("  Alice@Example.CO.UK ") == "alice@example.co.uk"
    assert normalise_login("ALICE_EXAMPLE_CO_UK") == "alice_example_co_uk"


@pytest.mark.parametrize(
    "spelling", [" dave@example.com", "dave@example.com\t", "\u00a0dave@example.com\r\n"]
)
def test_normalise_strips_any_surrounding_whitespace(spelling: str) -> None:
    assert normalise_login(spelling) == "dave@example.com"


def test_normalise_composes_unicode() -> None:
    assert normalise_login("Jose\u0301@example.com") == normalise_login("jos\u00e9@example.com")
    assert normalise_login("jose\u0301@example.com") == "jos\u00e9@example.com"


@pytest.mark.parametrize("bad", ["", "   ", "a\x00b", "a\nb", "a\x7fb", "a\x01", "x" * 400])
def test_normalise_rejects(bad: str) -> None:
    with pytest.raises(BadLogin):
        normalise_login(bad)


def test_escape_rfc4515() -> None:
    assert escape_filter_value("*)(uid=*") == r"\2a\29\28uid=\2a"
    assert escape_filter_value("a\\b\x00") == r"a\5cb\00"
    assert render_filter("(|(uid=%s)(mail=%s))", "x*") == r"(|(uid=x\2a)(mail=x\2a))"


@given(st.text())
def test_escaped_value_has_no_special_characters(value: str) -> None:
    escaped = escape_filter_value(value)
    assert not set(escaped) & {"*", "(", ")", "\x00"}
    # every backslash starts an escape
    i = escaped.find("\\")
    while i >= 0:
        assert escaped[i + 1 : i + 3] in ("5c", "2a", "28", "29", "00")
        i = escaped.find("\\", i + 3)


def test_strip_extension() -> None:
    assert strip_extension("alice+lists@example.co.uk") == "alice@example.co.uk"
    assert strip_extension("alice@example.co.uk") == "alice@example.co.uk"
    assert strip_extension("+x@example.org") == "+x@example.org"
    assert strip_extension("not-an-address") == "not-an-address"
