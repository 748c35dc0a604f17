"""PROXY protocol v1 and v2 headers (haproxy's proxy-protocol.txt), parsed without I/O.

A load balancer in front of mailfarm (HAProxy ``send-proxy-v2``) prepends one header to each
connection saying who the client really is. The header is untrusted input from the network
until the listener has checked that the peer is in ``haproxy_trusted_networks``, so this
module is strict: anything that does not match the specification exactly is an error, and a
stream that cannot be a PROXY header is refused at its first wrong byte rather than after
107 bytes, so a client talking IMAP to the wrong port learns it at once.

:func:`parse` is incremental in the h11 way: the caller keeps appending what it reads to one
buffer and calls :func:`parse` again until it returns a :class:`ProxyHeader`; then
``buf[header.consumed:]`` is the start of the client's own protocol.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

SIGNATURE_V2 = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
MAX_V1 = 107  # longest v1 line the spec allows, CRLF included
V2_FIXED = 16  # signature, version/command, family/transport, length
MAX_V2 = V2_FIXED + 0xFFFF

PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
_HOSTNAME = re.compile(rb"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?\.?")
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_SSL = 0x20
PP2_TYPE_NETNS = 0x30
PP2_CLIENT_SSL = 0x01  # in the first byte of a PP2_TYPE_SSL value


class ProxyProtocolError(ValueError):
    """The bytes are not a valid PROXY header; the connection must be dropped.

    The message is a fixed description (never an echo of the input), safe to log.
    """


class Command(enum.StrEnum):
    PROXY = "PROXY"
    LOCAL = "LOCAL"  # a health check by the balancer itself: keep the real endpoints


class Family(enum.StrEnum):
    TCP4 = "TCP4"
    TCP6 = "TCP6"
    UNIX = "UNIX"
    UNKNOWN = "UNKNOWN"  # v1 UNKNOWN, v2 UNSPEC or an unsupported transport (UDP)


@dataclass(frozen=True, slots=True)
class NeedMore:
    """No verdict yet: read more, with at least ``at_least`` bytes in the buffer in total."""

    at_least: int


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A complete header. Addresses are ``None`` unless the command is PROXY and the family
    TCP4, TCP6 or UNIX (paths in ``src_ip``/``dst_ip``, ports 0)."""

    version: int
    command: Command
    family: Family
    src_ip: str | None
    src_port: int | None
    dst_ip: str | None
    dst_port: int | None
    consumed: int
    tlvs: dict[int, bytes] = field(default_factory=dict)

    @property
    def source(self) -> tuple[str, int] | None:
        """The client's (ip, port) when the header names one; otherwise use the socket's."""
        if self.family in (Family.TCP4, Family.TCP6) and self.src_ip is not None:
            return self.src_ip, self.src_port or 0
        return None

    @property
    def destination(self) -> tuple[str, int] | None:
        if self.family in (Family.TCP4, Family.TCP6) and self.dst_ip is not None:
            return self.dst_ip, self.dst_port or 0
        return None

    @property
    def authority(self) -> str | None:
        """The name the client asked the balancer for (SNI), from PP2_TYPE_AUTHORITY
        (HAProxy ``proxy-v2-options authority``); None unless it is a host name."""
        raw = self.tlvs.get(PP2_TYPE_AUTHORITY, b"")
        if not raw or len(raw) > 253 or not _HOSTNAME.fullmatch(raw):
            return None
        return raw.decode("ascii").lower().rstrip(".")

    @property
    def tls(self) -> bool:
        """The client reached the balancer over TLS, which ended it there (HAProxy
        ``send-proxy-v2-ssl``: a PP2_TYPE_SSL TLV with the PP2_CLIENT_SSL bit)."""
        ssl = self.tlvs.get(PP2_TYPE_SSL, b"")
        return bool(ssl) and bool(ssl[0] & PP2_CLIENT_SSL)


def parse(buf: bytes | bytearray | memoryview) -> ProxyHeader | NeedMore:
    """Parse the header at the start of ``buf``; raises :class:`ProxyProtocolError`."""
    buf = bytes(buf[:MAX_V2]) if len(buf) > MAX_V2 else bytes(buf)
    if not buf:
        return NeedMore(1)
    if buf[0] == SIGNATURE_V2[0]:
        return _parse_v2(buf)
    return _parse_v1(buf)


# -- version 1 ----------------------------------------------------------------------------

_V1_CHARS = re.compile(rb"[\x20-\x7e]*")
_V1_PROTOS = (b"TCP4", b"TCP6", b"UNKNOWN")
_OCTET = rb"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rb"(?:" + _OCTET + rb"\.){3}" + _OCTET)
_IPV6_CHARS = re.compile(rb"[0-9A-Fa-f:.]{2,45}")
_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")


