"""``[directory]`` TLS keys: defaults keep plaintext, bad combinations name file, section and
key; the TLS objects both drivers build follow them; the StartTLS request's encoding."""

from __future__ import annotations

import logging
import shutil
import ssl
from pathlib import Path

import pytest

from common.configschema import ConfigError
from directory.ldaptls import ldap3_tls, ssl_context, uses_starttls
from directory.ldapwire import decode_message, extended_request, starttls_request
from proxy.config import load_config

MINIMAL = '[directory]\nuri = ["ldap://127.0.0.1:389", "ldaps://ldap.test"]\nbase = "dc=x"\n'


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    from bench.pki import make_pki

    return make_pki(tmp_path_factory.mktemp("pki"), ["ldap.test"])


def load(tmp_path: Path, extra: str = ""):  # type: ignore[no-untyped-def]
    path = tmp_path / "proxy.toml"
    path.write_text(MINIMAL + extra)
    return load_config(path).directory


def test_defaults_keep_todays_behaviour(tmp_path: Path) -> None:
    d = load(tmp_path)
    assert (d.tls, d.ca_file, d.cert_file, d.key_file, d.tls_verify) == (
        "none",
        None,
        None,
        None,
        True,
    )
    assert not uses_starttls(d, "ldap://127.0.0.1:389")


def test_starttls_applies_to_ldap_uris_only(tmp_path: Path) -> None:
    d = load(tmp_path, 'tls = "starttls"\n')
    assert uses_starttls(d, "ldap://127.0.0.1:389")
    assert not uses_starttls(d, "ldaps://ldap.test")  # implicit TLS already
    assert not uses_starttls(d, "ldapi://%2Frun%2Fldapi")


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ('tls = "yes"\n', "[directory] tls: must be one of"),
        ("tls_verify = 'no'\n", "[directory] tls_verify: must be true or false"),
        ("ca_file = '/nonexistent.pem'\n", "[directory] ca_file: /nonexistent.pem: no such file"),
    ],
)
def test_bad_values(tmp_path: Path, extra: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, extra)
    assert fragment in str(info.value) and "proxy.toml" in str(info.value)


def test_ca_file_must_hold_certificates(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"\[directory\] ca_file: not a PEM CA"):
        load(tmp_path, f"ca_file = '{junk}'\n")


def test_client_certificate_needs_both_halves(tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=r"\[directory\] key_file: cert_file and key_file"):
        load(tmp_path, f"cert_file = '{pki.cert}'\n")
    with pytest.raises(ConfigError, match=r"\[directory\] cert_file: cert_file and key_file"):
        load(tmp_path, f"key_file = '{pki.key}'\n")


def test_client_certificate_must_match_its_key(tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=r"\[directory\] cert_file: certificate and key_file"):
        load(tmp_path, f"cert_file = '{pki.ca_cert}'\nkey_file = '{pki.key}'\n")


def test_tls_objects_follow_the_settings(tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    d = load(
        tmp_path,
        f"tls = 'starttls'\nca_file = '{pki.ca_cert}'\n"
        f"cert_file = '{pki.cert}'\nkey_file = '{pki.key}'\n",
    )
    context = ssl_context(d)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    tls = ldap3_tls(d, "ldaps://ldap.test")
    assert tls.validate == ssl.CERT_REQUIRED and tls.ca_certs_file == str(pki.ca_cert)
    assert tls.certificate_file == str(pki.cert) and tls.private_key_file == str(pki.key)
    assert tls.sni == "ldap.test"
    assert ldap3_tls(d, "ldap://127.0.0.1:389").sni is None  # no SNI for an address


def test_tls_verify_false_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = load(tmp_path, "tls_verify = false\n")
    with caplog.at_level(logging.WARNING, "mailfarm.directory"):
        context = ssl_context(d)
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname
    assert "NOT verified" in caplog.text
    assert ldap3_tls(d).validate == ssl.CERT_NONE


def test_starttls_request_encoding() -> None:
    oid = b"1.3.6.1.4.1.1466.20037"
    expected = b"\x30\x1d\x02\x01\x05\x77\x18\x80\x16" + oid  # RFC 4511 4.14.1
    assert starttls_request(5) == expected
    assert decode_message(expected).op == 0x77
    with_value = extended_request(7, "1.2.3", b"v")
    assert with_value == b"\x30\x0f\x02\x01\x07\x77\x0a\x80\x051.2.3\x81\x01v"


def test_extended_response_is_decoded() -> None:
    # ExtendedResponse, protocolError, empty matchedDN, a diagnostic
    raw = b"\x30\x0f\x02\x01\x01\x78\x0a\x0a\x01\x02\x04\x00\x04\x03no!"
    response = decode_message(raw)
    assert (response.op, response.result_code, response.diagnostic) == (0x78, 2, "no!")
