"""The console over HTTP: sign-in, cookies, CSRF, the role rules under edited URLs and
forged posts, escaping, the growing delay and the audit log. The browser flows are in
test_web_browser.py; these are the checks a browser would hide."""

from __future__ import annotations

import contextlib
import imaplib
import json
import secrets
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from ldap3 import Connection, Server
from markupsafe import escape

from bench.farm import Farm
from tests.integration import provision_helpers as helpers
from tests.integration.console_helpers import ConsoleFarm, Staff, console, start_console
from tests.integration.provision_helpers import Admin, add_user
from tests.integration.web_helpers import WebServer

admin = helpers.admin  # fixtures
console = console

HAL, ADA, DORA = ("hal", "hal-pw"), ("ada", "ada-pw"), ("dora", "dora-pw")


@pytest.fixture(scope="module")
def domain(admin: Admin) -> Iterator[str]:
    name = f"con-{secrets.token_hex(3)}.test"
    admin.ok("domain", "add", name)
    yield name
    admin.run("domain", "del", name, "--force")


def test_sign_in_sets_a_strict_httponly_cookie(console: ConsoleFarm) -> None:
    staff = Staff(console.web.url, *HAL)
    assert staff.answer.status_code == 303, staff.answer.text
    cookie = staff.answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Secure" not in cookie  # served over plain HTTP here
    page = staff.get("/console/")
    assert page.status_code == 200 and "hal (helpdesk)" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert page.headers["x-frame-options"] == "DENY"
    staff.post("/console/signout")
    assert staff.get("/console/").status_code == 303  # the session ended on the server


def test_wrong_password_and_unknown_staff(console: ConsoleFarm, farm: Farm) -> None:
    for login, password in (("hal", "nope"), ("nobody", "x"), ("hal)(uid=*", "x")):
        staff = Staff(console.web.url, login, password)
        assert staff.answer.status_code == 401
        assert "Wrong user name or password" in staff.answer.text
        assert password not in staff.answer.text.replace('value=""', "")
    # A mail user with its correct mail password is not staff.
    mail_user = next(u for u in farm.users if u.password)
    assert Staff(console.web.url, mail_user.address, mail_user.password).answer.status_code == 401


def test_pages_need_a_session(console: ConsoleFarm) -> None:
    anonymous = httpx.Client(base_url=console.web.url, follow_redirects=False)
    for path in ("/console/", "/console/domains", "/console/audit", "/console/users/a@b.test"):
        answer = anonymous.get(path)
        assert answer.status_code == 303 and "/console/signin" in answer.headers["location"]
    assert anonymous.post("/console/domains", data={"name": "x.test"}).status_code in (303, 403)
    assert anonymous.get("/").headers["location"] == "/console/"


def test_a_form_without_its_csrf_token_is_refused(console: ConsoleFarm, domain: str) -> None:
    staff = Staff(console.web.url, *HAL)
    for token in ("", "wrong", staff.csrf[:-1]):
        answer = staff.http.post(
            f"/console/domains/{domain}/users",
            data={"csrf": token, "address": "csrf-victim", "password": "pw"},
        )
        assert answer.status_code == 403 and "CSRF" in answer.text
    # The sign-in form too: without the token bound to its pre-session cookie.
    fresh = httpx.Client(base_url=console.web.url)
    forced = fresh.post("/console/signin", data={"login": "hal", "password": "hal-pw"})
    assert forced.status_code == 403
    users = staff.get(f"/console/domains/{domain}/users").text
    assert "csrf-victim" not in users


def test_domain_admin_cannot_reach_another_domain(console: ConsoleFarm, farm: Farm) -> None:
    dora = Staff(console.web.url, *DORA)
    assert dora.answer.status_code == 303
    listed = dora.get("/console/domains").text
    assert "example.co.uk" in listed and "example.com<" not in listed
    assert dora.get("/console/").headers["location"] == "/console/domains"  # no dashboard
    other = next(u for u in farm.users if u.address.endswith("@example.com"))
    own = next(u for u in farm.users if u.address.endswith("@example.co.uk"))
    for path in (
        "/console/domains/example.com/users",
        "/console/domains/example.com/dns",
        "/console/domains/example.com/delete",
        f"/console/users/{other.address}",
        f"/console/users/{other.uid}",
    ):
        answer = dora.get(path)
        assert answer.status_code == 404, (path, answer.status_code)
        assert "no such" in answer.text  # what a name that does not exist gets
    for action, fields in (
        ("password", {"password": "stolen"}),
        ("disable", {}),
        ("kick", {}),
        ("delete", {"confirm": other.address}),
    ):
        answer = dora.post(f"/console/users/{other.address}/{action}", **fields)
        assert answer.status_code == 404, (action, answer.text[:300])
    evil = {"name": "evil", "type": "A", "value": "1.2.3.4"}
    answer = dora.post("/console/domains/example.com/dns/add", **evil)
    assert answer.status_code == 404
    assert dora.get(f"/console/users/{own.address}").status_code == 200
    # Nothing changed for the other domain's user.
    assert console.imap(other.address, other.password).logout()[0] == "BYE"


