"""PowerDNS's LDAP backend serves what ``mailfarm dns`` writes, exactly as ``dns export`` says.

The export is the reference: every record of it must come back from a real PowerDNS reading
the farm's slapd live (dnspython over UDP, and ``dig``), AXFR must give the same zone, and an
edit must be served on the next query. Two zones, one under ``.co.uk`` (PowerDNS must find
the zone apex two labels below a public suffix), with the names that trip LDAP lookups: the
apex, a CNAME, a wildcard, a multi-label name (``mail.eu``), SRV's underscore labels.
"""

from __future__ import annotations

import glob
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone
import pytest

from bench.farm import Farm
from bench.farm_ldap import SBIN_PATH
from bench.farm_pdns import PowerDns, for_farm
from tests.integration import provision_helpers as helpers
from tests.integration.provision_helpers import Admin

admin = helpers.admin  # fixture

LONG_KEY = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" + "q" * 300  # a DKIM key > 255 bytes
IN = dns.rdataclass.IN
# (name, type) -> rdata set, names absolute; what a zone holds, compared without TTLs.
Records = dict[tuple[dns.name.Name, dns.rdatatype.RdataType], frozenset[dns.rdata.Rdata]]


@pytest.fixture(scope="module")
def pdns(farm: Farm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PowerDns]:
    """One PowerDNS per module on the shared farm's slapd (it starts in a fraction of a second)."""
    if shutil.which("pdns_server", path=SBIN_PATH) is None or not glob.glob(
        "/usr/lib/*/pdns/libldapbackend.so"
    ):
        pytest.skip("PowerDNS not installed (apt-get install pdns-server pdns-backend-ldap)")
    with for_farm(farm, tmp_path_factory.mktemp("pdns")) as server:
        yield server


@dataclass(frozen=True)
class Zone:
    domain: str

    @property
    def origin(self) -> dns.name.Name:
        return dns.name.from_text(self.domain)

    def name(self, relative: str) -> dns.name.Name:
        return dns.name.from_text(relative, origin=self.origin)


def _make_zone(admin: Admin, domain: str) -> None:
    admin.ok(
        "domain", "add", domain,
        "--ns", "ns1", "ns2.example.net",
        "--mx", "mx1:10", "--mx", "mx2.example.net:20",
        "--a", "@:192.0.2.1", "--a", "ns1:192.0.2.2", "--a", "mx1:192.0.2.3",
        "--a", "*:192.0.2.9",
    )  # fmt: skip
    for name, rtype, value in (
        ("www", "CNAME", domain + "."),
        ("mail.eu", "A", "192.0.2.4"),
        ("mail.eu", "A", "192.0.2.5"),
        ("@", "AAAA", "2001:db8::1"),
        ("mail.eu", "AAAA", "2001:db8::4"),
        ("@", "TXT", "v=spf1 mx -all"),
        ("@", "TXT", '"two" "strings"'),
        ("sel._domainkey", "TXT", f"v=DKIM1; k=rsa; p={LONG_KEY}"),
        ("_imaps._tcp", "SRV", f"0 1 993 mx1.{domain}"),
        ("_submission._tcp", "SRV", "0 0 0 ."),
        ("@", "CAA", "0 issue letsencrypt.org"),
        ("@", "CAA", "128 iodef mailto:hostmaster@example.net"),
    ):
        admin.ok("dns", "set", domain, name, rtype, value)


@pytest.fixture(scope="module")
def zones(admin: Admin) -> Iterator[list[Zone]]:
    """Two fresh zones for the module, deleted afterwards; made side by side, each by some
    fifteen admin commands (a subprocess each)."""
    tag = secrets.token_hex(4)
    made = [Zone(f"pdns-{tag}.test"), Zone(f"pdns-{tag}.co.uk")]
    try:
        with ThreadPoolExecutor(len(made)) as pool:
            list(pool.map(lambda zone: _make_zone(admin, zone.domain), made))
        yield made
    finally:
        for zone in made:
            admin.run("domain", "del", zone.domain, "--force")


def exported(admin: Admin, zone: Zone) -> dns.zone.Zone:
    text = admin.ok("dns", "export", zone.domain)["zone"]
    return dns.zone.from_text(text, origin=zone.origin, relativize=False, check_origin=False)


def records(zone: dns.zone.Zone) -> Records:
    return {
        (name, rdataset.rdtype): frozenset(rdataset)
        for name, node in zone.nodes.items()
        for rdataset in node.rdatasets
    }


def ask(pdns: PowerDns, name: dns.name.Name | str, rtype: str) -> dns.message.Message:
    query = dns.message.make_query(name, rtype)
    query.flags &= ~dns.flags.RD  # an authoritative server is asked, not a resolver
    return dns.query.udp(query, pdns.host, port=pdns.port, timeout=5)


def answer(response: dns.message.Message, name: dns.name.Name, rtype: str) -> dns.rrset.RRset:
    """The RRset for exactly (name, type), or a failure showing the whole response."""
    try:
        return response.find_rrset(response.answer, name, IN, dns.rdatatype.from_text(rtype))
    except KeyError:
        raise AssertionError(f"no {name} {rtype} in the answer:\n{response}") from None


