"""The embedded LDIF directory: reading RFC 2849 and answering as the LDAP source would."""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path

import pytest

from directory.filters import FilterError
from directory.ldif import LdifError, LdifSource, normalise_dn, parse_ldif
from directory.model import DirectoryUnavailable, Route, UserSource
from directory.passwords import crypt_available

DATA = Path(__file__).parent.parent / "data" / "users.ldif"
BASE = "dc=mailfarm,dc=test"
FILTER = "(&(objectClass=inetLocalMailRecipient)(|(uid=%s)(mail=%s)))"
ALICE_DN = "uid=alice_example_co_uk,ou=users,dc=example.co.uk,ou=domains,dc=mailfarm,dc=test"

# login, dn, password, as listed in the comment at the top of users.ldif
USERS = {
    "alice": ("alice@example.co.uk", ALICE_DN, "alice-secret"),
    "bob": (
        "bob@example.co.uk",
        "uid=bob_example_co_uk,ou=users,dc=example.co.uk,ou=domains,dc=mailfarm,dc=test",
        "bob-secret",
    ),
    "carol": (
        "carol@example.com",
        "uid=carol_example_com,ou=users,dc=example.com,ou=domains,dc=mailfarm,dc=test",
        "carol-secret",
    ),
    "jo_anne": (
        "jo_anne@under_score.org",
        "uid=jo_anne_under_score_org,ou=users,dc=under_score.org,ou=domains,dc=mailfarm,dc=test",
        "jo-anne-secret",
    ),
    "dave": (
        "dave@example.com",
        "uid=dave_example_com,ou=users,dc=example.com,ou=domains,dc=mailfarm,dc=test",
        "dave-secret",
    ),
}
ERIN_DN = "uid=erin_example_com,ou=users,dc=example.com,ou=domains,dc=mailfarm,dc=test"
MALLORY_DN = "uid=mallory,ou=users,dc=other,dc=test"


@pytest.fixture(scope="module")
def source() -> LdifSource:
    return LdifSource(DATA, BASE, FILTER)


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "d.ldif"
    path.write_text(body, encoding="utf-8")
    return path


def person(uid: str, *extra: str, base: str = "ou=people,dc=t") -> str:
    lines = [f"dn: uid={uid},{base}", "objectClass: inetLocalMailRecipient", *extra]
    if not any(line.startswith("uid:") for line in extra):
        lines.insert(2, f"uid: {uid}")
    return "\n".join(lines) + "\n\n"


# --- find ---------------------------------------------------------------------------------


def test_is_a_user_source(source: LdifSource) -> None:
    assert isinstance(source, LdifSource)
    _: UserSource = source


def test_find_by_address_and_by_uid(source: LdifSource) -> None:
    expected = Route(
        uid="alice_example_co_uk", dn=ALICE_DN, host="127.0.0.2", mail="alice@example.co.uk"
    )
    assert source.find("alice@example.co.uk") == expected
    assert source.find("alice_example_co_uk") == expected


def test_find_ignores_case(source: LdifSource, tmp_path: Path) -> None:
    assert source.find("ALICE@Example.CO.UK") == source.find("alice@example.co.uk")
    mixed = LdifSource(
        write(tmp_path, person("Frank", "mail: Frank@Example.ORG", "mailHost: H1")), "dc=t", FILTER
    )
    route = mixed.find("frank@example.org")
    assert route is not None and route.uid == "Frank" and route.host == "H1"
    assert mixed.find("frank") == route


def test_co_uk_and_underscores(source: LdifSource) -> None:
    route = source.find("jo_anne@under_score.org")
    assert route is not None
    assert route.uid == "jo_anne_under_score_org" and route.host == "127.0.0.4"
    assert source.find("jo_anne_under_score_org") == route
    # Nothing guesses a domain by splitting the uid on "_".
    assert source.find("jo@anne_under_score.org") is None
    assert source.find("anne@under_score.org") is None
    assert source.find("alice@example.co") is None
    assert source.find("alice@co.uk") is None


def test_routing_address_and_other_fields(source: LdifSource) -> None:
    route = source.find("bob@example.co.uk")
    assert route == Route(
        uid="bob_example_co_uk",
        dn=USERS["bob"][1],
        host="127.0.0.3",
        port=None,
        mail="bob@example.co.uk",
        routing_address="bob@mbox3.example.co.uk",
        login_disabled=False,
    )


