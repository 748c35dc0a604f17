"""The lookup maps as pure data: keys, candidates, answers and their two wire forms."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from directory.model import Route
from proxy.smtp.maps import (
    NOT_FOUND,
    Answer,
    BadRequest,
    Status,
    address_candidates,
    decode_key,
    normalise_domain,
    parse_socketmap,
    render,
    render_transport,
    route_answer,
)

ROUTE = Route(uid="alice_example_co_uk", dn="uid=alice", host="127.0.0.2", mail="alice@x")


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("alice@example.co.uk", ["alice@example.co.uk"]),
        ("Alice@Example.CO.UK", ["alice@example.co.uk"]),
        ("alice+lists@example.co.uk", ["alice+lists@example.co.uk", "alice@example.co.uk"]),
        ("a+b+c@x.org", ["a+b+c@x.org", "a@x.org"]),
        ("+lists@x.org", ["+lists@x.org"]),  # nothing before the delimiter: no stripping
        ("alice-x@x.org", ["alice-x@x.org"]),
        ('"a@b"@x.org', ['"a@b"@x.org']),  # the last @ separates
        ("@example.co.uk", []),
        ("alice", []),
        ("alice@", []),
        ("alice@.co.uk", []),
        ("a@" + "b" * 400, []),
    ],
)
def test_address_candidates(key: str, expected: list[str]) -> None:
    assert address_candidates(key, "+") == expected


def test_delimiter_is_a_set_of_characters_as_in_postfix() -> None:
    assert address_candidates("bob-x+y@x.org", "+-") == ["bob-x+y@x.org", "bob@x.org"]
    assert address_candidates("bob+x@x.org", "") == ["bob+x@x.org"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Example.CO.UK.", "example.co.uk"),
        ("under_score.org", "under_score.org"),
        (".co.uk", None),
        ("a..b", None),
        ("", None),
        ("a b.org", None),
        ("alice@example.org", None),
        ("x" * 254, None),
    ],
)
def test_normalise_domain(text: str, expected: str | None) -> None:
    assert normalise_domain(text) == expected


def test_parse_socketmap() -> None:
    assert parse_socketmap(b"transport alice@x.org") == ("transport", b"alice@x.org")
    assert parse_socketmap(b"Domains a b") == ("domains", b"a b")
    for bad in (b"transport", b"transport ", b" x", b"tr\x00ansport x", b"n" * 65 + b" x"):
        with pytest.raises(BadRequest):
            parse_socketmap(bad)


def test_decode_key() -> None:
    assert decode_key(b"  alice@x.org ") == "alice@x.org"
    assert decode_key("jos\u00e9@x.org".encode()) == "jos\u00e9@x.org"
    assert decode_key(b"\xff@x.org") is None
    assert decode_key(b"a\x01b") is None
    assert decode_key(b"   ") is None


def test_render_transport() -> None:
    assert render_transport("lmtp:inet:{host}:24", "127.0.0.2") == "lmtp:inet:127.0.0.2:24"
    assert render_transport("lmtp:inet:{host}:24", "::1") == "lmtp:inet:[::1]:24"
    assert render_transport("smtp:[{host}]", "mail1.x") == "smtp:[mail1.x]"
    assert render_transport("relay:{host} {port}", "h") == "relay:h {port}"


def test_route_answers() -> None:
    template = "lmtp:inet:{host}:24"
    assert route_answer("mailboxes", ROUTE, template) == Answer(Status.FOUND, ROUTE.uid)
    assert route_answer("transport", ROUTE, template).text == "lmtp:inet:127.0.0.2:24"
    assert route_answer("aliases", ROUTE, template) is NOT_FOUND
    routed = Route(uid="b", dn="x", host="h", routing_address="b@elsewhere.org")
    assert route_answer("aliases", routed, template) == Answer(Status.FOUND, "b@elsewhere.org")
    for name in ("mailboxes", "transport", "aliases"):
        assert route_answer(name, None, template) is NOT_FOUND
    moving = Route(uid="m", dn="x", host="h", login_disabled=True)
    assert route_answer("transport", moving, template).status is Status.TEMP
    assert route_answer("mailboxes", moving, template).status is Status.FOUND
    with pytest.raises(ValueError):
        route_answer("domains", ROUTE, template)


def test_one_table_for_both_wire_forms() -> None:
    assert render(Answer(Status.FOUND, "x")) == (b"OK x", 200)
    assert render(NOT_FOUND) == (b"NOTFOUND ", 500)
    assert render(Answer(Status.TEMP, "ldap down")) == (b"TEMP ldap down", 400)
    assert render(Answer(Status.PERM, "bad")) == (b"PERM bad", 400)


@given(st.binary(max_size=200))
def test_arbitrary_requests_raise_only_bad_request(payload: bytes) -> None:
    try:
        name, key = parse_socketmap(payload)
    except BadRequest:
        return
    assert name.isascii() and key


@given(st.text(max_size=400), st.text(alphabet="+-._", max_size=3))
def test_candidates_never_raise_and_are_addresses(key: str, delimiters: str) -> None:
    for candidate in address_candidates(key, delimiters):
        local, _, domain = candidate.rpartition("@")
        assert local and normalise_domain(domain) == domain
        assert candidate == candidate.lower()
