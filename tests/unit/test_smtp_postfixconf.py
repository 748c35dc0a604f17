"""`mailfarm postfix-config` generation, from proxy.toml to ldap_table text (no LDAP)."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import ConfigError, Settings, load_config
from proxy.smtp.postfixconf import generate, transport_format, user_filter

DATA = Path(__file__).resolve().parents[1] / "data"


def settings(tmp_path: Path, directory: str = "", extra: str = "") -> Settings:
    config = tmp_path / "proxy.toml"
    config.write_text(
        "[directory]\n"
        'uri = ["ldap://ldap1.example.net", "ldaps://ldap2.example.net:636"]\n'
        'base = "dc=mailfarm,dc=test"\n'
        'bind_dn = "cn=mailfarm,ou=services,dc=mailfarm,dc=test"\n'
        'bind_password = "s3cret"\n'
        "timeout = 2.5\n" + directory + extra
    )
    return load_config(config)


def test_transport_format() -> None:
    assert transport_format("lmtp:inet:{host}:24") == "lmtp:inet:%s:24"
    assert transport_format("smtp:[{host}]:25") == "smtp:[%s]:25"
    assert transport_format("x:%d{host}") == "x:%%d%s"  # a literal % stays literal
    assert transport_format("x:%s{host}") == "x:%%s%s"


def test_user_filter_requires_a_routable_entry(tmp_path: Path) -> None:
    s = settings(tmp_path, 'user_filter = "(&(objectClass=x)(|(uid=%s)(mail=%s))(note=50%))"\n')
    assert user_filter(s) == (
        "(&(&(objectClass=x)(|(uid=%s)(mail=%s))(note=50%%))(mailHost=*)(uid=*))"
    )
    assert user_filter(s, "mailRoutingAddress").endswith("(uid=*)(mailRoutingAddress=*))")


def test_generated_tables(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        'host_attribute = "mailServer"\n',
        '[lookup]\nlisten = ["127.0.0.1:10025"]\ntransport = "lmtp:inet:{host}:2424"\n'
        'recipient_delimiter = "+-"\n',
    )
    config = generate(s, tmp_path / "pf")
    assert set(config.tables) == {
        "ldap-domains.cf",
        "ldap-mailboxes.cf",
        "ldap-aliases.cf",
        "ldap-transport.cf",
    }
    transport = config.tables["ldap-transport.cf"]
    assert "server_host = ldap://ldap1.example.net ldaps://ldap2.example.net:636\n" in transport
    assert "bind_dn = cn=mailfarm,ou=services,dc=mailfarm,dc=test\nbind_pw = s3cret\n" in transport
    assert "timeout = 3\n" in transport and "version = 3\n" in transport
    assert "result_attribute = mailServer\nresult_format = lmtp:inet:%s:2424\n" in transport
    assert "(mailServer=*)" in config.tables["ldap-mailboxes.cf"]
    assert "result_attribute = mailRoutingAddress" in config.tables["ldap-aliases.cf"]
    assert "associatedDomain=%s" in config.tables["ldap-domains.cf"]
    main = config.main_cf
    assert f"virtual_mailbox_maps = proxy:ldap:{tmp_path}/pf/ldap-mailboxes.cf\n" in main
    assert "recipient_delimiter = +-\n" in main
    assert "#virtual_mailbox_domains = socketmap:inet:127.0.0.1:10025:domains\n" in main


def test_domains_table_asks_what_the_proxies_ask(tmp_path: Path) -> None:
    """Postfix's domains map and mailfarm's own domain check must agree: the configured
    domain_filter, base and scope, not built-in ones."""
    config = tmp_path / "proxy.toml"
    config.write_text(
        '[directory]\nuri = "ldap://h"\nbase = "dc=x"\n'
        'domain_filter = "(&(objectClass=ispmanDomain)(ispmanDomain=%s))"\n'
        'domain_base = "o=ispman"\ndomain_scope = "sub"\n'
    )
    text = generate(load_config(config)).tables["ldap-domains.cf"]
    assert "query_filter = (&(objectClass=ispmanDomain)(ispmanDomain=%s))\n" in text
    assert "search_base = o=ispman\n" in text and "scope = sub\n" in text
    assert text.count("search_base = ") == 1 and text.count("scope = ") == 1


def test_anonymous_bind(tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text('[directory]\nuri = "ldap://h"\nbase = "dc=x"\n')
    text = generate(load_config(config)).tables["ldap-domains.cf"]
    assert "bind = no\n" in text and "bind_pw" not in text


def test_ldif_directory_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text(
        f'[directory]\nuri = "ldif:{DATA}/users.ldif"\nbase = "dc=mailfarm,dc=test"\n'
    )
    with pytest.raises(ConfigError, match=r"\[directory\] uri"):
        generate(load_config(config))


def test_cyrus_hosts_get_uid_aliases_and_uid_recipients(tmp_path: Path) -> None:
    s = settings(tmp_path, extra='[[backends]]\nhost = "127.0.0.4"\nkind = "cyrus"\n')
    out = generate(s, Path("/etc/postfix/mailfarm"))
    aliases = out.tables["ldap-uid-aliases.cf"]
    assert "result_attribute = uid\n" in aliases and "result_format = %s@%D\n" in aliases
    assert "(mailHost=127.0.0.4)" in aliases
    mailboxes = out.tables["ldap-mailboxes.cf"]
    assert "(uid=%u)" in mailboxes and "(mail=*@%d)(mailHost=127.0.0.4)" in mailboxes
    assert (
        "virtual_alias_maps = proxy:ldap:/etc/postfix/mailfarm/ldap-aliases.cf, "
        "proxy:ldap:/etc/postfix/mailfarm/ldap-uid-aliases.cf"
    ) in out.main_cf


def test_dovecot_only_farms_keep_four_tables(tmp_path: Path) -> None:
    out = generate(settings(tmp_path), Path("/etc/postfix/mailfarm"))
    assert sorted(out.tables) == [
        "ldap-aliases.cf",
        "ldap-domains.cf",
        "ldap-mailboxes.cf",
        "ldap-transport.cf",
    ]
    assert "%u" not in out.tables["ldap-mailboxes.cf"]
