"""The IMAP proxy against the real farm, driven by imaplib, curl and raw sockets."""

from __future__ import annotations

import base64
import imaplib
import secrets
import ssl
import subprocess
import time

import pytest

from bench.farm import Farm
from tests.integration.imapwire import Wire
from tests.integration.waiting import eventually

pytestmark = pytest.mark.usefixtures("farm")


def imap(proxy) -> imaplib.IMAP4:  # type: ignore[no-untyped-def]
    return imaplib.IMAP4("127.0.0.1", proxy.ports.imap, timeout=15)


def direct(farm: Farm, backend: str) -> imaplib.IMAP4:
    return imaplib.IMAP4(farm.backends[backend].host, farm.backends[backend].imap_port, timeout=15)


def tls_context(farm: Farm) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(farm.pki.ca_cert))


@pytest.mark.parametrize("form", ["address", "uid", "upper"])
def test_login_by_uid_and_address(farm: Farm, proxy, form: str) -> None:  # type: ignore[no-untyped-def]
    user = farm.user("alice@example.co.uk")
    login = {"address": user.address, "uid": user.uid, "upper": user.address.upper()}[form]
    client = imap(proxy)
    typ, _ = client.login(login, user.password)
    assert typ == "OK"
    typ, _ = client.select("INBOX")
    assert typ == "OK"
    client.logout()


def test_success_carries_backend_capabilities(farm: Farm, proxy) -> None:  # type: ignore[no-untyped-def]
    user = farm.user("carol@example.com")
    with Wire(proxy.ports.imap) as w:
        greeting = w.line()
        assert greeting.startswith(b"* OK [CAPABILITY IMAP4rev1")
        w.send(b"a1 LOGIN " + user.uid.encode() + b' "' + user.password.encode() + b'"\r\n')
        reply = w.until(b"a1 ")[-1]
    assert reply.startswith(b"a1 OK [CAPABILITY ")
    # Post-login extensions only the real backend announces, never in our pre-login list.
    assert b"SORT" in reply and b"THREAD=" in reply
    assert b"SORT" not in greeting


@pytest.mark.parametrize("address", ["alice@example.co.uk", "bob@example.co.uk"])
def test_each_user_lands_on_own_backend(farm: Farm, proxy, address: str) -> None:  # type: ignore[no-untyped-def]
    user = farm.user(address)
    folder = "proof-" + secrets.token_hex(4)
    client = imap(proxy)
    client.login(user.address, user.password)
    assert client.create(folder)[0] == "OK"
    client.logout()
    for name in farm.backends:
        d = direct(farm, name)
        d.login(user.uid, user.password)
        _, listing = d.list()
        d.logout()
        present = any(folder.encode() in line for line in listing if line)
        assert present == (name == user.backend), (name, listing)


def test_underscore_user_and_domain(farm: Farm, proxy) -> None:  # type: ignore[no-untyped-def]
    user = farm.user("jo_anne@under_score.org")
    for login in (user.address, user.uid):
        client = imap(proxy)
        assert client.login(login, user.password)[0] == "OK"
        client.logout()


def test_password_with_quote_backslash_space(farm: Farm, proxy) -> None:  # type: ignore[no-untyped-def]
    user = farm.user("quote@example.com")
    assert '"' in user.password and "\\" in user.password and " " in user.password
    client = imap(proxy)
    assert client.login(user.address, user.password)[0] == "OK"
    client.logout()


def test_login_with_synchronizing_literals(farm: Farm, proxy) -> None:  # type: ignore[no-untyped-def]
    user = farm.user("dave@example.com")
    login, password = user.address.encode(), user.password.encode()
    with Wire(proxy.ports.imap) as w:
        w.line()
        w.send(b"a1 LOGIN {%d}\r\n" % len(login))
        assert w.line().startswith(b"+ ")
        w.send(login + b" {%d}\r\n" % len(password))
        assert w.line().startswith(b"+ ")
        w.send(password + b"\r\n")
        assert w.until(b"a1 ")[-1].startswith(b"a1 OK ")


def test_login_with_literal_plus(farm: Farm, proxy) -> None:  # type: ignore[no-untyped-def]
    user = farm.user("dave@example.com")
    login, password = user.address.encode(), user.password.encode()
    with Wire(proxy.ports.imap) as w:
        w.line()
        w.send(
            b"a1 LOGIN {%d+}\r\n%s {%d+}\r\n%s\r\n" % (len(login), login, len(password), password)
        )
        lines = w.until(b"a1 ")
        assert not any(line.startswith(b"+") for line in lines)
        assert lines[-1].startswith(b"a1 OK ")


