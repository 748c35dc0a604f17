"""PROXY protocol v1/v2 headers: spec examples, every rejection, partial input, fuzzing."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.proxyproto import (
    MAX_V1,
    PP2_TYPE_ALPN,
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_CRC32C,
    PP2_TYPE_NOOP,
    PP2_TYPE_SSL,
    PP2_TYPE_UNIQUE_ID,
    SIGNATURE_V2,
    Command,
    Family,
    NeedMore,
    ProxyHeader,
    ProxyProtocolError,
    build_v1,
    build_v2,
    crc32c,
    parse,
)


def v2(ver_cmd: int, fam: int, block: bytes, length: int | None = None) -> bytes:
    size = len(block) if length is None else length
    return SIGNATURE_V2 + struct.pack("!BBH", ver_cmd, fam, size) + block


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


INET_BLOCK = bytes([10, 0, 0, 1, 10, 0, 0, 2]) + struct.pack("!HH", 5000, 143)

# -- version 1 ----------------------------------------------------------------------------


def test_v1_spec_example_keeps_what_follows() -> None:
    data = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n"
    header = parse(data)
    assert header == ProxyHeader(
        1, Command.PROXY, Family.TCP4, "192.168.0.1", 56324, "192.168.0.11", 443, 47
    )
    assert isinstance(header, ProxyHeader)
    assert data[header.consumed :] == b"GET / HTTP/1.1\r\n"
    assert header.source == ("192.168.0.1", 56324)
    assert header.destination == ("192.168.0.11", 443)


def test_v1_longest_lines_the_spec_lists() -> None:
    tcp4 = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"
    assert len(tcp4) == 56 and isinstance(parse(tcp4), ProxyHeader)
    ffff = ":".join(["ffff"] * 8).encode()
    tcp6 = b"PROXY TCP6 " + ffff + b" " + ffff + b" 65535 65535\r\n"
    assert len(tcp6) == 104
    header = parse(tcp6)
    assert isinstance(header, ProxyHeader) and header.family is Family.TCP6
    assert header.src_ip == str(ipaddress.IPv6Address(ffff.decode()))
    worst = b"PROXY UNKNOWN " + ffff + b" " + ffff + b" 65535 65535\r\n"
    assert len(worst) == MAX_V1
    header = parse(worst)
    assert isinstance(header, ProxyHeader) and header.consumed == MAX_V1


@pytest.mark.parametrize(
    "line", [b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN whatever the sender put here 1 2\r\n"]
)
def test_v1_unknown_ignores_the_rest(line: bytes) -> None:
    header = parse(line + b"* OK")
    assert header == ProxyHeader(
        1, Command.PROXY, Family.UNKNOWN, None, None, None, None, len(line)
    )
    assert header.source is None and header.destination is None


def test_v1_tcp6_forms() -> None:
    header = parse(b"PROXY TCP6 2001:DB8::1 ::1 0 65535\r\n")
    assert isinstance(header, ProxyHeader)
    assert (header.src_ip, header.dst_ip, header.src_port, header.dst_port) == (
        "2001:db8::1",
        "::1",
        0,
        65535,
    )
    mapped = parse(b"PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n")
    assert isinstance(mapped, ProxyHeader)
    assert ipaddress.IPv6Address(mapped.src_ip).ipv4_mapped == ipaddress.IPv4Address("192.0.2.1")


V1_INVALID = [
    b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4\r\n",
    b"PROXY \r\n",
    b"PROXY UNKNOWNX\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
    b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
    b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
    b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
    b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
    b"PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n",
    b"PROXY TCP6 ::ffff:01.2.3.4 ::1 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 0443 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999999\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX\r\n",
    b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\xff\r\n",
    b"PROXY UNKNOWN \x00\r\n",
    b"PROXY UNKNOWN " + b"x" * 92 + b"\r\n",  # 108 bytes
    b"A001 LOGIN alice secret\r\n",
    b"GET / HTTP/1.1\r\n",
    b"\x16\x03\x01\x02\x00",  # a TLS ClientHello
]


@pytest.mark.parametrize("data", V1_INVALID)
def test_v1_rejections(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse(data)


@pytest.mark.parametrize(
    "data",
    [
        b"A",
        b"P\x00",
        b"PROXY-",
        b"PROXY X",
        b"PROXY TCP4X",
        b"PROXY TCP7",
        b"PROXY U\n",
        b"PROXY TCP4 1.2.3.4\x7f",
        b"\r\n\r\n\x00\r\nQUIX",
        b"\r\x00",
    ],
)
def test_junk_is_refused_without_waiting_for_more(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse(data)


def test_v1_without_crlf_within_107_bytes() -> None:
    data = b"PROXY UNKNOWN " + b"x" * 200
    assert isinstance(parse(data[: MAX_V1 - 1]), NeedMore)
    with pytest.raises(ProxyProtocolError, match="longer than 107"):
        parse(data[:MAX_V1])
    # A CR as byte 107 would need byte 108 to be its LF: too long as well.
    with pytest.raises(ProxyProtocolError):
        parse(b"PROXY UNKNOWN " + b"x" * 92 + b"\r")


# -- version 2 ----------------------------------------------------------------------------


def test_v2_tcp4_with_tlvs_and_following_data() -> None:
    block = INET_BLOCK + tlv(PP2_TYPE_ALPN, b"imap") + tlv(PP2_TYPE_NOOP, b"")
    data = v2(0x21, 0x11, block) + b"a1 LOGIN"
    header = parse(data)
    assert header == ProxyHeader(
        2,
        Command.PROXY,
        Family.TCP4,
        "10.0.0.1",
        5000,
        "10.0.0.2",
        143,
        16 + len(block),
        {PP2_TYPE_ALPN: b"imap", PP2_TYPE_NOOP: b""},
    )
    assert isinstance(header, ProxyHeader)
    assert data[header.consumed :] == b"a1 LOGIN"


def test_v2_tcp6() -> None:
    src, dst = ipaddress.IPv6Address("2001:db8::1"), ipaddress.IPv6Address("::1")
    header = parse(v2(0x21, 0x21, src.packed + dst.packed + struct.pack("!HH", 1, 65535)))
    assert isinstance(header, ProxyHeader)
    assert (header.family, header.src_ip, header.dst_ip) == (Family.TCP6, "2001:db8::1", "::1")
    assert (header.src_port, header.dst_port) == (1, 65535)


def test_v2_unix_stream() -> None:
    block = b"/run/a.sock".ljust(108, b"\x00") + b"/run/b".ljust(108, b"\x00")
    header = parse(v2(0x21, 0x31, block))
    assert isinstance(header, ProxyHeader)
    assert (header.family, header.src_ip, header.dst_ip) == (Family.UNIX, "/run/a.sock", "/run/b")
    assert header.source is None  # not an IP client: keep the socket's address


def test_v2_local_ignores_the_block_whatever_the_family() -> None:
    for fam, block in [(0x00, b""), (0x11, INET_BLOCK), (0xFF, b"junk")]:
        header = parse(v2(0x20, fam, block))
        assert isinstance(header, ProxyHeader)
        assert (header.command, header.family, header.source) == (
            Command.LOCAL,
            Family.UNKNOWN,
            None,
        )
        assert header.consumed == 16 + len(block)
    header = parse(v2(0x20, 0x00, tlv(PP2_TYPE_UNIQUE_ID, b"x")))
    assert isinstance(header, ProxyHeader) and header.tlvs == {PP2_TYPE_UNIQUE_ID: b"x"}


@pytest.mark.parametrize(
    ("fam", "block", "tlvs"),
    [
        (0x00, b"", {}),
        (0x00, tlv(PP2_TYPE_AUTHORITY, b"mail.example"), {PP2_TYPE_AUTHORITY: b"mail.example"}),
        (0x12, INET_BLOCK, {}),  # UDP: unsupported, falls back to UNSPEC as the spec asks
        (0x22, bytes(36) + tlv(PP2_TYPE_NOOP, b"ab"), {PP2_TYPE_NOOP: b"ab"}),
        (0x32, bytes(216), {}),
        (0x10, b"anything", {}),  # valid nibbles, no layout: skipped by its length
    ],
)
def test_v2_unspec_and_fallbacks(fam: int, block: bytes, tlvs: dict[int, bytes]) -> None:
    header = parse(v2(0x21, fam, block))
    assert isinstance(header, ProxyHeader)
    assert (header.command, header.family, header.src_ip, header.tlvs) == (
        Command.PROXY,
        Family.UNKNOWN,
        None,
        tlvs,
    )


def test_v2_tls_offloaded_by_the_balancer() -> None:
    """HAProxy's send-proxy-v2-ssl: client flags, verify result, then sub-TLVs."""
    ssl = bytes([0x01]) + bytes(4) + tlv(0x21, b"TLSv1.3") + tlv(0x23, b"TLS_AES_128_GCM_SHA256")
    header = parse(v2(0x21, 0x11, INET_BLOCK + tlv(PP2_TYPE_SSL, ssl)))
    assert isinstance(header, ProxyHeader) and header.tls
    for value in (bytes(5), b""):  # the TLV without the PP2_CLIENT_SSL bit, or empty
        header = parse(v2(0x21, 0x11, INET_BLOCK + tlv(PP2_TYPE_SSL, value)))
        assert isinstance(header, ProxyHeader) and not header.tls
    plain = parse(v2(0x21, 0x11, INET_BLOCK))
    assert isinstance(plain, ProxyHeader) and not plain.tls


