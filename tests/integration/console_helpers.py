"""A mailfarm proxy with its admin endpoint and a ``mailfarm web`` that reaches it: the pair
the console's tests drive, started once per module."""

from __future__ import annotations

import imaplib
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.farm import Farm
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config, free_port
from tests.integration.provision_helpers import (
    ADMIN_TOKEN,
    DISABLED_ATTRIBUTE,
    provision_sections,
)
from tests.integration.web_helpers import WebServer

API_TOKEN = secrets.token_urlsafe(24)
DOMAIN_API_TOKEN = secrets.token_urlsafe(24)  # a domain-admin of example.co.uk, as dora is


@dataclass
class ConsoleFarm:
    web: WebServer
    ports: ProxyPorts
    proxy: MailfarmProcess
    audit_log: Path

    def imap(self, login: str, password: str) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.ports.imap, timeout=15)
        client.login(login, password)
        return client


def start_console(farm: Farm, workdir: Path, name: str) -> ConsoleFarm:
    ports, admin_port = ProxyPorts(), free_port()
    sections = farm_config(
        farm,
        ports,
        directory={"cache_ttl": 60, "disabled_attribute": DISABLED_ATTRIBUTE},
        admin={"listen": [f"127.0.0.1:{admin_port}"], "token": ADMIN_TOKEN},
    )
    sections.pop("pop3", None)
    proxy = MailfarmProcess(workdir, sections, f"{name}-proxy").start()
    tokens = workdir / "api-tokens"
    tokens.write_text(f"admin {API_TOKEN}\ndomain-admin {DOMAIN_API_TOKEN} example.co.uk\n")
    audit_log = workdir / "audit.jsonl"
    web_sections = provision_sections(
        farm,
        directory={"quota_attribute": "roomNumber"},
        web={"api_tokens_file": tokens, "audit_log": audit_log},
        provision={"admin_urls": [f"http://127.0.0.1:{admin_port}"]},
    )
    web = WebServer(workdir, web_sections, name)
    return ConsoleFarm(web, ports, proxy, audit_log)


@pytest.fixture(scope="module")
def console(farm: Farm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleFarm]:
    started = start_console(farm, tmp_path_factory.mktemp("console"), "console")
    yield started
    assert started.web.stop() == 0, started.web.log_text()[-2000:]
    started.proxy.stop()


class Staff:
    """A staff member's console session over plain HTTP (httpx), CSRF token in hand."""

    def __init__(self, url: str, login: str, password: str, verify: Any = True) -> None:
        self.http = httpx.Client(base_url=url, timeout=60, follow_redirects=False, verify=verify)
        form = self.http.get("/console/signin")
        token = hidden(form.text, "token")
        self.answer = self.http.post(
            "/console/signin",
            data={"token": token, "login": login, "password": password, "back": ""},
        )
        self.csrf = ""
        if self.answer.status_code == 303:
            self.csrf = hidden(self.http.get("/console/domains").text, "csrf")

    def get(self, path: str) -> httpx.Response:
        return self.http.get(path)

    def post(self, path: str, **fields: str) -> httpx.Response:
        return self.http.post(path, data={"csrf": self.csrf, **fields})


def hidden(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found, f"no hidden {name} in the page"
    return found.group(1)