def test_folded_line_and_base64_values(source: LdifSource) -> None:
    route = source.find("dave@example.com")  # the mail line is folded in the file
    assert route is not None and route.mail == "dave@example.com"
    dave = dict(parse_ldif(DATA.read_text(encoding="utf-8")))[USERS["dave"][1]]
    assert dave["cn"] == ["D\u00e1vid \u00dcn\u00efcode"]
    assert dave["userPassword"][0].startswith("{SHA}")


@pytest.mark.parametrize(
    "login",
    ["*", "*)(uid=*", "*)(|(uid=*", "\\", "(", ")", "\x00", "alice*", "*@example.co.uk",
     "alice_example_co_uk)(uid=*", "*)(objectClass=*", "a*", "*e*", "\\2a", ""],
)
def test_injection_finds_nobody(source: LdifSource, login: str) -> None:
    assert source.find(login) is None


def test_entry_without_mail_host_cannot_route(source: LdifSource, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="directory.ldif"):
        assert source.find("erin@example.com") is None
    assert "no mailHost" in caplog.text and "erin_example_com" in caplog.text
    assert source.bind(ERIN_DN, "erin-secret")  # the entry itself is there


def test_entry_outside_the_base_is_ignored(source: LdifSource) -> None:
    assert source.find("mallory@example.com") is None
    assert source.find("mallory") is None
    assert not source.bind(MALLORY_DN, "mallory-secret")
    everything = LdifSource(DATA, "dc=test", FILTER)
    assert everything.find("mallory") is not None
    assert everything.bind(MALLORY_DN, "mallory-secret")


def test_ambiguity_is_refused_and_logged(tmp_path: Path, caplog) -> None:
    body = person("a1", "mail: same@example.org", "mailHost: h1") + person(
        "a2", "mail: same@example.org", "mailHost: h2"
    )
    src = LdifSource(write(tmp_path, body), "dc=t", FILTER)
    with caplog.at_level(logging.WARNING, logger="directory.ldif"):
        assert src.find("same@example.org") is None
    assert "uid=a1,ou=people,dc=t" in caplog.text and "uid=a2,ou=people,dc=t" in caplog.text
    assert src.find("a1") is not None


def test_unroutable_entries(tmp_path: Path) -> None:
    body = (
        person("twohosts", "mailHost: h1", "mailHost: h2")
        + person("samehost", "mailHost: h1", "mailHost: H1")
        + person("blankhost", "mailHost: ")
        + "dn: cn=nouid,ou=people,dc=t\nobjectClass: inetLocalMailRecipient\n"
        "mail: nouid@example.org\nmailHost: h1\n"
    )
    src = LdifSource(write(tmp_path, body), "dc=t", FILTER)
    assert src.find("twohosts") is None
    assert src.find("blankhost") is None
    assert src.find("nouid@example.org") is None
    route = src.find("samehost")
    assert route is not None and route.host == "h1"


def test_port_and_disabled_attributes(tmp_path: Path) -> None:
    body = (
        person("p1", "mailHost: h", "mailPort: 1143", "moving: TRUE")
        + person("p2", "mailHost: h", "mailPort: seventy", "moving: FALSE")
        + person("p3", "mailHost: h", "mailPort: 70000", "moving: yes")
        + person("p4", "mailHost: h", "moving: 1")
        + person("p5", "mailHost: h", "mailport: 995", "Moving: no")
    )
    path = write(tmp_path, body)
    src = LdifSource(path, "dc=t", FILTER, port_attribute="mailPort", disabled_attribute="moving")
    found = {uid: src.find(uid) for uid in ("p1", "p2", "p3", "p4", "p5")}
    assert {uid: r.port for uid, r in found.items() if r} == {
        "p1": 1143, "p2": None, "p3": None, "p4": None, "p5": 995
    }
    assert {uid: r.login_disabled for uid, r in found.items() if r} == {
        "p1": True, "p2": False, "p3": True, "p4": True, "p5": False
    }
    # proxy.toml spells "unset" as an empty string
    plain = LdifSource(path, "dc=t", FILTER, port_attribute="", disabled_attribute="")
    assert plain.find("p1") == Route(uid="p1", dn="uid=p1,ou=people,dc=t", host="h")


def test_custom_host_attribute_and_filter(tmp_path: Path) -> None:
    body = person("u", "mail: u@x.org", "mailHost: wrong", "imapHost: right")
    src = LdifSource(write(tmp_path, body), "dc=t", "(mail=%s)", host_attribute="imaphost")
    route = src.find("u@x.org")
    assert route is not None and route.host == "right"
    assert src.find("u") is None