def _parse_v1(buf: bytes) -> ProxyHeader | NeedMore:
    if not V1_PREFIX.startswith(buf[: len(V1_PREFIX)]):
        raise ProxyProtocolError("not a PROXY protocol header")
    end = buf.find(b"\r\n", 0, MAX_V1)
    line = buf[:end] if end >= 0 else buf[:MAX_V1]
    # Checked before the CRLF arrives, so junk is refused at once; only a final CR may be
    # the first half of the CRLF still on its way.
    scan = line[:-1] if end < 0 and line.endswith(b"\r") else line
    if _V1_CHARS.fullmatch(scan) is None:
        raise ProxyProtocolError("invalid character in PROXY v1 header")
    proto, sp, _ = scan[len(V1_PREFIX) :].partition(b" ")
    complete = bool(sp) or end >= 0
    if not (proto in _V1_PROTOS if complete else any(p.startswith(proto) for p in _V1_PROTOS)):
        raise ProxyProtocolError("unknown PROXY v1 protocol")
    if end < 0:
        if len(buf) >= MAX_V1:
            raise ProxyProtocolError("PROXY v1 header longer than 107 bytes")
        return NeedMore(len(buf) + 1)
    consumed = end + 2
    if proto == b"UNKNOWN":
        # The spec: "the receiver must ignore anything presented before the CRLF".
        return ProxyHeader(1, Command.PROXY, Family.UNKNOWN, None, None, None, None, consumed)
    fields = line[len(V1_PREFIX) :].split(b" ")
    if len(fields) != 5:
        raise ProxyProtocolError("PROXY v1 header needs exactly two addresses and two ports")
    family = Family.TCP4 if proto == b"TCP4" else Family.TCP6
    src, dst = (_v1_address(f, family) for f in fields[1:3])
    sport, dport = (_v1_port(f) for f in fields[3:5])
    return ProxyHeader(1, Command.PROXY, family, src, sport, dst, dport, consumed)


def _v1_address(text: bytes, family: Family) -> str:
    if family is Family.TCP4:
        if _IPV4.fullmatch(text) is None:
            raise ProxyProtocolError("invalid IPv4 address in PROXY v1 header")
        return text.decode("ascii")
    # Only hex digits, colons and dots: Python would also take a "%zone" suffix.
    if _IPV6_CHARS.fullmatch(text) is None:
        raise ProxyProtocolError("invalid IPv6 address in PROXY v1 header")
    try:
        return str(ipaddress.IPv6Address(text.decode("ascii")))
    except ValueError:
        raise ProxyProtocolError("invalid IPv6 address in PROXY v1 header") from None


def _v1_port(text: bytes) -> int:
    if _PORT.fullmatch(text) is None or int(text) > 0xFFFF:
        raise ProxyProtocolError("invalid port in PROXY v1 header")
    return int(text)


# -- version 2 ----------------------------------------------------------------------------

_INET, _INET6, _UNIX = 1, 2, 3
_STREAM, _DGRAM = 1, 2
_ADDRESS_LEN = {_INET: 12, _INET6: 36, _UNIX: 216}
_UNIX_PATH = 108


def _parse_v2(buf: bytes) -> ProxyHeader | NeedMore:
    sig = buf[: len(SIGNATURE_V2)]
    if not SIGNATURE_V2.startswith(sig):
        raise ProxyProtocolError("not a PROXY protocol header")
    if len(buf) > 12 and buf[12] >> 4 != 2:
        raise ProxyProtocolError("unsupported PROXY v2 version")
    if len(buf) > 12 and buf[12] & 0x0F > 1:
        raise ProxyProtocolError("unknown PROXY v2 command")
    if len(buf) < V2_FIXED:
        return NeedMore(V2_FIXED)
    command = Command.LOCAL if buf[12] & 0x0F == 0 else Command.PROXY
    fam_byte = buf[13]
    (length,) = struct.unpack_from("!H", buf, 14)
    total = V2_FIXED + length
    if len(buf) < total:
        return NeedMore(total)
    block = buf[V2_FIXED:total]
    family, transport = fam_byte >> 4, fam_byte & 0x0F
    if command is Command.LOCAL:
        # The spec: "discard the protocol block including the family which is ignored".
        # Only an AF_UNSPEC block has a known layout (TLVs only), so only it is read.
        tlvs = _tlvs(buf, V2_FIXED, total) if fam_byte == 0 else {}
        return ProxyHeader(2, command, Family.UNKNOWN, None, None, None, None, total, tlvs)
    if family > _UNIX or transport > _DGRAM:
        raise ProxyProtocolError("invalid PROXY v2 address family or transport")
    if family == 0:
        tlvs = _tlvs(buf, V2_FIXED, total)
        return ProxyHeader(2, command, Family.UNKNOWN, None, None, None, None, total, tlvs)
    if transport == 0:
        # Valid nibbles, unspecified pair: no known layout, nothing to read but the length.
        return ProxyHeader(2, command, Family.UNKNOWN, None, None, None, None, total)
    need = _ADDRESS_LEN[family]
    if len(block) < need:
        raise ProxyProtocolError("PROXY v2 address block too short for its family")
    tlvs = _tlvs(buf, V2_FIXED + need, total)
    if transport == _DGRAM:
        # Datagrams cannot reach an IMAP/POP3 listener: fall back to UNSPEC as the spec asks.
        return ProxyHeader(2, command, Family.UNKNOWN, None, None, None, None, total, tlvs)
    if family == _UNIX:
        src = _unix_path(block[:_UNIX_PATH])
        dst = _unix_path(block[_UNIX_PATH : 2 * _UNIX_PATH])
        return ProxyHeader(2, command, Family.UNIX, src, 0, dst, 0, total, tlvs)
    size = 4 if family == _INET else 16
    make = ipaddress.IPv4Address if family == _INET else ipaddress.IPv6Address
    src, dst = str(make(block[:size])), str(make(block[size : 2 * size]))
    sport, dport = struct.unpack_from("!HH", block, 2 * size)
    fam = Family.TCP4 if family == _INET else Family.TCP6
    return ProxyHeader(2, command, fam, src, sport, dst, dport, total, tlvs)


