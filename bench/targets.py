"""Where a load test may go and where it comes from: HOST:PORT, loopback checks, --bind.

A load tester pointed at someone else's server is an attack, so every target (and the LMTP
host of ``--deliver-lmtp``) must resolve to loopback only, unless the operator says
``--allow-remote`` for hosts they run.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Any


class UsageError(Exception):
    """A problem with the arguments; printed as ``mailfarm bench: …`` with exit status 2."""


def parse_hostport(text: str) -> tuple[str, int]:
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\s]+):(\d+)", text.strip())
    if not m:
        raise UsageError(f"expected HOST:PORT (or [v6]:PORT), got {text!r}")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if not 0 < port < 65536:
        raise UsageError(f"port out of range in {text!r}")
    return host, port


def check_host(host: str, port: int, allow_remote: bool) -> list[str]:
    """The addresses ``host`` resolves to; UsageError unless all are loopback or allowed."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"cannot resolve {host}: {exc.strerror}") from None
    addresses = sorted({str(info[4][0]) for info in infos})
    remote = [a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_loopback]
    if remote and not allow_remote:
        raise UsageError(
            f"refusing to load {host} ({', '.join(remote)}): not a loopback address."
            " Pass --allow-remote only for hosts you operate."
        )
    return addresses


MAX_SOURCES = 65536


def sources(specs: list[str]) -> tuple[str, ...]:
    """``--bind`` values (addresses or networks) as the list of local addresses to use."""
    out: list[str] = []
    for spec in specs:
        try:
            net = ipaddress.ip_network(spec, strict=False)
        except ValueError:
            raise UsageError(f"--bind {spec!r}: not an address or network") from None
        hosts = [net.network_address] if net.num_addresses == 1 else list(_hosts(net))
        out += [str(h) for h in hosts]
        if len(out) > MAX_SOURCES:
            raise UsageError(f"--bind: more than {MAX_SOURCES} addresses")
    return tuple(out)


def _hosts(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> list[Any]:
    if net.num_addresses > MAX_SOURCES + 2:
        raise UsageError(f"--bind {net}: more than {MAX_SOURCES} addresses")
    return list(net.hosts())
