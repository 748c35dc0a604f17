"""``mailfarm web``: the REST API as a billing system uses it, against the real farm.

The server runs as operators run it (``python -m proxy.cli web -c CONFIG``, a subprocess)
and is spoken to with httpx; domains are made with the CLI, everything else via the API.
"""

from __future__ import annotations

import imaplib
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.farm import Farm
from bench.proxyproc import free_port
from tests.integration import provision_helpers as helpers
from tests.integration import web_helpers
from tests.integration.provision_helpers import (
    HOSTS,
    Admin,
    backend_login,
    provision_sections,
)

admin = helpers.admin  # fixture

TOKENS = {role: secrets.token_urlsafe(24) for role in ("admin", "helpdesk", "customer")}
PROBLEM = "application/problem+json"
JSON = "application/json"


class WebServer(web_helpers.WebServer):
    def client(self, role: str | None = "admin") -> httpx.Client:  # type: ignore[override]
        return super().client(TOKENS[role] if role else None)


@pytest.fixture(scope="module")
def domains(admin: Admin) -> Iterator[tuple[str, str]]:
    """Domain A (the customer's) and domain B (someone else's)."""
    names = (f"web-a-{secrets.token_hex(3)}.test", f"web-b-{secrets.token_hex(3)}.test")
    for name in names:
        admin.ok("domain", "add", name)
    yield names
    for name in names:
        admin.run("domain", "del", name, "--force")


@pytest.fixture(scope="module")
def web(
    farm: Farm, domains: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebServer]:
    workdir = tmp_path_factory.mktemp("web")
    tokens = workdir / "api-tokens"
    tokens.write_text(
        "# role token [domains]\n"
        f"admin {TOKENS['admin']}\n"
        f"helpdesk {TOKENS['helpdesk']}\n"
        f"domain-admin {TOKENS['customer']} {domains[0]}\n"
    )
    server = WebServer(workdir, provision_sections(farm, web={"api_tokens_file": tokens}), "web")
    yield server
    assert server.stop() == 0, server.log_text()[-2000:]
    log = server.log_text()
    for secret in (*TOKENS.values(), "first pw 1", "second pw 2"):
        assert secret not in log


