"""[[backends]]: kinds and per-host credentials, read once for the proxy and the admin tool,
and what the session core sends a backend at login for each backend_auth mode."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from directory.mailstores import aliasing_hosts, kind_class, postfix_alias
from directory.mailstores.cyrus import mailbox_name
from directory.model import Route
from directory.provision import UsageError
from proxy.backend import BackendError
from proxy.config import ConfigError, effective_settings, load_config
from proxy.imap.backend import _authenticate_plain
from proxy.sasl import Credentials
from proxy.session import backend_credentials

MINIMAL = '[directory]\nuri = "ldap://127.0.0.1:389"\nbase = "dc=x"\n'
PROVISION = '[provision]\nmaster_user = "admin"\nmaster_password = "master-pw"\n'
CYRUS = """
[[backends]]
host = "127.0.0.13"
kind = "cyrus"
proxy_user = "mfproxy"
proxy_password_file = "{secret}"
admin_user = "cyrus"
admin_password = "cyrus-pw"
"""


def load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    secret = tmp_path / "mfproxy.secret"
    secret.write_text("proxy-pw\n")
    path = tmp_path / "proxy.toml"
    path.write_text(text.replace("{secret}", str(secret)))
    return load_config(path)


def test_listed_host_and_defaults_for_the_rest(tmp_path: Path) -> None:
    s = load(tmp_path, MINIMAL + PROVISION + CYRUS)
    cyrus = s.backends.get("127.0.0.13")
    assert (cyrus.kind, cyrus.proxy_user, cyrus.proxy_password) == ("cyrus", "mfproxy", "proxy-pw")
    assert (cyrus.admin_user, cyrus.admin_password, cyrus.listed) == ("cyrus", "cyrus-pw", True)
    other = s.backends.get("mail9.example.net")
    assert (other.kind, other.host, other.listed) == ("dovecot", "mail9.example.net", False)
    assert (other.proxy_user, other.admin_user, other.admin_password) == (
        "admin",
        "admin",
        "master-pw",
    )
    assert s.backends.of_kind("cyrus") == ("127.0.0.13",)
    assert s.backends.get("127.0.0.13".upper()) is cyrus


def test_no_table_keeps_old_configs_working(tmp_path: Path) -> None:
    s = load(tmp_path, MINIMAL)
    assert s.backends.listed == () and s.backends.get("x").kind == "dovecot"
    assert s.imap.backend_auth == "password" and s.pop3.backend_auth == "password"


def test_check_config_masks_backend_secrets(tmp_path: Path) -> None:
    shown = effective_settings(load(tmp_path, MINIMAL + PROVISION + CYRUS))
    (entry,) = shown["backends"]
    assert entry["proxy_password"] == "********" and entry["admin_password"] == "********"
    assert entry["kind"] == "cyrus"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[[backends]]\nkind = "cyrus"\n', "[backends[0]] host: is required"),
        ('[[backends]]\nhost = "h"\nkind = "exchange"\n', "[backends[0]] kind: must be one of"),
        ('[[backends]]\nhost = "h"\nadmin_user = "cyrus"\n', "admin_password: is required"),
        ('[[backends]]\nhost = "h"\nproxy_user = "p"\n', "proxy_password: is required"),
        ('[[backends]]\nhost = "h"\npassword = "x"\n', "[backends[0]] password: unknown key"),
        ('[[backends]]\nhost = "h"\n[[backends]]\nhost = "H"\n', "H is listed twice"),
        ('[[backends]]\nhost = "h"\nproxy_password = "a"\nproxy_password_file = "{secret}"\n',
         "give proxy_password or proxy_password_file, not both"),
        ('[backends]\nhost = "h"\n', "[backends]: must be an array of tables"),
        ('[imap]\nbackend_auth = "master"\n', "[imap] backend_auth: must be one of"),
    ],
)
def test_bad_backends_name_the_key(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, MINIMAL + text)
    assert fragment in str(err.value)
    assert "proxy.toml" in str(err.value)


def test_password_mode_sends_the_uid_and_the_users_password(tmp_path: Path) -> None:
    s = load(tmp_path, MINIMAL + PROVISION + CYRUS)
    creds = backend_credentials("password", s.backends.get("127.0.0.13"), "alice_x", "pw")
    assert creds == Credentials("", "alice_x", "pw")


def test_proxy_mode_vouches_with_the_hosts_proxy_user(tmp_path: Path) -> None:
    s = load(tmp_path, MINIMAL + PROVISION + CYRUS)
    creds = backend_credentials("proxy", s.backends.get("127.0.0.13"), "alice_x", "user-pw")
    assert creds == Credentials("alice_x", "mfproxy", "proxy-pw")
    unlisted = backend_credentials("proxy", s.backends.get("127.0.0.2"), "bob_x", "user-pw")
    assert unlisted == Credentials("bob_x", "admin", "master-pw")


def test_proxy_mode_without_a_proxy_user_names_what_is_missing(tmp_path: Path) -> None:
    s = load(tmp_path, MINIMAL)
    with pytest.raises(BackendError, match=r"needs master_user in \[provision\]"):
        backend_credentials("proxy", s.backends.get("127.0.0.2"), "bob_x", "pw")


def test_imap_proxy_login_is_authenticate_plain_with_authzid() -> None:
    creds = Credentials("alice_x", "mfproxy", "secret")
    token = base64.b64encode(b"alice_x\0mfproxy\0secret")
    with_ir = _authenticate_plain(b"M3", creds, ("IMAP4rev1", "AUTH=PLAIN", "SASL-IR"))
    assert with_ir == [b"M3 AUTHENTICATE PLAIN " + token + b"\r\n"]
    without = _authenticate_plain(b"M3", creds, ("IMAP4rev1", "AUTH=PLAIN"))
    assert without == [b"M3 AUTHENTICATE PLAIN\r\n", token + b"\r\n"]
    with pytest.raises(BackendError, match="AUTH=PLAIN"):
        _authenticate_plain(b"M3", creds, ("IMAP4rev1", "LOGINDISABLED"))


def test_recipient_forms_per_kind() -> None:
    assert kind_class("dovecot").lmtp_recipient("alice_x_com", "alice@x.com") == "alice@x.com"
    assert kind_class("cyrus").lmtp_recipient("alice_x_com", "alice@x.com") == "alice_x_com"
    assert kind_class("dovecot").postfix_alias("alice_x_com", "alice@x.com") is None
    assert kind_class("cyrus").postfix_alias("alice_x_com", "alice@x.com") == "alice_x_com@x.com"


def test_postfix_alias_follows_the_routes_host(tmp_path: Path) -> None:
    s = load(tmp_path, MINIMAL + PROVISION + CYRUS)
    on_cyrus = Route("alice_x_com", "uid=alice_x_com", "127.0.0.13", mail="alice@x.com")
    on_dovecot = Route("bob_x_com", "uid=bob_x_com", "127.0.0.2", mail="bob@x.com")
    assert postfix_alias(s.backends, on_cyrus) == "alice_x_com@x.com"
    assert postfix_alias(s.backends, on_dovecot) is None
    assert aliasing_hosts(s.backends) == ("127.0.0.13",)


@pytest.mark.parametrize("uid", ["alice.example", "", "a*b", 'a"b'])
def test_cyrus_refuses_uids_it_cannot_name(uid: str) -> None:
    with pytest.raises(UsageError):
        mailbox_name(uid)
    assert mailbox_name("alice_example_co_uk") == b"user.alice_example_co_uk"