def test_v2_repeated_tlv_keeps_the_first() -> None:
    block = INET_BLOCK + tlv(PP2_TYPE_NOOP, b"1") + tlv(PP2_TYPE_NOOP, b"2")
    header = parse(v2(0x21, 0x11, block))
    assert isinstance(header, ProxyHeader) and header.tlvs == {PP2_TYPE_NOOP: b"1"}


def test_v2_checksum() -> None:
    good = build_v2("192.0.2.1", 1, "192.0.2.2", 2, tlvs={PP2_TYPE_UNIQUE_ID: b"u"}, checksum=True)
    header = parse(good)
    assert isinstance(header, ProxyHeader) and PP2_TYPE_CRC32C in header.tlvs
    bad = bytearray(good)
    bad[-1] ^= 1
    with pytest.raises(ProxyProtocolError, match="checksum"):
        parse(bytes(bad))
    flipped = bytearray(good)
    flipped[20] ^= 1  # an address byte: covered by the checksum too
    with pytest.raises(ProxyProtocolError, match="checksum"):
        parse(bytes(flipped))


def test_crc32c_vector() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # RFC 3720 B.4 check value
    assert crc32c(b"") == 0


V2_INVALID = [
    (v2(0x11, 0x11, INET_BLOCK), "version"),
    (v2(0x31, 0x11, INET_BLOCK), "version"),
    (v2(0x22, 0x11, INET_BLOCK), "command"),
    (v2(0x2F, 0x11, INET_BLOCK), "command"),
    (v2(0x21, 0x41, INET_BLOCK), "family"),
    (v2(0x21, 0x13, INET_BLOCK), "family"),
    (v2(0x21, 0x11, INET_BLOCK[:11]), "too short"),
    (v2(0x21, 0x21, bytes(35)), "too short"),
    (v2(0x21, 0x31, bytes(215)), "too short"),
    (v2(0x21, 0x11, INET_BLOCK + b"\x04\x00"), "truncated"),
    (v2(0x21, 0x11, INET_BLOCK + b"\x04\x00\x05abcd"), "past"),
    (v2(0x21, 0x00, b"\x01"), "truncated"),
    (v2(0x21, 0x11, INET_BLOCK + tlv(PP2_TYPE_CRC32C, b"abc")), "4 bytes"),
    (v2(0x20, 0x00, b"\x01\x00"), "truncated"),
    (SIGNATURE_V2[:5] + b"\x01" + SIGNATURE_V2[6:] + b"\x21\x11\x00\x00", "not a PROXY"),
]


