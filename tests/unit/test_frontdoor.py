"""The front door's endpoints and RFC 6186 SRV records, from ``[provision] front_door*``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from common.configschema import ConfigError
from directory.provision.frontdoor import Endpoint, endpoints, srv_records
from directory.settings import ProvisionSettings, provision_settings


def settings(**values: object) -> ProvisionSettings:
    """The defaults of an empty ``[provision]``, then ``values`` through the same checks."""
    return provision_settings(Path("proxy.toml"), values)


def test_no_front_door_no_endpoints_no_records() -> None:
    assert settings().front_door == ""
    assert endpoints(settings()) == ()
    assert srv_records(settings()) == []


def test_default_ports_implicit_tls_first() -> None:
    door = "mail.isp.example"
    assert endpoints(settings(front_door="Mail.ISP.example.")) == (
        Endpoint("imap", door, 993, "tls"),
        Endpoint("imap", door, 143, "starttls"),
        Endpoint("pop3", door, 995, "tls"),
        Endpoint("pop3", door, 110, "starttls"),
        Endpoint("submission", door, 465, "tls"),
        Endpoint("submission", door, 587, "starttls"),
    )


def test_srv_records_default_ports() -> None:
    records = srv_records(settings(front_door="mail.isp.example"))
    assert records == [
        ("_imaps._tcp", "0 1 993 mail.isp.example."),
        ("_imap._tcp", "10 1 143 mail.isp.example."),
        ("_pop3s._tcp", "20 1 995 mail.isp.example."),
        ("_pop3._tcp", "30 1 110 mail.isp.example."),
        ("_submissions._tcp", "0 1 465 mail.isp.example."),
        ("_submission._tcp", "10 1 587 mail.isp.example."),
    ]


def test_port_zero_is_not_offered_and_announced_as_such() -> None:
    chosen = settings(
        front_door="lb.isp.example",
        front_door_imap=0,
        front_door_pop3=0,
        front_door_pop3s=0,
        front_door_imaps=10993,
        front_door_submission=0,
    )
    assert endpoints(chosen) == (
        Endpoint("imap", "lb.isp.example", 10993, "tls"),
        Endpoint("submission", "lb.isp.example", 465, "tls"),
    )
    records = dict(srv_records(chosen))
    assert records["_imaps._tcp"] == "0 1 10993 lb.isp.example."
    for owner in ("_imap._tcp", "_pop3._tcp", "_pop3s._tcp", "_submission._tcp"):
        assert records[owner] == "0 0 0 ."  # RFC 6186: decidedly not available
    assert records["_submissions._tcp"] == "0 1 465 lb.isp.example."


def test_every_port_off_leaves_records_but_no_endpoints() -> None:
    fields = [f.name for f in dataclasses.fields(ProvisionSettings)]
    ports = {name: 0 for name in fields if name.startswith("front_door_")}
    chosen = settings(front_door="mail.isp.example", **ports)
    assert endpoints(chosen) == ()
    assert {value for _owner, value in srv_records(chosen)} == {"0 0 0 ."}


@pytest.mark.parametrize("bad", ["mail isp.example", "mail.isp.example:993", "localhost"])
def test_front_door_must_be_a_host_name(bad: str) -> None:
    with pytest.raises(ConfigError):
        settings(front_door=bad)
