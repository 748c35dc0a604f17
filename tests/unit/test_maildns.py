"""Mail's DNS records for a new domain, DKIM selectors and key records (pure)."""

from __future__ import annotations

import base64
from datetime import date
from pathlib import Path

import pytest

from common.configschema import ConfigError
from directory.provision import UsageError
from directory.provision.dns import TXT_CHUNK, txt_text, txt_value
from directory.provision.maildns import (
    MailRecord,
    check_selector,
    dkim_public_der,
    dkim_tags,
    dkim_value,
    expand,
    keytable_line,
    mail_records,
    next_selector,
    selector_of,
    signingtable_line,
)
from directory.settings import ProvisionSettings, provision_settings

DOMAIN = "example.co.uk"
DER = bytes(range(256)) + bytes(38)  # 294 bytes, the size of a 2048-bit SubjectPublicKeyInfo


def settings(**values: object) -> ProvisionSettings:
    return provision_settings(Path("proxy.toml"), values)


def test_defaults_give_spf_and_dmarc_only() -> None:
    assert mail_records(settings(), DOMAIN) == [
        MailRecord("@", "TXT", '"v=spf1 mx -all"'),
        MailRecord("_dmarc", "TXT", f'"v=DMARC1; p=none; rua=mailto:postmaster@{DOMAIN}"'),
    ]


def test_empty_settings_give_no_record() -> None:
    assert mail_records(settings(default_spf="", default_dmarc=""), DOMAIN) == []


def test_percent_s_is_the_domain_and_other_percents_pass() -> None:
    spf = "v=spf1 include:_spf.%s exists:%{i}._ip.%s -all"
    [record] = mail_records(settings(default_spf=spf, default_dmarc=""), DOMAIN)
    assert record.value == f'"v=spf1 include:_spf.{DOMAIN} exists:%{{i}}._ip.{DOMAIN} -all"'
    assert expand("no placeholder", DOMAIN) == "no placeholder"


def test_srv_records_follow_the_front_door() -> None:
    records = mail_records(
        settings(front_door="mail.isp.example", front_door_pop3=0, default_spf=""), DOMAIN
    )
    srv = {r.owner: r.value for r in records if r.rtype == "SRV"}
    assert srv == {
        "_imaps._tcp": "0 1 993 mail.isp.example.",
        "_imap._tcp": "10 1 143 mail.isp.example.",
        "_pop3s._tcp": "20 1 995 mail.isp.example.",
        "_pop3._tcp": "0 0 0 .",
        "_submissions._tcp": "0 1 465 mail.isp.example.",
        "_submission._tcp": "10 1 587 mail.isp.example.",
    }
    assert [r.owner for r in records if r.rtype == "TXT"] == ["_dmarc"]


def test_dkim_record_is_split_and_joins_back() -> None:
    records = mail_records(settings(), DOMAIN, ("mf20240615", DER))
    dkim = records[-1]
    assert (dkim.owner, dkim.rtype) == ("mf20240615._domainkey", "TXT")
    text = txt_text(dkim.value)
    assert text == "v=DKIM1; k=rsa; p=" + base64.b64encode(DER).decode()
    strings = dkim.value.split('" "')
    assert len(strings) == 2 and all(len(s.strip('"')) <= TXT_CHUNK for s in strings)
    assert dkim_public_der(dkim.value) == DER
    assert txt_value(dkim.value) == dkim.value  # stored form is stable through set_record


def test_dkim_tags_and_what_is_not_a_key() -> None:
    assert dkim_tags(" v = DKIM1 ; k=rsa; p=AB CD\tEF; t=s") == {
        "v": "DKIM1",
        "k": "rsa",
        "p": "ABCDEF",
        "t": "s",
    }
    assert dkim_public_der(dkim_value(DER)) == DER
    assert dkim_public_der('"v=DKIM1; k=rsa; p="') is None  # revoked
    assert dkim_public_der('"v=spf1 mx -all"') is None
    assert dkim_public_der('"v=DKIM1; k=ed25519; p=AAAA"') is None
    assert dkim_public_der('"v=DKIM1; p=!!notbase64"') is None
    assert dkim_public_der('"unclosed') is None


def test_next_selector_counts_up_within_a_day() -> None:
    day = date(2024, 6, 15)
    assert next_selector(day, set()) == "mf20240615"
    assert next_selector(day, {"mf20240615"}) == "mf20240615-2"
    assert next_selector(day, {"MF20240615", "mf20240615-2"}) == "mf20240615-3"
    assert next_selector(day, {"mf20240614"}) == "mf20240615"


def test_selectors() -> None:
    assert selector_of("mf20240615._domainkey") == "mf20240615"
    assert selector_of("_domainkey") is None
    assert selector_of("a.b._domainkey") is None
    assert selector_of("_dmarc") is None
    assert check_selector(" Sel2024 ", DOMAIN) == "sel2024"
    for bad in ("", "a.b", "*", "bad label", "-x"):
        with pytest.raises(UsageError, match="one DNS label"):
            check_selector(bad, DOMAIN)


def test_opendkim_lines() -> None:
    path = Path("/var/lib/mailfarm/dkim/example.co.uk/mf20240615.private")
    assert keytable_line(DOMAIN, "mf20240615", path) == (
        "mf20240615._domainkey.example.co.uk "
        "example.co.uk:mf20240615:/var/lib/mailfarm/dkim/example.co.uk/mf20240615.private"
    )
    assert signingtable_line(DOMAIN, "mf20240615") == (
        "*@example.co.uk mf20240615._domainkey.example.co.uk"
    )


def test_dkim_dir_is_a_directory_that_may_not_exist_yet(tmp_path: Path) -> None:
    later = tmp_path / "dkim"
    assert settings(dkim_dir=str(later)).dkim_dir == later
    assert settings(dkim_dir=str(tmp_path)).dkim_dir == tmp_path
    assert settings().dkim_dir is None
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="dkim_dir"):
        settings(dkim_dir=str(tmp_path / "file"))
    with pytest.raises(ConfigError, match="dkim_dir"):
        settings(dkim_dir="")
