"""Mail's DNS records for new domains and ``mailfarm dns dkim``, against the real slapd.

The published DKIM key is checked the way a verifier uses it: read back from the zone by
dnspython (not by our own parser), joined from its strings, and used to verify a signature
made with the private key file the signer would read.
"""

from __future__ import annotations

import base64
import re
import secrets
import stat
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import dns.name
import dns.rdatatype
import dns.zone
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.integration import provision_helpers as helpers
from tests.integration.provision_helpers import Admin
from tests.integration.test_provision_dns import named_checkzone

admin = helpers.admin  # fixture

FRONT_DOOR = "mail.isp.test"


@pytest.fixture(scope="module")
def dkim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("maildns") / "dkim"  # made by mailfarm, 0700


@pytest.fixture(scope="module")
def mail_admin(admin: Admin, dkim_dir: Path) -> Admin:
    """The admin tool with a front door (POP3 STARTTLS not offered) and a DKIM key store."""
    return admin.with_config(
        "maildns",
        provision={"dkim_dir": str(dkim_dir), "front_door": FRONT_DOOR, "front_door_pop3": 0},
    )


@pytest.fixture
def new_domain(mail_admin: Admin) -> Iterator[str]:
    """A name for a domain the test adds itself; removed afterwards."""
    name = f"mdns-{secrets.token_hex(4)}.test"
    yield name
    mail_admin.run("domain", "del", name, "--force")


def zone_of(admin: Admin, domain: str) -> dns.zone.Zone:
    text = admin.ok("dns", "export", domain)["zone"]
    return dns.zone.from_text(text, origin=domain + ".", relativize=True, check_origin=False)


def txt_strings(zone: dns.zone.Zone, owner: str) -> list[list[bytes]]:
    """Each TXT record at ``owner`` as its list of <character-string>s."""
    rdataset = zone.get_rdataset(owner, dns.rdatatype.TXT)
    return [] if rdataset is None else [list(r.strings) for r in rdataset]


def srv(zone: dns.zone.Zone, owner: str) -> list[str]:
    rdataset = zone.get_rdataset(owner, dns.rdatatype.SRV)
    return [] if rdataset is None else [r.to_text() for r in rdataset]


def published_key(zone: dns.zone.Zone, selector: str) -> rsa.RSAPublicKey:
    """The public key of ``<selector>._domainkey`` as a DKIM verifier reads it."""
    [strings] = txt_strings(zone, f"{selector}._domainkey")
    assert all(len(s) <= 255 for s in strings), [len(s) for s in strings]
    text = b"".join(strings).decode()
    tags = dict(part.strip().split("=", 1) for part in text.split(";"))
    assert tags["v"] == "DKIM1" and tags["k"] == "rsa", text
    key = serialization.load_der_public_key(base64.b64decode(tags["p"]))
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def private_key(path: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_domain_gets_spf_dmarc_srv_and_dkim(
    mail_admin: Admin, new_domain: str, dkim_dir: Path, tmp_path: Path
) -> None:
    added = mail_admin.ok("domain", "add", new_domain)
    listed = {(r["name"], r["type"]) for r in added["mail_dns"]}
    dkim = added["dkim"]
    selector = dkim["selector"]
    assert re.fullmatch(r"mf\d{8}", selector), selector
    assert {("@", "TXT"), ("_dmarc", "TXT"), ("_imaps._tcp", "SRV")} <= listed
    assert (f"{selector}._domainkey", "TXT") in listed and len(listed) == 2 + 6 + 1
    key_file = dkim_dir / new_domain / f"{selector}.private"
    assert dkim["key_file"] == str(key_file)
    assert dkim["opendkim_keytable"] == (
        f"{selector}._domainkey.{new_domain} {new_domain}:{selector}:{key_file}"
    )
    assert mode(key_file) == 0o600
    assert mode(key_file.parent) == 0o700 and mode(dkim_dir) == 0o700
    assert key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert "PRIVATE KEY" not in str(added)  # the key itself is never printed

    zone = zone_of(mail_admin, new_domain)
    assert txt_strings(zone, "@") == [[b"v=spf1 mx -all"]]
    dmarc = f"v=DMARC1; p=none; rua=mailto:postmaster@{new_domain}".encode()
    assert txt_strings(zone, "_dmarc") == [[dmarc]]
    door = f"{FRONT_DOOR}."
    assert srv(zone, "_imaps._tcp") == [f"0 1 993 {door}"]
    assert srv(zone, "_imap._tcp") == [f"10 1 143 {door}"]
    assert srv(zone, "_pop3s._tcp") == [f"20 1 995 {door}"]
    assert srv(zone, "_pop3._tcp") == ["0 0 0 ."]  # port 0: decidedly not offered
    assert srv(zone, "_submissions._tcp") == [f"0 1 465 {door}"]
    assert srv(zone, "_submission._tcp") == [f"10 1 587 {door}"]
    # NS and MX from [provision] defaults are there as before.
    assert zone.get_rdataset("@", dns.rdatatype.MX) is not None

    # The published key is the key file's, and a 2048-bit key's record spans two strings.
    [strings] = txt_strings(zone, f"{selector}._domainkey")
    assert len(strings) == 2 and all(len(s) <= 255 for s in strings)
    public = published_key(zone, selector)
    secret = private_key(key_file)
    assert public.public_numbers() == secret.public_key().public_numbers()
    assert public.key_size == 2048
    # What is published verifies what the signer signs.
    message = f"From: a@{new_domain}\r\nSubject: hello\r\n".encode()
    signature = secret.sign(message, padding.PKCS1v15(), hashes.SHA256())
    public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())  # raises if not

    out = tmp_path / "zone.db"
    mail_admin.ok("dns", "export", new_domain, "-o", str(out))
    checked = named_checkzone(new_domain, out)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # The human output names the records and where the key is, never the key.
    again = mail_admin.run("dns", "dkim", new_domain)
    assert again.code == 0, again
    assert f"has the DKIM key {selector} already" in again.stdout
    assert str(key_file) in again.stdout and "PRIVATE KEY" not in again.stdout


