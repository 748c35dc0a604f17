"""Session-scoped Postfix and mailfarm (lookup, LMTP, submission) for the SMTP-side tests.

Imported by conftest. The two know each other's ports before either starts: Postfix asks
mailfarm's socketmap for routing, and mailfarm's submission relays through Postfix. The
mailfarm instance trusts nobody, so passwords need TLS there (as on a real port 587).
"""

from __future__ import annotations

import functools
import imaplib
import secrets
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bench.farm import Farm, FarmUser
from bench.farm_ldap import SBIN_PATH, binary
from bench.farm_postfix import PostfixInstance, missing_postfix_binaries
from bench.proxyproc import MailfarmProcess, ProxyPorts, farm_config, free_port

LMTP_PROXIED = "jo_anne@under_score.org"  # Postfix delivers to this one via mailfarm's LMTP


@dataclass
class SmtpPorts:
    socketmap: int = field(default_factory=free_port)
    tcp_table: int = field(default_factory=free_port)
    lmtp: int = field(default_factory=free_port)
    submission: int = field(default_factory=free_port)
    submissions: int = field(default_factory=free_port)
    relay: int = field(default_factory=free_port)  # the Postfix instance's smtpd


@dataclass
class RunningSmtpProxy:
    ports: SmtpPorts
    process: MailfarmProcess


def smtp_sections(farm: Farm, ports: SmtpPorts, trusted: bool = False, **overrides: Any):  # type: ignore[no-untyped-def]
    """proxy.toml sections for a mailfarm serving only the Postfix-facing services."""
    lmtp_port = next(iter(farm.backends.values())).lmtp_port
    sections = farm_config(
        farm,
        ProxyPorts(),
        trusted=trusted,
        # Short enough that a test changing LDAP sees it after a second's wait.
        directory={"cache_ttl": 1, "negative_ttl": 1},
        lookup={
            "listen": [f"127.0.0.1:{ports.socketmap}"],
            "tcp_listen": [f"127.0.0.1:{ports.tcp_table}"],
            "transport": f"lmtp:inet:{{host}}:{lmtp_port}",
        },
        lmtp={
            "listen": [f"127.0.0.1:{ports.lmtp}"],
            "backend_port": lmtp_port,
            "backend_timeout": 5,
            "hostname": "lmtp.mailfarm.test",
        },
        submission={
            "listen": [f"127.0.0.1:{ports.submission}"],
            "tls_listen": [f"127.0.0.1:{ports.submissions}"],
            "relay": f"127.0.0.1:{ports.relay}",
            "relay_timeout": 10,
            "hostname": "submit.mailfarm.test",
        },
    )
    for name in ("imap", "pop3"):  # the login proxies have fixtures of their own
        sections.pop(name, None)
    for name, table in overrides.items():
        sections.setdefault(name, {}).update(table)
    return sections


@pytest.fixture(scope="session")
def smtp_ports() -> SmtpPorts:
    return SmtpPorts()


@pytest.fixture(scope="session")
def postfix(farm: Farm, smtp_ports: SmtpPorts) -> Iterator[PostfixInstance]:
    missing = missing_postfix_binaries()
    if missing:
        pytest.skip(f"Postfix not installed: {', '.join(missing)} (apt-get install postfix)")
    # One address goes through mailfarm's LMTP proxy instead of straight to its Dovecot,
    # so Postfix's own LMTP client is tested against the proxy too.
    through_proxy = f"{LMTP_PROXIED}=lmtp:inet:127.0.0.1:{smtp_ports.lmtp}"
    socketmap = f"socketmap:inet:127.0.0.1:{smtp_ports.socketmap}:transport"
    instance = PostfixInstance(
        ("127.0.0.1", smtp_ports.socketmap),
        extra_main={"transport_maps": f"inline:{{{through_proxy}}}, {socketmap}"},
    )
    instance.smtp_port = smtp_ports.relay
    instance.start()
    yield instance
    instance.close()


@pytest.fixture(scope="session")
def smtp_proxy(
    farm: Farm, smtp_ports: SmtpPorts, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningSmtpProxy]:
    sections = smtp_sections(farm, smtp_ports)
    process = MailfarmProcess(tmp_path_factory.mktemp("smtp"), sections, "smtp").start()
    yield RunningSmtpProxy(smtp_ports, process)
    process.stop()


# -- helpers for the tests ------------------------------------------------------------------


def token() -> str:
    return "t-" + secrets.token_hex(6)


def message(sender: str, to: str, subject: str, body: str = "hello from the tests\n") -> bytes:
    headers = (
        f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@tests.mailfarm.test>\r\n\r\n"
    )
    return (headers + body.replace("\n", "\r\n")).encode()


def imap_search(host: str, port: int, user: FarmUser, subject: str) -> list[bytes]:
    """The INBOX messages (full text) whose subject is ``subject``, as ``user`` sees them."""
    client = imaplib.IMAP4(host, port, timeout=15)
    try:
        client.login(user.uid, user.password)
        client.select("INBOX", readonly=True)
        _, found = client.search(None, "SUBJECT", f'"{subject}"')
        out = []
        for num in found[0].split():
            _, data = client.fetch(num, "(RFC822)")
            out.extend(part[1] for part in data if isinstance(part, tuple))
        return out
    finally:
        try:
            client.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def wait_in_mailbox(
    farm: Farm, proxy: Any, user: FarmUser, subject: str, timeout: float = 20.0
) -> bytes:
    """Wait until ``subject`` is in ``user``'s INBOX as seen through the IMAP proxy."""
    deadline = time.monotonic() + timeout
    while True:
        found = imap_search("127.0.0.1", proxy.ports.imap, user, subject)
        if found:
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"{subject} never reached {user.address}")
        time.sleep(0.1)


def on_backend(farm: Farm, backend: str, user: FarmUser, subject: str) -> bool:
    """Whether ``subject`` is in ``user``'s INBOX on ``backend`` itself (no proxy)."""
    b = farm.backends[backend]
    return bool(imap_search(b.host, b.imap_port, user, subject))


def other_backend(farm: Farm, user: FarmUser) -> str:
    return next(name for name in farm.backends if name != user.backend)


def workdir_of(running: RunningSmtpProxy) -> Path:
    return running.process.workdir


@functools.lru_cache(maxsize=1)
def _postmap_config() -> Path:
    """A config directory of our own for postmap: it insists on reading main.cf, and a
    machine whose Postfix package was installed unconfigured has none in /etc/postfix."""
    directory = Path(tempfile.mkdtemp(prefix="mailfarm-postmap-"))
    (directory / "main.cf").write_text("# postmap needs a main.cf; defaults are fine\n")
    return directory


def postmap(key: str, table: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``postmap -q KEY TABLE`` (KEY ``-``: keys from ``stdin``), Postfix's own client of a
    lookup table."""
    return subprocess.run(
        [binary("postmap"), "-c", str(_postmap_config()), "-q", key, table],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": SBIN_PATH},
    )
