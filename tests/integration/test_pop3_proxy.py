"""The POP3 proxy against the real farm, driven by poplib, curl, fetchmail and raw sockets."""

from __future__ import annotations

import asyncio
import base64
import poplib
import secrets
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from bench.farm import Farm, FarmUser
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config
from proxy.actions import BackendInfo
from proxy.backend import BackendError, BackendTarget, open_backend
from proxy.config import ProtocolSettings
from proxy.pop3.backend import pop3_backend_login
from proxy.sasl import Credentials
from proxy.session import ClientInfo
from tests.integration.imapwire import Wire
from tests.integration.proxies import RunningProxy
from tests.integration.waiting import eventually

pytestmark = pytest.mark.usefixtures("farm")

BACKEND_IPS = {"mail1": "127.0.0.2", "mail2": "127.0.0.3"}


def pop(port: int) -> poplib.POP3:
    return poplib.POP3("127.0.0.1", port, timeout=20)


def direct(farm: Farm, backend: str) -> poplib.POP3:
    return poplib.POP3(farm.backends[backend].host, farm.backends[backend].pop3_port, timeout=20)


def tls_context(farm: Farm) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(farm.pki.ca_cert))


def login_error(port: int, login: str, password: str) -> str:
    """The -ERR text of a USER/PASS login, or "OK"."""
    client = pop(port)
    try:
        client.user(login)
        client.pass_(password)
    except poplib.error_proto as exc:
        return str(exc.args[0], "ascii", "replace") if exc.args else repr(exc)
    finally:
        client.close()
    return "OK"


def deliver_marker(farm: Farm, user: FarmUser, body: bytes = b"") -> str:
    marker = "pop3-" + secrets.token_hex(6)
    farm.deliver(user.address, f"Subject: {marker}\r\n\r\n{marker}\r\n".encode() + body)
    return marker


def find(client: poplib.POP3, marker: str) -> int | None:
    """The message number whose headers carry ``marker`` (newest first)."""
    count, _ = client.stat()
    for num in range(count, 0, -1):
        _, lines, _ = client.top(num, 0)
        if any(marker.encode() in line for line in lines):
            return num
    return None