@pytest.mark.parametrize(("data", "match"), V2_INVALID)
def test_v2_rejections(data: bytes, match: str) -> None:
    with pytest.raises(ProxyProtocolError, match=match):
        parse(data)


def test_v2_length_is_trusted_for_what_follows() -> None:
    header = v2(0x21, 0x11, INET_BLOCK)
    assert parse(header[:16]) == NeedMore(len(header))
    assert parse(header[:-1]) == NeedMore(len(header))
    longest = v2(0x21, 0x00, tlv(PP2_TYPE_NOOP, bytes(0xFFFF - 3)))
    result = parse(longest + b"rest")
    assert isinstance(result, ProxyHeader) and result.consumed == len(longest) == 16 + 0xFFFF


# -- partial input ------------------------------------------------------------------------

VALID = [
    b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
    b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n",
    b"PROXY UNKNOWN\r\n",
    v2(0x21, 0x11, INET_BLOCK + tlv(PP2_TYPE_ALPN, b"pop3")),
    v2(0x20, 0x00, b""),
    build_v2("::1", 1, "::2", 2, checksum=True),
]


@pytest.mark.parametrize("data", VALID)
def test_byte_by_byte(data: bytes) -> None:
    for n in range(len(data)):
        result = parse(data[:n])
        assert isinstance(result, NeedMore), n
        assert n < result.at_least <= len(data)
    header = parse(data)
    assert isinstance(header, ProxyHeader) and header.consumed == len(data)