@pytest.mark.parametrize("sasl_ir", [True, False])
def test_authenticate_plain(farm: Farm, proxy, sasl_ir: bool) -> None:  # type: ignore[no-untyped-def]
    user = farm.user("bob@example.co.uk")
    token = base64.b64encode(b"\0" + user.address.encode() + b"\0" + user.password.encode())
    with Wire(proxy.ports.imap) as w:
        w.line()
        if sasl_ir:
            w.send(b"a1 AUTHENTICATE PLAIN " + token + b"\r\n")
        else:
            w.send(b"a1 AUTHENTICATE PLAIN\r\n")
            assert w.line().rstrip() == b"+"
            w.send(token + b"\r\n")
        assert w.until(b"a1 ")[-1].startswith(b"a1 OK [CAPABILITY ")
        w.send(b"a2 SELECT INBOX\r\na3 LOGOUT\r\n")
        assert w.until(b"a2 ")[-1].startswith(b"a2 OK")


def test_authenticate_login_and_cancel(farm: Farm, proxy) -> None:  # type: ignore[no-untyped-def]
    user = farm.user("bob@example.co.uk")
    with Wire(proxy.ports.imap) as w:
        w.line()
        w.send(b"a1 AUTHENTICATE PLAIN\r\n")
        w.line()
        w.send(b"*\r\n")
        assert w.line().startswith(b"a1 BAD")
        w.send(b"a2 AUTHENTICATE LOGIN\r\n")
        assert base64.b64decode(w.line()[2:].strip()) == b"Username:"
        w.send(base64.b64encode(user.uid.encode()) + b"\r\n")
        assert base64.b64decode(w.line()[2:].strip()) == b"Password:"
        w.send(base64.b64encode(user.password.encode()) + b"\r\n")
        assert w.until(b"a2 ")[-1].startswith(b"a2 OK")


def test_imaplib_authenticate(farm: Farm, proxy) -> None:  # type: ignore[no-untyped-def]
    user = farm.user("alice@example.co.uk")
    client = imap(proxy)
    typ, _ = client.authenticate("PLAIN", lambda _: f"\0{user.uid}\0{user.password}".encode())
    assert typ == "OK"
    client.logout()


def test_curl_lists_inbox(farm: Farm, proxy) -> None:  # type: ignore[no-untyped-def]
    user = farm.user("carol@example.com")
    farm.deliver(user.address, b"Subject: curl test\r\n\r\nhello curl\r\n")
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "20",
            "-u",
            f"{user.address}:{user.password}",
            f"imap://127.0.0.1:{proxy.ports.imap}/INBOX",
            "-X",
            "STATUS INBOX (MESSAGES)",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "MESSAGES" in result.stdout


def test_plaintext_refused_without_tls_then_starttls(farm: Farm, strict_proxy) -> None:  # type: ignore[no-untyped-def]
    user = farm.user("alice@example.co.uk")
    client = imaplib.IMAP4("127.0.0.1", strict_proxy.ports.imap, timeout=15)
    assert "LOGINDISABLED" in client.capabilities and "STARTTLS" in client.capabilities
    with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
        client.login(user.address, user.password)
    client.starttls(ssl_context=tls_context(farm))
    assert "LOGINDISABLED" not in client.capabilities
    assert client.login(user.address, user.password)[0] == "OK"
    assert client.select("INBOX")[0] == "OK"
    client.logout()


def test_implicit_tls(farm: Farm, strict_proxy) -> None:  # type: ignore[no-untyped-def]
    user = farm.user("bob@example.co.uk")
    client = imaplib.IMAP4_SSL(
        "127.0.0.1", strict_proxy.ports.imaps, ssl_context=tls_context(farm), timeout=15
    )
    assert client.login(user.uid, user.password)[0] == "OK"
    assert client.select("INBOX")[0] == "OK"
    client.logout()