def session_line(running: RunningProxy, uid: str, timeout: float = 5.0) -> str:
    """The newest POP3 session log line of ``uid`` (written when the session ends)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [
            line
            for line in running.process.log_text().splitlines()
            if "session proto=pop3" in line and f" uid={uid} " in line
        ]
        if found or time.monotonic() > deadline:
            assert found, running.process.log_text()[-2000:]
            return found[-1]
        time.sleep(0.05)


class PopWire(Wire):
    """Raw lines, optionally from a chosen loopback source address."""

    def __init__(self, port: int, source: str | None = None) -> None:
        self.sock = socket.create_connection(
            ("127.0.0.1", port), 15, source_address=(source, 0) if source else None
        )
        self.buf = b""

    def multiline(self) -> list[bytes]:
        """A multi-line reply after its +OK status line, up to the lone dot."""
        lines = self.until(b".\r\n")
        return lines[:-1]


# -- logging in ---------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["address", "uid", "upper"])
def test_login_by_uid_and_address(farm: Farm, proxy: RunningProxy, form: str) -> None:
    user = farm.user("alice@example.co.uk")
    login = {"address": user.address, "uid": user.uid, "upper": user.address.upper()}[form]
    client = pop(proxy.ports.pop3)
    assert client.getwelcome().startswith(b"+OK")
    assert client.user(login).startswith(b"+OK")
    assert client.pass_(user.password) == b"+OK Logged in."
    client.stat()
    client.quit()


@pytest.mark.parametrize("address", ["alice@example.co.uk", "bob@example.co.uk"])
def test_each_user_lands_on_own_backend(farm: Farm, proxy: RunningProxy, address: str) -> None:
    user = farm.user(address)
    marker = deliver_marker(farm, user)
    client = pop(proxy.ports.pop3)
    client.user(user.address)
    client.pass_(user.password)
    assert find(client, marker) is not None
    client.quit()
    line = session_line(proxy, user.uid)
    assert f"backend={BACKEND_IPS[user.backend]}:" in line, line
    assert "outcome=ok" in line and user.password not in proxy.process.log_text()


def test_underscore_user_and_password_with_spaces(farm: Farm, proxy: RunningProxy) -> None:
    for address in ("jo_anne@under_score.org", "quote@example.com"):
        user = farm.user(address)
        for login in (user.address, user.uid):
            assert login_error(proxy.ports.pop3, login, user.password) == "OK"


def test_stat_list_uidl_retr_dele_quit(farm: Farm, proxy: RunningProxy) -> None:
    user = farm.user("dave@example.com")
    marker = deliver_marker(farm, user)
    client = pop(proxy.ports.pop3)
    client.user(user.uid)
    client.pass_(user.password)
    count, size = client.stat()
    assert count >= 1 and size > 0
    _, listing, _ = client.list()
    assert len(listing) == count
    _, uidls, _ = client.uidl()
    assert len(uidls) == count
    num = find(client, marker)
    assert num is not None
    _, lines, _ = client.retr(num)
    assert marker.encode() in lines
    uidl = client.uidl(num).split()[2]
    assert client.dele(num).startswith(b"+OK")
    assert client.quit().startswith(b"+OK")
    client = pop(proxy.ports.pop3)
    client.user(user.uid)
    client.pass_(user.password)
    assert client.stat()[0] == count - 1
    assert find(client, marker) is None
    _, uidls, _ = client.uidl()
    assert not any(line.split()[1] == uidl for line in uidls)
    client.quit()


def test_ten_megabyte_retr_is_byte_identical(farm: Farm, proxy: RunningProxy) -> None:
    user = farm.user("carol@example.com")
    body = (b"x" * 998 + b"\r\n") * (10 * 1024 * 1024 // 1000) + b".leading dot\r\n"
    marker = deliver_marker(farm, user, body)

    def retr(client: poplib.POP3) -> bytes:
        client.user(user.uid)
        client.pass_(user.password)
        num = find(client, marker)
        assert num is not None
        _, lines, _ = client.retr(num)
        client.quit()
        return b"\r\n".join(lines)

    via_proxy = retr(pop(proxy.ports.pop3))
    assert len(via_proxy) > 10_000_000
    assert via_proxy == retr(direct(farm, user.backend))


# -- SASL ---------------------------------------------------------------------------------


@pytest.mark.parametrize("initial_response", [True, False])
def test_auth_plain(farm: Farm, proxy: RunningProxy, initial_response: bool) -> None:
    user = farm.user("bob@example.co.uk")
    token = base64.b64encode(b"\0" + user.address.encode() + b"\0" + user.password.encode())
    with PopWire(proxy.ports.pop3) as w:
        assert w.line().startswith(b"+OK")
        if initial_response:
            w.send(b"AUTH PLAIN " + token + b"\r\n")
        else:
            w.send(b"AUTH PLAIN\r\n")
            assert w.line().rstrip() == b"+"
            w.send(token + b"\r\n")
        assert w.line() == b"+OK Logged in.\r\n"
        w.send(b"STAT\r\nQUIT\r\n")
        assert w.line().startswith(b"+OK ")
        assert w.line().startswith(b"+OK")
        assert w.closed()


def test_auth_listing_login_and_cancel(farm: Farm, proxy: RunningProxy) -> None:
    user = farm.user("dave@example.com")
    with PopWire(proxy.ports.pop3) as w:
        w.line()
        w.send(b"AUTH\r\n")
        assert w.line().startswith(b"+OK")
        assert w.multiline() == [b"PLAIN\r\n", b"LOGIN\r\n"]
        w.send(b"AUTH PLAIN\r\n")
        w.line()
        w.send(b"*\r\n")
        assert w.line().startswith(b"-ERR")
        w.send(b"AUTH LOGIN\r\n")
        assert base64.b64decode(w.line()[2:].strip()) == b"Username:"
        w.send(base64.b64encode(user.uid.encode()) + b"\r\n")
        assert base64.b64decode(w.line()[2:].strip()) == b"Password:"
        w.send(base64.b64encode(user.password.encode()) + b"\r\n")
        assert w.line() == b"+OK Logged in.\r\n"


def test_capa_before_login(proxy: RunningProxy) -> None:
    client = pop(proxy.ports.pop3)
    caps = client.capa()
    client.quit()
    assert "USER" in caps and caps["SASL"] == ["PLAIN", "LOGIN"]
    assert "PIPELINING" in caps and "RESP-CODES" in caps and "AUTH-RESP-CODE" in caps
    assert caps["IMPLEMENTATION"] == ["mailfarm"]
    assert "STLS" in caps  # the proxy has a certificate
    assert "APOP" not in caps


# -- TLS ----------------------------------------------------------------------------------


def test_plaintext_refused_then_stls(farm: Farm, strict_proxy: RunningProxy) -> None:
    user = farm.user("alice@example.co.uk")
    client = pop(strict_proxy.ports.pop3)
    caps = client.capa()
    assert "STLS" in caps and "USER" not in caps and "SASL" not in caps
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\] Plaintext"):
        client.user(user.address)
    client.stls(tls_context(farm))
    caps = client.capa()
    assert "USER" in caps and "SASL" in caps and "STLS" not in caps
    client.user(user.address)
    assert client.pass_(user.password) == b"+OK Logged in."
    client.stat()
    client.quit()


def test_implicit_tls(farm: Farm, strict_proxy: RunningProxy) -> None:
    user = farm.user("bob@example.co.uk")
    client = poplib.POP3_SSL(
        "127.0.0.1", strict_proxy.ports.pop3s, context=tls_context(farm), timeout=20
    )
    assert "STLS" not in client.capa()
    client.user(user.uid)
    assert client.pass_(user.password) == b"+OK Logged in."
    client.stat()
    client.quit()


def test_stls_discards_injected_plaintext(farm: Farm, strict_proxy: RunningProxy) -> None:
    with PopWire(strict_proxy.ports.pop3) as w:
        w.line()
        w.send(b"STLS\r\nCAPA\r\n")  # CAPA sent in clear must never be answered
        assert w.line().startswith(b"+OK")
        w.sock = tls_context(farm).wrap_socket(w.sock, server_hostname="127.0.0.1")
        w.buf = b""
        w.send(b"QUIT\r\n")
        assert w.line() == b"+OK Logging out.\r\n"


def test_curl_stls_on_strict_proxy(farm: Farm, strict_proxy: RunningProxy) -> None:
    user = farm.user("bob@example.co.uk")
    deliver_marker(farm, user)
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "--ssl-reqd", "--cacert", str(farm.pki.ca_cert),
         "-u", f"{user.uid}:{user.password}", f"pop3://127.0.0.1:{strict_proxy.ports.pop3}/"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


# -- failures -----------------------------------------------------------------------------


def test_wrong_password_and_unknown_user(farm: Farm, proxy: RunningProxy) -> None:
    user = farm.user("alice@example.co.uk")
    for login, password in [(user.address, "wrong"), ("nobody@example.co.uk", "x"), ("*", "x")]:
        error = login_error(proxy.ports.pop3, login, password)
        assert error.startswith("-ERR [AUTH] "), error


def test_too_many_failures_closes(proxy: RunningProxy) -> None:
    with PopWire(proxy.ports.pop3) as w:
        w.line()
        for _ in range(3):
            w.send(b"USER alice_example_co_uk\r\nPASS wrong\r\n")
            assert w.line() == b"+OK\r\n"
            assert w.line().startswith(b"-ERR [AUTH] Authentication failed.")
        assert w.line().startswith(b"-ERR ")
        assert w.closed()


def test_backend_down_is_sys_temp(farm: Farm, proxy: RunningProxy) -> None:
    user = farm.user("alice@example.co.uk")
    other = farm.user("bob@example.co.uk")
    farm.stop_backend(user.backend)
    try:
        error = login_error(proxy.ports.pop3, user.address, user.password)
        assert error.startswith("-ERR [SYS/TEMP] "), error
        assert login_error(proxy.ports.pop3, other.address, other.password) == "OK"
    finally:
        farm.start_backend(user.backend)
    assert login_error(proxy.ports.pop3, user.address, user.password) == "OK"


def test_directory_down_is_sys_temp(farm: Farm, proxy: RunningProxy) -> None:
    user = farm.user("bob@example.co.uk")
    farm.stop_ldap()
    try:
        for login, password in [("nobody-pop@example.com", "x"), (user.address, "wrong")]:
            error = login_error(proxy.ports.pop3, login, password)
            assert error.startswith("-ERR [SYS/TEMP] "), error
    finally:
        farm.start_ldap()
    assert login_error(proxy.ports.pop3, user.address, user.password) == "OK"


# -- framing ------------------------------------------------------------------------------


def test_oversized_line_before_auth(farm: Farm, proxy: RunningProxy) -> None:
    user = farm.user("alice@example.co.uk")
    with PopWire(proxy.ports.pop3) as w:
        w.line()
        w.send(b"USER " + b"x" * 100_000 + b"\r\n")
        assert w.line().startswith(b"-ERR")
        w.send(b"USER " + user.uid.encode() + b"\r\nPASS " + user.password.encode() + b"\r\n")
        assert w.line() == b"+OK\r\n"
        assert w.line() == b"+OK Logged in.\r\n"


def test_pipelined_user_pass_stat_list_quit(farm: Farm, proxy: RunningProxy) -> None:
    user = farm.user("dave@example.com")
    deliver_marker(farm, user)
    with PopWire(proxy.ports.pop3) as w:
        w.line()
        w.send(
            b"USER " + user.uid.encode() + b"\r\nPASS " + user.password.encode() + b"\r\n"
            b"STAT\r\nLIST\r\nQUIT\r\n"
        )
        assert w.line() == b"+OK\r\n"
        assert w.line() == b"+OK Logged in.\r\n"
        stat = w.line().split()
        assert stat[0] == b"+OK"
        assert w.line().startswith(b"+OK")
        assert len(w.multiline()) == int(stat[1]) >= 1
        assert w.line().startswith(b"+OK")
        assert w.closed()


def test_commands_before_login(proxy: RunningProxy) -> None:
    with PopWire(proxy.ports.pop3) as w:
        w.line()
        w.send(b"STAT\r\nNOOP\r\nAPOP a b\r\nPASS x\r\nQUIT\r\n")
        for _ in range(4):
            assert w.line().startswith(b"-ERR ")
        assert w.line().startswith(b"+OK")
        assert w.closed()


# -- real clients -------------------------------------------------------------------------


@pytest.mark.parametrize("sasl_ir", [False, True])
def test_curl_lists_messages(farm: Farm, proxy: RunningProxy, sasl_ir: bool) -> None:
    user = farm.user("carol@example.com")
    deliver_marker(farm, user)
    client = pop(proxy.ports.pop3)
    client.user(user.uid)
    client.pass_(user.password)
    count = client.stat()[0]
    client.quit()
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "20", *(["--sasl-ir"] if sasl_ir else []),
         "-u", f"{user.address}:{user.password}", f"pop3://127.0.0.1:{proxy.ports.pop3}/"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) >= count


def test_fetchmail(farm: Farm, proxy: RunningProxy, tmp_path: Path) -> None:
    if shutil.which("fetchmail") is None:
        pytest.skip("fetchmail is not installed")
    user = farm.user("jo_anne@under_score.org")
    marker = deliver_marker(farm, user)
    out = tmp_path / "fetched.mbox"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"set no syslog\n"
        f"poll 127.0.0.1 service {proxy.ports.pop3} protocol POP3 timeout 20\n"
        f'  user "{user.address}" there password "{user.password}" is "nobody" here\n'
        f"  sslproto '' keep fetchall mda \"cat >> {out}\"\n"
    )
    rc.chmod(0o600)
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        ["fetchmail", "-f", str(rc), "--pidfile", str(tmp_path / "pid"), "-v"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert marker in out.read_text(errors="replace")


# -- backend options ----------------------------------------------------------------------


def test_backend_starttls_and_forwarded_client_ip(farm: Farm, tmp_path: Path) -> None:
    """STLS to the backend (verified against the farm CA) and XCLIENT with the client's IP."""
    ports = ProxyPorts()
    sections = farm_config(
        farm,
        ports,
        pop3={
            "backend_tls": "starttls",
            "backend_ca": str(farm.pki.ca_cert),
            "forward_client_ip": True,
        },
    )
    user = farm.user("dave@example.com")
    with MailfarmProcess(tmp_path, sections, "pop3-backend-tls") as running:
        with PopWire(ports.pop3, source="127.0.0.9") as w:
            w.line()
            token = base64.b64encode(f"\0{user.uid}\0{user.password}".encode())
            w.send(b"AUTH PLAIN " + token + b"\r\nSTAT\r\nQUIT\r\n")
            assert w.line() == b"+OK Logged in.\r\n"
            assert w.line().startswith(b"+OK ")
            assert w.line().startswith(b"+OK")
        log = running.log_text()

    def logins() -> list[str]:
        return [
            line
            for line in farm.log_file(user.backend).read_text().splitlines()
            if f"user=<{user.uid}>" in line and "rip=127.0.0.9" in line
        ]

    # Dovecot logs through its log process: the login line lands a moment later.
    assert eventually(logins), log[-2000:]
    last = logins()[-1]
    assert ", TLS" in last, last


