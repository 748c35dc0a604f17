"""proxy.toml validation: every kind of bad file names file, section and key, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from proxy.config import ConfigError, effective_settings, load_config

REPO = Path(__file__).resolve().parents[2]
MINIMAL = '[directory]\nuri = "ldap://127.0.0.1:389"\nbase = "dc=x"\n'


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "proxy.toml"
    p.write_text(text)
    return p


def test_sample_config_is_valid() -> None:
    settings = load_config(REPO / "proxy.toml")
    assert settings.directory.host_attribute == "mailHost"
    assert settings.imap.listen == (("", 143),)
    assert settings.pop3.backend_port == 110


def test_defaults(tmp_path: Path) -> None:
    s = load_config(write(tmp_path, MINIMAL))
    assert s.directory.uri == ("ldap://127.0.0.1:389",)
    assert s.directory.cache_ttl == 300.0 and s.directory.negative_ttl == 30.0
    assert s.proxy.plaintext_auth is False
    assert s.imap.backend_port == 143 and s.imap.backend_tls == "none"
    assert not s.imap.enabled and not s.tls.enabled


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (MINIMAL + "[directory2]\n", "[directory2]: unknown section"),
        (MINIMAL + "[imap]\nlisten_typo = ':143'\n", "[imap] listen_typo: unknown key"),
        (MINIMAL.replace('base = "dc=x"', "base = 5"), "[directory] base: must be a string"),
        (MINIMAL + "timeout = 'x'\n", "[directory] timeout: must be a number"),
        (MINIMAL + "[imap]\nlisten = 'nowhere'\n", "[imap] listen: 'nowhere' is not HOST:PORT"),
        (MINIMAL + "[imap]\nlisten = ':99999'\n", "[imap] listen: port 99999 out of range"),
        (MINIMAL + "[imap]\nbackend_tls = 'maybe'\n", "[imap] backend_tls: must be one of"),
        (MINIMAL + "[proxy]\ntrusted_networks = ['10.0.0.0/33']\n", "[proxy] trusted_networks"),
        (
            MINIMAL + "[proxy]\nplaintext_auth = 'yes'\n",
            "[proxy] plaintext_auth: must be true or false",
        ),
        (
            MINIMAL + "[tls]\ncert = '/nonexistent.pem'\n",
            "[tls] cert: /nonexistent.pem: no such file",
        ),
        (MINIMAL + "[imap]\ntls_listen = ':993'\n", "[imap] tls_listen: needs [tls] cert and key"),
        ('[directory]\nuri = "http://x"\nbase = "dc=x"\n', "[directory] uri:"),
        ('[directory]\nbase = "dc=x"\n', "[directory] uri: is required"),
        ('[directory]\nuri = "ldap://x"\n', "[directory] base: is required"),
        (MINIMAL + "user_filter = '(uid=alice)'\n", "[directory] user_filter: must contain %s"),
        ("[proxy]\n", "[directory]: section is required"),
        ("not = [toml", "not valid TOML"),
    ],
)
def test_bad_files(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(str(path)), message
    assert fragment in message, message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")


def test_unreadable_file(tmp_path: Path) -> None:
    # A directory cannot be read as a file, even by root (CI runs as root, so chmod 0 won't do).
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)


def test_unreadable_password_file_path(tmp_path: Path) -> None:
    text = MINIMAL + "bind_dn = 'cn=x'\nbind_password_file = '/nonexistent/secret'\n"
    with pytest.raises(ConfigError, match=r"\[directory\] bind_password_file: .*no such file"):
        load_config(write(tmp_path, text))


def test_password_file_and_masking(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    text = MINIMAL + f"bind_dn = 'cn=x'\nbind_password_file = '{secret}'\n"
    s = load_config(write(tmp_path, text))
    assert s.directory.bind_password == "s3cret"
    shown = effective_settings(s)
    assert shown["directory"]["bind_password"] == "********"
    assert "s3cret" not in repr(shown)


def test_both_password_kinds_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("x")
    text = MINIMAL + f"bind_password = 'a'\nbind_password_file = '{secret}'\n"
    with pytest.raises(ConfigError, match="not both"):
        load_config(write(tmp_path, text))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", *args], capture_output=True, text=True, cwd=REPO
    )


def test_check_config_cli_bad_file_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "[imap]\nbackend_port = 'x'\n")
    result = run_cli("check-config", "-c", str(path))
    assert result.returncode == 2
    assert f"{path}: [imap] backend_port: must be an integer" in result.stderr
    assert result.stdout == ""


def test_check_config_cli_prints_masked(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "bind_dn = 'cn=x'\nbind_password = 'hunter2'\n")
    result = run_cli("check-config", "-c", str(path))
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout
    assert 'bind_password = "********"' in result.stdout
    assert 'host_attribute = "mailHost"' in result.stdout
