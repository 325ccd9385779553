"""TCP coalescing for GSO writes to the TUN, checked without a kernel: the
merged packet, finished as the kernel finishes NEEDS_CSUM, must carry the
checksum computed from scratch, and cut at gso_size it must give back the
original segments."""

import ipaddress
import struct

import pytest

from meshnode.net.offload import (
    DATA_VALID_HEADER,
    VNET_HDR,
    VNET_HDR_LEN,
    coalesce,
    ipv4_header_checksum,
)


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def tcp_packet(src: str, dst: str, seq: int, payload: bytes, flags: int = 0x10,
               ack: int = 1000, window: int = 500, options: bytes = b"") -> bytes:  # fmt: skip
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    tcp = bytearray(struct.pack("!HHIIBBHHH", 40000, 5201, seq, ack, (5 + len(options) // 4) << 4,
                                flags, window, 0, 0)) + options + payload  # fmt: skip
    if s.version == 4:
        pseudo = s.packed + d.packed + struct.pack("!BBH", 0, 6, len(tcp))
    else:
        pseudo = s.packed + d.packed + struct.pack("!IxxxB", len(tcp), 6)
    struct.pack_into("!H", tcp, 16, ~csum(pseudo + bytes(tcp)) & 0xFFFF)
    if s.version == 4:
        ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 7, 0x4000, 64, 6, 0,
                                   s.packed, d.packed))  # fmt: skip
        struct.pack_into("!H", ip, 10, ipv4_header_checksum(ip))
    else:
        ip = bytearray(struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, 64, s.packed, d.packed))
    return bytes(ip) + bytes(tcp)


def lay_out(packets: list[bytes]) -> tuple[bytearray, list[tuple[int, int]]]:
    buffer, records = bytearray(), []
    for p in packets:
        records.append((len(buffer), len(p)))
        buffer += p + b"\xee" * 16  # junk between, as padding would leave
    return buffer, records


def finish_like_the_kernel(write: list) -> bytes:
    """Complete a NEEDS_CSUM packet the way the kernel does."""
    header = bytes(write[0])
    packet = bytearray(b"".join(bytes(p) for p in write[1:]))
    flags, _gso, _hdr_len, _gso_size, start, offset = VNET_HDR.unpack(header)
    if flags & 1:
        struct.pack_into("!H", packet, start + offset, ~csum(bytes(packet[start:])) & 0xFFFF)
    return bytes(packet)


def segments_of(packet: bytes, header: bytes) -> list[bytes]:
    """Cut a merged packet's payload at gso_size (what TSO would send)."""
    _flags, _gso, hdr_len, gso_size, _s, _o = VNET_HDR.unpack(header)
    payload = packet[hdr_len:]
    return [payload[i : i + gso_size] for i in range(0, len(payload), gso_size)]


@pytest.mark.parametrize(("src", "dst"), [("10.0.0.1", "10.0.0.2"), ("fd00::1", "fd00::2")])
@pytest.mark.parametrize("odd", [False, True], ids=["even", "odd-last"])
def test_a_flow_becomes_one_write_with_a_correct_checksum(src: str, dst: str, odd: bool) -> None:
    mss = 1368
    sizes = [mss] * 9 + [mss - 501 if odd else mss]
    payloads = [bytes([i]) * n for i, n in enumerate(sizes)]
    packets, seq = [], 5000
    for i, p in enumerate(payloads):
        last = i == len(payloads) - 1
        packets.append(tcp_packet(src, dst, seq, p, flags=0x18 if last else 0x10,
                                  options=b"\x01\x01\x08\x0a" + bytes(8)))  # fmt: skip
        seq += len(p)
    buffer, records = lay_out(packets)
    writes = list(coalesce(buffer, records))
    assert len(writes) == 1
    header = bytes(writes[0][0])
    assert len(header) == VNET_HDR_LEN
    flags, gso_type, hdr_len, gso_size, start, offset = VNET_HDR.unpack(header)
    ip_len = 20 if ":" not in src else 40
    assert (flags, gso_type) == (1, 1 if ip_len == 20 else 4)
    assert (hdr_len, gso_size, start, offset) == (ip_len + 32, mss, ip_len, 16)
    merged = finish_like_the_kernel(writes[0])
    expected = tcp_packet(src, dst, 5000, b"".join(payloads), flags=0x18,
                          options=b"\x01\x01\x08\x0a" + bytes(8))  # fmt: skip
    assert merged == expected  # lengths, IP checksum, PSH, and the TCP checksum
    assert segments_of(merged, header) == payloads


def test_gaps_other_flows_and_flags_break_runs() -> None:
    a = [tcp_packet("10.0.0.1", "10.0.0.2", 100 + 1000 * i, b"x" * 1000) for i in range(3)]
    gap = tcp_packet("10.0.0.1", "10.0.0.2", 9999, b"y" * 1000)
    other = tcp_packet("10.0.0.3", "10.0.0.2", 3100, b"z" * 1000)
    syn = tcp_packet("10.0.0.1", "10.0.0.2", 0, b"", flags=0x02)
    udp_like = bytes([0x45]) + bytes(27)
    buffer, records = lay_out([*a, gap, other, syn, udp_like])
    writes = list(coalesce(buffer, records))
    assert [len(w) for w in writes] == [4, 2, 2, 2, 2]  # 3 merged, then single packets
    assert all(bytes(w[0]) == DATA_VALID_HEADER for w in writes[1:])
    singles = [bytes(w[1]) for w in writes[1:]]
    assert singles == [gap, other, syn, udp_like]  # untouched


def test_a_short_segment_closes_the_run() -> None:
    packets = [tcp_packet("10.0.0.1", "10.0.0.2", 0, b"a" * 1000),
               tcp_packet("10.0.0.1", "10.0.0.2", 1000, b"b" * 500),
               tcp_packet("10.0.0.1", "10.0.0.2", 1500, b"c" * 1000)]  # fmt: skip
    buffer, records = lay_out(packets)
    writes = list(coalesce(buffer, records))
    assert len(writes) == 2
    assert finish_like_the_kernel(writes[1]) == packets[2]


def test_runs_stop_below_64_kib() -> None:
    packets = [tcp_packet("10.0.0.1", "10.0.0.2", 1400 * i, b"q" * 1400) for i in range(60)]
    buffer, records = lay_out(packets)
    writes = list(coalesce(buffer, records))
    for w in writes:
        merged = finish_like_the_kernel(w)
        assert len(merged) <= 65535
    assert sum(len(segments_of(finish_like_the_kernel(w), bytes(w[0]))) if len(w) > 2 else 1
               for w in writes) == 60  # fmt: skip


@pytest.mark.parametrize(("src", "dst"), [("10.0.0.1", "10.0.0.2"), ("fd00::1", "fd00::2")])
def test_a_run_never_overflows_the_length_field(src: str, dst: str) -> None:
    # 50 × 1310 payload bytes + a 20-byte TCP header is 65520: within IPv6's
    # payload length, but IPv4's total length would be 65540
    packets = [tcp_packet(src, dst, 1310 * i, b"r" * 1310) for i in range(50)]
    buffer, records = lay_out(packets)
    writes = list(coalesce(buffer, records))
    ip_len = 40 if ":" in src else 20
    for w in writes:
        merged = finish_like_the_kernel(w)
        length_field = struct.unpack_from("!H", merged, 4 if ip_len == 40 else 2)[0]
        extra = 40 if ip_len == 40 else 0  # IPv6 does not count its own header
        assert length_field + extra == len(merged) <= 65535 + extra
    assert len(writes) == (1 if ip_len == 40 else 2)
