"""A bare login gets a hosted domain from the client's SNI name or [proxy] default_domain;
one that names a domain never changes; uid logins keep working (proxy.logincheck)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.configschema import ConfigError
from directory.service import Directory
from proxy.actions import Failure
from proxy.config import SNI_DOMAIN_PREFIXES, Settings, load_config
from proxy.limits import Limits
from proxy.logincheck import check_login, domain_choices, login_forms, sni_domain
from proxy.sasl import Credentials

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.mark.parametrize(
    ("name", "domain"),
    [
        ("mail.example.co.uk", "example.co.uk"),
        ("IMAP.Example.COM.", "example.com"),
        ("pop3.example.com", "example.com"),
        ("pop.example.com", "example.com"),
        ("sieve.example.com", "example.com"),
        ("smtp.mail.example.com", "mail.example.com"),  # only the one prefix comes off
        ("example.com", None),  # no listed prefix: says nothing about a mail domain
        ("webmail.example.com", None),
        ("mail.", None),  # nothing left
        ("", None),
        (None, None),
    ],
)
def test_sni_domain(name: str | None, domain: str | None) -> None:
    assert sni_domain(name, SNI_DOMAIN_PREFIXES) == domain


def test_longest_prefix_and_empty_prefix() -> None:
    assert sni_domain("mail.in.example.com", ("mail.", "mail.in.")) == "example.com"
    assert sni_domain("example.com", ("mail.", "")) == "example.com"  # "": the name itself


@pytest.mark.parametrize(
    ("login", "domain", "forms"),
    [
        ("alice", "example.co.uk", ("alice@example.co.uk", "alice")),
        ("alice_example_co_uk", "example.co.uk", ("alice_example_co_uk@example.co.uk",
                                                  "alice_example_co_uk")),
        ("alice@example.com", "example.co.uk", ("alice@example.com",)),  # never changed
        ("alice", None, ("alice",)),
    ],
)  # fmt: skip
def test_login_forms(login: str, domain: str | None, forms: tuple[str, ...]) -> None:
    assert login_forms(login, domain) == forms


def _settings(tmp_path: Path, proxy: str = "") -> Settings:
    config = tmp_path / "proxy.toml"
    config.write_text(
        f'[directory]\nuri = "ldif:{DATA}/users.ldif"\nbase = "dc=mailfarm,dc=test"\n'
        f"[proxy]\nauth_failure_delay = 0.05\n{proxy}"
    )
    return load_config(config)


def test_domain_choices(tmp_path: Path) -> None:
    off = _settings(tmp_path).proxy
    assert off.default_domain == "" and off.default_domain_from_sni is False
    assert off.sni_domain_prefixes == SNI_DOMAIN_PREFIXES
    assert domain_choices(off, "mail.example.co.uk") == ()
    both = dataclasses.replace(off, default_domain="example.com", default_domain_from_sni=True)
    assert domain_choices(both, "mail.example.co.uk") == ("example.co.uk", "example.com")
    assert domain_choices(both, None) == ("example.com",)  # plaintext: no SNI
    assert domain_choices(both, "imap.example.com") == ("example.com",)
    fixed = dataclasses.replace(off, default_domain="example.com")
    assert domain_choices(fixed, "mail.example.co.uk") == ("example.com",)
    assert domain_choices(None, "mail.example.co.uk") == ()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('default_domain = "a@b.com"', "[proxy] default_domain: must be a mail domain"),
        ('default_domain = "a..b"', "[proxy] default_domain: must be a mail domain"),
        ('sni_domain_prefixes = ["mail"]', "[proxy] sni_domain_prefixes: each prefix must end"),
        ("default_domain_from_sni = 1", "[proxy] default_domain_from_sni: must be true or false"),
    ],
)
def test_bad_keys(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _settings(tmp_path, text + "\n")
    assert fragment in str(caught.value)


def test_default_domain_is_normalised(tmp_path: Path) -> None:
    assert _settings(tmp_path, 'default_domain = "Example.COM."\n').proxy.default_domain == (
        "example.com"
    )


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Directory, Limits, Settings]]:
    both = 'default_domain_from_sni = true\ndefault_domain = "example.com"\n'
    settings = _settings(tmp_path, both)
    directory = Directory(settings.directory)
    yield directory, Limits(settings.proxy), settings
    directory.close()


async def _login(
    env: tuple[Directory, Limits, Settings],
    login: str,
    password: str,
    server_name: str | None,
    ip: str = "192.0.2.1",
) -> str | Failure:
    directory, limits, settings = env
    verdict = await check_login(
        directory,
        limits,
        ip,
        True,  # trusted: no growing penalty between the cases
        Credentials("", login, password),
        proxy=settings.proxy,
        server_name=server_name,
    )
    if verdict.failure is not None:
        return verdict.failure
    assert verdict.route is not None
    return verdict.route.uid


async def test_bare_login_takes_the_sni_domain(env: tuple[Directory, Limits, Settings]) -> None:
    got = await _login(env, "alice", "alice-secret", "mail.example.co.uk")
    assert got == "alice_example_co_uk"
    assert await _login(env, "Alice", "alice-secret", "IMAP.EXAMPLE.CO.UK") == "alice_example_co_uk"


Env = tuple[Directory, Limits, Settings]


async def test_fixed_default_when_no_or_unhosted_sni(env: Env) -> None:
    assert await _login(env, "carol", "carol-secret", None) == "carol_example_com"
    # mail.unhosted.test names no hosted domain: the fixed default applies instead
    assert await _login(env, "carol", "carol-secret", "mail.unhosted.test") == "carol_example_com"
    # alice is not at example.com, and "alice" alone is no uid: refused as an unknown user
    assert await _login(env, "alice", "alice-secret", None) is Failure.AUTH_FAILED


async def test_sni_domain_wins_over_the_fixed_one(env: tuple[Directory, Limits, Settings]) -> None:
    assert await _login(env, "carol", "carol-secret", "mail.example.co.uk") is Failure.AUTH_FAILED
    assert await _login(env, "bob", "bob-secret", "mail.example.co.uk") == "bob_example_co_uk"


async def test_uids_and_addresses_unchanged(env: tuple[Directory, Limits, Settings]) -> None:
    # a uid has no "@": uid@domain finds no one, so the uid itself is tried next
    assert await _login(env, "dave_example_com", "dave-secret", "mail.example.co.uk") == (
        "dave_example_com"
    )
    # an address is never given another domain, whatever the SNI name
    assert await _login(env, "carol@example.com", "carol-secret", "mail.example.co.uk") == (
        "carol_example_com"
    )
    assert await _login(env, "alice", "wrong", "mail.example.co.uk") is Failure.AUTH_FAILED


async def test_unhosted_sni_fails_like_unknown_user(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "default_domain_from_sni = true\n")
    directory = Directory(settings.directory)
    try:
        env = (directory, Limits(settings.proxy), settings)
        assert await _login(env, "alice", "alice-secret", "mail.unhosted.test") is (
            Failure.AUTH_FAILED
        )
        assert await _login(env, "nobody", "x", None) is Failure.AUTH_FAILED
        assert await _login(env, "alice", "alice-secret", "mail.example.co.uk") == (
            "alice_example_co_uk"
        )
    finally:
        directory.close()


async def test_feature_off_changes_nothing(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    directory = Directory(settings.directory)
    try:
        env = (directory, Limits(settings.proxy), settings)
        assert await _login(env, "alice", "alice-secret", "mail.example.co.uk") is (
            Failure.AUTH_FAILED
        )
        assert await _login(env, "alice_example_co_uk", "alice-secret", "mail.example.co.uk") == (
            "alice_example_co_uk"
        )
    finally:
        directory.close()