def test_bad_filter_template_fails_at_startup(tmp_path: Path) -> None:
    with pytest.raises(FilterError):
        LdifSource(DATA, BASE, "(uid=%s")


# --- bind ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "user",
    ["alice", "bob", pytest.param("carol", marks=pytest.mark.skipif(
        not crypt_available(), reason="no crypt module")), "jo_anne", "dave"],
)
def test_bind_each_scheme(source: LdifSource, user: str) -> None:
    login, dn, password = USERS[user]
    route = source.find(login)
    assert route is not None and route.dn == dn
    assert source.bind(route.dn, password)
    assert not source.bind(route.dn, password + "x")
    assert not source.bind(route.dn, password.upper())
    assert not source.bind(route.dn, "")


def test_bind_dn_spelling_does_not_matter(source: LdifSource) -> None:
    assert source.bind(ALICE_DN.upper(), "alice-secret")
    assert source.bind(ALICE_DN.replace(",", ", "), "alice-secret")
    assert source.bind("UID = alice_example_co_uk , ou=users,dc=example.co.uk,ou=domains,"
                       "dc=mailfarm,dc=test", "alice-secret")
    assert source.bind(ALICE_DN.replace("alice", "\\61lice"), "alice-secret")


def test_bind_refusals(source: LdifSource) -> None:
    assert not source.bind("uid=nobody,ou=users,dc=example.co.uk,ou=domains," + BASE, "x")
    assert not source.bind("not a dn", "alice-secret")
    assert not source.bind("", "alice-secret")
    assert not source.bind(BASE, "alice-secret")  # an entry without userPassword
    assert not source.bind(ERIN_DN, "")
    assert not source.bind(ALICE_DN, "\x00")


# --- reload, close, errors ---------------------------------------------------------------


def test_reload_and_bad_reload_keeps_old_data(tmp_path: Path) -> None:
    path = tmp_path / "users.ldif"
    shutil.copy(DATA, path)
    src = LdifSource(path, BASE, FILTER)
    assert src.find("alice_example_co_uk").host == "127.0.0.2"  # type: ignore[union-attr]
    path.write_text(DATA.read_text().replace("mailHost: 127.0.0.2", "mailHost: 10.0.0.9"))
    src.reload()
    assert src.find("alice_example_co_uk").host == "10.0.0.9"  # type: ignore[union-attr]
    good = path.read_text()
    path.write_text(good + "\ndn: uid=x,dc=mailfarm,dc=test\nthis line is broken\n")
    broken_line = len(good.split("\n")) + 2
    with pytest.raises(LdifError, match=f"line {broken_line}:") as info:
        src.reload()
    assert str(path) in str(info.value) and info.value.line == broken_line
    assert src.find("alice_example_co_uk").host == "10.0.0.9"  # type: ignore[union-attr]
    path.unlink()
    with pytest.raises(LdifError, match="cannot read"):
        src.reload()
    assert src.find("alice@example.co.uk") is not None


def test_close(tmp_path: Path) -> None:
    src = LdifSource(DATA, BASE, FILTER)
    src.close()
    with pytest.raises(DirectoryUnavailable):
        src.find("alice@example.co.uk")
    with pytest.raises(DirectoryUnavailable):
        src.bind(ALICE_DN, "alice-secret")
    src.close()


def test_missing_file_and_duplicate_dns(tmp_path: Path) -> None:
    with pytest.raises(LdifError, match="cannot read"):
        LdifSource(tmp_path / "nope.ldif", BASE, FILTER)
    body = person("a", "mailHost: h") + "dn: UID=A, ou=People,dc=t\nuid: a\n"
    with pytest.raises(LdifError, match="line 6: duplicate entry"):
        LdifSource(write(tmp_path, body), "dc=t", FILTER)


def test_reads_while_reloading_see_whole_snapshots(tmp_path: Path) -> None:
    path = tmp_path / "users.ldif"
    shutil.copy(DATA, path)
    src = LdifSource(path, BASE, FILTER)
    failures: list[object] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            route = src.find("alice@example.co.uk")
            if route is None or route.host != "127.0.0.2" or not src.bind(route.dn, "alice-secret"):
                failures.append(route)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(20):
            src.reload()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []


# --- parse_ldif ---------------------------------------------------------------------------


