"""A DNS name below a domain (``mail.eu.<domain>``, which carries ``associatedDomain`` for
PowerDNS) is not a hosted mail domain: each directory driver and Postfix's own ldap_table
look only one level under the domains branch."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ldap3 import Connection, Server

from bench.farm import Farm
from directory.domains import DomainCheck
from directory.ldif import LdifSource
from directory.service import Directory
from proxy.config import load_config
from tests.integration import provision_helpers as helpers
from tests.integration.provision_helpers import REPO, Admin
from tests.integration.smtp_fixtures import postmap

admin = helpers.admin  # fixture


@pytest.fixture(scope="module")
def eu_domain(admin: Admin) -> Iterator[str]:
    name = f"sub-{secrets.token_hex(4)}.test"
    admin.ok("domain", "add", name, "--a", "mail.eu:192.0.2.25")
    yield name
    admin.run("domain", "del", name, "--force")


def directory_config(farm: Farm, tmp_path: Path, extra: str = "") -> Path:
    config = tmp_path / "proxy.toml"
    config.write_text(
        f'[directory]\nuri = "{farm.ldap_uri}"\nbase = "{farm.base_dn}"\n'
        f'bind_dn = "{farm.service_dn}"\nbind_password = "{farm.service_password}"\n'
        f"timeout = 2\n{extra}"
    )
    return config


def test_name_entry_carries_its_full_name(farm: Farm, eu_domain: str) -> None:
    """The premise of the other tests: the sub-name matches the domain filter's value."""
    with Connection(Server(farm.ldap_uri), auto_bind=True) as ldap:
        ldap.search(farm.base_dn, f"(associatedDomain=mail.eu.{eu_domain})", attributes=["dc"])
        assert [e.entry_dn.split(",")[0] for e in ldap.entries] == ["dc=mail.eu"]


@pytest.mark.parametrize("driver", ["native", "ldap3"])
async def test_sub_name_is_not_hosted(
    farm: Farm, eu_domain: str, driver: str, tmp_path: Path
) -> None:
    config = directory_config(farm, tmp_path, f'driver = "{driver}"\n')
    directory = Directory(load_config(config).directory)
    check = DomainCheck(directory)
    try:
        assert await check.hosted(eu_domain)
        assert await check.hosted("example.co.uk")
        assert not await check.hosted(f"mail.eu.{eu_domain}")
    finally:
        directory.close()
    # domain_scope = "sub" is the old behaviour, for sites whose domains sit deeper.
    config = directory_config(farm, tmp_path, f'driver = "{driver}"\ndomain_scope = "sub"\n')
    directory = Directory(load_config(config).directory)
    try:
        assert await DomainCheck(directory).hosted(f"mail.eu.{eu_domain}")
    finally:
        directory.close()


def test_ldif_driver_honours_domain_base_and_scope(tmp_path: Path) -> None:
    base = "dc=mailfarm,dc=test"
    ldif = tmp_path / "dir.ldif"
    ldif.write_text(
        f"dn: {base}\nobjectClass: dcObject\nobjectClass: organization\ndc: mailfarm\no: x\n\n"
        f"dn: ou=domains,{base}\nobjectClass: organizationalUnit\nou: domains\n\n"
        f"dn: dc=a.test,ou=domains,{base}\nobjectClass: dNSDomain2\n"
        "objectClass: domainRelatedObject\ndc: a.test\nassociatedDomain: a.test\n\n"
        f"dn: dc=mail.eu,dc=a.test,ou=domains,{base}\nobjectClass: dNSDomain2\n"
        "objectClass: domainRelatedObject\ndc: mail.eu\nassociatedDomain: mail.eu.a.test\n\n"
        f"dn: ou=other,{base}\nobjectClass: organizationalUnit\nou: other\n\n"
        f"dn: dc=b.test,ou=other,{base}\nobjectClass: dNSDomain\n"
        "objectClass: domainRelatedObject\ndc: b.test\nassociatedDomain: b.test\n\n"
    )
    source = LdifSource(ldif, base, "(mail=%s)")
    assert source.find_domain("a.test")
    assert not source.find_domain("mail.eu.a.test")
    assert not source.find_domain("b.test")  # outside ou=domains
    deep = LdifSource(ldif, base, "(mail=%s)", domain_scope="sub")
    assert deep.find_domain("mail.eu.a.test")
    other = LdifSource(ldif, base, "(mail=%s)", domain_base=f"ou=Other, {base}")
    assert other.find_domain("b.test") and not other.find_domain("a.test")


def test_postfix_ldap_table_ignores_sub_names(farm: Farm, eu_domain: str, tmp_path: Path) -> None:
    config = directory_config(farm, tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "postfix-config", "-c", str(config), "--dir",
         str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = tmp_path / "ldap-domains.cf"
    lines = table.read_text().splitlines()
    assert f"search_base = ou=domains,{farm.base_dn}" in lines and "scope = one" in lines
    assert sum(line.startswith("search_base") for line in lines) == 1
    found = postmap(eu_domain, f"ldap:{table}")
    assert (found.returncode, found.stdout.strip().lower()) == (0, eu_domain), found.stderr
    missing = postmap(f"mail.eu.{eu_domain}", f"ldap:{table}")
    assert (missing.returncode, missing.stdout) == (1, ""), missing.stderr
