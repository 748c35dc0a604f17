"""LDAP over TLS against the farm's slapd: ``ldaps://`` and StartTLS, for both proxy drivers,
the admin tool's writer and the console's staff sign-in.

What must never happen is tested with a fake server that refuses StartTLS and records what it
is sent: a refused upgrade must end the conversation, not continue it (with a bind) in clear.
"""

from __future__ import annotations

import imaplib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.farm import Farm
from bench.pki import Pki, make_pki
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config, render_toml
from directory.ldapwire import _int, decode_message, message_length, tlv
from proxy.config import load_config
from tests.integration import provision_helpers as helpers
from tests.integration.provision_helpers import Admin, add_user, provision_sections
from web.staff import StaffDirectoryDown, sign_in

admin = helpers.admin  # fixture
domain = helpers.domain  # fixture

DRIVERS = ("native", "ldap3")
PROTOCOL_ERROR = 2


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA that did not sign the farm's certificate."""
    return make_pki(tmp_path_factory.mktemp("other-ca"), ["elsewhere.test"])


class RefusingServer:
    """Answers every StartTLS with protocolError and records each request's operation."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.uri = f"ldap://127.0.0.1:{self.port}"
        self.ops: list[int] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        buf = bytearray()
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                while (n := message_length(buf)) is not None:
                    message = decode_message(bytes(buf[:n]))
                    del buf[:n]
                    self.ops.append(message.op)
                    if message.op == 0x77:  # ExtendedRequest: no.
                        result = _int(0x0A, PROTOCOL_ERROR) + b"\x04\x00" + b"\x04\x00"
                        reply = tlv(0x30, _int(0x02, message.message_id) + tlv(0x78, result))
                        conn.sendall(reply)

    @property
    def binds(self) -> int:
        return self.ops.count(0x60)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def refusing() -> Iterator[RefusingServer]:
    server = RefusingServer()
    yield server
    server.close()


def _proxy(farm: Farm, tmp_path: Path, directory: dict[str, Any]) -> MailfarmProcess:
    ports = ProxyPorts()
    sections = farm_config(farm, ports, directory={"cache_ttl": 0, **directory})
    process = MailfarmProcess(tmp_path, sections, "tls")
    process.ports = ports  # type: ignore[attr-defined]
    return process


def _login(farm: Farm, process: MailfarmProcess) -> None:
    user = farm.users[0]
    client = imaplib.IMAP4("127.0.0.1", process.ports.imap, timeout=15)  # type: ignore[attr-defined]
    try:
        client.login(user.uid, user.password)
    finally:
        try:
            client.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def _unavailable(farm: Farm, process: MailfarmProcess) -> None:
    with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
        _login(farm, process)


@pytest.mark.parametrize("driver", DRIVERS)
def test_ldaps_with_the_farm_ca(farm: Farm, tmp_path: Path, driver: str) -> None:
    assert farm.ldaps_uri
    directory = {"uri": [farm.ldaps_uri], "driver": driver, "ca_file": str(farm.pki.ca_cert)}
    with _proxy(farm, tmp_path, directory) as process:
        _login(farm, process)


@pytest.mark.parametrize("driver", DRIVERS)
def test_starttls_with_the_farm_ca(farm: Farm, tmp_path: Path, driver: str) -> None:
    directory = {
        "uri": [farm.ldap_uri],
        "driver": driver,
        "tls": "starttls",
        "ca_file": str(farm.pki.ca_cert),
    }
    with _proxy(farm, tmp_path, directory) as process:
        _login(farm, process)


@pytest.mark.parametrize("driver", DRIVERS)
def test_starttls_with_a_wrong_ca_is_unavailable(
    farm: Farm, tmp_path: Path, driver: str, other_ca: Pki
) -> None:
    directory = {
        "uri": [farm.ldap_uri],
        "driver": driver,
        "tls": "starttls",
        "ca_file": str(other_ca.ca_cert),
    }
    with _proxy(farm, tmp_path, directory) as process:
        _unavailable(farm, process)
        log = process.log_text()
    assert "CERTIFICATE_VERIFY_FAILED" in log, log[-2000:]


@pytest.mark.parametrize("driver", DRIVERS)
def test_ldaps_with_a_wrong_ca_is_unavailable(
    farm: Farm, tmp_path: Path, driver: str, other_ca: Pki
) -> None:
    directory = {"uri": [farm.ldaps_uri], "driver": driver, "ca_file": str(other_ca.ca_cert)}
    with _proxy(farm, tmp_path, directory) as process:
        _unavailable(farm, process)
        log = process.log_text()
    assert "CERTIFICATE_VERIFY_FAILED" in log, log[-2000:]


@pytest.mark.parametrize("driver", DRIVERS)
def test_refused_starttls_never_falls_back_to_plaintext(
    farm: Farm, tmp_path: Path, driver: str, refusing: RefusingServer
) -> None:
    directory = {"uri": [refusing.uri], "driver": driver, "tls": "starttls"}
    with _proxy(farm, tmp_path, directory) as process:
        _unavailable(farm, process)
        log = process.log_text()
    assert 0x77 in refusing.ops  # it was asked
    assert refusing.binds == 0 and set(refusing.ops) <= {0x77, 0x42}, refusing.ops  # + unbind
    assert "refused StartTLS" in log, log[-2000:]


# -- the admin tool ---------------------------------------------------------------------


def _tls_admin(admin: Admin, name: str, **directory: Any) -> Admin:
    return admin.with_config(name, directory=directory)


def test_admin_user_add_over_ldaps_and_starttls(farm: Farm, admin: Admin, domain: str) -> None:
    ca = str(farm.pki.ca_cert)
    over_ldaps = _tls_admin(admin, "tls-ldaps", uri=[farm.ldaps_uri], ca_file=ca)
    add_user(over_ldaps, f"viatls@{domain}", "tls-pw-1")
    over_starttls = _tls_admin(
        admin, "tls-starttls", uri=[farm.ldap_uri], tls="starttls", ca_file=ca
    )
    add_user(over_starttls, f"viastarttls@{domain}", "tls-pw-2")
    shown = over_starttls.ok("user", "show", f"viatls@{domain}")
    assert shown["ok"] is True


def test_admin_with_a_wrong_ca_is_unavailable(admin: Admin, domain: str, other_ca: Pki) -> None:
    wrong = _tls_admin(
        admin,
        "tls-wrong-ca",
        uri=[admin.farm.ldap_uri],
        tls="starttls",
        ca_file=str(other_ca.ca_cert),
    )
    result = wrong.run("user", "add", f"never@{domain}", "--password-file", "-", stdin="pw\n")
    assert result.code == 3, result  # EXIT_UNAVAILABLE
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr + result.stdout, result


def test_admin_refused_starttls(admin: Admin, domain: str, refusing: RefusingServer) -> None:
    wrong = _tls_admin(admin, "tls-refused", uri=[refusing.uri], tls="starttls")
    result = wrong.run("user", "add", f"never@{domain}", "--password-file", "-", stdin="pw\n")
    assert result.code == 3, result
    assert "refused StartTLS" in result.stderr + result.stdout, result
    assert refusing.binds == 0, refusing.ops


# -- staff sign-in ----------------------------------------------------------------------


def _staff_settings(farm: Farm, tmp_path: Path, **directory: Any) -> Any:
    path = tmp_path / "staff.toml"
    path.write_text(render_toml(provision_sections(farm, directory=directory)))
    return load_config(path)


def test_staff_sign_in_over_starttls(farm: Farm, tmp_path: Path) -> None:
    settings = _staff_settings(
        farm, tmp_path, uri=[farm.ldap_uri], tls="starttls", ca_file=str(farm.pki.ca_cert)
    )
    member = farm.staff[0]
    principal = sign_in(settings, settings.web, member.uid, member.password)
    assert principal is not None and principal.source == f"staff:{member.uid}"


def test_staff_sign_in_refused_starttls(
    farm: Farm, tmp_path: Path, refusing: RefusingServer
) -> None:
    settings = _staff_settings(farm, tmp_path, uri=[refusing.uri], tls="starttls")
    member = farm.staff[0]
    with pytest.raises(StaffDirectoryDown, match="refused StartTLS"):
        sign_in(settings, settings.web, member.uid, member.password)
    assert refusing.binds == 0, refusing.ops
