"""``mailfarm dns export|set|del|repair`` on DNS data in the real slapd; zones checked by BIND."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.farm import Farm
from bench.farm_ldap import SBIN_PATH
from directory.provision.dnsstore import domain_dn, recreate_leaf
from directory.provision.ldapwrite import Entry, LdapWriter
from tests.integration import provision_helpers as helpers
from tests.integration.provision_helpers import (
    Admin,
)

admin = helpers.admin  # fixture


def named_checkzone(domain: str, zone: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("named-checkzone", path=SBIN_PATH)
    if binary is None:
        pytest.skip("named-checkzone not installed (apt-get install bind9-utils)")
    return subprocess.run(
        [binary, domain, str(zone)], capture_output=True, text=True, timeout=30, check=False
    )


@pytest.fixture
def zone_domain(admin: Admin) -> Iterator[str]:
    name = f"zone-{secrets.token_hex(4)}.test"
    admin.ok(
        "domain", "add", name, "--no-mail-dns",  # the records the tests set themselves
        "--ns", "ns1", "ns2.example.net",
        "--mx", "mx1:10", "--mx", "mx2.example.net:20",
        "--a", "@:192.0.2.1", "--a", "ns1:192.0.2.2", "--a", "mx1:192.0.2.3",
        "--a", "*:192.0.2.9",
    )  # fmt: skip
    yield name
    admin.run("domain", "del", name, "--force")


def serial(admin: Admin, domain: str) -> int:
    return int(admin.ok("dns", "export", domain)["serial"])


def test_export_passes_named_checkzone(
    farm: Farm, admin: Admin, zone_domain: str, tmp_path: Path
) -> None:
    admin.ok("dns", "set", zone_domain, "www", "CNAME", zone_domain + ".")
    admin.ok("dns", "set", zone_domain, "mail.eu", "A", "192.0.2.4")
    out = tmp_path / "zone.db"
    written = admin.ok("dns", "export", zone_domain, "-o", str(out))
    assert written["file"] == str(out)
    text = out.read_text()
    for line in (
        f"$ORIGIN {zone_domain}.",
        f"@\tIN\tNS\tns1.{zone_domain}.",
        "@\tIN\tNS\tns2.example.net.",
        f"@\tIN\tMX\t10 mx1.{zone_domain}.",
        "@\tIN\tMX\t20 mx2.example.net.",
        "@\tIN\tA\t192.0.2.1",
        "*\tIN\tA\t192.0.2.9",
        "mail.eu\tIN\tA\t192.0.2.4",
        f"www\tIN\tCNAME\t{zone_domain}.",
    ):
        assert line in text.splitlines(), (line, text)
    checked = named_checkzone(zone_domain, out)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"serial {written['serial']}" in checked.stdout
    # Without -o the zone goes to stdout, byte for byte the same.
    plain = admin.run("dns", "export", zone_domain)
    assert plain.code == 0 and plain.stdout == text


def test_every_change_raises_the_serial(admin: Admin, zone_domain: str) -> None:
    first = serial(admin, zone_domain)
    changed = admin.ok("dns", "set", zone_domain, "@", "MX", "30", "mx3.example.net")
    assert changed["changed"] is True and changed["serial"] > first
    assert "30 mx3.example.net." in changed["values"]
    # Setting what is there already changes nothing, not even the serial.
    same = admin.ok("dns", "set", zone_domain, "@", "MX", "mx3.example.net:30")
    assert same["changed"] is False and serial(admin, zone_domain) == changed["serial"]
    gone = admin.ok("dns", "del", zone_domain, "@", "MX", "30 mx3.example.net.")
    assert gone["serial"] > changed["serial"]
    www = admin.ok("dns", "set", zone_domain, "www", "A", "192.0.2.7")
    assert www["serial"] > gone["serial"]
    # Deleting the last record of a name removes its entry; the zone no longer has the name.
    last = admin.ok("dns", "del", zone_domain, "www", "A")
    assert last["values"] == [] and last["serial"] > www["serial"]
    assert "\nwww\t" not in admin.run("dns", "export", zone_domain).stdout
    soa = admin.ok(
        "dns", "set", zone_domain, "@", "SOA",
        f"ns1.{zone_domain}. hostmaster.{zone_domain}. 1 7200 600 86400 60",
    )  # fmt: skip
    assert soa["serial"] > last["serial"]
    assert soa["values"][0].endswith(f" {soa['serial']} 7200 600 86400 60")


def test_refused_edits(admin: Admin, zone_domain: str) -> None:
    cases = [
        (("dns", "set", zone_domain, "@", "CNAME", "x.example.net."), 2, "apex"),
        (("dns", "set", zone_domain, "ns1", "CNAME", "x.example.net."), 2, "already has A"),
        (("dns", "set", zone_domain, "www.example.net.", "A", "192.0.2.1"), 2, "not inside"),
        (("dns", "set", zone_domain, "www", "A", "not-an-ip"), 2, "IPv4"),
        (("dns", "set", zone_domain, "www", "HINFO", "pc linux"), 2, "record type"),
        (("dns", "del", zone_domain, "@", "SOA"), 2, "cannot be deleted"),
        (("dns", "del", zone_domain, "nothere", "A"), 1, "no A record at nothere"),
        (("dns", "del", zone_domain, "@", "A", "192.0.2.99"), 1, "no A 192.0.2.99"),
        (("dns", "set", "no-such-zone.test", "@", "A", "192.0.2.1"), 1, "no such domain"),
        (("dns", "export", "no-such-zone.test"), 1, "no such domain"),
    ]
    before = serial(admin, zone_domain)
    for args, code, message in cases:
        result = admin.run(*args, "--json")
        assert result.code == code, (args, result)
        assert message in result.json["error"], (args, result)
    assert serial(admin, zone_domain) == before


# -- PowerDNS's view: associatedDomain on every name, dnsdomain2 record types ---------------

DKIM = "v=DKIM1; k=rsa; p=" + "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" * 8  # > 255 bytes


def name_entries(admin: Admin, domain: str) -> dict[str, Entry]:
    """The domain entry (``@``) and its name entries, with classes and associatedDomain."""
    with LdapWriter(admin.settings) as writer:
        dn = domain_dn(writer, domain)
        apex = writer.get(dn, ("objectClass", "associatedDomain"))
        assert apex is not None
        found = {"@": apex}
        for child in writer.search(
            dn, "(objectClass=dNSDomain)", "one", ("dc", "objectClass", "associatedDomain")
        ):
            found[child.values("dc")[0].lower()] = child
    return found


def classes(entry: Entry) -> set[str]:
    return {c.lower() for c in entry.values("objectClass")}


def test_new_record_types_export_and_read_back(
    admin: Admin, zone_domain: str, tmp_path: Path
) -> None:
    sets = [
        ("@", "AAAA", "2001:DB8:0:0::1"),
        ("www", "AAAA", "2001:db8::80"),
        ("@", "TXT", "v=spf1 mx -all"),
        ("_dmarc", "TXT", '"v=DMARC1; p=none; rua=mailto:dmarc@example.net"'),
        ("sel._domainkey", "TXT", DKIM),
        ("_imaps._tcp", "SRV", "0 1 993 mail.isp.example."),
        ("_submission._tcp", "SRV", "10 0 587 mx1"),
        ("@", "CAA", "0 issue letsencrypt.org"),
        ("@", "CAA", '0 iodef "mailto:security@example.net"'),
    ]
    for name, rtype, value in sets:
        assert admin.ok("dns", "set", zone_domain, name, rtype, value)["changed"], (name, rtype)
    # Already there, as typed or in stored form: unchanged.
    assert not admin.ok("dns", "set", zone_domain, "@", "TXT", '"v=spf1 mx -all"')["changed"]
    assert not admin.ok("dns", "set", zone_domain, "@", "AAAA", "2001:db8::1")["changed"]
    out = tmp_path / "zone.db"
    admin.ok("dns", "export", zone_domain, "-o", str(out))
    lines = out.read_text().splitlines()
    half = DKIM[:255], DKIM[255:]
    for line in (
        "@\tIN\tAAAA\t2001:db8::1",
        "www\tIN\tAAAA\t2001:db8::80",
        '@\tIN\tTXT\t"v=spf1 mx -all"',
        '_dmarc\tIN\tTXT\t"v=DMARC1; p=none; rua=mailto:dmarc@example.net"',
        f'sel._domainkey\tIN\tTXT\t"{half[0]}" "{half[1]}"',
        "_imaps._tcp\tIN\tSRV\t0 1 993 mail.isp.example.",
        f"_submission._tcp\tIN\tSRV\t10 0 587 mx1.{zone_domain}.",
        '@\tIN\tCAA\t0 issue "letsencrypt.org"',
        '@\tIN\tCAA\t0 iodef "mailto:security@example.net"',
    ):
        assert line in lines, (line, lines)
    checked = named_checkzone(zone_domain, out)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Every name entry is what PowerDNS's LDAP backend finds by (associatedDomain=<name>).
    entries = name_entries(admin, zone_domain)
    assert {"www", "_dmarc", "sel._domainkey", "_imaps._tcp", "*", "ns1"} <= set(entries)
    for owner, entry in entries.items():
        full = zone_domain if owner == "@" else f"{owner}.{zone_domain}"
        assert entry.values("associatedDomain") == [full], owner
        assert {"dnsdomain2", "domainrelatedobject"} <= classes(entry), owner
    # Deleting by the stored or the typed form alike.
    admin.ok("dns", "del", zone_domain, "@", "TXT", "v=spf1 mx -all")
    admin.ok("dns", "del", zone_domain, "sel._domainkey", "TXT")
    text = admin.run("dns", "export", zone_domain).stdout
    assert "v=spf1" not in text and "sel._domainkey" not in text


def test_ptr_records_in_a_reverse_zone(admin: Admin, tmp_path: Path) -> None:
    zone = f"{secrets.randbelow(250) + 1}.{secrets.randbelow(250) + 1}.10.in-addr.arpa"
    added = admin.ok("domain", "add", zone, "--ns", "ns1.example.net")
    try:
        assert added["mail_dns"] == [] and added["dkim"] is None  # no SPF, DMARC, SRV here
        admin.ok("dns", "set", zone, "10", "PTR", "mail.example.net")
        admin.ok("dns", "set", zone, f"11.{zone}.", "PTR", "www.example.net.")
        out = tmp_path / "reverse.db"
        admin.ok("dns", "export", zone, "-o", str(out))
        lines = out.read_text().splitlines()
        assert "10\tIN\tPTR\tmail.example.net." in lines
        assert "11\tIN\tPTR\twww.example.net." in lines
        checked = named_checkzone(zone, out)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert name_entries(admin, zone)["10"].values("associatedDomain") == [f"10.{zone}"]
    finally:
        admin.run("domain", "del", zone, "--force")


def test_bad_new_type_values_are_refused(admin: Admin, zone_domain: str) -> None:
    cases = [
        (("www", "AAAA", "192.0.2.1"), "IPv6"),
        (("_imaps._tcp", "SRV", "0 1 99999 mail.example.net."), "port"),
        (("_imaps._tcp", "SRV", "0 one 993 mail.example.net."), "weight"),
        (("@", "CAA", "0 issuer letsencrypt.org"), "issue, issuewild, iodef"),
        (("@", "TXT", "caf\u00e9"), "printable"),
        (("www", "HINFO", "pc linux"), "record type"),
    ]
    before = serial(admin, zone_domain)
    for (name, rtype, value), message in cases:
        result = admin.run("dns", "set", zone_domain, name, rtype, value, "--json")
        assert result.code == 2, (name, rtype, result)
        assert message in result.json["error"], (name, rtype, result)
    assert serial(admin, zone_domain) == before


@pytest.fixture
def old_domain(admin: Admin) -> Iterator[str]:
    """A domain as mailfarm wrote them before: dNSDomain entries, names without
    associatedDomain (one with a stale value)."""
    name = f"old-{secrets.token_hex(4)}.test"
    with LdapWriter(admin.settings) as writer:
        dn = domain_dn(writer, name)
        soa = f"ns1.{name}. hostmaster.{name}. 2024010101 3600 900 1209600 300"
        writer.add(
            dn,
            ["dNSDomain", "domainRelatedObject"],
            {"dc": name, "associatedDomain": name, "sOARecord": soa, "nSRecord": f"ns1.{name}."},
        )
        writer.add(f"ou=users,{dn}", ["organizationalUnit"], {"ou": "users"})
        writer.add(f"dc=www,{dn}", ["dNSDomain"], {"dc": "www", "aRecord": "192.0.2.80"})
        writer.add(f"dc=ftp,{dn}", ["dNSDomain"], {"dc": "ftp", "aRecord": "192.0.2.21"})
        writer.add(
            f"dc=mail.eu,{dn}",
            ["dNSDomain", "domainRelatedObject"],
            {"dc": "mail.eu", "associatedDomain": "stale.example", "aRecord": "192.0.2.25"},
        )
    yield name
    admin.run("domain", "del", name, "--force")


def test_edits_and_repair_upgrade_old_entries(admin: Admin, old_domain: str) -> None:
    # OpenLDAP refuses a plain structural change; the edit goes through the Relax Rules
    # control (the farm's admin tool binds as the rootdn) and fixes the name on the way.
    set_aaaa = admin.ok("dns", "set", old_domain, "ftp", "AAAA", "2001:db8::21")
    assert set_aaaa["changed"] is True
    entries = name_entries(admin, old_domain)
    assert {"dnsdomain2", "domainrelatedobject"} <= classes(entries["ftp"])
    assert entries["ftp"].values("associatedDomain") == [f"ftp.{old_domain}"]
    assert "dnsdomain2" not in classes(entries["www"])  # untouched until repaired
    first = admin.ok("dns", "repair", old_domain)
    assert first["repaired"] == 1
    [report] = first["domains"]
    assert report["domain"] == old_domain and report["changed"] is True
    assert set(report["fixed"]) == {"@", "www", "mail.eu"}
    assert f"associatedDomain www.{old_domain}" in report["fixed"]["www"]
    assert f"associatedDomain mail.eu.{old_domain}" in report["fixed"]["mail.eu"]
    assert "objectClass dNSDomain2" in report["fixed"]["@"]
    entries = name_entries(admin, old_domain)
    for owner, entry in entries.items():
        full = old_domain if owner == "@" else f"{owner}.{old_domain}"
        assert entry.values("associatedDomain") == [full], owner
        assert {"dnsdomain2", "domainrelatedobject"} <= classes(entry), owner
    again = admin.ok("dns", "repair", old_domain)
    assert again["repaired"] == 0 and again["domains"][0]["fixed"] == {}
    shown = admin.run("dns", "repair", old_domain)
    assert shown.code == 0 and f"{old_domain}: nothing to repair" in shown.stdout
    # Every domain: ours among them, nothing left to do for it.
    every = {d["domain"]: d for d in admin.ok("dns", "repair")["domains"]}
    assert every[old_domain]["changed"] is False
    # The records are all still there, and new types now go straight in.
    admin.ok("dns", "set", old_domain, "@", "TXT", "v=spf1 mx -all")
    text = admin.run("dns", "export", old_domain).stdout.splitlines()
    for line in ("www\tIN\tA\t192.0.2.80", "mail.eu\tIN\tA\t192.0.2.25",
                 "ftp\tIN\tAAAA\t2001:db8::21", '@\tIN\tTXT\t"v=spf1 mx -all"'):  # fmt: skip
        assert line in text, (line, text)
    result = admin.run("dns", "repair", "no-such-zone.test", "--json")
    assert result.code == 1 and "no such domain" in result.json["error"]


def test_leaf_recreated_without_relax(admin: Admin, old_domain: str) -> None:
    """The route for a writer without manage access: the leaf is re-made, values kept."""
    with LdapWriter(admin.settings) as writer:
        dn = f"dc=www,{domain_dn(writer, old_domain)}"
        recreate_leaf(writer, old_domain, "www", dn)
        entry = writer.get(dn, ("*", "structuralObjectClass"))
    assert entry is not None
    assert entry.values("structuralObjectClass") == ["dNSDomain2"]
    assert entry.values("aRecord") == ["192.0.2.80"]
    assert entry.values("associatedDomain") == [f"www.{old_domain}"]
