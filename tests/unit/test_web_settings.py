"""``[web]`` and the API tokens file: every bad value names file, section and key, and no
error message ever repeats a token."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.configschema import ConfigError
from proxy.config import effective_settings, load_config
from web.tokens import ADMIN, DOMAIN_ADMIN, HELPDESK, parse_tokens

MINIMAL = '[directory]\nuri = "ldap://127.0.0.1:389"\nbase = "dc=x"\n'
TOKEN_A = "a" * 32
TOKEN_B = "b" * 32
TOKEN_C = "c" * 32


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "proxy.toml"
    p.write_text(MINIMAL + text)
    return p


def test_tokens_file_roles_and_comments() -> None:
    text = (
        "# billing\n"
        f"admin {TOKEN_A}  # the billing system\n"
        "\n"
        f"helpdesk   {TOKEN_B}\n"
        f"domain-admin {TOKEN_C} Example.COM,shop.example.net\n"
    )
    tokens = parse_tokens(text, "proxy.toml")
    assert len(tokens) == 3
    admin, helpdesk, customer = (tokens.find(t) for t in (TOKEN_A, TOKEN_B, TOKEN_C))
    assert admin is not None and admin.role == ADMIN and admin.owns("any.test")
    assert helpdesk is not None and helpdesk.role == HELPDESK
    assert customer is not None and customer.role == DOMAIN_ADMIN
    assert customer.domains == {"example.com", "shop.example.net"}
    assert customer.owns("example.com") and not customer.owns("other.test")
    assert tokens.find("x" * 32) is None and tokens.find("") is None


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (f"root {TOKEN_A}\n", "line 1: unknown role 'root'"),
        ("admin\n", "no token"),
        ("# c\nadmin short\n", "line 2: token shorter than 16"),
        (f"domain-admin {TOKEN_A}\n", "domain-admin takes TOKEN DOMAIN"),
        (f"domain-admin {TOKEN_A} not_a_domain\n", "is not a domain name"),
        (f"helpdesk {TOKEN_A} example.com\n", "domains are for domain-admin"),
        (f"admin {TOKEN_A}\nhelpdesk {TOKEN_A}\n", "line 2: the same token as token:line 1"),
    ],
)
def test_tokens_file_errors(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_tokens(text, "proxy.toml")
    message = str(info.value)
    assert message.startswith("proxy.toml: [web] api_tokens_file: "), message
    assert fragment in message
    assert TOKEN_A not in message


def test_web_defaults(tmp_path: Path) -> None:
    web = load_config(write(tmp_path, "")).web
    assert web.listen == () and web.tls is False
    assert web.cert is None and web.api_tokens_file is None


def test_web_section(tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text(f"admin {TOKEN_A}\n")
    (tmp_path / "secret").write_text("s" * 40)
    for name in ("c.pem", "k.pem"):
        (tmp_path / name).write_text("x")
    text = (
        f'[tls]\ncert = "{tmp_path}/c.pem"\nkey = "{tmp_path}/k.pem"\n'
        f'[web]\nlisten = ["127.0.0.1:8443", "[::1]:8443"]\ntls = true\n'
        f'api_tokens_file = "{tmp_path}/tokens"\nsession_secret_file = "{tmp_path}/secret"\n'
    )
    settings = load_config(write(tmp_path, text))
    web = settings.web
    assert web.listen == (("127.0.0.1", 8443), ("::1", 8443))
    assert web.cert == tmp_path / "c.pem" and web.key == tmp_path / "k.pem"  # from [tls]
    shown = effective_settings(settings)["web"]
    assert shown["listen"] == ["127.0.0.1:8443", "[::1]:8443"]
    assert TOKEN_A not in str(shown)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[web]\nlisten = "nope"\n', "[web] listen: 'nope' is not HOST:PORT"),
        ("[web]\ntls = 1\n", "[web] tls: must be true or false"),
        ("[web]\ntls = true\n", "[web] tls: needs cert and key here or in [tls]"),
        ('[web]\napi_tokens_file = "/nonexistent/t"\n', "[web] api_tokens_file: /nonexistent"),
        ('[web]\nsession_secret_file = "{d}/short"\n', "[web] session_secret_file:"),
        ('[web]\ncert = "{d}/tokens"\n', "[web] key: cert and key must be given together"),
        ('[web]\napi_tokens_file = "{d}/bad"\n', "[web] api_tokens_file: line 1: unknown role"),
        ("[web]\nport = 1\n", "[web] port: unknown key"),
    ],
)
def test_web_errors(tmp_path: Path, text: str, fragment: str) -> None:
    (tmp_path / "tokens").write_text(f"admin {TOKEN_A}\n")
    (tmp_path / "bad").write_text(f"boss {TOKEN_A}\n")
    (tmp_path / "short").write_text("tiny\n")
    path = write(tmp_path, text.replace("{d}", str(tmp_path)))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert fragment in message, message
    assert TOKEN_A not in message
