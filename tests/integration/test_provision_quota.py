"""Quotas: ``mailfarm user add --quota``, ``mailfarm user quota`` and the REST API write
``[directory] quota_attribute`` and apply it on the user's backend, and the backend then
enforces it for the user's own IMAP session through mailfarm's proxy.

Cyrus keeps quotas in its own database, so a change is sent (``SETQUOTA``) and holds at
once; the farm's Dovecot reads the attribute from its userdb, so a change holds from the
user's next login. Each kind is shown refusing an APPEND past the limit with the server's
own ``NO [OVERQUOTA]``, and taking it again once the quota is removed.
"""

from __future__ import annotations

import imaplib
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.farm import BACKEND_HOSTS, Farm
from tests.integration import provision_helpers as helpers
from tests.integration.provision_helpers import Admin, add_user, provision_sections
from tests.integration.web_helpers import WebServer

admin = helpers.admin  # fixture
domain = helpers.domain  # fixture

CYRUS = BACKEND_HOSTS["mail3"]
DOVECOT = BACKEND_HOSTS["mail1"]
API_TOKEN = secrets.token_urlsafe(24)
LIMIT_KB = 100


def message(size: int) -> bytes:
    """A message of about ``size`` bytes."""
    line = b"x" * 76 + b"\r\n"
    body = line * max(1, size // len(line))
    head = b"From: a@x.test\r\nTo: b@x.test\r\nSubject: quota test\r\n\r\n"
    return head + body


SMALL = message(2_000)
BIG = message(3 * LIMIT_KB * 1024)  # three times the quota


def login(proxy: Any, address: str, password: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", proxy.ports.imap, timeout=15)
    client.login(address, password)
    return client


def storage_limit(client: imaplib.IMAP4) -> int | None:
    """The STORAGE limit (KiB) GETQUOTAROOT INBOX shows, or None when there is none."""
    typ, data = client.getquotaroot("INBOX")
    assert typ == "OK", data
    quotas = data[1] if len(data) > 1 else []
    for line in quotas:
        found = re.search(rb"STORAGE (\d+) (\d+)", line or b"")
        if found:
            return int(found.group(2))
    return None


def append(client: imaplib.IMAP4, body: bytes) -> tuple[str, bytes]:
    typ, data = client.append("INBOX", None, None, body)
    return typ, (data[0] or b"") if data else b""


#: How each kind refuses the APPEND: Dovecot with RFC 9208's response code; Cyrus 3.6 (the
#: farm's) with none, only its text.
REFUSAL = {CYRUS: b"Over quota", DOVECOT: b"[OVERQUOTA] Quota exceeded"}


def assert_refused_over_quota(client: imaplib.IMAP4, host: str) -> None:
    typ, text = append(client, BIG)
    assert typ == "NO" and text.startswith(REFUSAL[host]), (typ, text)


def assert_takes_big(client: imaplib.IMAP4) -> None:
    typ, text = append(client, BIG)
    assert typ == "OK", (typ, text)


def quota(admin: Admin, address: str, value: str) -> dict[str, Any]:
    return admin.ok("user", "quota", address, value)


# -- the CLI ------------------------------------------------------------------------------


def test_cli_quota_on_cyrus_holds_at_once_and_is_removed(
    admin: Admin,
    domain: str,
    proxy,  # type: ignore[no-untyped-def]
) -> None:
    user = add_user(admin, f"cq@{domain}", "cq pw", "--host", CYRUS)
    client = login(proxy, user["mail"], "cq pw")
    try:
        assert storage_limit(client) is None
        changed = quota(admin, user["mail"], str(LIMIT_KB))
        assert changed["quota_kb"] == LIMIT_KB and changed["quota_applied"] == "now", changed
        # The session opened before the change sees it: Cyrus checks its quota database.
        assert storage_limit(client) == LIMIT_KB
        assert append(client, SMALL)[0] == "OK"
        assert_refused_over_quota(client, CYRUS)
        removed = quota(admin, user["mail"], "none")
        assert removed["quota_kb"] is None and removed["quota_applied"] == "now", removed
        assert storage_limit(client) is None
        assert_takes_big(client)
    finally:
        client.logout()
    assert admin.ok("user", "show", user["mail"])["quota_kb"] is None
    again = quota(admin, user["mail"], "none")  # removing no quota is no error
    assert again["quota_kb"] is None


def test_cli_quota_on_dovecot_holds_from_the_next_login(
    admin: Admin,
    domain: str,
    proxy,  # type: ignore[no-untyped-def]
) -> None:
    user = add_user(admin, f"dq@{domain}", "dq pw", "--host", DOVECOT)
    changed = quota(admin, user["mail"], str(LIMIT_KB))
    assert changed["quota_kb"] == LIMIT_KB and changed["quota_applied"] == "at next login"
    assert admin.ok("user", "show", user["mail"])["quota_kb"] == LIMIT_KB
    client = login(proxy, user["mail"], "dq pw")
    try:
        assert storage_limit(client) == LIMIT_KB
        assert append(client, SMALL)[0] == "OK"
        assert_refused_over_quota(client, DOVECOT)
    finally:
        client.logout()
    quota(admin, user["mail"], "none")
    client = login(proxy, user["mail"], "dq pw")
    try:
        assert storage_limit(client) is None
        assert_takes_big(client)
    finally:
        client.logout()


def test_user_add_with_quota_on_both_kinds(
    admin: Admin,
    domain: str,
    proxy,  # type: ignore[no-untyped-def]
) -> None:
    for name, host in (("ca", CYRUS), ("da", DOVECOT)):
        user = add_user(admin, f"{name}@{domain}", f"{name} pw", "--host", host, "--quota", "100")
        assert user["quota_kb"] == LIMIT_KB and user["mailHost"] == host, user
        assert admin.ok("user", "show", user["mail"])["quota_kb"] == LIMIT_KB
        client = login(proxy, user["mail"], f"{name} pw")
        try:
            assert storage_limit(client) == LIMIT_KB, host
            assert append(client, SMALL)[0] == "OK"
            assert_refused_over_quota(client, host)
        finally:
            client.logout()


def test_bad_quotas_are_refused_and_change_nothing(
    admin: Admin, domain: str, tmp_path: Path
) -> None:
    address = f"bad@{domain}"
    for value, said in (("-5", "must be at least 1"), ("abc", "is not a whole number")):
        result = admin.run(
            "user", "add", address, "--password-file", "-", "--quota", value, stdin="pw\n"
        )
        assert result.code == 2 and said in result.stderr, (value, result)
    assert admin.run("user", "show", address).code == 1  # nothing was added

    user = add_user(admin, address, "pw")
    for value in ("-5", "abc", "0", ""):
        result = admin.run("user", "quota", address, value, "--json")
        assert result.code == 2 and "KIB|none" in result.stderr, (value, result)
    huge = admin.run("user", "quota", address, str(2**60), "--json")
    assert huge.code == 2 and "KiB" in huge.json["error"], huge
    assert admin.ok("user", "show", address)["quota_kb"] is None

    # With no [directory] quota_attribute, a quota has nowhere to go.
    unset = admin.with_config("no-quota", directory={"quota_attribute": ""})
    result = unset.run("user", "quota", address, "100", "--json")
    assert result.code == 2 and "quota_attribute" in result.json["error"], result
    result = unset.run(
        "user",
        "add",
        f"new@{domain}",
        "--password-file",
        "-",
        "--quota",
        "100",
        "--json",
        stdin="pw\n",
    )
    assert result.code == 2 and "quota_attribute" in result.json["error"], result
    assert admin.run("user", "show", f"new@{domain}").code == 1
    assert admin.ok("user", "show", user["mail"])["quota_kb"] is None  # nothing written


# -- the REST API -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def web(farm: Farm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    workdir = tmp_path_factory.mktemp("quota-web")
    tokens = workdir / "api-tokens"
    tokens.write_text(f"admin {API_TOKEN}\n")
    server = WebServer(workdir, provision_sections(farm, web={"api_tokens_file": tokens}), "web")
    yield server
    assert server.stop() == 0, server.log_text()[-2000:]


def test_api_quota_applies_on_cyrus_at_once(
    admin: Admin,
    domain: str,
    web: WebServer,
    proxy,  # type: ignore[no-untyped-def]
) -> None:
    """Writing only LDAP (as the API once did) left Cyrus without the limit."""
    user = add_user(admin, f"aq@{domain}", "aq pw", "--host", CYRUS)
    api = web.client(API_TOKEN)
    client = login(proxy, user["mail"], "aq pw")
    try:
        answer = api.post(f"/api/v1/users/{user['mail']}/quota", json={"quota": LIMIT_KB})
        assert answer.status_code == 200, answer.text
        assert answer.json()["quota_kb"] == LIMIT_KB
        assert answer.json()["quota_applied"] == "now"
        assert storage_limit(client) == LIMIT_KB
        assert_refused_over_quota(client, CYRUS)
        answer = api.post(f"/api/v1/users/{user['mail']}/quota", json={"quota": None})
        assert answer.status_code == 200 and answer.json()["quota_kb"] is None, answer.text
        assert storage_limit(client) is None
        assert_takes_big(client)
        refused = api.post(f"/api/v1/users/{user['mail']}/quota", json={"quota": 0})
        assert refused.status_code == 422, refused.text
    finally:
        client.logout()
        api.close()