def problem(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith(PROBLEM), answer.headers
    body = answer.json()
    assert body["status"] == status and body["type"] and body["title"] and body["detail"]
    return body


def wait_job(client: httpx.Client, job: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        answer = client.get(f"/api/v1/jobs/{job}")
        assert answer.status_code == 200, answer.text
        state = answer.json()
        if state["state"] != "running":
            return state
        assert time.monotonic() < deadline, state
        time.sleep(0.2)


def test_user_lifecycle(
    farm: Farm,
    web: WebServer,
    domains: tuple[str, str],
    proxy,  # type: ignore[no-untyped-def]
) -> None:
    a, _ = domains
    address = f"carol@{a}"
    uid = address.replace("@", "_").replace(".", "_")
    api = web.client("helpdesk")
    body = {"address": address, "password": "first pw 1", "host": HOSTS[0]}
    created = api.post("/api/v1/users", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["uid"] == uid and created.json()["mailHost"] == HOSTS[0]
    assert "first pw 1" not in created.text
    shown = api.get(f"/api/v1/users/{address}").json()
    assert shown["mail"] == address and shown["login_disabled"] is False

    client = imaplib.IMAP4("127.0.0.1", proxy.ports.imap, timeout=15)
    client.login(address, "first pw 1")
    client.logout()

    changed = api.post(f"/api/v1/users/{address}/password", json={"password": "second pw 2"})
    assert changed.status_code == 200, changed.text
    with pytest.raises(imaplib.IMAP4.error):
        backend_login(farm, HOSTS[0], uid, "first pw 1")
    backend_login(farm, HOSTS[0], uid, "second pw 2").logout()

    assert api.post(f"/api/v1/users/{address}/disable").json()["login_disabled"] is True
    assert api.get(f"/api/v1/users/{address}").json()["login_disabled"] is True
    assert api.post(f"/api/v1/users/{address}/enable").json()["login_disabled"] is False

    started = api.post(f"/api/v1/users/{address}/move", json={"to": HOSTS[1]})
    assert started.status_code == 202, started.text
    state = wait_job(api, started.json()["job"])
    assert state["state"] == "done", state
    assert state["progress"]["phase"] == "done" and state["result"]["to"] == HOSTS[1]
    assert api.get(f"/api/v1/users/{address}").json()["mailHost"] == HOSTS[1]
    backend_login(farm, HOSTS[1], uid, "second pw 2").logout()
    assert state["result"]["sieve_copied"] is True  # the scripts (none here) went along
    back = api.post(f"/api/v1/users/{address}/move", json={"to": HOSTS[0], "no_sieve": True})
    assert back.status_code == 202, back.text
    state = wait_job(api, back.json()["job"])
    assert state["state"] == "done" and state["result"]["sieve_copied"] is False, state
    assert any("--no-sieve" in w for w in state["result"]["warnings"]), state

    page = api.get(f"/api/v1/domains/{a}/users", params={"q": "caro"}).json()
    assert [u["mail"] for u in page["users"]] == [address] and page["total"] == 1
    assert api.get(f"/api/v1/domains/{a}/users", params={"q": "zzz"}).json()["total"] == 0

    kicked = api.post("/api/v1/sessions/kick", json={"user": address})
    assert kicked.status_code == 200 and kicked.json()["warnings"], kicked.text  # no admin_urls

    # help desk may not delete users; an admin may
    problem(api.delete(f"/api/v1/users/{address}"), 403)
    deleted = web.client("admin").delete(f"/api/v1/users/{address}")
    assert deleted.status_code == 200, deleted.text
    problem(api.get(f"/api/v1/users/{address}"), 404)


def test_users_pagination(web: WebServer, domains: tuple[str, str]) -> None:
    a, _ = domains
    api = web.client("admin")
    for i in range(3):
        body = {"address": f"page{i}@{a}", "password": "pw", "host": HOSTS[0]}
        assert api.post("/api/v1/users", json=body).status_code == 201
    try:
        first = api.get(f"/api/v1/domains/{a}/users", params={"q": "page"}).json()
        assert [u["mail"] for u in first["users"]] == [f"page{i}@{a}" for i in range(3)]
        assert first["page_size"] == 50 and first["total"] == 3
        empty = api.get(f"/api/v1/domains/{a}/users", params={"q": "page", "page": 2}).json()
        assert empty["users"] == [] and empty["total"] == 3
    finally:
        for i in range(3):
            api.delete(f"/api/v1/users/page{i}@{a}")


def test_dns_mx(web: WebServer, domains: tuple[str, str]) -> None:
    a, _ = domains
    api = web.client("admin")
    before = api.get(f"/api/v1/domains/{a}/dns").json()
    put = api.put(f"/api/v1/domains/{a}/dns/@/MX", json={"value": "20 mx9.example.net."})
    assert put.status_code == 200, put.text
    assert put.json()["changed"] is True and put.json()["serial"] > before["serial"]
    after = api.get(f"/api/v1/domains/{a}/dns").json()
    assert "20 mx9.example.net." in after["records"]["@"]["MX"]
    assert "MX\t20 mx9.example.net." in after["zone"] or "20 mx9.example.net." in after["zone"]
    gone = api.delete(f"/api/v1/domains/{a}/dns/@/MX", params={"value": "20 mx9.example.net."})
    assert gone.status_code == 200, gone.text
    final = api.get(f"/api/v1/domains/{a}/dns").json()
    assert "20 mx9.example.net." not in final["records"]["@"]["MX"]
    problem(api.delete(f"/api/v1/domains/{a}/dns/@/MX", params={"value": "5 no.example."}), 404)
    bad = problem(api.put(f"/api/v1/domains/{a}/dns/@/MX", json={"value": "ten mx"}), 422)
    assert "mx" in bad["detail"].lower()


def test_roles(web: WebServer, domains: tuple[str, str]) -> None:
    a, b = domains
    helpdesk, customer = web.client("helpdesk"), web.client("customer")
    assert helpdesk.get(f"/api/v1/domains/{a}/dns").status_code == 200
    problem(helpdesk.put(f"/api/v1/domains/{a}/dns/www/A", json={"value": "192.0.2.7"}), 403)
    # the customer's own domain
    assert customer.get(f"/api/v1/domains/{a}/dns").status_code == 200
    assert customer.get(f"/api/v1/domains/{a}/users").status_code == 200
    put = customer.put(f"/api/v1/domains/{a}/dns/www/A", json={"value": "192.0.2.7"})
    assert put.status_code == 200, put.text
    assert customer.delete(f"/api/v1/domains/{a}/dns/www/A").status_code == 200
    # another domain, existing or not, looks the same: not found
    missing = f"nope-{secrets.token_hex(3)}.test"
    for domain in (b, missing):
        other = problem(customer.get(f"/api/v1/domains/{domain}/users"), 404)
        assert other["detail"] == f"domain {domain}: no such domain"
        problem(customer.get(f"/api/v1/domains/{domain}/dns"), 404)
        problem(customer.put(f"/api/v1/domains/{domain}/dns/@/MX", json={"value": "1 x."}), 404)
        problem(customer.get(f"/api/v1/users/someone@{domain}"), 404)
        body = {"address": f"x@{domain}", "password": "pw"}
        problem(customer.post("/api/v1/users", json=body), 404)
    admin_view = web.client("admin").get(f"/api/v1/domains/{missing}/users")
    assert problem(admin_view, 404)["detail"] == f"domain {missing}: no such domain"
    # a customer cannot choose backends
    body = {"address": f"y@{a}", "password": "pw", "host": HOSTS[1]}
    problem(customer.post("/api/v1/users", json=body), 403)
    # no token, a wrong one
    for client in (web.client(None), httpx.Client(base_url=web.url)):
        answer = client.get(f"/api/v1/domains/{a}/users")
        problem(answer, 401)
        assert answer.headers["www-authenticate"].startswith("Bearer")
    wrong = httpx.get(
        f"{web.url}/api/v1/users/x@{a}", headers={"Authorization": "Bearer wrong-token-123456"}
    )
    problem(wrong, 401)
    problem(web.client(None).post("/api/v1/users", content=b"{not json"), 401)


def test_problems_and_hostile_input(web: WebServer, domains: tuple[str, str]) -> None:
    a, _ = domains
    api = web.client("admin")
    problem(api.get(f"/api/v1/users/nobody@{a}"), 404)
    problem(api.get("/api/v1/no/such/route"), 404)
    problem(api.patch(f"/api/v1/users/x@{a}"), 405)
    body = {"address": f"dup@{a}", "password": "pw", "host": HOSTS[0]}
    assert api.post("/api/v1/users", json=body).status_code == 201
    try:
        problem(api.post("/api/v1/users", json=body), 409)
    finally:
        api.delete(f"/api/v1/users/dup@{a}")
    hostile = [
        api.post(
            "/api/v1/users", content=b"{not json", headers={"content-type": "application/json"}
        ),
        api.post("/api/v1/users", json={"address": f"e@{a}", "password": "pw", "admin": True}),
        api.post("/api/v1/users", json={"address": f"<script>@{a}", "password": "pw"}),
        api.post("/api/v1/users", json={"address": f"e@{a}", "password": ""}),
        api.post("/api/v1/users", json=["a", "list"]),
        api.get("/api/v1/users/..%2F..%2Fetc%2Fpasswd"),
        api.get("/api/v1/users/%3Cb%3Ex%3C%2Fb%3E@a.test"),
        api.get(f"/api/v1/domains/{a}/users", params={"page": "0"}),
        api.get("/api/v1/domains/..%2F..%2F/dns"),
        api.put(f"/api/v1/domains/{a}/dns/@/HINFO", json={"value": "x"}),
    ]
    for answer in hostile:
        assert answer.status_code in (404, 422), (answer.request.url, answer.text)
        problem(answer, answer.status_code)
    unknown = problem(hostile[1], 422)
    assert unknown["field"] == "admin"
    empty = problem(hostile[3], 422)
    assert empty["field"] == "password" and "first pw" not in str(empty)
    big = api.post("/api/v1/users", content=b"x" * (10 * 1024 * 1024))
    problem(big, 413)

    def chunks() -> Iterator[bytes]:
        for _ in range(200):
            yield b"x" * 65536

    problem(api.post("/api/v1/users", content=chunks()), 413)
    listed = api.get("/api/v1/sessions", params={"user": "x"})  # no admin_urls configured
    assert listed.status_code == 200 and listed.json() == {"sessions": [], "unreachable": []}
    mine = web.client("customer").get("/api/v1/sessions")  # its domains' sessions only
    assert mine.status_code == 200 and mine.json() == {"sessions": [], "unreachable": []}
    problem(api.get("/api/v1/jobs/nosuchjob"), 404)


def test_domains(web: WebServer, domains: tuple[str, str]) -> None:
    a, b = domains
    api, helpdesk, customer = web.client("admin"), web.client("helpdesk"), web.client("customer")
    new = f"web-c-{secrets.token_hex(3)}.co.uk"
    made = helpdesk.post("/api/v1/domains", json={"name": new.upper(), "mx": ["mx9.test:5"]})
    assert made.status_code == 201 and made.json()["domain"] == new, made.text
    problem(helpdesk.post("/api/v1/domains", json={"name": new}), 409)  # exists already
    problem(helpdesk.post("/api/v1/domains", json={"name": "not a domain"}), 422)
    problem(customer.post("/api/v1/domains", json={"name": "x-" + new}), 403)
    listed = {d["domain"] for d in api.get("/api/v1/domains").json()["domains"]}
    assert {a, b, new} <= listed
    assert [d["domain"] for d in customer.get("/api/v1/domains").json()["domains"]] == [a]
    assert customer.get(f"/api/v1/domains/{a}").json() == api.get(f"/api/v1/domains/{a}").json()
    problem(customer.get(f"/api/v1/domains/{b}"), 404)  # as if it did not exist
    problem(customer.delete(f"/api/v1/domains/{b}"), 404)
    problem(customer.delete(f"/api/v1/domains/{a}"), 403)
    problem(helpdesk.delete(f"/api/v1/domains/{new}"), 403)
    zone = api.get(f"/api/v1/domains/{new}/dns").json()
    assert "mx9.test" in str(zone)
    gone = api.delete(f"/api/v1/domains/{new}")
    assert gone.status_code == 200 and gone.json()["domain"] == new
    problem(api.get(f"/api/v1/domains/{new}"), 404)


def test_openapi_lists_every_route(web: WebServer) -> None:
    for path in ("/openapi.json", "/api/v1/openapi.json"):
        doc = httpx.get(web.url + path).json()
        routes = {(p, m.upper()) for p, methods in doc["paths"].items() for m in methods}
        assert routes == {
            ("/api/v1/domains", "GET"),
            ("/api/v1/domains", "POST"),
            ("/api/v1/domains/{domain}", "GET"),
            ("/api/v1/domains/{domain}", "DELETE"),
            ("/api/v1/domains/{domain}/users", "GET"),
            ("/api/v1/users", "POST"),
            ("/api/v1/users/{address}", "GET"),
            ("/api/v1/users/{address}", "DELETE"),
            ("/api/v1/users/{address}/password", "POST"),
            ("/api/v1/users/{address}/disable", "POST"),
            ("/api/v1/users/{address}/enable", "POST"),
            ("/api/v1/users/{address}/quota", "POST"),
            ("/api/v1/users/{address}/move", "POST"),
            ("/api/v1/jobs/{job_id}", "GET"),
            ("/api/v1/domains/{domain}/dns", "GET"),
            ("/api/v1/domains/{domain}/dns/{name}/{rtype}", "PUT"),
            ("/api/v1/domains/{domain}/dns/{name}/{rtype}", "DELETE"),
            ("/api/v1/sessions", "GET"),
            ("/api/v1/sessions/kick", "POST"),
            ("/api/v1/audit", "GET"),
        }


def test_ldap_down_is_503(farm: Farm, tmp_path: Path) -> None:
    tokens = tmp_path / "api-tokens"
    tokens.write_text(f"admin {TOKENS['admin']}\n")
    sections = provision_sections(
        farm,
        directory={"uri": [f"ldap://127.0.0.1:{free_port()}"], "timeout": 1},
        web={"api_tokens_file": tokens},
    )
    server = WebServer(tmp_path, sections, "down")
    try:
        answer = server.client("admin").get("/api/v1/users/x@down.test")
        assert "unavailable" in problem(answer, 503)["detail"]
    finally:
        assert server.stop() == 0