@pytest.mark.parametrize(
    "length",
    [
        200,  # AUTH PLAIN with initial response still fits RFC 5034's 255 octets
        300,  # it no longer fits: the response follows the backend's "+ "
        1024,  # the longest password PLAIN carries (proxy.sasl.MAX_FIELD_OCTETS)
    ],
)
def test_long_password(farm: Farm, proxy: RunningProxy, length: int) -> None:
    user = farm.user("dave@example.com")
    password = ("long pw " * length)[:length]
    farm.set_password(user, password)
    try:
        assert login_error(proxy.ports.pop3, user.uid, password) == "OK"
        error = login_error(proxy.ports.pop3, user.uid, password + "x" * (1025 - length))
        assert error.startswith("-ERR [AUTH] "), error
    finally:
        farm.set_password(user, user.password)


# -- the backend login on its own, against a real Dovecot ---------------------------------


async def backend_login(
    farm: Farm, user: FarmUser, password: str, **settings: object
) -> tuple[BackendInfo, bytes]:
    """Log in to the user's backend with pop3_backend_login, then ask it for STAT."""
    backend = farm.backends[user.backend]
    config = ProtocolSettings(
        listen=(),
        tls_listen=(),
        proxy_protocol_listen=(),
        backend_port=backend.pop3_port,
        backend_tls=str(settings.get("backend_tls", "none")),
        backend_tls_verify=True,
        backend_ca=farm.pki.ca_cert,
        backend_timeout=5.0,
        forward_client_ip=bool(settings.get("forward_client_ip", False)),
    )
    target = BackendTarget(backend.host, backend.pop3_port)
    client = ClientInfo("192.0.2.44", 4444, "127.0.0.1", 110, trusted=True)
    async with asyncio.timeout(config.backend_timeout):
        conn = await open_backend(target, config)
    try:
        info = await pop3_backend_login(
            conn, Credentials("", user.uid, password), client, config, target
        )
        conn.write(b"STAT\r\n")
        return info, await conn.readline()
    finally:
        conn.close()