def test_starttls_discards_injected_plaintext(farm: Farm, strict_proxy) -> None:  # type: ignore[no-untyped-def]
    with Wire(strict_proxy.ports.imap) as w:
        w.line()
        w.send(b"a1 STARTTLS\r\na2 CAPABILITY\r\n")  # a2 sent in clear must never run
        assert w.line().startswith(b"a1 OK")
        w.sock = tls_context(farm).wrap_socket(w.sock, server_hostname="127.0.0.1")
        w.buf = b""
        w.send(b"a3 NOOP\r\n")
        assert w.line().startswith(b"a3 OK")


def test_wrong_password_and_unknown_user(farm: Farm, proxy) -> None:  # type: ignore[no-untyped-def]
    user = farm.user("alice@example.co.uk")
    # '"*"': imaplib sends it quoted as given; a bare * is a syntax error (BAD), rightly.
    for login, password in [(user.address, "wrong"), ("nobody@example.co.uk", "x"), ('"*"', "x")]:
        client = imap(proxy)
        with pytest.raises(imaplib.IMAP4.error, match=r"\[AUTHENTICATIONFAILED\]"):
            client.login(login, password)
        client.shutdown()


def test_too_many_failures_closes(farm: Farm, proxy) -> None:  # type: ignore[no-untyped-def]
    with Wire(proxy.ports.imap) as w:
        w.line()
        for i in range(3):
            w.send(b"a%d LOGIN alice_example_co_uk wrong\r\n" % i)
            lines = w.until(b"a%d " % i)
            assert b"[AUTHENTICATIONFAILED]" in lines[-1]
        assert w.line().startswith(b"* BYE")
        assert w.closed()


def test_pipelined_login_select_fetch(farm: Farm, proxy) -> None:  # type: ignore[no-untyped-def]
    user = farm.user("dave@example.com")
    farm.deliver(user.address, b"Subject: pipelined\r\n\r\nbody\r\n")
    with Wire(proxy.ports.imap) as w:
        w.line()
        w.send(
            b"a1 LOGIN " + user.uid.encode() + b" " + user.password.encode() + b"\r\n"
            b"a2 SELECT INBOX\r\na3 FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\na4 LOGOUT\r\n"
        )
        lines = w.until(b"a4 ")
    tags = [line.split(b" ", 1)[0] for line in lines if not line.startswith((b"*", b")", b"\r"))]
    assert [t for t in tags if t.startswith(b"a")] == [b"a1", b"a2", b"a3", b"a4"]
    assert any(b"Subject:" in line for line in lines)
    assert lines[-1].startswith(b"a4 OK")


def test_idle_sees_new_mail(farm: Farm, proxy) -> None:  # type: ignore[no-untyped-def]
    user = farm.user("bob@example.co.uk")
    with Wire(proxy.ports.imap) as w:
        w.line()
        w.send(b"a1 LOGIN " + user.uid.encode() + b" " + user.password.encode() + b"\r\n")
        w.until(b"a1 OK")
        w.send(b"a2 SELECT INBOX\r\n")
        w.until(b"a2 OK")
        w.send(b"a3 IDLE\r\n")
        assert w.line().startswith(b"+")
        farm.deliver(user.address, b"Subject: while idle\r\n\r\nwake up\r\n")
        # Other untagged data (RECENT, FETCH flags) may come too; EXISTS must, within the
        # socket timeout.
        seen = [w.line() for _ in range(1)]
        while not seen[-1].rstrip().endswith(b"EXISTS"):
            assert len(seen) < 50, seen
            seen.append(w.line())
        w.send(b"DONE\r\n")
        assert w.until(b"a3 ")[-1].startswith(b"a3 OK")


