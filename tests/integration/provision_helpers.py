"""Shared pieces of the admin-tool tests: a config for the farm, a CLI runner, test mailboxes.

Every command runs as operators run it, ``python -m proxy.cli ... -c <generated toml>``, in a
subprocess, so argument parsing, exit codes and output are what is tested.
"""

from __future__ import annotations

import hashlib
import imaplib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.farm import BACKEND_HOSTS, Farm
from bench.farm_dovecot import QUOTA_ATTRIBUTE
from bench.proxyproc import (
    MailfarmProcess,
    ProxyPorts,
    farm_backends,
    farm_config,
    farm_provision,
    render_toml,
)
from directory.mailstores import mailstore_for
from directory.provision.folders import append, create_folder
from directory.provision.imapdata import Message
from proxy.config import Settings, load_config

REPO = Path(__file__).resolve().parents[2]
HOSTS = [BACKEND_HOSTS["mail1"], BACKEND_HOSTS["mail2"]]
NAME_OF = {host: name for name, host in BACKEND_HOSTS.items()}
DISABLED_ATTRIBUTE = "description"  # see the report: no status attribute in the farm schemas
ADMIN_TOKEN = "provision-test-token"


def provision_sections(farm: Farm, **overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    sections: dict[str, dict[str, Any]] = {
        "directory": {
            "uri": [farm.ldap_uri],
            "base": farm.base_dn,
            "bind_dn": farm.service_dn,
            "bind_password": farm.service_password,
            "disabled_attribute": DISABLED_ATTRIBUTE,
            "quota_attribute": QUOTA_ATTRIBUTE,  # what the farm's Dovecot userdb reads
            "timeout": 3,
        },
        "admin": {"token": ADMIN_TOKEN},
        # The backends' ManageSieve, one port for all (moves copy users' Sieve scripts).
        "sieve": {"backend_port": next(b.sieve_port for b in farm.backends.values())},
        "provision": {
            **farm_provision(farm),
            "move_settle": 0.5,  # the default 5 s, for each of the tests' many moves, is long
        },
    }
    sections["backends"] = farm_backends(farm)  # type: ignore[assignment]
    for name, table in overrides.items():
        sections.setdefault(name, {}).update(table)
    return sections


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class Admin:
    """The ``mailfarm`` admin commands against the farm, with one config file."""

    farm: Farm
    config: Path
    pycache: Path

    @property
    def settings(self) -> Settings:
        return load_config(self.config)

    def run(self, *args: str, stdin: str | None = None) -> Result:
        # The environment may forbid .pyc files (PYTHONDONTWRITEBYTECODE); compiling every
        # module again for each command would double the time of these tests. Cache them
        # outside the tree instead.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(self.pycache)
        done = subprocess.run(
            [sys.executable, "-m", "proxy.cli", *args, "-c", str(self.config)],
            capture_output=True,
            text=True,
            input=stdin,
            timeout=180,
            cwd=REPO,
            env=env,
            check=False,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    def ok(self, *args: str, stdin: str | None = None) -> Any:
        """Run with ``--json``; assert exit 0 and return the parsed output."""
        result = self.run(*args, "--json", stdin=stdin)
        assert result.code == 0, (args, result)
        data = result.json
        assert data["ok"] is True
        return data

    def with_config(self, name: str, **overrides: dict[str, Any]) -> Admin:
        path = self.config.with_name(f"{name}.toml")
        path.write_text(render_toml(provision_sections(self.farm, **overrides)))
        return Admin(self.farm, path, self.pycache)


@pytest.fixture(scope="session")
def admin(farm: Farm, tmp_path_factory: pytest.TempPathFactory) -> Admin:
    workdir = tmp_path_factory.mktemp("provision")
    config = workdir / "provision.toml"
    config.write_text(render_toml(provision_sections(farm)))
    return Admin(farm, config, workdir / "pycache")


@pytest.fixture(scope="module")
def uncached_proxy(farm: Farm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyPorts]:
    """A proxy with no route cache that knows the disabled attribute, so it sees each
    LDAP change a move makes at once."""
    ports = ProxyPorts()
    sections = farm_config(
        farm,
        ports,
        directory={"cache_ttl": 0, "negative_ttl": 0, "disabled_attribute": DISABLED_ATTRIBUTE},
    )
    process = MailfarmProcess(tmp_path_factory.mktemp("uncached"), sections, "uncached").start()
    yield ports
    process.stop()


@pytest.fixture
def domain(admin: Admin) -> Iterator[str]:
    """A fresh domain for one test, removed (users and mailboxes included) afterwards."""
    name = f"prov-{secrets.token_hex(4)}.test"
    admin.ok("domain", "add", name)
    yield name
    admin.run("domain", "del", name, "--force")


def add_user(admin: Admin, address: str, password: str, *extra: str) -> dict[str, Any]:
    return admin.ok("user", "add", address, "--password-file", "-", *extra, stdin=password + "\n")


def backend_login(farm: Farm, host: str, login: str, password: str) -> imaplib.IMAP4:
    """imaplib straight to a backend (not through the proxy, not via our own client)."""
    client = imaplib.IMAP4(host, farm.backends[NAME_OF[host]].imap_port, timeout=15)
    client.login(login, password)
    return client


# -- test mailboxes -----------------------------------------------------------------------

FLAG_CHOICES = ["\\Seen", "\\Answered", "\\Flagged", "\\Draft", "$Forwarded", "$Label1", "Work"]


def make_messages(folder: str, count: int, seed: int) -> list[Message]:
    """Distinct messages with varied flags and internal dates in several time zones."""
    out = []
    for i in range(count):
        n = seed * 100_000 + i
        flags = tuple(f for j, f in enumerate(FLAG_CHOICES) if (n >> j) % 3 == 0)
        day = 1 + n % 28
        zone = ["+0000", "-0700", "+0530", "+0100"][n % 4]
        month = ["Jan", "Mar", "Jul", "Nov"][n % 4]
        clock = f"1{n % 10}:{n % 60:02d}:{(n * 7) % 60:02d}"
        date = f"{day:2d}-{month}-{2015 + n % 9} {clock} {zone}"
        body = (
            f"From: sender{n}@example.net\r\nTo: someone@example.org\r\n"
            f"Subject: message {i} in {folder}\r\nMessage-ID: <{n}.{seed}@test>\r\n\r\n"
            + f"line {n} of the body\r\n"
            * (5 + n % 40)
        ).encode()
        out.append(Message(0, flags, date, body))
    return out


def fill_mailbox(
    settings: Settings, host: str, uid: str, folders: dict[str, list[Message]]
) -> float:
    """APPEND straight to the backend (MULTIAPPEND + LITERAL+); returns the seconds taken."""
    started = time.monotonic()
    with mailstore_for(settings, host).open_user(uid) as client:
        for name, messages in folders.items():
            create_folder(client, name.encode(), subscribe=True)
            for i in range(0, len(messages), 250):
                append(client, name.encode(), messages[i : i + 250])
    return time.monotonic() - started


def expected_digests(messages: list[Message]) -> list[str]:
    return sorted(m.digest() for m in messages)


def mailbox_digests(client: imaplib.IMAP4, folder: str) -> list[str]:
    """Per-message digests read with imaplib, the same shape as :meth:`Message.digest`."""
    typ, data = client.select(_imap_name(folder), readonly=True)
    assert typ == "OK", (folder, data)
    if int(data[0]) == 0:
        return []
    typ, data = client.fetch("1:*", "(FLAGS INTERNALDATE BODY.PEEK[])")
    assert typ == "OK"
    out = []
    for item in data:
        if not isinstance(item, tuple):
            continue
        head, body = item
        flags = imaplib.ParseFlags(head)
        date = imaplib.Internaldate2tuple(head)
        assert date is not None, head
        shown = " ".join(sorted(f.decode().lower() for f in flags if f.lower() != b"\\recent"))
        out.append(f"{hashlib.sha256(body).hexdigest()}|{shown}|{int(time.mktime(date))}")
    return sorted(out)


def folder_names(client: imaplib.IMAP4) -> set[str]:
    typ, data = client.list()
    assert typ == "OK"
    names = set()
    for line in data:
        if isinstance(line, bytes):
            name = (
                line.rsplit(b' "', 1)[-1].rstrip(b'"')
                if line.endswith(b'"')
                else line.rsplit(b" ", 1)[-1]
            )
            names.add(name.decode())
    return names


def _imap_name(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'
