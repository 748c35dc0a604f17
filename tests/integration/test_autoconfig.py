"""Mail clients configuring themselves from ``mailfarm web``: Thunderbird autoconfig and
Outlook Autodiscover, fetched with the real ``curl`` from the server as operators run it,
against the farm's slapd (which hosts example.com and example.co.uk, not example.org)."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.farm import Farm
from bench.proxyproc import free_port
from tests.integration.provision_helpers import provision_sections
from tests.integration.web_helpers import WebServer

DOOR = "mail.mailfarm.test"
IMAPS = 10993  # not the default: the answer must come from the configuration
AUTOCONFIG = "/mail/config-v1.1.xml"
WELL_KNOWN = "/.well-known/autoconfig/mail/config-v1.1.xml"
AUTODISCOVER = "/autodiscover/autodiscover.xml"
AUTODISCOVER_CAPITALISED = "/Autodiscover/Autodiscover.xml"
REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
OUTLOOK_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
OL = f"{{{OUTLOOK_NS}}}"
PRIVATE = ("alice", "ghost-7f3a", "carol")  # local parts sent: never in the server's log

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes

    def xml(self) -> ET.Element:
        assert self.status == 200, self.body[:500]
        return ET.fromstring(self.body)


CURL = ("curl", "-sS", "--max-time", "20", "-w", "%{http_code} %{content_type}")


def run_curl(server: WebServer, *args: str) -> Answer:
    out = server.config.parent / "curl.out"
    done = subprocess.run(
        [*CURL, "-o", str(out), *args], capture_output=True, text=True, check=True
    )
    status, _, content_type = done.stdout.partition(" ")
    return Answer(int(status), content_type, out.read_bytes())


def curl(server: WebServer, path: str, *args: str, host: str | None = None) -> Answer:
    """``curl`` to ``path`` on 127.0.0.1, with ``host`` as the Host header if given."""
    headers = ("-H", f"Host: {host}") if host else ()
    return run_curl(server, *headers, *args, f"{server.url}{path}")


def resolved(server: WebServer, name: str, path: str) -> Answer:
    """``curl`` to ``http://NAME:PORT/...`` with ``--resolve``, as a client finding the name
    in DNS would: the Host header then carries the port."""
    target = f"{name}:{server.port}"
    return run_curl(server, "--resolve", f"{target}:127.0.0.1", f"http://{target}{path}")


def post(server: WebServer, body: bytes, path: str = AUTODISCOVER) -> Answer:
    request = server.config.parent / "autodiscover-request.xml"
    request.write_bytes(body)
    return curl(server, path, "--data-binary", f"@{request}", "-H", "Content-Type: text/xml")


def outlook_request(address: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\n<Autodiscover xmlns="{REQUEST_NS}">'
        f"<Request><EMailAddress>{address}</EMailAddress>"
        f"<AcceptableResponseSchema>{OUTLOOK_NS}</AcceptableResponseSchema></Request>"
        "</Autodiscover>"
    ).encode()


def servers_of(root: ET.Element) -> list[tuple[str, str, str, str]]:
    """(element type, host, port, socketType) of every server, in document order."""
    provider = root.find("emailProvider")
    assert provider is not None
    return [
        (
            f"{server.tag}:{server.get('type')}",
            server.findtext("hostname") or "",
            server.findtext("port") or "",
            server.findtext("socketType") or "",
        )
        for server in provider
        if server.tag in ("incomingServer", "outgoingServer")
    ]


EXPECTED = [
    ("incomingServer:imap", DOOR, str(IMAPS), "SSL"),
    ("incomingServer:imap", DOOR, "143", "STARTTLS"),
    ("incomingServer:pop3", DOOR, "995", "SSL"),
    ("outgoingServer:smtp", DOOR, "465", "SSL"),
    ("outgoingServer:smtp", DOOR, "587", "STARTTLS"),
]


def start(farm: Farm, workdir: Path, name: str, **overrides: dict[str, object]) -> WebServer:
    return WebServer(workdir, provision_sections(farm, **overrides), name)


@pytest.fixture(scope="module")
def web(farm: Farm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    door = {"front_door": DOOR, "front_door_imaps": IMAPS, "front_door_pop3": 0}
    server = start(farm, tmp_path_factory.mktemp("autoconfig"), "autoconfig", provision=door)
    yield server
    assert server.stop() == 0, server.log_text()[-2000:]
    log = server.log_text()
    assert "autoconfig for example.co.uk: 200" in log, log[-2000:]
    for local in PRIVATE:
        assert f"{local}@" not in log and f"{local}%40" not in log, log[-2000:]


def test_autoconfig_on_the_autoconfig_host(web: WebServer) -> None:
    answer = curl(web, AUTOCONFIG, host="autoconfig.example.co.uk")
    assert answer.content_type.startswith(("application/xml", "text/xml"))
    root = answer.xml()
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    assert root.find("emailProvider").get("id") == "example.co.uk"  # type: ignore[union-attr]
    assert root.findtext("emailProvider/domain") == "example.co.uk"
    assert servers_of(root) == EXPECTED
    assert {u.text for u in root.iter("username")} == {"%EMAILADDRESS%"}


def test_autoconfig_as_thunderbird_asks(web: WebServer) -> None:
    """Thunderbird: autoconfig.<domain> with ?emailaddress=, then the domain's well-known
    path; both reached by name, so the Host header carries the port."""
    path = f"{AUTOCONFIG}?emailaddress=alice%40example.co.uk"
    root = resolved(web, "autoconfig.example.co.uk", path).xml()
    assert root.findtext("emailProvider/domain") == "example.co.uk"
    assert servers_of(root) == EXPECTED
    root = resolved(web, "example.com", WELL_KNOWN).xml()
    assert root.findtext("emailProvider/domain") == "example.com"
    assert servers_of(root) == EXPECTED
    upper = curl(web, f"{WELL_KNOWN}?emailaddress=Carol%40Example.COM", host="elsewhere.test")
    assert upper.xml().findtext("emailProvider/domain") == "example.com"  # the address wins


@pytest.mark.parametrize(
    ("path", "host"),
    [
        (AUTOCONFIG, "autoconfig.example.org"),  # not hosted
        (AUTOCONFIG, "example.co.uk"),  # not an autoconfig host name
        (f"{AUTOCONFIG}?emailaddress=alice%40example.org", "autoconfig.example.co.uk"),
        (WELL_KNOWN, "example.org"),
        (WELL_KNOWN, "autoconfig.example.co.uk"),  # the domain's own name, not autoconfig's
        (WELL_KNOWN, None),  # curl's Host: 127.0.0.1:PORT names no domain
    ],
)
def test_autoconfig_unknown_is_404(web: WebServer, path: str, host: str | None) -> None:
    answer = curl(web, path, host=host)
    assert answer.status == 404, answer.body
    assert b'"detail":"not found"' in answer.body


def test_autoconfig_bad_address_is_400(web: WebServer) -> None:
    answer = curl(web, f"{AUTOCONFIG}?emailaddress=%3Cx%3E", host="autoconfig.example.co.uk")
    assert answer.status == 400 and b"<x>" not in answer.body


def protocols(root: ET.Element) -> list[tuple[str, str, str, str, str]]:
    account = root.find(f"{OL}Response/{OL}Account")
    assert account is not None and account.findtext(f"{OL}Action") == "settings"
    assert account.findtext(f"{OL}AccountType") == "email"
    return [
        tuple(p.findtext(f"{OL}{tag}") or "" for tag in ("Type", "Server", "Port", "Encryption",
                                                         "LoginName"))  # type: ignore[misc]
        for p in account.findall(f"{OL}Protocol")
    ]  # fmt: skip


def test_autodiscover_for_a_hosted_domain(web: WebServer) -> None:
    answer = post(web, outlook_request("Alice@Example.co.uk"))
    assert answer.content_type.startswith(("text/xml", "application/xml"))
    login = "alice@example.co.uk"
    assert protocols(answer.xml()) == [
        ("IMAP", DOOR, str(IMAPS), "SSL", login),
        ("IMAP", DOOR, "143", "TLS", login),
        ("POP3", DOOR, "995", "SSL", login),
        ("SMTP", DOOR, "465", "SSL", login),
        ("SMTP", DOOR, "587", "TLS", login),
    ]
    smtp = [p for p in answer.xml().iter(f"{OL}Protocol") if p.findtext(f"{OL}Type") == "SMTP"]
    assert all(p.findtext(f"{OL}AuthRequired") == "on" for p in smtp)
    assert all(p.findtext(f"{OL}SPA") == "off" for p in answer.xml().iter(f"{OL}Protocol"))
    # Whether the user exists changes nothing but the login name echoed back.
    ghost = protocols(post(web, outlook_request("ghost-7f3a@example.co.uk")).xml())
    assert [p[:4] for p in ghost] == [p[:4] for p in protocols(answer.xml())]
    capitalised = post(web, outlook_request("alice@example.co.uk"), AUTODISCOVER_CAPITALISED)
    assert protocols(capitalised.xml()) == protocols(answer.xml())


def test_autodiscover_refusals(web: WebServer) -> None:
    unknown = post(web, outlook_request("alice@example.org"))
    assert unknown.status == 404 and b'"detail":"not found"' in unknown.body
    assert post(web, outlook_request("alice")).status == 400
    assert post(web, b"<Autodiscover").status == 400
    entities = ['<!ENTITY lol0 "lol">']
    entities += [f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">' for i in range(1, 9)]
    laughs = f"<!DOCTYPE lolz [{''.join(entities)}]>"
    hostile = outlook_request("&lol8;@example.co.uk").replace(b"?>", b"?>" + laughs.encode(), 1)
    assert post(web, hostile).status == 400
    external = outlook_request("carol@example.com").replace(
        b"?>\n", b'?>\n<!doctype x [<!entity e SYSTEM "file:///etc/passwd">]>', 1
    )
    refused = post(web, external)
    assert refused.status == 400 and b"root:" not in refused.body
    assert post(web, outlook_request("alice@example.co.uk").decode().encode("utf-16")).status == 400
    # ... and the server still answers.
    assert post(web, outlook_request("carol@example.com")).xml() is not None
    wrong = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-D", "-", f"{web.url}{AUTODISCOVER}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    assert wrong.startswith("http/1.1 405") and "allow: post" in wrong


def test_no_front_door_no_answers(farm: Farm, tmp_path: Path) -> None:
    server = start(farm, tmp_path, "no-door")
    try:
        assert curl(server, AUTOCONFIG, host="autoconfig.example.co.uk").status == 404
        assert curl(server, WELL_KNOWN, host="example.co.uk").status == 404
        assert post(server, outlook_request("alice@example.co.uk")).status == 404
    finally:
        assert server.stop() == 0


def test_ldap_down_is_503(farm: Farm, tmp_path: Path) -> None:
    server = start(
        farm,
        tmp_path,
        "ldap-down",
        directory={"uri": [f"ldap://127.0.0.1:{free_port()}"], "timeout": 1},
        provision={"front_door": DOOR},
    )
    try:
        answer = curl(server, AUTOCONFIG, host="autoconfig.example.co.uk")
        assert answer.status == 503 and answer.content_type.startswith("application/problem+json")
        assert post(server, outlook_request("alice@example.co.uk")).status == 503
    finally:
        assert server.stop() == 0
