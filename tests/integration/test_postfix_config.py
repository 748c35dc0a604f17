"""`mailfarm postfix-config`: the generated ldap_table files answer as the socketmap does."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bench.farm import Farm
from directory.settings import DEFAULT_DOMAIN_FILTER
from tests.integration.smtp_fixtures import RunningSmtpProxy, postmap

pytestmark = pytest.mark.usefixtures("farm")

REPO = Path(__file__).resolve().parents[2]
MAPS = {
    "domains": ["example.co.uk", "Example.COM", "under_score.org", "example.org"],
    # Only addresses: Postfix never asks these maps for a bare uid (where the ldap_table,
    # through the uid half of the user filter, would answer and mailfarm would not).
    "mailboxes": [
        "alice@example.co.uk",
        "BOB@Example.co.uk",
        "jo_anne@under_score.org",
        "nobody@example.co.uk",
        "@example.co.uk",
        # Cyrus (mail3): the address, and the uid@domain name the aliases map gives it.
        "erin@example.co.uk",
        "erin_example_co_uk@example.co.uk",
        "erin_example_co_uk@example.com",  # the uid, but not with the user's own domain
        "alice_example_co_uk@example.co.uk",  # a Dovecot user's uid: not a Cyrus name
    ],
    "transport": [
        "alice@example.co.uk",
        "bob@example.co.uk",
        "dave@example.com",
        "nobody@example.com",
        "erin_example_co_uk@example.co.uk",
    ],
    "aliases": [
        "alice@example.co.uk",
        "nobody@example.com",
        "erin@example.co.uk",
        "Frank@Example.com",
        "erin_example_co_uk@example.co.uk",  # maps to itself: no further alias
    ],
}
#: Postfix takes the first table that answers (virtual_alias_maps lists both).
TABLES = {"aliases": ["aliases", "uid-aliases"]}


def mailfarm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def query(key: str, table: str) -> tuple[int, str]:
    result = postmap(key, table)
    assert result.stderr == "", result.stderr
    return result.returncode, result.stdout.strip()


def test_ldap_tables_agree_with_the_socketmap(
    farm: Farm, smtp_proxy: RunningSmtpProxy, tmp_path: Path
) -> None:
    result = mailfarm(
        "postfix-config", "-c", str(smtp_proxy.process.config), "--dir", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    snippet = (tmp_path / "main.cf.mailfarm").read_text()
    assert f"transport_maps = proxy:ldap:{tmp_path}/ldap-transport.cf" in snippet
    assert "recipient_delimiter = +" in snippet
    socketmap_port = smtp_proxy.ports.socketmap
    for name, keys in MAPS.items():
        table = tmp_path / f"ldap-{name}.cf"
        assert stat.S_IMODE(table.stat().st_mode) == 0o640  # it holds the bind password
        for key in keys:
            direct = (1, "")
            for part in TABLES.get(name, [name]):
                direct = query(key, f"ldap:{tmp_path}/ldap-{part}.cf")
                if direct[0] == 0:
                    break
            via_mailfarm = query(key, f"socketmap:inet:127.0.0.1:{socketmap_port}:{name}")
            # LDAP matching ignores case; mailfarm folds the domain it answers with.
            assert (direct[0], direct[1].lower()) == via_mailfarm, (name, key)
    code, answer = query("bob@example.co.uk", f"ldap:{tmp_path}/ldap-transport.cf")
    port = farm.backends["mail2"].lmtp_port
    assert (code, answer) == (0, f"lmtp:inet:127.0.0.3:{port}")
    alias = query("erin@example.co.uk", f"ldap:{tmp_path}/ldap-uid-aliases.cf")
    assert alias == (0, "erin_example_co_uk@example.co.uk")
    code, answer = query("erin_example_co_uk@example.co.uk", f"ldap:{tmp_path}/ldap-transport.cf")
    assert (code, answer) == (0, f"lmtp:inet:127.0.0.4:{port}")


def test_printed_form_names_every_file(smtp_proxy: RunningSmtpProxy) -> None:
    result = mailfarm("postfix-config", "-c", str(smtp_proxy.process.config))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for name in ("domains", "mailboxes", "aliases", "transport"):
        assert f"# ==> /etc/postfix/mailfarm/ldap-{name}.cf <==" in out
    assert f"query_filter = {DEFAULT_DOMAIN_FILTER}" in out
    assert "virtual_mailbox_domains = proxy:ldap:/etc/postfix/mailfarm/ldap-domains.cf" in out
    # The socketmap alternative is offered, commented out, since [lookup] listens.
    port = smtp_proxy.ports.socketmap
    assert f"#transport_maps = socketmap:inet:127.0.0.1:{port}:transport" in out


def test_ldif_directory_cannot_be_exported(tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text(
        f'[directory]\nuri = "ldif:{REPO}/tests/data/users.ldif"\nbase = "dc=mailfarm,dc=test"\n'
    )
    result = mailfarm("postfix-config", "-c", str(config))
    assert result.returncode == 2
    assert "[directory] uri" in result.stderr and "ldif" in result.stderr