def test_ten_megabyte_fetch_is_byte_identical(farm: Farm, proxy) -> None:  # type: ignore[no-untyped-def]
    user = farm.user("carol@example.com")
    marker = secrets.token_hex(8)
    body = (b"x" * 998 + b"\r\n") * (10 * 1024 * 1024 // 1000)
    farm.deliver(user.address, f"Subject: big {marker}\r\n\r\n".encode() + body)

    def fetch(client: imaplib.IMAP4) -> bytes:
        client.login(user.uid, user.password)
        client.select("INBOX", readonly=True)
        _, found = client.search(None, "SUBJECT", marker)
        num = found[0].split()[-1]
        _, data = client.fetch(num, "(BODY.PEEK[])")
        client.logout()
        return data[0][1]  # type: ignore[index]

    via_proxy = fetch(imap(proxy))
    assert len(via_proxy) > 10_000_000
    assert via_proxy == fetch(direct(farm, user.backend))


def test_oversized_line_before_auth(farm: Farm, proxy) -> None:  # type: ignore[no-untyped-def]
    user = farm.user("alice@example.co.uk")
    with Wire(proxy.ports.imap) as w:
        w.line()
        w.send(b"a1 LOGIN " + b"x" * 100_000 + b"\r\n")
        assert b"BAD" in w.line()
        w.send(b"a2 LOGIN " + user.uid.encode() + b" " + user.password.encode() + b"\r\n")
        assert w.until(b"a2 ")[-1].startswith(b"a2 OK")


def test_oversized_literal_refused(farm: Farm, proxy) -> None:  # type: ignore[no-untyped-def]
    with Wire(proxy.ports.imap) as w:
        w.line()
        w.send(b"a1 LOGIN {10000000}\r\n")
        assert w.line().startswith(b"a1 BAD")
        w.send(b"a2 NOOP\r\n")
        assert w.line().startswith(b"a2 OK")


def test_other_commands_before_login_get_bad(proxy) -> None:  # type: ignore[no-untyped-def]
    with Wire(proxy.ports.imap) as w:
        w.line()
        w.send(b"a1 SELECT INBOX\r\na2 NOOP\r\na3 ID NIL\r\n")
        assert w.line().startswith(b"a1 BAD")
        assert w.line().startswith(b"a2 OK")
        assert w.line().startswith(b"* ID ")
        assert w.line().startswith(b"a3 OK")
        w.send(b"a4 LOGOUT\r\n")
        assert w.line().startswith(b"* BYE")
        assert w.line().startswith(b"a4 OK")
        assert w.closed()


def test_literal_password_with_crlf_is_data(farm: Farm, proxy) -> None:  # type: ignore[no-untyped-def]
    """A password holding CRLF and a command reaches the backend as one literal, never as a
    command. (Dovecot refuses such passwords outright, so the login itself must fail.)"""
    user = farm.user("dave@example.com")
    folder = "injected-" + secrets.token_hex(4)
    password = f"first\r\nM9 CREATE {folder}\r\nlast"
    farm.set_password(user.address, password)
    log = farm.log_file(user.backend)
    before = log.read_text(errors="replace").count("password having illegal chars")
    try:
        pw = password.encode()
        with Wire(proxy.ports.imap) as w:
            w.line()
            w.send(b"a1 LOGIN " + user.uid.encode() + b" {%d+}\r\n" % len(pw) + pw + b"\r\n")
            assert w.until(b"a1 ")[-1].startswith(b"a1 NO [UNAVAILABLE]")
            w.send(b"a2 NOOP\r\n")
            assert w.line().startswith(b"a2 OK")
    finally:
        farm.set_password(user.address, user.password)
    # The backend saw the whole literal as the password ...
    assert eventually(
        lambda: log.read_text(errors="replace").count("password having illegal chars")
        == before + 1
    )
    # ... and never ran the command hidden in it.
    d = direct(farm, user.backend)
    d.login(user.uid, user.password)
    _, listing = d.list()
    d.logout()
    assert not any(folder.encode() in line for line in listing if line)


def test_client_vanishes_mid_literal(farm: Farm, proxy) -> None:  # type: ignore[no-untyped-def]
    with Wire(proxy.ports.imap) as w:
        w.line()
        w.send(b"a1 LOGIN {20}\r\n")
        w.line()
        w.send(b"alice")
    time.sleep(0.2)
    user = farm.user("alice@example.co.uk")
    client = imap(proxy)  # the proxy carries on
    assert client.login(user.address, user.password)[0] == "OK"
    client.logout()


def test_session_log_line_has_no_password(farm: Farm, proxy) -> None:  # type: ignore[no-untyped-def]
    user = farm.user("quote@example.com")
    client = imap(proxy)
    client.login(user.address, user.password)
    client.logout()
    assert eventually(lambda: f"uid={user.uid}" in proxy.process.log_text())
    log = proxy.process.log_text()
    assert user.password not in log
    lines = [line for line in log.splitlines() if f"uid={user.uid}" in line and "session" in line]
    assert lines, log[-2000:]
    assert "outcome=ok" in lines[-1] and "backend=127.0.0.3:" in lines[-1]
    assert "in=" in lines[-1] and "out=" in lines[-1] and "duration=" in lines[-1]