@pytest.mark.parametrize("data", V1_INVALID[:-3])
def test_invalid_v1_never_asks_for_more_than_its_line(data: bytes) -> None:
    """Feeding an invalid header byte by byte ends in an error, not in waiting forever."""
    with pytest.raises(ProxyProtocolError):
        for n in range(1, len(data) + 1):
            parse(data[:n])


def test_accepts_bytearray_and_memoryview() -> None:
    data = VALID[0] + b"x"
    assert parse(bytearray(data)) == parse(memoryview(data)) == parse(data)


# -- builders and properties --------------------------------------------------------------

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)
tlv_maps = st.dictionaries(
    st.integers(0, 255).filter(lambda t: t != PP2_TYPE_CRC32C),
    st.binary(max_size=64),
    max_size=5,
)


def test_build_v1_unknown_and_mixed_families() -> None:
    assert build_v1() == b"PROXY UNKNOWN\r\n"
    with pytest.raises(ValueError):
        build_v1("1.2.3.4", 1, "::1", 2)


@given(
    st.one_of(st.tuples(ipv4, ipv4), st.tuples(ipv6, ipv6)), ports, ports, st.binary(max_size=20)
)
def test_v1_round_trip(addrs: tuple[str, str], sport: int, dport: int, tail: bytes) -> None:
    src, dst = addrs
    data = build_v1(src, sport, dst, dport)
    header = parse(data + tail)
    assert isinstance(header, ProxyHeader)
    assert (header.src_ip, header.src_port, header.dst_ip, header.dst_port) == (
        src,
        sport,
        dst,
        dport,
    )
    assert header.consumed == len(data) <= MAX_V1


@given(
    st.one_of(st.tuples(ipv4, ipv4), st.tuples(ipv6, ipv6)),
    ports,
    ports,
    tlv_maps,
    st.booleans(),
    st.binary(max_size=20),
)
def test_v2_round_trip(
    addrs: tuple[str, str],
    sport: int,
    dport: int,
    tlvs: dict[int, bytes],
    checksum: bool,
    tail: bytes,
) -> None:
    src, dst = addrs
    data = build_v2(src, sport, dst, dport, tlvs=tlvs, checksum=checksum)
    header = parse(data + tail)
    assert isinstance(header, ProxyHeader)
    assert (header.version, header.command) == (2, Command.PROXY)
    assert (header.src_ip, header.src_port, header.dst_ip, header.dst_port) == (
        src,
        sport,
        dst,
        dport,
    )
    assert {k: v for k, v in header.tlvs.items() if k != PP2_TYPE_CRC32C} == tlvs
    assert header.consumed == len(data)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_raise_the_protocol_error(data: bytes) -> None:
    for prefix in (b"", b"PROXY ", b"PROXY TCP4 ", b"PROXY TCP6 ", SIGNATURE_V2):
        try:
            result = parse(prefix + data)
        except ProxyProtocolError:
            continue
        if isinstance(result, ProxyHeader):
            assert 0 < result.consumed <= len(prefix + data)


@given(st.sampled_from([0x20, 0x21]), st.integers(0, 255), st.binary(max_size=300))
def test_arbitrary_v2_blocks(ver_cmd: int, fam: int, block: bytes) -> None:
    try:
        result = parse(v2(ver_cmd, fam, block))
    except ProxyProtocolError:
        return
    assert isinstance(result, ProxyHeader) and result.consumed == 16 + len(block)
