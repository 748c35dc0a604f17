"""Reading ISPMan's LDIF into a plan of mailfarm entries (no LDAP involved)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from directory.provision import UsageError
from directory.provision.dns import Soa
from directory.provision.ispmanmap import (
    Plan,
    import_serial,
    old_record,
    parse_soa,
    plan_import,
    rname_value,
    seconds,
)

SAMPLE = Path(__file__).parent.parent / "data" / "ispman-sample.ldif"
TODAY = date(2024, 6, 15)
SUFFIX = "o=ispman"


def ldif(*entries: str, suffix: str = SUFFIX) -> str:
    """Entries joined as LDIF, ``SUFFIX`` replaced by ``suffix``."""
    return "\n".join(e.strip().replace("SUFFIX", suffix) + "\n" for e in entries)


DOMAIN = """
dn: ispmanDomain=example.com, SUFFIX
objectclass: ispmanDomain
ispmanDomain: example.com
ispmanDomainType: primary
userPassword: {crypt}domainhash
"""


def user(local: str = "alice", *extra: str, domain: str = "example.com") -> str:
    uid = f"{local}_{domain.replace('.', '_')}"
    lines = [
        f"dn: uid={uid}, ou=users, ispmanDomain={domain}, SUFFIX",
        "objectClass: ispmanDomainUser",
        f"uid: {uid}",
        f"uid: {local}@{domain}",
        f"ispmanUserId: {local}",
        f"ispmanDomain: {domain}",
        "mailHost: mail1.isp.example",
        *extra,
    ]
    if not any(line.lower().startswith("userpassword:") for line in extra):
        lines.append("userPassword: {SSHA}qp8cImU2cVHDol9+NcpmHC6QQWuPEqBb")
    return "\n".join(lines)


def plan_of(*entries: str, suffix: str = SUFFIX) -> Plan:
    return plan_import(ldif(*entries, suffix=suffix), TODAY)


def errors(plan: Plan) -> list[str]:
    return [e.message for e in plan.errors]


# -- values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("3H", 10800), ("30M", 1800), ("1W", 604800), ("1D", 86400), ("1h30m", 5400), ("900", 900)],
)
def test_soa_timers_in_bind_units(text: str, expected: int) -> None:
    assert seconds(text) == expected


@pytest.mark.parametrize("text", ["", "3X", "H", "1.5H", "-1", "99999999999"])
def test_bad_timers_are_refused(text: str) -> None:
    with pytest.raises(UsageError):
        seconds(text)


def test_the_serial_goes_one_past_ispmans() -> None:
    assert import_serial(1118412000, TODAY) == 1118412001  # dnsSerialFormat timestamp
    assert import_serial(2005060903, TODAY) == 2005060904  # dnsSerialFormat date
    assert import_serial(0, TODAY) == 2024061501  # none in the file: today's first
    assert import_serial(2**32 - 1, TODAY) == 2**32 - 1


def test_soa_record_of_ispman_1() -> None:
    soa = parse_soa("ns1.example.com. dnsmaster.example.com. 1118325606 3H 30M 1W 1D", "x.org")
    assert soa == Soa(
        "ns1.example.com.", "dnsmaster.example.com.", 1118325606, 10800, 1800, 604800, 86400
    )
    assert rname_value("hostmaster@example.com", "example.com") == "hostmaster.example.com."
    assert rname_value("hostmaster", "example.com") == "hostmaster.example.com."
    with pytest.raises(UsageError, match="MNAME RNAME SERIAL"):
        parse_soa("ns1.example.com. 3H 30M 1W 1D", "example.com")


@pytest.mark.parametrize(
    ("rtype", "text", "expected"),
    [
        ("MX", "@,10,mx1.example.com", ("@", "10 mx1.example.com.")),
        ("MX", " @ , 20 , mx2.example.net. ", ("@", "20 mx2.example.net.")),
        ("MX", ",5,mx", ("@", "5 mx.example.com.")),  # empty owner is the apex, mx relative
        ("NS", "@,ns1.example.com", ("@", "ns1.example.com.")),
        ("NS", "sub,ns.other.org", ("sub", "ns.other.org.")),
        ("A", "www,192.0.2.1", ("www", "192.0.2.1")),
        ("A", "*,192.0.2.9", ("*", "192.0.2.9")),
        ("CNAME", "ftp,www", ("ftp", "www.example.com.")),
        ("CNAME", "Web.Example.COM.,www.example.com.", ("web", "www.example.com.")),
    ],
)
def test_records_of_ispman_0(rtype: str, text: str, expected: tuple[str, str]) -> None:
    assert old_record(rtype, text, "example.com") == expected


@pytest.mark.parametrize(
    ("rtype", "text", "match"),
    [
        ("MX", "@,mx1.example.com", "OWNER,PREF,HOST"),
        ("MX", "@,ten,mx1.example.com", "priority"),
        ("A", "www,192.0.2.300", "IPv4"),
        ("A", "www,", "OWNER,IP"),
        ("NS", "@,ns1,ns2", "OWNER,HOST"),
        ("CNAME", "www.other.org.,x", "not inside the zone"),
    ],
)
def test_bad_records_of_ispman_0(rtype: str, text: str, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        old_record(rtype, text, "example.com")


# -- the sample file ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample() -> Plan:
    return plan_import(SAMPLE.read_text(), TODAY)


def test_sample_domains_and_dns(sample: Plan) -> None:
    assert sample.errors == []
    assert sample.suffixes == ["o=ispman"]
    assert sample.ignored == 13  # o=ispman, admins, conf, ou=users/dnsdata/DNS branches, pabs
    net, shop = sample.domains
    assert (net.name, shop.name) == ("ispman-example.net", "ispman-shop.co.uk")
    # ISPMan 0.x: timers from cn=soarecords, names as mailfarm would choose them
    assert net.soa == Soa(
        "ns1.ispman-example.net.", "hostmaster.ispman-example.net.", 2024061501,
        10800, 3600, 604800, 86400,
    )  # fmt: skip
    assert net.records["@"] == {
        "NS": ["ns1.ispman-example.net.", "ns2.ispman-example.net."],
        "MX": ["10 mx1.ispman-example.net.", "20 mx2.ispman-example.net."],
        "A": ["192.0.2.10"],
    }
    assert net.records["webmail"] == {"CNAME": ["www.ispman-example.net."]}
    assert net.records["ns2"] == {"A": ["198.51.100.53"]}
    # ISPMan 1.x: the sOARecord as written, serial one past ISPMan's
    assert shop.soa == Soa(
        "ns1.ispman-shop.co.uk.", "dnsmaster.ispman-shop.co.uk.", 1118412001,
        10800, 1800, 604800, 86400,
    )  # fmt: skip
    assert shop.records["@"]["MX"] == ["10 mx1.ispman-shop.co.uk.", "20 mx2.ispman-example.net."]
    assert shop.records["shop"] == {"CNAME": ["www.ispman-shop.co.uk."]}
    assert shop.notes == ("TXT record at @ not imported (mailfarm keeps NS, MX, A and CNAME)",)


def test_sample_users_keep_uid_host_and_hash(sample: Plan) -> None:
    by_uid = {u.uid: u for u in sample.users}
    assert list(by_uid) == [
        "alice_ispman-example_net",
        "bob_ispman-example_net",
        "carol_ispman-shop_co_uk",
        "dave_ispman-shop_co_uk",
    ]
    alice = by_uid["alice_ispman-example_net"]
    assert (alice.address, alice.domain, alice.host) == (
        "alice@ispman-example.net",
        "ispman-example.net",
        "127.0.0.2",
    )
    assert alice.passwords == ("{SSHA}qp8cImU2cVHDol9+NcpmHC6QQWuPEqBb",)
    assert (alice.cn, alice.sn, alice.given_name) == ("Alice Archer", "Archer", "Alice")
    assert alice.local_addresses == (
        "alice@ispman-example.net",
        "postmaster@ispman-example.net",
        "a.archer@ispman-example.net",
    )
    assert not alice.suspended and alice.notes == ()
    assert by_uid["bob_ispman-example_net"].passwords == ("{crypt}XqrgbQ5h73QSw",)
    assert "mailForwardingAddress" in by_uid["bob_ispman-example_net"].notes[0]
    assert by_uid["carol_ispman-shop_co_uk"].passwords == ("{md5}9PIkJaoH1IL+jSF4SN3ufA==",)
    dave = by_uid["dave_ispman-shop_co_uk"]
    assert dave.suspended and dave.passwords == ("{sha}PTe+emcgfXnpUnRc37H3ZPvaeRM=",)
    assert "PTe+" not in repr(dave) and "qp8c" not in repr(alice)  # never shown


# -- layouts and odd entries ----------------------------------------------------------------


def test_any_suffix_and_dnszone_records() -> None:
    zone = "ou=DNS, o=isp, dc=example, dc=org"
    plan = plan_of(
        DOMAIN,
        user(),
        f"dn: ou=mXRecord, dc=example, dc=com, {zone}\nobjectclass: ispmanBranch\nou: mXRecord",
        f"dn: relativeDomainName=@, mXRecord=10 mx.example.com., ou=mXRecord, {zone}\n"
        "objectClass: dnsZone\nrelativeDomainName: @\nzoneName: example.com\n"
        "mXRecord: 10 mx.example.com.\nDNSTTL: 600",
        f"dn: relativeDomainName=www, aAAARecord=2001:db8::1, ou=aAAARecord, {zone}\n"
        "objectClass: dnsZone\nrelativeDomainName: www\nzoneName: example.com\n"
        "aAAARecord: 2001:db8::1",
        f"dn: relativeDomainName=www, cNAMERecord=web, ou=cNAMERecord, {zone}\n"
        "objectClass: dnsZone\nrelativeDomainName: www\nzoneName: Example.COM.\n"
        "cNAMERecord: web",
        suffix="o=isp, dc=example, dc=org",
    )
    assert errors(plan) == []
    assert plan.suffixes == ["o=isp,dc=example,dc=org"]
    (domain,) = plan.domains
    assert domain.records == {"@": {"MX": ["10 mx.example.com."]}, "www": {"CNAME": [
        "web.example.com."
    ]}}  # fmt: skip
    assert domain.soa is not None and domain.soa.serial == 2024061501  # no SOA: mailfarm's own
    assert any("AAAA record at www not imported" in n for n in domain.notes)
    assert any("TTL 600" in n for n in domain.notes)
    assert [u.address for u in plan.users] == ["alice@example.com"]


def test_bad_entries_fail_alone_with_a_reason() -> None:
    plan = plan_of(
        DOMAIN,
        user("nohost").replace("mailHost: mail1.isp.example\n", ""),
        user("twohosts", "mailHost: mail2.isp.example"),
        user("wrongdomain").replace("ispmanDomain: example.com", "ispmanDomain: other.org"),
        user("bad user"),
        user("alice"),
        user("alice"),
        "dn: cn=arecords, ou=dnsdata, ispmanDomain=example.com, SUFFIX\ncn: arecords\n"
        "record: www,192.0.2.1\nrecord: www\nrecord: ftp,192.0.2.999",
        "dn: cn=cnames, ou=dnsdata, ispmanDomain=example.com, SUFFIX\ncn: cnames\nrecord: www,web",
        "dn: cn=arecords, ou=dnsdata, ispmanDomain=nowhere.org, SUFFIX\ncn: arecords\n"
        "record: www,192.0.2.1",
        "dn: relativeDomainName=@, ou=x, SUFFIX\nobjectClass: dnsZone\nzoneName: example.com\n"
        "aRecord: 192.0.2.1",
        "dn: uid=stray, ou=people, SUFFIX\nobjectClass: ispmanDomainUser\nuid: stray",
        "dn: ispmanDomain=not a domain, SUFFIX\nobjectclass: ispmanDomain",
    )
    found = errors(plan)
    expected = [
        "no mailHost",
        "several mailHost values",
        "is not the domain of its DN",
        "is not a mail address",
        "appears twice",
        "A record 'www': expected OWNER,IP",
        "not an IPv4 address",
        "www already has A records: no CNAME",
        "nowhere.org, which has no ispmanDomain entry",
        "one relativeDomainName",
        "outside ou=users",
        "is not a domain name",
    ]
    for text in expected:
        assert any(text in message for message in found), (text, found)
    assert len(found) == len(expected)
    assert [u.uid for u in plan.users] == ["alice_example_com"]
    assert plan.domains[0].records == {"www": {"A": ["192.0.2.1"]}}


def test_passwords_are_kept_whatever_their_form() -> None:
    plan = plan_of(
        DOMAIN,
        user("a", "userPassword: plain-secret"),
        user("b", "userPassword: noEntry"),
        user("c", "userPassword: {BCRYPT}$2y$10$abc"),
        user("d", "userPassword:: e1NIQX1QVGUrZW1jZ2ZYbnBVblJjMzdIM1pQdmFlUk09"),
        "dn: uid=e_example_com, ou=users, ispmanDomain=example.com, SUFFIX\n"
        "uid: e_example_com\nispmanUserId: e\nmailHost: mail1.isp.example",
    )
    assert errors(plan) == []
    a, b, c, d, e = plan.users
    assert a.passwords == ("plain-secret",) and "cleartext" in a.notes[0]
    assert b.passwords == () and "noEntry" in b.notes[0]
    assert c.passwords == ("{BCRYPT}$2y$10$abc",) and "not one slapd verifies" in c.notes[0]
    assert d.passwords == ("{SHA}PTe+emcgfXnpUnRc37H3ZPvaeRM=",) and d.notes == ()
    assert e.passwords == () and "no userPassword" in e.notes[0]
    assert "plain-secret" not in repr(plan)


def test_user_fields_fall_back_as_ispman_did() -> None:
    plan = plan_of(
        DOMAIN,
        # no ispmanUserId: the address form of the uid names it; uid case is kept
        "dn: uid=Old_example_com, ou=users, ispmanDomain=example.com, SUFFIX\n"
        "uid: Old_example_com\nuid: Old.Timer@example.com\nmailHost: mail1\n"
        "mailAlias: not-an-address\nispmanStatus: active",
        user("sus", "accountStatus: locked"),
    )
    assert errors(plan) == []
    old, sus = plan.users
    assert (old.uid, old.address, old.sn, old.cn) == (
        "Old_example_com",
        "old.timer@example.com",
        "Old.Timer",
        "old.timer@example.com",
    )
    assert any("not-an-address" in n for n in old.notes) and not old.suspended
    assert sus.suspended and "locked" in sus.notes[0]


def test_domain_types() -> None:
    plan = plan_of(
        DOMAIN.strip().replace("example.com", "alias.org").replace("primary", "replica")
        + "\nispmanReplicaMaster: example.com",
        DOMAIN.replace("example.com", "slave.org").replace("primary", "slave"),
        "dn: cn=arecords, ou=dnsdata, ispmanDomain=slave.org, SUFFIX\ncn: arecords\n"
        "record: www,192.0.2.1",
        DOMAIN.replace("example.com", "bare.org").replace("ispmanDomainType: primary\n", ""),
    )
    alias, slave, bare = plan.domains
    assert alias.skip is not None and "replica of example.com" in alias.skip
    assert slave.skip is None and slave.soa is None and slave.records == {}
    assert "slave domain in ISPMan: its DNS data is not imported" in slave.notes
    assert bare.soa is None and bare.records == {} and bare.notes == ()


def test_malformed_ldif_is_one_usage_error() -> None:
    with pytest.raises(UsageError, match=r"dump.ldif: line 3: expected 'attribute: value'"):
        plan_import("dn: o=ispman\no: ispman\nthis is no attribute\n", TODAY, "dump.ldif")
