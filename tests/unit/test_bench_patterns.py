"""bench.patterns: the safe pattern evaluator and the users-file format."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.patterns import (
    Credential,
    PatternError,
    compile_pattern,
    expand,
    format_users,
    parse_users,
)


def render(pattern: str, i: int) -> str:
    return compile_pattern(pattern).render(i)


@pytest.mark.parametrize(
    ("pattern", "i", "expected"),
    [
        ("u{i}@d{i%10}.test", 1234, "u1234@d4.test"),
        ("pw{i}", 7, "pw7"),
        ("u{i+1}", 0, "u1"),
        ("u{i - 1}", 0, "u-1"),
        ("{i*2+1}", 5, "11"),
        ("{(i+1)*2}", 5, "12"),
        ("{i//3}", 10, "3"),
        ("{-i % 7}", 3, "4"),  # Python floor semantics
        ("{i:05}", 42, "00042"),
        ("{i%100:3}", 1234, "034"),
        ("plain", 9, "plain"),
        ("{{literal}} {i}", 3, "{literal} 3"),
        ("{ i % 10 }", 13, "3"),
    ],
)
def test_render(pattern: str, i: int, expected: str) -> None:
    assert render(pattern, i) == expected


def test_farm_bulk_users_match_the_farm_scheme() -> None:
    users = expand("u{i}@d{i%10}.test", "pw{i}", 3, start=10)
    assert users == [
        Credential("u10@d0.test", "pw10"),
        Credential("u11@d1.test", "pw11"),
        Credential("u12@d2.test", "pw12"),
    ]


@pytest.mark.parametrize(
    "pattern",
    [
        "{i.__class__}",
        "{__import__('os')}",
        "{i**2}",
        "{j}",
        "{}",
        "{i+}",
        "{(i+1}",
        "{i",
        "u}",
        "{i:x}",
        "{i:05d}",
        "{1 2}",
        "{i; 1}",
        "{ix}",
    ],
)
def test_rejected_patterns(pattern: str) -> None:
    with pytest.raises(PatternError):
        compile_pattern(pattern)


def test_division_by_zero_is_a_pattern_error() -> None:
    with pytest.raises(PatternError):
        render("{i % (i - i)}", 5)


def test_runaway_arithmetic_is_bounded() -> None:
    with pytest.raises(PatternError):
        render("{i*1000000000*1000000000*1000000000}", 5)
    with pytest.raises(PatternError):
        compile_pattern("{99999999999999999999}")


def test_count_must_be_positive() -> None:
    with pytest.raises(PatternError):
        expand("u{i}", "p", 0)


# -- the evaluator agrees with Python's arithmetic on random expressions ------------------


@dataclass(frozen=True)
class Tree:
    text: str
    value: object  # a function of i


def _leaf() -> st.SearchStrategy[tuple[str, object]]:
    return st.one_of(
        st.just(("i", lambda i: i)),
        st.integers(0, 50).map(lambda n: (str(n), lambda i, n=n: n)),
    )


def _combine(children: st.SearchStrategy[tuple[str, object]]) -> st.SearchStrategy:
    ops = {
        "+": lambda a, b: a + b,
        "-": lambda a, b: a - b,
        "*": lambda a, b: a * b,
        "%": lambda a, b: a % b,
        "//": lambda a, b: a // b,
    }

    def build(parts: tuple[tuple[str, object], str, tuple[str, object]]) -> tuple[str, object]:
        (lt, lf), op, (rt, rf) = parts
        def value(i: int) -> int:
            result = ops[op](lf(i), rf(i))  # type: ignore[operator]
            if abs(result) > 10**12:  # the evaluator bounds every step, not just the end
                raise OverflowError
            return result

        return (f"({lt}){op}({rt})", value)

    return st.tuples(children, st.sampled_from(sorted(ops)), children).map(build)


expressions = st.recursive(_leaf(), _combine, max_leaves=6)


@given(expressions, st.integers(0, 10_000))
def test_evaluator_matches_python(expr: tuple[str, object], i: int) -> None:
    text, func = expr
    try:
        expected = func(i)  # type: ignore[operator]
    except ZeroDivisionError:
        with pytest.raises(PatternError):
            render("{" + text + "}", i)
        return
    except OverflowError:  # a step went beyond what the evaluator allows
        with pytest.raises(PatternError, match="out of range"):
            render("{" + text + "}", i)
        return
    assert render("{" + text + "}", i) == str(expected)


@given(st.integers(0, 10**6))
def test_bulk_pattern_matches_fstring(i: int) -> None:
    assert render("u{i}@d{i%10}.test", i) == f"u{i}@d{i % 10}.test"


# -- users files --------------------------------------------------------------------------


def test_users_file_separators_and_comments() -> None:
    users = parse_users(
        [
            "# farm users",
            "",
            "alice@example.co.uk\talice-pw",
            "bob@example.co.uk bob pw with spaces",
            "carol:carol:pw",
            'quote@example.com\tp"a\\ss w0rd',
        ]
    )
    assert users == [
        Credential("alice@example.co.uk", "alice-pw"),
        Credential("bob@example.co.uk", "bob pw with spaces"),
        Credential("carol", "carol:pw"),
        Credential("quote@example.com", 'p"a\\ss w0rd'),
    ]


@pytest.mark.parametrize("lines", [[], ["# only comments"], ["nopassword"], ["\tpw"]])
def test_bad_users_files(lines: list[str]) -> None:
    with pytest.raises(PatternError):
        parse_users(lines)


@given(
    st.lists(
        st.tuples(
            st.text(st.characters(blacklist_characters="\t\r\n :#", codec="utf-8"), min_size=1),
            st.text(st.characters(blacklist_characters="\r\n", codec="utf-8"), min_size=1),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_format_and_parse_round_trip(pairs: list[tuple[str, str]]) -> None:
    users = [Credential(login, password) for login, password in pairs]
    assert parse_users(format_users(users).split("\n")) == users