def test_no_mail_dns_gives_none(mail_admin: Admin, new_domain: str, dkim_dir: Path) -> None:
    added = mail_admin.ok("domain", "add", new_domain, "--no-mail-dns")
    assert added["mail_dns"] == [] and added["dkim"] is None
    zone = zone_of(mail_admin, new_domain)
    rtypes = {rdataset.rdtype for node in zone.nodes.values() for rdataset in node.rdatasets}
    assert dns.rdatatype.TXT not in rtypes and dns.rdatatype.SRV not in rtypes
    assert {str(name) for name in zone.nodes} == {"@"}
    assert not (dkim_dir / new_domain).exists()


def dkim(admin: Admin, domain: str, *extra: str) -> dict[str, Any]:
    return admin.ok("dns", "dkim", domain, *extra)


def test_dkim_is_idempotent_and_rotation_keeps_the_old_key(
    mail_admin: Admin, new_domain: str, dkim_dir: Path
) -> None:
    mail_admin.ok("domain", "add", new_domain, "--no-mail-dns")
    today = f"mf{date.today():%Y%m%d}"
    first = dkim(mail_admin, new_domain)
    assert first["created"] is True and first["selector"] == today and first["older"] == []
    assert first["rspamd_path"] == f"{dkim_dir}/$domain/$selector.private"
    # Again without --rotate: nothing changes, not even the serial.
    same = dkim(mail_admin, new_domain)
    assert same["created"] is False and same["selector"] == today and same["serial"] is None
    serial = mail_admin.ok("dns", "export", new_domain)["serial"]
    assert serial == first["serial"]

    # Rotating on the same day: the next selector, the old one still published.
    second = dkim(mail_admin, new_domain, "--rotate")
    assert second["created"] is True and second["selector"] == f"{today}-2"
    assert second["serial"] > serial
    [old] = second["older"]
    assert old["selector"] == today
    assert old["remove_with"] == f"mailfarm dns del {new_domain} {today}._domainkey TXT"
    files = sorted(p.name for p in (dkim_dir / new_domain).iterdir())
    assert files == [f"{today}-2.private", f"{today}.private"]  # no temporary files left
    zone = zone_of(mail_admin, new_domain)
    for selector in (today, f"{today}-2"):
        key_file = dkim_dir / new_domain / f"{selector}.private"
        assert mode(key_file) == 0o600
        public = published_key(zone, selector)
        assert public.public_numbers() == private_key(key_file).public_key().public_numbers()
    assert (
        published_key(zone, today).public_numbers()
        != published_key(zone, f"{today}-2").public_numbers()
    )

    text = mail_admin.run("dns", "dkim", new_domain, "--rotate")
    assert text.code == 0, text
    assert f"{today}-3" in text.stdout
    assert f"mailfarm dns del {new_domain} {today}._domainkey TXT" in text.stdout
    assert f"mailfarm dns del {new_domain} {today}-2._domainkey TXT" in text.stdout

    # The operator removes the oldest; the rest stay, and no --rotate reports the newest.
    mail_admin.ok("dns", "del", new_domain, f"{today}._domainkey", "TXT")
    now = dkim(mail_admin, new_domain)
    assert now["created"] is False and now["selector"] == f"{today}-3"
    assert [o["selector"] for o in now["older"]] == [f"{today}-2"]

    # A named selector: made when free, refused when taken, asked for with --rotate.
    named = dkim(mail_admin, new_domain, "--rotate", "--selector", "Spring")
    assert named["selector"] == "spring" and named["created"] is True
    taken = mail_admin.run("dns", "dkim", new_domain, "--rotate", "--selector", "spring", "--json")
    assert taken.code == 1 and "exists already" in taken.json["error"], taken
    # A selector whose file is gone but whose TXT is published is taken too.
    (dkim_dir / new_domain / f"{today}-2.private").unlink()
    clash = mail_admin.run(
        "dns", "dkim", new_domain, "--rotate", "--selector", f"{today}-2", "--json"
    )
    assert clash.code == 1 and "exists already" in clash.json["error"], clash
    bad = mail_admin.run("dns", "dkim", new_domain, "--rotate", "--selector", "a.b", "--json")
    assert bad.code == 2 and "one DNS label" in bad.json["error"], bad