def _unix_path(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("utf-8", "backslashreplace")


def _tlvs(buf: bytes, start: int, end: int) -> dict[int, bytes]:
    """Read the TLV vectors in ``buf[start:end]``; the first of a repeated type wins."""
    out: dict[int, bytes] = {}
    pos = start
    while pos < end:
        if end - pos < 3:
            raise ProxyProtocolError("truncated PROXY v2 TLV")
        kind = buf[pos]
        (size,) = struct.unpack_from("!H", buf, pos + 1)
        value_end = pos + 3 + size
        if value_end > end:
            raise ProxyProtocolError("PROXY v2 TLV runs past the header")
        if kind == PP2_TYPE_CRC32C:
            if size != 4:
                raise ProxyProtocolError("PROXY v2 CRC32C TLV must hold 4 bytes")
            zeroed = buf[: pos + 3] + b"\x00\x00\x00\x00" + buf[value_end:end]
            if crc32c(zeroed) != int.from_bytes(buf[pos + 3 : value_end], "big"):
                raise ProxyProtocolError("PROXY v2 header checksum mismatch")
        out.setdefault(kind, buf[pos + 3 : value_end])
        pos = value_end
    return out


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli, RFC 4960 appendix B); headers are short, so pure Python does."""
    crc = 0xFFFFFFFF
    table = _CRC32C
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# -- building (tests, bench) --------------------------------------------------------------


def build_v1(
    src_ip: str | None = None,
    src_port: int = 0,
    dst_ip: str | None = None,
    dst_port: int = 0,
) -> bytes:
    """A v1 line; with no addresses, ``PROXY UNKNOWN``. The family follows the addresses."""
    if src_ip is None or dst_ip is None:
        return b"PROXY UNKNOWN\r\n"
    src, dst = ipaddress.ip_address(src_ip), ipaddress.ip_address(dst_ip)
    if src.version != dst.version:
        raise ValueError("source and destination must be the same IP version")
    proto = "TCP4" if src.version == 4 else "TCP6"
    return f"PROXY {proto} {src} {dst} {int(src_port)} {int(dst_port)}\r\n".encode("ascii")


def build_v2(
    src_ip: str | None = None,
    src_port: int = 0,
    dst_ip: str | None = None,
    dst_port: int = 0,
    *,
    command: Command | str = Command.PROXY,
    family: Family | str | None = None,
    tlvs: Mapping[int, bytes] | Iterable[tuple[int, bytes]] = (),
    checksum: bool = False,
) -> bytes:
    """A v2 header. ``family`` defaults from the addresses (UNKNOWN without any); for UNIX
    the "ips" are socket paths. ``checksum`` appends a CRC32C TLV, as senders may."""
    command = Command(command)
    if family is None:
        if src_ip is None or dst_ip is None:
            family = Family.UNKNOWN
        else:
            family = Family.TCP4 if ipaddress.ip_address(src_ip).version == 4 else Family.TCP6
    family = Family(family)
    if command is Command.LOCAL or family is Family.UNKNOWN:
        fam_byte, block = 0x00, b""
    elif family is Family.UNIX:
        fam_byte = 0x31
        block = b"".join(
            p.encode("utf-8").ljust(_UNIX_PATH, b"\x00")[:_UNIX_PATH] for p in (src_ip, dst_ip)
        )
    else:
        make = ipaddress.IPv4Address if family is Family.TCP4 else ipaddress.IPv6Address
        fam_byte = 0x11 if family is Family.TCP4 else 0x21
        block = make(src_ip).packed + make(dst_ip).packed + struct.pack("!HH", src_port, dst_port)
    items = list(tlvs.items()) if isinstance(tlvs, Mapping) else list(tlvs)
    for kind, value in items:
        block += struct.pack("!BH", kind, len(value)) + value
    crc_at = -1
    if checksum:
        crc_at = V2_FIXED + len(block) + 3
        block += struct.pack("!BH", PP2_TYPE_CRC32C, 4) + b"\x00" * 4
    if len(block) > 0xFFFF:
        raise ValueError("PROXY v2 header too long")
    ver_cmd = 0x21 if command is Command.PROXY else 0x20
    header = SIGNATURE_V2 + struct.pack("!BBH", ver_cmd, fam_byte, len(block)) + block
    if checksum:
        crc = crc32c(header).to_bytes(4, "big")
        header = header[:crc_at] + crc + header[crc_at + 4 :]
    return header