def test_markup_is_escaped(console: ConsoleFarm, farm: Farm, admin: Admin) -> None:
    ada = Staff(console.web.url, *ADA)
    marked = "<script>alert(1)</script>"
    answer = ada.post("/console/domains", name=marked + ".test", mx="", ns="", a="")
    assert answer.status_code == 422
    assert marked not in answer.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in answer.text
    found = ada.http.get("/console/domains", params={"q": marked})
    assert marked not in found.text and "&lt;script&gt;" in found.text
    # A domain entry made by hand (an import, say) with markup in its name renders as text.
    dn = f"dc={marked},ou=domains,{farm.base_dn}"
    ldap = Connection(Server(farm.ldap_uri), farm.admin_dn, farm.admin_password, auto_bind=True)
    assert ldap.add(dn, ["dNSDomain", "domainRelatedObject"], {"associatedDomain": "x.invalid"})
    try:
        listed = ada.get("/console/domains").text
        assert marked not in listed and "&lt;script&gt;alert(1)&lt;/script&gt;" in listed
    finally:
        ldap.delete(dn)
        ldap.unbind()


def test_forms_keep_what_was_typed(console: ConsoleFarm, domain: str) -> None:
    hal = Staff(console.web.url, *HAL)
    answer = hal.post(
        f"/console/domains/{domain}/users",
        address="bad address!",
        password="typed-secret-1",
        quota="12",
    )
    assert answer.status_code == 422
    assert 'value="bad address!"' in answer.text and 'value="12"' in answer.text
    assert "typed-secret-1" not in answer.text  # never a password in a page
    bad_quota = hal.post(f"/console/domains/{domain}/users", address="q", password="p", quota="x")
    assert bad_quota.status_code == 422 and "whole number" in bad_quota.text


def test_audit_ties_each_change_to_its_staff_member(
    console: ConsoleFarm, domain: str, admin: Admin
) -> None:
    hal = Staff(console.web.url, *HAL)
    user = add_user(admin, f"aud-{secrets.token_hex(2)}@{domain}", "audit-old-pw")
    secret = "audit-new-pw-" + secrets.token_hex(4)
    changed = hal.post(f"/console/users/{user['mail']}/password", password=secret)
    assert changed.status_code == 303, changed.text[:500]
    assert "Password changed" in hal.get(f"/console/users/{user['mail']}").text
    api = httpx.Client(base_url=console.web.url, headers={"Authorization": f"Bearer {_token()}"})
    assert api.post(f"/api/v1/users/{user['mail']}/disable").status_code == 200
    lines = [json.loads(line) for line in console.audit_log.read_text().splitlines()]
    mine = [e for e in lines if e["target"] == user["mail"]]
    assert [(e["who"], e["via"], e["action"], e["outcome"]) for e in mine] == [
        ("staff:hal", "console", "user.password", "ok"),
        ("token:line 1", "api", "user.disable", "ok"),
    ]
    assert all(e["from"] == "127.0.0.1" and e["domain"] == domain for e in mine)
    page = hal.http.get("/console/audit", params={"q": user["mail"]}).text
    assert "user.password" in page and "staff:hal" in page
    for text in (console.audit_log.read_text(), page, console.web.log_text()):
        assert secret not in text and "audit-old-pw" not in text and "hal-pw" not in text


def test_failed_sign_ins_wait_longer_each_time(farm: Farm, tmp_path: Path) -> None:
    # Its own server: the delay it builds up for 127.0.0.1 must not slow the other tests.
    own = start_console(farm, tmp_path, "delay")
    try:
        waits = []
        for _ in range(4):
            started = time.monotonic()
            assert Staff(own.web.url, "hal", "wrong").answer.status_code == 401
            waits.append(time.monotonic() - started)
        # 0, then 0.5, 1 and 2 s of delay before each answer (web.staff.FailedLogins).
        assert waits[1] >= 0.5 and waits[2] >= 1.0 and waits[3] >= 2.0, waits
        assert Staff(own.web.url, *HAL).answer.status_code == 303  # the right password
    finally:
        own.web.stop()
        own.proxy.stop()