async def test_backend_login_forwards_client_address(farm: Farm) -> None:
    user = farm.user("carol@example.com")
    _, stat = await backend_login(farm, user, user.password, forward_client_ip=True)
    assert stat.startswith(b"+OK ")
    line = f"user=<{user.uid}>, method=PLAIN, rip=192.0.2.44"
    assert eventually(lambda: line in farm.log_file(user.backend).read_text()), line


async def test_backend_login_over_stls(farm: Farm) -> None:
    user = farm.user("bob@example.co.uk")
    _, stat = await backend_login(farm, user, user.password, backend_tls="starttls")
    assert stat.startswith(b"+OK ")


async def test_backend_refusal_is_backend_error(farm: Farm) -> None:
    user = farm.user("bob@example.co.uk")
    with pytest.raises(BackendError, match="refused login"):
        await backend_login(farm, user, "not-the-password")


@pytest.mark.parametrize("password", ["a\x00b", "x" * 1025 + "\r\nQUIT"])
async def test_user_pass_fallback_refuses_what_it_cannot_carry(farm: Farm, password: str) -> None:
    """PLAIN cannot carry these, and USER/PASS must not send a NUL or a line break."""
    user = farm.user("bob@example.co.uk")
    with pytest.raises(BackendError, match="CR, LF or NUL"):
        await backend_login(farm, user, password)
