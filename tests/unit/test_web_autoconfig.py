"""Autoconfig and Autodiscover: the pure builders and parser, then the routes on the embedded
LDIF directory (Starlette's test client, no sockets)."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from directory.provision.frontdoor import Endpoint
from proxy.config import load_config
from web.app import create_app
from web.autoconfig import (
    OUTLOOK_NS,
    REQUEST_NS,
    RESPONSE_NS,
    BadRequest,
    autodiscover_address,
    autodiscover_response,
    host_domain,
    mail_domain,
    split_address,
    thunderbird_config,
)
from web.autoconfig_routes import HideQueries
from web.tokens import Tokens

DATA = Path(__file__).resolve().parents[1] / "data"
DOOR = "mail.isp.example"
ENDPOINTS = (
    Endpoint("imap", DOOR, 993, "tls"),
    Endpoint("imap", DOOR, 143, "starttls"),
    Endpoint("pop3", DOOR, 995, "tls"),
    Endpoint("submission", DOOR, 465, "tls"),
    Endpoint("submission", DOOR, 587, "starttls"),
)
R = f"{{{RESPONSE_NS}}}"
OL = f"{{{OUTLOOK_NS}}}"


def request_body(address: str, schema: str = OUTLOOK_NS) -> bytes:
    root = ET.Element("Autodiscover", xmlns=REQUEST_NS)
    request = ET.SubElement(root, "Request")
    ET.SubElement(request, "EMailAddress").text = address
    ET.SubElement(request, "AcceptableResponseSchema").text = schema
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


# -- names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Example.COM", "example.com"),
        ("example.co.uk.", "example.co.uk"),
        ("under_score.org", "under_score.org"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("example", None),
        ("127.0.0.1", None),
        ("-bad.example", None),
        ("a..example", None),
        ("exa mple.com", None),
        ("example.com<x>", None),
        ("a" * 64 + ".example", None),
        ("", None),
    ],
)
def test_mail_domain(given: str, expected: str | None) -> None:
    assert mail_domain(given) == expected


@pytest.mark.parametrize(
    ("host", "prefix", "expected"),
    [
        ("autoconfig.example.com", "autoconfig.", "example.com"),
        ("AutoConfig.Example.co.uk:8443", "autoconfig.", "example.co.uk"),
        ("example.com", "autoconfig.", None),
        ("example.com:443", "", "example.com"),
        ("127.0.0.1:8080", "", None),
        ("[::1]:8080", "", None),
        ("autoconfig.example.com:x", "autoconfig.", None),
        ("", "", None),
    ],
)
def test_host_domain(host: str, prefix: str, expected: str | None) -> None:
    assert host_domain(host, prefix) == expected


def test_split_address() -> None:
    assert split_address(" Alice@Example.CO.UK ") == ("alice@example.co.uk", "example.co.uk")
    for bad in ("alice", "@example.com", "alice@", "a b@example.com", "a@b@c", "a..b@x.example"):
        with pytest.raises(BadRequest):
            split_address(bad)


# -- the documents ------------------------------------------------------------------------


def test_thunderbird_config() -> None:
    root = ET.fromstring(thunderbird_config("example.com", ENDPOINTS))
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    provider = root.find("emailProvider")
    assert provider is not None and provider.get("id") == "example.com"
    assert provider.findtext("domain") == "example.com" and provider.findtext("displayName")
    incoming = [
        (s.get("type"), s.findtext("hostname"), s.findtext("port"), s.findtext("socketType"))
        for s in provider.findall("incomingServer")
    ]
    assert incoming == [
        ("imap", DOOR, "993", "SSL"),
        ("imap", DOOR, "143", "STARTTLS"),
        ("pop3", DOOR, "995", "SSL"),
    ]
    outgoing = [
        (s.get("type"), s.findtext("port"), s.findtext("socketType"))
        for s in provider.findall("outgoingServer")
    ]
    assert outgoing == [("smtp", "465", "SSL"), ("smtp", "587", "STARTTLS")]
    for server in provider.findall("*[username]"):
        assert server.findtext("username") == "%EMAILADDRESS%"
        assert server.findtext("authentication") == "password-cleartext"


def test_documents_escape_what_they_are_given() -> None:
    """Names are validated before they get here; were one not, it would stay text."""
    hostile = 'x"><evil/>&amp;'
    root = ET.fromstring(thunderbird_config(hostile, (Endpoint("imap", hostile, 1, "tls"),)))
    assert root.find(".//evil") is None
    assert root.find("emailProvider").get("id") == hostile  # type: ignore[union-attr]
    assert root.findtext(".//hostname") == hostile
    answer = ET.fromstring(autodiscover_response(hostile, ENDPOINTS[:1]))
    assert answer.findtext(f".//{OL}LoginName") == hostile


def test_autodiscover_response() -> None:
    root = ET.fromstring(autodiscover_response("alice@example.com", ENDPOINTS))
    assert root.tag == f"{R}Autodiscover"
    account = root.find(f"{OL}Response/{OL}Account")
    assert account is not None
    assert account.findtext(f"{OL}AccountType") == "email"
    assert account.findtext(f"{OL}Action") == "settings"
    protocols = [
        {child.tag.removeprefix(OL): child.text for child in protocol}
        for protocol in account.findall(f"{OL}Protocol")
    ]
    assert [(p["Type"], p["Port"], p["Encryption"]) for p in protocols] == [
        ("IMAP", "993", "SSL"),
        ("IMAP", "143", "TLS"),
        ("POP3", "995", "SSL"),
        ("SMTP", "465", "SSL"),
        ("SMTP", "587", "TLS"),
    ]
    for p in protocols:
        assert p["Server"] == DOOR and p["LoginName"] == "alice@example.com"
        assert p["SPA"] == "off" and p["SSL"] == "on" and p["AuthRequired"] == "on"


def test_autodiscover_response_keeps_the_default_namespaces() -> None:
    """Outlook expects the two default namespaces, not ns0:/ns1: prefixes."""
    text = autodiscover_response("a@example.com", ENDPOINTS).decode()
    assert f'<Autodiscover xmlns="{RESPONSE_NS}">' in text
    assert f'<Response xmlns="{OUTLOOK_NS}">' in text and "ns0:" not in text


# -- the request parser --------------------------------------------------------------------


def test_autodiscover_address() -> None:
    assert autodiscover_address(request_body(" Alice@Example.COM ")) == "alice@example.com"
    bom = b"\xef\xbb\xbf" + request_body("alice@example.com")
    assert autodiscover_address(bom) == "alice@example.com"
    no_schema = request_body("a@example.com").replace(OUTLOOK_NS.encode(), b"")
    assert autodiscover_address(no_schema) == "a@example.com"


DTD = '<!DOCTYPE a [<!ENTITY x "y">]>'


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not xml",
        b"<Autodiscover",
        request_body("alice"),
        request_body("alice@example"),
        request_body("alice@example.com", schema="http://example.com/other"),
        request_body("alice@example.com").replace(REQUEST_NS.encode(), b"urn:other"),
        f'<Autodiscover xmlns="{REQUEST_NS}"><Request/></Autodiscover>'.encode(),
        f'<Autodiscover xmlns="{REQUEST_NS}"/>'.encode(),
        # DTDs in every disguise: before parsing, in any case, and in another encoding.
        request_body("alice@example.com").replace(b"?>", b"?>" + DTD.encode(), 1),
        b'<!doctype a SYSTEM "file:///etc/passwd"><a/>',
        b'<a><!EnTiTy x "y"></a>',
        ('<?xml version="1.0" encoding="UTF-16"?>' + DTD + "<a>&x;</a>").encode("utf-16"),
        ('<?xml version="1.0" encoding="UTF-16"?>' + DTD + "<a>&x;</a>").encode("utf-16-le"),
        b"\xff\xfe<\x00a\x00/\x00>\x00",
    ],
)
def test_autodiscover_refuses(body: bytes) -> None:
    with pytest.raises(BadRequest) as refused:
        autodiscover_address(body)
    assert "alice" not in str(refused.value)  # never echoes what was sent


# -- the routes --------------------------------------------------------------------------


def client_for(tmp_path: Path, provision: str) -> TestClient:
    config = tmp_path / "proxy.toml"
    config.write_text(
        f'[directory]\nuri = "ldif:{DATA}/users.ldif"\nbase = "dc=mailfarm,dc=test"\n'
        f"[provision]\n{provision}\n"
    )
    return TestClient(create_app(load_config(config), Tokens({})))


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with client_for(tmp_path, f'front_door = "{DOOR}"\nfront_door_pop3 = 0') as running:
        yield running


def ports_of(xml: bytes) -> list[tuple[str | None, str | None]]:
    root = ET.fromstring(xml)
    servers = [s for s in root.iter() if s.find("port") is not None]
    return [(s.findtext("port"), s.findtext("socketType")) for s in servers]


def test_autoconfig_by_host_and_by_parameter(client: TestClient) -> None:
    answer = client.get("/mail/config-v1.1.xml", headers={"Host": "autoconfig.example.co.uk"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/xml")
    assert "max-age" in answer.headers["cache-control"]
    root = ET.fromstring(answer.content)
    assert root.find("emailProvider").get("id") == "example.co.uk"  # type: ignore[union-attr]
    assert ports_of(answer.content) == [  # front_door_pop3 = 0: no 110
        ("993", "SSL"),
        ("143", "STARTTLS"),
        ("995", "SSL"),
        ("465", "SSL"),
        ("587", "STARTTLS"),
    ]
    by_param = client.get(
        "/mail/config-v1.1.xml",
        params={"emailaddress": "Nobody@Example.COM"},
        headers={"Host": "autoconfig.example.co.uk"},
    )
    assert by_param.status_code == 200  # emailaddress wins, and no user is looked up
    assert ET.fromstring(by_param.content).findtext("emailProvider/domain") == "example.com"
    well_known = client.get(
        "/.well-known/autoconfig/mail/config-v1.1.xml", headers={"Host": "example.com:8443"}
    )
    assert well_known.status_code == 200
    assert ET.fromstring(well_known.content).findtext("emailProvider/domain") == "example.com"


@pytest.mark.parametrize(
    ("path", "host", "params", "status"),
    [
        ("/mail/config-v1.1.xml", "autoconfig.example.org", {}, 404),
        ("/mail/config-v1.1.xml", "example.com", {}, 404),  # not autoconfig.<domain>
        ("/mail/config-v1.1.xml", "autoconfig.x", {"emailaddress": "a@example.org"}, 404),
        ("/mail/config-v1.1.xml", "autoconfig.example.com", {"emailaddress": "nope"}, 400),
        ("/.well-known/autoconfig/mail/config-v1.1.xml", "127.0.0.1:80", {}, 404),
        ("/.well-known/autoconfig/mail/config-v1.1.xml", "autoconfig.example.com", {}, 404),
    ],
)
def test_autoconfig_refusals(
    client: TestClient, path: str, host: str, params: dict[str, str], status: int
) -> None:
    answer = client.get(path, params=params, headers={"Host": host})
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    if status == 404:
        assert answer.json()["detail"] == "not found"


def test_autodiscover_route(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "mailfarm.web")
    for path in ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml"):
        answer = client.post(path, content=request_body("Ghost@Example.co.uk"))
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/xml")
        root = ET.fromstring(answer.content)
        types = [p.findtext(f"{OL}Type") for p in root.iter(f"{OL}Protocol")]
        assert types == ["IMAP", "IMAP", "POP3", "SMTP", "SMTP"]
        assert {p.text for p in root.iter(f"{OL}LoginName")} == {"ghost@example.co.uk"}
    assert "ghost" not in caplog.text.lower() and "example.co.uk" in caplog.text
    unknown = client.post("/autodiscover/autodiscover.xml", content=request_body("a@example.org"))
    assert unknown.status_code == 404 and unknown.json()["detail"] == "not found"
    bad = client.post("/autodiscover/autodiscover.xml", content=request_body("not-an-address"))
    assert bad.status_code == 400
    hostile = request_body("a@example.com").replace(b"?>", b"?>" + DTD.encode(), 1)
    assert client.post("/autodiscover/autodiscover.xml", content=hostile).status_code == 400
    huge = client.post("/autodiscover/autodiscover.xml", content=b"<a>" + b"x" * 70_000)
    assert huge.status_code == 413
    wrong = client.get("/autodiscover/autodiscover.xml")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"


def test_public_routes_stay_out_of_the_api_document(client: TestClient) -> None:
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    assert not [p for p in paths if "autoconfig" in p.lower() or "autodiscover" in p.lower()]


def test_no_front_door_answers_nothing(tmp_path: Path) -> None:
    with client_for(tmp_path, "") as client:
        host = {"Host": "autoconfig.example.co.uk"}
        assert client.get("/mail/config-v1.1.xml", headers=host).status_code == 404
        body = request_body("alice@example.co.uk")
        assert client.post("/autodiscover/autodiscover.xml", content=body).status_code == 404
        bad = {"emailaddress": "not-an-address"}
        assert client.get("/mail/config-v1.1.xml", params=bad, headers=host).status_code == 404
        assert client.post("/autodiscover/autodiscover.xml", content=b"<x").status_code == 404


def test_access_log_keeps_no_address() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
        ("1.2.3.4:5", "GET", "/mail/config-v1.1.xml?emailaddress=a%40b.example", "1.1", 200),
        None,
    )  # fmt: skip
    assert HideQueries().filter(record) and "a%40b" not in record.getMessage()
    other = logging.LogRecord(
        "uvicorn.access", logging.INFO, "", 0, "%s %s %s", ("c", "GET", "/api/v1/x?q=1"), None
    )
    assert HideQueries().filter(other) and "q=1" in other.getMessage()