def test_quota_set_and_removed(console: ConsoleFarm, domain: str, admin: Admin) -> None:
    hal = Staff(console.web.url, *HAL)
    user = add_user(admin, f"quota-{secrets.token_hex(2)}@{domain}", "quota-pw")
    page = f"/console/users/{user['mail']}"
    assert hal.post(f"{page}/quota", quota="51200").status_code == 303
    assert '<td id="user-quota">51200 KiB</td>' in hal.get(page).text
    api = httpx.Client(base_url=console.web.url, headers={"Authorization": f"Bearer {_token()}"})
    assert api.get(f"/api/v1/users/{user['mail']}").json()["quota_kb"] == 51200
    refused = hal.post(f"{page}/quota", quota="lots")
    assert refused.status_code == 422 and 'value="lots"' in refused.text
    assert hal.post(f"{page}/quota", quota="").status_code == 303
    assert api.get(f"/api/v1/users/{user['mail']}").json()["quota_kb"] is None


def test_cookies_are_secure_over_tls(farm: Farm, tmp_path: Path) -> None:
    tokens = tmp_path / "none"
    tokens.write_text("")
    sections = helpers.provision_sections(farm, web={"tls": True, "api_tokens_file": tokens})
    sections["tls"] = {"cert": str(farm.pki.cert), "key": str(farm.pki.key)}
    server = WebServer(tmp_path, sections, "tls")
    try:
        staff = Staff(server.url, *HAL, verify=ssl.create_default_context(cafile=farm.pki.ca_cert))
        assert staff.answer.status_code == 303, staff.answer.text
        assert "Secure" in staff.answer.headers["set-cookie"]
        assert "HttpOnly" in staff.answer.headers["set-cookie"]
    finally:
        server.stop()


def test_hostile_requests_get_clear_errors(console: ConsoleFarm) -> None:
    hal = Staff(console.web.url, *HAL)
    form = {"content-type": "application/x-www-form-urlencoded"}
    many = "&".join(f"f{i}=x" for i in range(500)) + f"&csrf={hal.csrf}"
    answer = hal.http.post("/console/domains", content=many, headers=form)
    assert answer.status_code == 400 and "could not be read" in answer.text
    answer = hal.http.post("/console/domains", content=b"name=\xff\xfe", headers=form)
    assert answer.status_code == 400
    answer = hal.http.post("/console/domains", content=b"x=" + b"a" * 70_000, headers=form)
    assert answer.status_code == 413
    answer = hal.http.post("/console/domains", json={"csrf": hal.csrf, "name": "j.test"})
    assert answer.status_code == 403  # only a form, with its token, is a form post
    odd = ("/console/users/%00", "/console/users/a%0d%0aSet-Cookie:x", "/console/jobs/" + "x" * 300)
    for path in odd:
        answer = hal.get(path)
        assert answer.status_code in (404, 422), (path, answer.status_code)
        assert "set-cookie" not in answer.headers
    missing = hal.get("/console/no-such-page")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    assert hal.get("/api/v1/nothing").headers["content-type"].startswith("application/problem")
    assert hal.get("/console/").status_code == 200  # the server is still fine


def _token() -> str:
    from tests.integration.console_helpers import API_TOKEN

    return API_TOKEN


def test_txt_with_spaces_and_quotes_round_trips_through_the_form(
    console: ConsoleFarm, domain: str
) -> None:
    ada = Staff(console.web.url, *ADA)
    page = ada.get(f"/console/domains/{domain}/dns").text
    for rtype in ("AAAA", "TXT", "SRV", "CAA", "PTR"):
        assert f"<option>{rtype}</option>" in page
    typed = 'v=spf1 mx "quoted" -all'
    stored = '"v=spf1 mx \\"quoted\\" -all"'
    added = ada.post(f"/console/domains/{domain}/dns/add", name="@", type="TXT", value=typed)
    assert added.status_code in (200, 303), added.text[:300]
    page = ada.get(f"/console/domains/{domain}/dns").text
    assert escape(stored) in page  # shown, and in the edit form's old/value fields
    # The edit form sends the stored value back as "old": it must name the same record.
    edited = ada.post(
        f"/console/domains/{domain}/dns/edit", name="@", type="TXT", old=stored, value="v=x"
    )
    assert edited.status_code in (200, 303), edited.text[:300]
    page = ada.get(f"/console/domains/{domain}/dns").text
    assert escape('"v=x"') in page and "quoted" not in page
    deleted = ada.post(f"/console/domains/{domain}/dns/delete", name="@", type="TXT", value='"v=x"')
    assert deleted.status_code in (200, 303), deleted.text[:300]
    assert "v=x" not in ada.get(f"/console/domains/{domain}/dns").text


