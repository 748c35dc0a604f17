"""``[lmtp]`` and ``[lookup]`` ``allowed_networks``: parsed, loopback by default, and a
warning at start when a listener beyond loopback would refuse everyone."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import pytest

from proxy.config import LOOPBACK, ConfigError, effective_settings, load_config
from proxy.smtp.lookup import warn_if_unreachable

DATA = Path(__file__).resolve().parents[1] / "data"


def config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(
        f'[directory]\nuri = "ldif:{DATA}/users.ldif"\nbase = "dc=mailfarm,dc=test"\n{extra}'
    )
    return path


def test_default_is_loopback_for_both(tmp_path: Path) -> None:
    settings = load_config(config(tmp_path))
    for section in (settings.lmtp, settings.lookup):
        assert section.allowed_networks == LOOPBACK
        assert {str(n) for n in section.allowed_networks} == {"127.0.0.0/8", "::1/128"}
    shown = effective_settings(settings)
    assert shown["lmtp"]["allowed_networks"] == ["127.0.0.0/8", "::1/128"]
    assert shown["lookup"]["allowed_networks"] == ["127.0.0.0/8", "::1/128"]


def test_configured_networks(tmp_path: Path) -> None:
    settings = load_config(
        config(
            tmp_path,
            '[lmtp]\nallowed_networks = ["10.0.3.0/24", "2001:db8::/32"]\n'
            '[lookup]\nallowed_networks = "10.0.3.7"\n',
        )
    )
    assert settings.lmtp.allowed_networks == (
        ipaddress.ip_network("10.0.3.0/24"),
        ipaddress.ip_network("2001:db8::/32"),
    )
    assert settings.lookup.allowed_networks == (ipaddress.ip_network("10.0.3.7/32"),)


@pytest.mark.parametrize("section", ["lmtp", "lookup"])
def test_bad_network_names_section_and_key(tmp_path: Path, section: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(config(tmp_path, f'[{section}]\nallowed_networks = ["10.0.0.300/8"]\n'))
    assert f"[{section}] allowed_networks: not a network address" in str(info.value)


def test_warning_when_a_public_listener_admits_only_loopback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        warn_if_unreachable("lmtp", (("127.0.0.1", 24), ("::1", 24), ("localhost", 24)), LOOPBACK)
        assert caplog.records == []
        warn_if_unreachable("lmtp", (("", 24), ("10.0.1.11", 24)), LOOPBACK)
        [record] = caplog.records
        assert record.name == "mailfarm.lmtp"
        assert "listens on *:24, 10.0.1.11:24" in record.getMessage()
        caplog.clear()
        ours = (ipaddress.ip_network("10.0.3.0/24"),)
        warn_if_unreachable("lookup", (("10.0.1.11", 9100),), ours)
        assert caplog.records == []
