"""The users page's BER for server-side sort and VLV, and its cache's invalidation."""

from __future__ import annotations

import pytest

from web import users

# What slapd 2.5 (sssvlv) answered for page 1001 of 100,000 users: targetPosition 50001,
# contentCount 100000, success, and an 8-byte contextID.
SLAPD_VLV_RESPONSE = (
    b"0\x17\x02\x03\x00\xc3Q\x02\x03\x01\x86\xa0\n\x01\x00\x04\x08\xc0/\x10\xb8K\x7f\x00\x00"
)


def test_sort_control_is_one_ascending_key_with_its_ordering_rule() -> None:
    rule = b"caseIgnoreOrderingMatch"
    assert users.sort_control("mail", rule.decode()) == (
        b"\x30\x21\x30\x1f\x04\x04mail\x80\x17" + rule
    )
    assert users.sort_control("mail") == b"\x30\x08\x30\x06\x04\x04mail"


def test_sort_control_long_form_length() -> None:
    value = users.sort_control("a" * 200)
    assert value[:6] == b"\x30\x81\xce\x30\x81\xcb" and value[6:9] == b"\x04\x81\xc8"
    assert len(value) == 3 + 3 + 3 + 200


def test_vlv_control_by_offset() -> None:
    # beforeCount 0, afterCount 49, byOffset [0] {offset 50001 (0x00c351), contentCount 0}
    expected = "3010 020100 020131 a008 020300c351 020100"
    assert users.vlv_control(0, 49, 50001) == bytes.fromhex(expected.replace(" ", ""))
    # 128 needs a leading zero byte to stay positive; 127 does not
    expected = "300f 020100 02017f a007 02020080 020100"
    assert users.vlv_control(0, 127, 128) == bytes.fromhex(expected.replace(" ", ""))


def test_parse_vlv_response_from_slapd() -> None:
    assert users.parse_vlv_response(SLAPD_VLV_RESPONSE) == (50001, 100000, 0)
    assert users.parse_vlv_response(bytes.fromhex("3009020101020100 0a0100".replace(" ", ""))) == (
        1,
        0,
        0,
    )


@pytest.mark.parametrize(
    "value",
    [b"", b"\x04\x00", b"\x30\x05\x02\x01\x01", b"\x30\x03\x02\x01\x01", b"\x30\x00"],
)
def test_parse_vlv_response_refuses_garbage(value: bytes) -> None:
    with pytest.raises(ValueError):
        users.parse_vlv_response(value)


def test_forget_domain_drops_only_that_domains_lists() -> None:
    users.forget_all()
    keys = [("a.example", ""), ("a.example", "bob"), ("b.example", "")]
    for key in keys:
        users._sorted[key] = [("x@" + key[0], "uid=x")] * users.CACHE_MIN_USERS
    users.forget_domain("A.Example")
    assert list(users._sorted) == [("b.example", "")]
    users.forget_all()
    assert not users._sorted


def test_cache_is_bounded_by_the_addresses_it_holds() -> None:
    users.forget_all()
    big = [("x@c.example", "uid=x")] * (users.CACHE_MAX_USERS // 2 + 1)
    users._sorted[("c.example", "")] = big
    users._sorted[("c.example", "q")] = big  # evicts the first: both do not fit
    assert list(users._sorted) == [("c.example", "q")]
    users.forget_all()