def test_domain_del_removes_its_dkim_keys_and_only_them(
    mail_admin: Admin, new_domain: str, dkim_dir: Path
) -> None:
    """A deleted domain's signing keys go with it (nothing can verify them any more); a
    file the operator put next to them, and other domains' keys, stay."""
    other = f"mdns-{secrets.token_hex(4)}.test"
    mail_admin.ok("domain", "add", new_domain)
    mail_admin.ok("domain", "add", other)
    try:
        rotated = dkim(mail_admin, new_domain, "--rotate")
        keys = sorted(str(p) for p in (dkim_dir / new_domain).glob("*.private"))
        assert len(keys) == 2 and rotated["created"] is True
        note = dkim_dir / new_domain / "README.operator"
        note.write_text("kept\n")
        gone = mail_admin.ok("domain", "del", new_domain)
        assert sorted(gone["dkim_keys_removed"]) == keys
        assert not any(Path(k).exists() for k in keys)
        assert note.read_text() == "kept\n"
        assert list((dkim_dir / other).glob("*.private"))  # the other domain's key stays
        text = mail_admin.run("domain", "del", other)
        assert text.code == 0 and "DKIM key removed: " in text.stdout, text
        assert not (dkim_dir / other).exists()  # emptied, so removed
    finally:
        mail_admin.run("domain", "del", other, "--force")


def test_dkim_errors(admin: Admin, mail_admin: Admin, tmp_path: Path) -> None:
    domain = f"mdns-{secrets.token_hex(4)}.test"
    admin.ok("domain", "add", domain)  # the farm's config: no dkim_dir
    try:
        unset = admin.run("dns", "dkim", domain, "--json")
        assert unset.code == 2, unset
        assert "[provision] dkim_dir" in unset.json["error"]
        assert "dkim_dir" in unset.stderr
        unknown = mail_admin.run("dns", "dkim", "no-such-zone.test", "--json")
        assert unknown.code == 1 and "no such domain" in unknown.json["error"], unknown
        # A key directory that cannot be written (a file in its place: even root cannot).
        keys = tmp_path / "keys"
        keys.mkdir()
        other = f"mdns-{secrets.token_hex(4)}.test"
        for name in (domain, other):
            (keys / name).write_text("")
        unwritable = admin.with_config("maildns-unwritable", provision={"dkim_dir": str(keys)})
        failed = unwritable.run("dns", "dkim", domain, "--json")
        assert failed.code == 2, failed
        assert str(keys / domain) in failed.json["error"]
        assert "[provision] dkim_dir" in failed.json["error"]
        # The domain is untouched: still no DKIM record.
        assert "_domainkey" not in admin.ok("dns", "export", domain)["zone"]
        # domain add with such a key store fails whole: no half-made domain.
        refused = unwritable.run("domain", "add", other, "--json")
        assert refused.code == 2 and str(keys / other) in refused.json["error"], refused
        assert admin.run("dns", "export", other).code == 1
        # A file is no dkim_dir at all.
        bad = admin.with_config("maildns-file", provision={"dkim_dir": str(keys / domain)})
        assert bad.run("dns", "dkim", domain).code == 2
    finally:
        admin.run("domain", "del", domain, "--force")
