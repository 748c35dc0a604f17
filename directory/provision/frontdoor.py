"""The front door as mail clients see it: which services, on which ports, with which TLS.

One answer for every way a client is told (RFC 6186 SRV records, Thunderbird autoconfig,
Outlook Autodiscover), computed from ``[provision] front_door*`` so those can never
disagree. Pure: no I/O, nothing looked up.

Implicit TLS comes before STARTTLS for each service (RFC 8314 section 3: prefer it), and
IMAP before POP3 (it keeps mail on the server, which is what a farm of backends is for).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from directory.settings import ProvisionSettings

Service = Literal["imap", "pop3", "submission"]
Tls = Literal["tls", "starttls"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One way in: ``tls`` is implicit TLS from the first byte, ``starttls`` an upgrade."""

    service: Service
    host: str
    port: int
    tls: Tls


# (service, TLS mode, ProvisionSettings field, RFC 6186/8314 SRV owner, SRV priority).
# Clients compare priorities across IMAP and POP3 too (RFC 6186 section 3.4): IMAP wins.
_OFFERS: tuple[tuple[Service, Tls, str, str, int], ...] = (
    ("imap", "tls", "front_door_imaps", "_imaps._tcp", 0),
    ("imap", "starttls", "front_door_imap", "_imap._tcp", 10),
    ("pop3", "tls", "front_door_pop3s", "_pop3s._tcp", 20),
    ("pop3", "starttls", "front_door_pop3", "_pop3._tcp", 30),
    ("submission", "tls", "front_door_submissions", "_submissions._tcp", 0),
    ("submission", "starttls", "front_door_submission", "_submission._tcp", 10),
)


def endpoints(settings: ProvisionSettings) -> tuple[Endpoint, ...]:
    """Every offered endpoint, most preferred first; none when ``front_door`` is empty."""
    host = settings.front_door
    if not host:
        return ()
    found: list[Endpoint] = []
    for service, tls, field, _owner, _priority in _OFFERS:
        port = int(getattr(settings, field))
        if port:
            found.append(Endpoint(service, host, port, tls))
    return tuple(found)


def srv_records(settings: ProvisionSettings) -> list[tuple[str, str]]:
    """(owner relative to the zone, SRV value) for every RFC 6186/8314 service name.

    A port of 0 is announced as "decidedly not available" (target ``.``, port 0; RFC 6186
    section 4), so a client does not go on guessing host names for it. Empty when there
    is no front door: nothing to point at.
    """
    host = settings.front_door
    if not host:
        return []
    records: list[tuple[str, str]] = []
    for _service, _tls, field, owner, priority in _OFFERS:
        port = int(getattr(settings, field))
        value = f"{priority} 1 {port} {host}." if port else "0 0 0 ."
        records.append((owner, value))
    return records