def dig(pdns: PowerDns, *args: str) -> str:
    binary = shutil.which("dig")
    if binary is None:
        pytest.skip("dig not installed (apt-get install bind9-dnsutils)")
    done = subprocess.run(
        [binary, f"@{pdns.host}", "-p", str(pdns.port), "+norecurse", "+time=5", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_every_exported_record_is_served(admin: Admin, pdns: PowerDns, zones: list[Zone]) -> None:
    for zone in zones:
        reference = exported(admin, zone)
        types = {rtype for _, rtype in records(reference)}
        assert {dns.rdatatype.AAAA, dns.rdatatype.TXT, dns.rdatatype.SRV} <= types
        for name, node in reference.nodes.items():
            for rdataset in node.rdatasets:
                rtype = dns.rdatatype.to_text(rdataset.rdtype)
                response = ask(pdns, name, rtype)
                assert response.rcode() == dns.rcode.NOERROR, response
                assert response.flags & dns.flags.AA, response
                served = answer(response, name, rtype)
                assert set(served) == set(rdataset), (name, rtype, served, rdataset)
                # Neither side stores a TTL per record: both must fall back to the same one,
                # or a resolver would cache longer than the zone file says.
                assert served.ttl == rdataset.ttl, (name, rtype, served.ttl, rdataset.ttl)


def test_missing_names_and_the_wildcard(admin: Admin, pdns: PowerDns, zones: list[Zone]) -> None:
    for zone in zones:
        soa = exported(admin, zone).find_rdataset(zone.origin, dns.rdatatype.SOA)
        # Under mail.eu, which exists, the zone's * does not apply (RFC 4592): NXDOMAIN.
        missing = zone.name(f"x{secrets.token_hex(3)}.mail.eu")
        response = ask(pdns, missing, "A")
        assert response.rcode() == dns.rcode.NXDOMAIN, response
        negative = response.find_rrset(response.authority, zone.origin, IN, dns.rdatatype.SOA)
        assert set(negative) == set(soa), response
        # Any other name falls under the wildcard, answered under the name asked for.
        below = zone.name(f"nothing-{secrets.token_hex(3)}")
        served = answer(ask(pdns, below, "A"), below, "A")
        assert [r.to_text() for r in served] == ["192.0.2.9"]
        # ... and a type the wildcard does not have is NODATA, not NXDOMAIN.
        nodata = ask(pdns, below, "MX")
        assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer, nodata


def test_dig_reads_the_zone(pdns: PowerDns, zones: list[Zone]) -> None:
    """A client nobody here wrote: BIND's dig."""
    uk = next(zone for zone in zones if zone.domain.endswith(".co.uk"))
    short = dig(pdns, "+short", f"mail.eu.{uk.domain}", "A").split()
    assert sorted(short) == ["192.0.2.4", "192.0.2.5"]
    assert dig(pdns, "+short", f"www.{uk.domain}", "CNAME").split() == [f"{uk.domain}."]
    mx = dig(pdns, "+short", uk.domain, "MX").splitlines()
    assert sorted(mx) == [f"10 mx1.{uk.domain}.", "20 mx2.example.net."]
    srv = dig(pdns, "+short", f"_imaps._tcp.{uk.domain}", "SRV").split()
    assert srv == ["0", "1", "993", f"mx1.{uk.domain}."]


def test_axfr_equals_the_export(admin: Admin, pdns: PowerDns, zones: list[Zone]) -> None:
    for zone in zones:
        reference = records(exported(admin, zone))
        transferred = dns.zone.from_xfr(
            dns.query.xfr(pdns.host, zone.origin, port=pdns.port, timeout=10, relativize=False),
            relativize=False,
        )
        assert records(transferred) == reference
        text = dig(pdns, "AXFR", zone.domain, "+onesoa", "+nocmd", "+nostats")
        assert "Transfer failed" not in text, text
        by_dig = dns.zone.from_text(text, origin=zone.origin, relativize=False, check_origin=False)
        assert records(by_dig) == reference


def served_serial(pdns: PowerDns, zone: Zone) -> int:
    soa = answer(ask(pdns, zone.origin, "SOA"), zone.origin, "SOA")
    return int(soa[0].serial)


def test_edits_are_served_at_once(admin: Admin, pdns: PowerDns, zones: list[Zone]) -> None:
    zone = zones[0]
    fresh = f"fresh-{secrets.token_hex(3)}"
    name = zone.name(fresh)
    # The wildcard answers for the name until it exists; then the new record must, at once.
    assert [r.to_text() for r in answer(ask(pdns, name, "A"), name, "A")] == ["192.0.2.9"]
    admin.ok("dns", "set", zone.domain, fresh, "A", "192.0.2.77")
    assert [r.to_text() for r in answer(ask(pdns, name, "A"), name, "A")] == ["192.0.2.77"]
    assert served_serial(pdns, zone) == admin.ok("dns", "export", zone.domain)["serial"]
    admin.ok("dns", "set", zone.domain, "@", "A", "192.0.2.78")
    apex = {r.to_text() for r in answer(ask(pdns, zone.origin, "A"), zone.origin, "A")}
    assert apex == {"192.0.2.1", "192.0.2.78"}
    assert served_serial(pdns, zone) == admin.ok("dns", "export", zone.domain)["serial"]
    admin.ok("dns", "del", zone.domain, "@", "A", "192.0.2.78")
    admin.ok("dns", "del", zone.domain, fresh, "A")
    assert [r.to_text() for r in answer(ask(pdns, name, "A"), name, "A")] == ["192.0.2.9"]
    apex = {r.to_text() for r in answer(ask(pdns, zone.origin, "A"), zone.origin, "A")}
    assert apex == {"192.0.2.1"}
    assert served_serial(pdns, zone) == admin.ok("dns", "export", zone.domain)["serial"]
