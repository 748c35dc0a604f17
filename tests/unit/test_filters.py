"""RFC 4515 filters: parsing, evaluation, and that a rendered login can only match itself."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from directory.filters import (
    MAX_DEPTH,
    And,
    Approx,
    Equal,
    Filter,
    FilterError,
    GreaterOrEqual,
    LessOrEqual,
    Not,
    Or,
    Present,
    Substring,
    format_filter,
    matches,
    parse_filter,
)
from directory.names import render_filter

TEMPLATE = "(|(uid=%s)(mail=%s))"
DEFAULT_TEMPLATE = "(&(objectClass=inetLocalMailRecipient)(|(uid=%s)(mail=%s)))"


def entry(**attrs: str | list[str]) -> dict[str, list[str]]:
    return {k.lower(): [v] if isinstance(v, str) else v for k, v in attrs.items()}


# The examples of RFC 4515 section 4 (extensible ones are tested separately).
RFC_EXAMPLES = [
    ("(cn=Babs Jensen)", Equal("cn", "Babs Jensen")),
    ("(!(cn=Tim Howes))", Not(Equal("cn", "Tim Howes"))),
    (
        "(&(objectClass=Person)(|(sn=Jensen)(cn=Babs J*)))",
        And((Equal("objectclass", "Person"),
             Or((Equal("sn", "Jensen"), Substring("cn", "Babs J", (), None))))),
    ),
    ("(o=univ*of*mich*)", Substring("o", "univ", ("of", "mich"), None)),
    ("(seeAlso=)", Equal("seealso", "")),
    (
        r"(o=Parens R Us \28for all your parenthetical needs\29)",
        Equal("o", "Parens R Us (for all your parenthetical needs)"),
    ),
    (r"(cn=*\2A*)", Substring("cn", None, ("*",), None)),
    (r"(filename=C:\5cMyFile)", Equal("filename", "C:\\MyFile")),
    (r"(bin=\00\00\00\04)", Equal("bin", "\x00\x00\x00\x04")),
    (r"(sn=Lu\c4\8di\c4\87)", Equal("sn", "Lu\u010di\u0107")),
    (r"(1.3.6.1.4.1.1466.0=\04\02\48\69)", Equal("1.3.6.1.4.1.1466.0", "\x04\x02Hi")),
]


@pytest.mark.parametrize(("text", "tree"), RFC_EXAMPLES)
def test_rfc4515_examples(text: str, tree: Filter) -> None:
    assert parse_filter(text) == tree
    assert parse_filter(format_filter(tree)) == tree


@pytest.mark.parametrize(
    "text",
    [
        "(cn:caseExactMatch:=Fred Flintstone)",
        "(cn:=Betty Rubble)",
        "(sn:dn:2.4.6.8.10:=Barney Rubble)",
        "(o:dn:=Ace Industry)",
        "(:1.2.3:=Wilma Flintstone)",
        "(:DN:2.4.6.8.10:=Dino)",
    ],
)
def test_extensible_matches_are_refused_clearly(text: str) -> None:
    with pytest.raises(FilterError, match="extensible match"):
        parse_filter(text)


def test_operators_and_presence() -> None:
    assert parse_filter("(mail=*)") == Present("mail")
    assert parse_filter("(cn~=bab)") == Approx("cn", "bab")
    assert parse_filter("(uidNumber>=1000)") == GreaterOrEqual("uidnumber", "1000")
    assert parse_filter("(uidNumber<=1000)") == LessOrEqual("uidnumber", "1000")
    assert parse_filter("(cn=*a)") == Substring("cn", None, (), "a")
    assert parse_filter("(cn=a**b)") == Substring("cn", "a", (), "b")
    assert parse_filter("(cn;lang-en=x)") == Equal("cn;lang-en", "x")


def test_attribute_names_are_case_insensitive() -> None:
    assert parse_filter("(MailHost=a)") == parse_filter("(mailhost=a)")
    assert matches(parse_filter("(OBJECTCLASS=InetOrgPerson)"), entry(objectClass="inetOrgPerson"))


def test_escapes_are_literal_never_wildcards() -> None:
    assert parse_filter(r"(uid=\2a)") == Equal("uid", "*")
    assert parse_filter(r"(uid=\2A\5C\28\29\00)") == Equal("uid", "*\\()\x00")
    star = parse_filter(r"(cn=*\2a*)")
    assert matches(star, entry(cn="a*b"))
    assert not matches(star, entry(cn="ab"))
    assert not matches(parse_filter(r"(uid=\2a)"), entry(uid="alice"))
    assert matches(parse_filter(r"(uid=\2a)"), entry(uid="*"))


def test_bare_filter_and_whitespace_between_items() -> None:
    assert parse_filter("uid=alice") == Equal("uid", "alice")
    assert parse_filter("&(uid=a)(mail=b)") == And((Equal("uid", "a"), Equal("mail", "b")))
    multi = "\n  (&\n    (objectClass=x)\n    (|(uid=a) (mail=a))\n  )\n"
    assert parse_filter(multi) == And(
        (Equal("objectclass", "x"), Or((Equal("uid", "a"), Equal("mail", "a"))))
    )
    # Inside an item a space belongs to the value.
    assert parse_filter("(cn= a )") == Equal("cn", " a ")


def test_absolute_true_and_false() -> None:
    assert matches(parse_filter("(&)"), {})
    assert not matches(parse_filter("(|)"), {})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty filter"),
        ("   ", "empty filter"),
        ("(uid=a", "missing '\\)'"),
        ("(uid=a))", "unexpected text"),
        ("(uid=a)(uid=b)", "unexpected text"),
        ("(uid=a(b)", "unescaped '\\('"),
        ("(uid=a\x00)", "NUL"),
        (r"(uid=\zz)", "two hex digits"),
        ("(uid=\\2)", "two hex digits"),
        ("(uid=a\\)", "two hex digits"),
        ("()", "attribute description"),
        ("(=a)", "attribute description"),
        ("(uid)", "expected ="),
        ("(uid!=a)", "expected ="),
        ("(uidNumber>=1*)", "unescaped '\\*'"),
        ("(!)", "expected '\\('"),
        ("(&(uid=a)", "expected '\\)'"),
        ("(&(uid=a) x)", "expected '\\)'"),
    ],
)
def test_errors_say_what_and_where(text: str, message: str) -> None:
    with pytest.raises(FilterError, match=message) as info:
        parse_filter(text)
    if text.strip():
        assert "offset" in str(info.value)


def test_nesting_is_bounded() -> None:
    deep = "(!" * (MAX_DEPTH + 5) + "(uid=a)" + ")" * (MAX_DEPTH + 5)
    with pytest.raises(FilterError, match="nested deeper"):
        parse_filter(deep)
    ok = "(!" * 11 + "(uid=a)" + ")" * 11  # an odd number of negations
    assert not matches(parse_filter(ok), entry(uid="a"))


def test_values_match_case_insensitively() -> None:
    e = entry(uid="Alice_Example_Co_UK", mail=["alice@example.co.uk", "A.Liddell@Example.CO.UK"])
    assert matches(parse_filter("(uid=alice_example_co_uk)"), e)
    assert matches(parse_filter("(mail=a.liddell@example.co.uk)"), e)
    assert matches(parse_filter("(mail=ALICE@EXAMPLE.CO.UK)"), e)
    assert not matches(parse_filter("(mail=alice@example.co)"), e)


def test_presence_absence_and_not() -> None:
    e = entry(uid="a", mailHost="127.0.0.2")
    assert matches(parse_filter("(mailHost=*)"), e)
    assert not matches(parse_filter("(mailRoutingAddress=*)"), e)
    assert not matches(parse_filter("(mailRoutingAddress=x)"), e)
    assert matches(parse_filter("(!(mailRoutingAddress=x))"), e)
    assert not matches(parse_filter("(empty=*)"), {"empty": []})


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("(cn=Babs J*)", "babs jensen", True),
        ("(cn=Babs J*)", "Bab Jensen", False),
        ("(cn=*jensen)", "Babs Jensen", True),
        ("(cn=*s j*)", "Babs Jensen", True),
        ("(o=univ*of*mich*)", "University of Michigan", True),
        ("(o=univ*mich*of*)", "University of Michigan", False),
        ("(cn=ab*ba)", "aba", False),  # initial and final must not overlap
        ("(cn=ab*ba)", "abba", True),
        ("(cn=a*a*a)", "aaa", True),
        ("(cn=a*a*a)", "aa", False),
    ],
)
def test_substrings(pattern: str, value: str, expected: bool) -> None:
    assert matches(parse_filter(pattern), entry(cn=value, o=value)) is expected


def test_ordering_is_numeric_for_integers_else_textual() -> None:
    e = entry(uidNumber="900", cn="Mallory")
    assert matches(parse_filter("(uidNumber<=1000)"), e)
    assert not matches(parse_filter("(uidNumber>=1000)"), e)
    assert matches(parse_filter("(cn>=bob)"), e)
    assert matches(parse_filter("(cn<=MALLORY)"), e)
    assert matches(parse_filter("(cn~=mallory)"), e)


# --- injection: a login rendered into the template can only ever match itself -----------

ENTRIES = [
    entry(objectClass="inetLocalMailRecipient", uid="alice", mail="alice@example.co.uk"),
    entry(objectClass="inetLocalMailRecipient", uid="bob", mail="bob@example.co.uk"),
    entry(objectClass="inetLocalMailRecipient", uid="*", mail="star@example.com"),
    entry(objectClass="inetLocalMailRecipient", uid="(", mail="paren@example.com"),
    entry(objectClass="inetLocalMailRecipient", uid="\\", mail="backslash@example.com"),
    entry(objectClass="inetLocalMailRecipient", uid="x\x00", mail="nul@example.com"),
    entry(objectClass="person", uid="*)(uid=*"),
]


def matching(login: str, template: str = TEMPLATE) -> list[dict[str, list[str]]]:
    wanted = parse_filter(render_filter(template, login))
    return [e for e in ENTRIES if matches(wanted, e)]


@pytest.mark.parametrize(
    "login",
    ["*", "*)(uid=*", "*)(|(uid=*", "\\", "(", ")", "\x00", "x\x00", "alice*", "*@example.co.uk",
     "alice)(uid=*", "*)(objectClass=*", "\\2a", "alice\\"],
)
def test_injection_matches_only_the_literal_login(login: str) -> None:
    for template in (TEMPLATE, DEFAULT_TEMPLATE):
        for found in matching(login, template):
            assert login in found["uid"] or login in found.get("mail", [])


def test_injection_literals_do_match_their_own_entries() -> None:
    assert [e["mail"] for e in matching("*")] == [["star@example.com"]]
    assert [e["mail"] for e in matching("(")] == [["paren@example.com"]]
    assert [e["mail"] for e in matching("\\")] == [["backslash@example.com"]]
    assert [e["mail"] for e in matching("x\x00")] == [["nul@example.com"]]
    assert matching("\x00") == []
    assert matching(")") == []
    assert matching("*)(uid=*", DEFAULT_TEMPLATE) == []  # that entry is no mail recipient
    assert len(matching("*)(uid=*")) == 1


login_text = st.text(max_size=40) | st.sampled_from(
    ["*", "*)(uid=*", "\\", "(", ")", "\x00", "alice", "ALICE", "Alice@Example.CO.UK"]
)


@given(login=login_text, others=st.lists(st.text(max_size=12), max_size=4))
def test_rendered_login_matches_only_itself(login: str, others: list[str]) -> None:
    parsed = parse_filter(render_filter(TEMPLATE, login))
    candidates = [login, login.upper(), login.lower(), login + "x", "x" + login, "*", *others]
    for value in candidates:
        by_uid = entry(uid=value, mail="someone@example.com")
        by_mail = entry(uid="someone", mail=[value, "other@example.com"])
        expected = value.casefold() == login.casefold()
        assert matches(parsed, by_uid) is expected
        assert matches(parsed, by_mail) is expected


attrs = st.sampled_from(["uid", "mail", "cn", "objectclass", "2.5.4.3", "cn;lang-en"])
values = st.text(max_size=8)
nonempty = st.text(min_size=1, max_size=8)
leaves = st.one_of(
    st.builds(Equal, attrs, values),
    st.builds(Approx, attrs, values),
    st.builds(GreaterOrEqual, attrs, values),
    st.builds(LessOrEqual, attrs, values),
    st.builds(Present, attrs),
    st.builds(
        Substring, attrs, st.none() | nonempty, st.lists(nonempty, max_size=3).map(tuple),
        st.none() | nonempty,
    ).filter(lambda s: s.initial is not None or s.any or s.final is not None),
)
filters = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda items: And(tuple(items))),
        st.lists(inner, max_size=3).map(lambda items: Or(tuple(items))),
        inner.map(Not),
    ),
    max_leaves=12,
)


@given(filters)
def test_format_then_parse_is_identity(tree: Filter) -> None:
    assert parse_filter(format_filter(tree)) == tree


@given(st.text(alphabet="()&|!=*~<>\\:ab0 ;", max_size=30) | st.text(max_size=30))
def test_arbitrary_text_parses_or_raises_filter_error(text: str) -> None:
    try:
        tree = parse_filter(text)
    except FilterError:
        return
    matches(tree, entry(a="b", b="a"))
