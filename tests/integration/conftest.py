"""Fixtures for tests against the real local farm (slapd + two Dovecot backends).

The farm is session-scoped: it starts once (well under a second) and every integration test
shares it, so tests that stop a daemon must start it again before they return.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from bench.farm import Farm
from bench.farm_ldap import SBIN_PATH

FARM_BINARIES = ("slapd", "slapadd", "ldapmodify", "dovecot", "openssl")


def missing_farm_binaries() -> list[str]:
    return [name for name in FARM_BINARIES if shutil.which(name, path=SBIN_PATH) is None]


@pytest.fixture(scope="session")
def farm() -> Iterator[Farm]:
    missing = missing_farm_binaries()
    if missing:
        pytest.skip(
            f"farm binaries not installed: {', '.join(missing)} "
            "(apt-get install slapd ldap-utils dovecot-imapd dovecot-pop3d dovecot-lmtpd "
            "dovecot-ldap openssl)"
        )
    with Farm() as running:
        yield running


from tests.integration.proxies import proxy, strict_proxy  # noqa: E402, F401 - fixtures
from tests.integration.smtp_fixtures import postfix, smtp_ports, smtp_proxy  # noqa: E402, F401 - fixtures
