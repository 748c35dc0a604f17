"""Which certificate a server name gets (pure), and the pairs the config loads: a pair that
cannot be served must be a config error naming its table and key, not a failed handshake."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from common.configschema import ConfigError
from proxy.config import load_config
from proxy.tlscerts import NameTable, name_matches, names_of, normalise_name


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("mail.example.com", "mail.example.com", True),
        ("mail.example.com", "MAIL.Example.COM", True),  # DNS names ignore case
        ("MAIL.example.com", "mail.example.com.", True),  # a root dot changes nothing
        ("mail.example.com", "imap.example.com", False),
        ("*.example.com", "mail.example.com", True),
        ("*.Example.com", "IMAP.EXAMPLE.COM", True),
        ("*.example.com", "a.b.example.com", False),  # one label only
        ("*.example.com", "example.com", False),  # not the apex
        ("*.example.com", ".example.com", False),  # an empty label is no label
        ("*.example.com", "mail.example.co.uk", False),
        ("f*.example.com", "foo.example.com", False),  # partial wildcards are not honoured
        ("mail.*.com", "mail.example.com", False),
        ("xn--bcher-kva.example", "xn--bcher-kva.example", True),  # A-labels, compared as is
        ("xn--bcher-kva.example", "bücher.example", False),  # no IDNA conversion here
        ("", "mail.example.com", False),
    ],
)
def test_name_matches(pattern: str, name: str, expected: bool) -> None:
    assert name_matches(pattern, name) is expected


def test_table_prefers_exact_names_over_wildcards_whatever_the_order() -> None:
    table = NameTable(
        [
            (("mailfarm.test",), "default"),
            (("*.example.com", "example.com"), "wild"),
            (("mail.example.com",), "exact"),
            (("mail.example.com", "*.example.com"), "later"),  # first listed wins a tie
        ]
    )
    assert table.lookup("mail.example.com") == "exact"
    assert table.lookup("MAIL.EXAMPLE.COM.") == "exact"
    assert table.lookup("imap.example.com") == "wild"
    assert table.lookup("example.com") == "wild"  # listed by name, not by the wildcard
    assert table.lookup("a.b.example.com") is None
    assert table.lookup("mailfarm.test") == "default"
    assert table.lookup("unknown.test") is None
    assert table.lookup(None) is None and table.lookup("") is None


def test_names_come_from_san_else_common_name() -> None:
    decoded = {
        "subject": ((("commonName", "cn.example.com"),),),
        "subjectAltName": (("DNS", "mail.example.com"), ("IP Address", "127.0.0.1")),
    }
    assert names_of(decoded) == ("mail.example.com",)
    assert names_of({"subject": decoded["subject"]}) == ("cn.example.com",)
    assert normalise_name(" Mail.Example.COM. ") == "mail.example.com"


needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl CLI")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl CLI")
    from bench.certs import issue_cert
    from bench.pki import make_pki

    directory = tmp_path_factory.mktemp("pki")
    pki = make_pki(directory, ["default.test"])
    couk = issue_cert(pki, directory, "couk", ["mail.example.co.uk"])
    wild = issue_cert(pki, directory, "wild", ["*.example.com"], days=3)
    return {
        "cert": pki.cert, "key": pki.key, "couk": couk.cert, "couk_key": couk.key,
        "wild": wild.cert, "wild_key": wild.key,
    }  # fmt: skip


def _config(tmp_path: Path, certs: dict[str, Path], extra: str) -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(
        '[directory]\nuri = "ldap://127.0.0.1"\nbase = "dc=x"\n'
        f'[tls]\ncert = "{certs["cert"]}"\nkey = "{certs["key"]}"\n' + extra
    )
    return path


@needs_openssl
def test_certificates_load_and_report(tmp_path: Path, certs: dict[str, Path]) -> None:
    from proxy.cli import certificate_report

    extra = (
        f'[[tls.certificates]]\ncert = "{certs["couk"]}"\nkey = "{certs["couk_key"]}"\n'
        f'[[tls.certificates]]\ncert = "{certs["wild"]}"\nkey = "{certs["wild_key"]}"\n'
    )
    settings = load_config(_config(tmp_path, certs, extra))
    assert [c.cert for c in settings.tls.certificates] == [certs["couk"], certs["wild"]]
    report = certificate_report(settings)
    assert [r["section"] for r in report] == ["tls", "tls.certificates[0]", "tls.certificates[1]"]
    assert report[1]["names"] == ["mail.example.co.uk"]
    assert report[2]["names"] == ["*.example.com"] and report[2]["expires_soon"] is True
    assert report[0]["expires_soon"] is False


@needs_openssl
@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ('cert = "{couk}"\nkey = "{wild_key}"\n', "[tls.certificates[0]] key: "),
        ('cert = "{couk_key}"\nkey = "{couk_key}"\n', "[tls.certificates[0]] cert: "),
        ('cert = "{couk}"\n', "[tls.certificates[0]] key: is required"),
        ('cert = "{couk}"\nkey = "{couk_key}"\nchain = "x"\n', "[tls.certificates[0]] chain"),
        ('cert = "/nonexistent.pem"\nkey = "{couk_key}"\n', "/nonexistent.pem: no such file"),
    ],
)
def test_bad_pairs_name_table_and_key(
    tmp_path: Path, certs: dict[str, Path], entry: str, fragment: str
) -> None:
    text = "[[tls.certificates]]\n" + entry.format(**{k: str(v) for k, v in certs.items()})
    with pytest.raises(ConfigError) as caught:
        load_config(_config(tmp_path, certs, text))
    assert fragment in str(caught.value)
    if "key: " in fragment and "required" not in fragment:
        assert "does not match" in str(caught.value)


@needs_openssl
def test_certificates_need_a_default(tmp_path: Path, certs: dict[str, Path]) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text(
        '[directory]\nuri = "ldap://127.0.0.1"\nbase = "dc=x"\n'
        f'[[tls.certificates]]\ncert = "{certs["couk"]}"\nkey = "{certs["couk_key"]}"\n'
    )
    with pytest.raises(ConfigError, match=r"\[tls\] certificates: needs \[tls\] cert and key"):
        load_config(path)