def test_domain_admin_sees_and_kicks_only_its_own_users_sessions(
    console: ConsoleFarm, farm: Farm
) -> None:
    """Sessions name a domain by what the directory said at login, not by the login: erin
    logs in by uid (``erin_example_co_uk``), and is still example.co.uk's, dora's."""
    from tests.integration.console_helpers import API_TOKEN, DOMAIN_API_TOKEN

    own, other = farm.user("erin@example.co.uk"), farm.user("frank@example.com")
    mine = console.imap(own.uid, own.password)
    theirs = console.imap(other.address, other.password)
    bearer = {"Authorization": f"Bearer {DOMAIN_API_TOKEN}"}
    customer = httpx.Client(base_url=console.web.url, headers=bearer, timeout=60)
    staff_api = httpx.Client(
        base_url=console.web.url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=60
    )
    try:
        # Staff see both, each with the domain and address the directory gave.
        listed = staff_api.get("/api/v1/sessions").json()["sessions"]
        facts = {(s["uid"], s["mail"], s["domain"]) for s in listed}
        assert (own.uid, own.address, "example.co.uk") in facts
        assert (other.uid, other.address, "example.com") in facts

        # The domain admin: only its own domain's, in the API and on the page.
        for query in ({}, {"user": other.uid}, {"user": other.address}, {"user": own.uid}):
            answer = customer.get("/api/v1/sessions", params=query)
            assert answer.status_code == 200, answer.text
            seen = answer.json()["sessions"]
            assert {s["domain"] for s in seen} <= {"example.co.uk"}, seen
            assert other.uid not in answer.text and other.address not in answer.text
        seen = customer.get("/api/v1/sessions").json()["sessions"]
        assert own.uid in {s["uid"] for s in seen}
        # ...and nothing of the farm's insides: no backend host, no instance URL.
        assert all("backend" not in s and "instance" not in s for s in seen), seen
        dora = Staff(console.web.url, *DORA)
        page = dora.get("/console/sessions")
        assert page.status_code == 200, page.text[:300]
        assert 'href="/console/sessions"' in page.text  # the menu offers the page
        assert own.address in page.text and own.uid in page.text
        assert other.address not in page.text and other.uid not in page.text
        backend_host = farm.backend_of(own).host
        assert backend_host not in page.text and "<th>Backend</th>" not in page.text
        asked = dora.http.get("/console/sessions", params={"user": other.uid}).text
        assert 'class="session"' not in asked and f"logged in as {other.uid}" in asked
        marked = "<script>alert(1)</script>"
        shown = dora.http.get("/console/sessions", params={"user": marked}).text
        assert marked not in shown and str(escape(marked)) in shown

        # Kicking another domain's user is refused as kicking a missing one is, and the
        # session lives on.
        ghost = f"ghost-{secrets.token_hex(3)}@example.co.uk"
        missing = customer.post("/api/v1/sessions/kick", json={"user": ghost})
        assert missing.status_code == 404 and missing.json()["detail"] == f"{ghost}: no such user"
        for name in (other.address, other.uid):
            refused = customer.post("/api/v1/sessions/kick", json={"user": name})
            assert refused.status_code == 404, refused.text
            assert refused.json()["detail"] == f"{name}: no such user"
            answer = dora.post("/console/sessions/kick", user=name)
            assert answer.status_code == 404, answer.text[:300]
            assert f"{escape(name)}: no such user" in answer.text
            assert other.address not in answer.text.replace(f"{name}: no such user", "")
        assert dora.post("/console/sessions/kick", user=ghost).status_code == 404
        assert theirs.noop()[0] == "OK"

        # Its own user: kicked, and that session ends.
        kicked = dora.post("/console/sessions/kick", user=own.address)
        assert kicked.status_code == 303, kicked.text[:300]
        assert f"Sessions of {own.address} kicked." in dora.get(kicked.headers["location"]).text
        with pytest.raises((imaplib.IMAP4.abort, imaplib.IMAP4.error, OSError)):
            mine.noop()
            mine.noop()
        assert theirs.noop()[0] == "OK"
        left = staff_api.get("/api/v1/sessions", params={"user": own.uid}).json()["sessions"]
        assert left == []
    finally:
        theirs.logout()
        with contextlib.suppress(imaplib.IMAP4.abort, imaplib.IMAP4.error, OSError):
            mine.logout()
