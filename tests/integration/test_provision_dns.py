"""``mailfarm dns export|set|del`` on DNS data in the real slapd; zones checked by BIND."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.farm import Farm
from bench.farm_ldap import SBIN_PATH
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
def zone_domain(admin: Admin) -> str:
    name = f"zone-{secrets.token_hex(4)}.test"
    admin.ok(
        "domain", "add", name,
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
        (("dns", "set", zone_domain, "www", "TXT", "hello"), 2, "record type"),
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
