"""Pure parts of the admin tool: IMAP response parsing, APPEND arguments, CSV rows, names.

No farm needed (these would sit in tests/unit if the file layout allowed it); they pin the
corner cases the integration tests reach only by luck.
"""

from __future__ import annotations

import pytest

from directory.provision import UsageError
from directory.provision.csvimport import Row, RowResult, read_rows
from directory.provision.imapdata import (
    Atom,
    Message,
    ParseError,
    append_args,
    fetch_message,
    folder_checksum,
    join_pieces,
    parse_internaldate,
    parse_response,
    uid_set,
)
from directory.provision.users import check_address, choose_host, uid_for_address


def test_fetch_with_literal_body_containing_parentheses_and_crlf() -> None:
    body = b'Subject: (x) "y"\r\n\r\n) {3}\r\n('
    data = (
        b'* 3 FETCH (UID 17 FLAGS (\\Seen $Label1) INTERNALDATE " 7-Jul-2021 10:00:01 +0200"'
        b" BODY[] {%d}\r\n" % len(body) + body + b")\r\n"
    )
    message = fetch_message(parse_response(data))
    assert message == Message(17, ("\\Seen", "$Label1"), " 7-Jul-2021 10:00:01 +0200", body)


def test_flag_update_without_body_is_skipped() -> None:
    assert fetch_message(parse_response(b"* 3 FETCH (FLAGS (\\Seen))\r\n")) is None


def test_list_names_quoted_literal_and_atom() -> None:
    assert parse_response(b'* LIST (\\HasNoChildren) "." "a \\"b\\" c"\r\n') == [
        Atom(b"LIST"),
        [Atom(b"\\HasNoChildren")],
        b".",
        b'a "b" c',
    ]
    assert parse_response(b'* LIST () "." {5}\r\nx\r\ny)\r\n')[3] == b"x\r\ny)"
    assert parse_response(b"* LIST () NIL INBOX\r\n")[2:] == [Atom(b"NIL"), Atom(b"INBOX")]


def test_section_with_spaces_stays_one_atom() -> None:
    tokens = parse_response(b"* 1 FETCH (BODY[HEADER.FIELDS (FROM TO)] {0}\r\n)\r\n")
    assert tokens[2] == [Atom(b"BODY[HEADER.FIELDS (FROM TO)]"), b""]


@pytest.mark.parametrize(
    "bad", [b"* 1 FETCH (UID 1\r\n", b"* X {99}\r\nshort\r\n", b'* X "open\r\n', b"* X )\r\n"]
)
def test_malformed_responses_raise(bad: bytes) -> None:
    with pytest.raises(ParseError):
        parse_response(bad)


def test_internaldate_compares_instants() -> None:
    a = parse_internaldate(" 7-Jul-2021 10:00:01 +0200")
    b = parse_internaldate("07-Jul-2021 08:00:01 +0000")
    assert a == b
    with pytest.raises(ParseError):
        parse_internaldate("yesterday")


def test_digest_ignores_recent_order_and_zone() -> None:
    one = Message(1, ("\\Seen", "\\Recent", "$A"), "01-Jan-2020 00:00:00 +0000", b"x")
    two = Message(9, ("$a", "\\SEEN"), "01-Jan-2020 01:00:00 +0100", b"x")
    assert one.digest() == two.digest()
    assert folder_checksum([one.digest(), "b"]) == folder_checksum(["b", two.digest()])
    assert Message(1, (), "01-Jan-2020 00:00:01 +0000", b"x").digest() != one.digest()


def test_multiappend_with_and_without_literal_plus() -> None:
    messages = [
        Message(1, ("\\Seen", "\\Recent"), "01-Jan-2020 00:00:00 +0000", b"ab"),
        Message(2, (), "", b"c"),
    ]
    plus = join_pieces([[b"t1 APPEND"], *append_args(b"My Box", messages, literal_plus=True)])
    assert plus == [
        b't1 APPEND "My Box" (\\Seen) "01-Jan-2020 00:00:00 +0000" {2+}\r\nab () {1+}\r\nc\r\n'
    ]
    sync = join_pieces([[b"t1 APPEND"], *append_args(b"x\r\n", messages[1:], literal_plus=False)])
    assert sync == [b"t1 APPEND {3}\r\n", b"x\r\n () {1}\r\n", b"c\r\n"]


def test_uid_sets() -> None:
    assert uid_set([7, 1, 2, 3, 9, 10]) == b"1:3,7,9:10"
    assert uid_set([5]) == b"5"


def test_csv_rows() -> None:
    rows = list(read_rows('address,password\na@x.test,"p,w"\n\n#c\nb@x.test,pw,h1\nbad\n'))
    assert rows[0] == Row(2, "a@x.test", "p,w", None)
    assert rows[1] == Row(5, "b@x.test", "pw", "h1")
    assert isinstance(rows[2], RowResult) and rows[2].status == "failed"
    assert "p,w" not in repr(rows[0])


def test_addresses_uids_and_host_choice() -> None:
    assert check_address(" Jo.Anne@Under_Score.ORG ") == ("jo.anne", "under_score.org")
    assert uid_for_address("jo.anne@under_score.org") == "jo_anne_under_score_org"
    for bad in ("no-at", "@x.test", "a..b@x.test", "a b@x.test", "a@nodot"):
        with pytest.raises(UsageError):
            check_address(bad)
    assert choose_host({"h1": 3, "h2": 1}, ["h1", "h2"]) == "h2"
    assert choose_host({"h1": 2, "h2": 2}, ["h2", "h1"]) == "h2"  # ties: listed first
    assert choose_host({}, ["h1", "h2"]) == "h1"