def test_parse_ldif_basics() -> None:
    text = (
        "# comment\r\n"
        "version: 1\r\n"
        "dn: cn=a,dc=t\r\n"
        "changetype: add\r\n"
        "objectClass: top\r\n"
        "Description: one long\r\n"
        "  line\r\n"
        "# a comment inside a record\r\n"
        "description: two\r\n"
        "cn:: QsOkcg==\r\n"
        "sn:  padded   \r\n"
        "empty:\r\n"
        "  \r\n"
        "dn:: Y249YixkYz10\r\n"
        "cn: b\r\n"
    )
    assert parse_ldif(text) == [
        ("cn=a,dc=t", {"objectClass": ["top"], "Description": ["one long line", "two"],
                       "cn": ["B\u00e4r"], "sn": ["padded"], "empty": [""]}),
        ("cn=b,dc=t", {"cn": ["b"]}),
    ]


def test_attribute_names_are_case_insensitive() -> None:
    ((_, attrs),) = parse_ldif("dn: cn=a\nmailHost: h1\nMAILHOST: h2\n")
    assert list(attrs) == ["mailHost"]
    assert attrs["mailhost"] == ["h1", "h2"] and attrs.get("MailHost") == ["h1", "h2"]
    assert "MAILHOST" in attrs and "mail" not in attrs and attrs.get("mail") is None
    del attrs["MAILHOST"]
    assert attrs == {}


def test_binary_values_survive() -> None:
    ((_, attrs),) = parse_ldif("dn: cn=a\njpegPhoto:: /9j/4A==\n")
    assert attrs["jpegPhoto"][0].encode("utf-8", "surrogateescape") == b"\xff\xd8\xff\xe0"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("dn: cn=a\njpegPhoto:< file:///etc/passwd\n", 2, "URL"),
        ("dn: cn=a\ncn: a\nno colon here\n", 3, "expected 'attribute: value'"),
        ("\n\ncn: a\n", 3, "must start with 'dn:'"),
        ("dn: cn=a\ncn:: not*base64\n", 2, "base64"),
        ("version: 2\ndn: cn=a\n", 1, "version 1"),
        (" continued\n", 1, "nothing to continue"),
        ("dn: cn=a\nchangetype: modify\nreplace: cn\n", 2, "changetype 'modify'"),
        ("dn: cn=a\ncn: a\ndn: cn=b\n", 3, "missing blank line"),
        ("dn: cn=a\ncontrol: 1.2.3\n", 2, "unexpected 'control'"),
        ("dn: no-equals-sign\n", 1, "bad DN"),
        ("dn: cn=a\nbad_attr: x\n", 2, "expected 'attribute: value'"),
    ],
)
def test_parse_errors_name_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(LdifError, match=f"^line {line}: .*{message}") as info:
        parse_ldif(text)
    assert info.value.line == line


# --- normalise_dn -------------------------------------------------------------------------


def test_normalise_dn_equates_spellings() -> None:
    canonical = normalise_dn("uid=a,ou=users,dc=example.co.uk")
    for spelling in (
        "UID=A,OU=Users,DC=Example.CO.UK",
        "uid=a, ou=users, dc=example.co.uk",
        " uid = a , ou = users ,dc=example.co.uk ",
        "uid=\\61,ou=users,dc=example.co.uk",
    ):
        assert normalise_dn(spelling) == canonical
    assert canonical == ("uid=a", "ou=users", "dc=example.co.uk")
    assert normalise_dn("cn=a+sn=b,dc=t") == normalise_dn("SN=B + CN=A,dc=t")
    assert normalise_dn("") == ()


def test_normalise_dn_keeps_what_is_escaped() -> None:
    assert normalise_dn("cn=a\\,b,dc=t") == ("cn=a,b", "dc=t")
    assert normalise_dn("cn=a\\+b,dc=t") == ("cn=a\\2bb", "dc=t")
    assert normalise_dn("cn=\\ a\\ ,dc=t")[0] == "cn= a "
    assert normalise_dn("cn=Lu\\C4\\8Di\\C4\\87") == ("cn=lu\u010di\u0107",)
    assert normalise_dn("cn=a\\,b") != normalise_dn("cn=a,b=c")


@pytest.mark.parametrize("dn", ["cn", "cn=a,", "cn=a,dc", "=a", "cn=a\\", "c n=a", "cn=a,,dc=t"])
def test_normalise_dn_rejects_malformed(dn: str) -> None:
    with pytest.raises(ValueError, match="bad DN"):
        normalise_dn(dn)
