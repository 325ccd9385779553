"""virtio-net headers for a TUN opened with IFF_VNET_HDR, and receive-side
coalescing of TCP segments into one GSO write.

Writing 40 consecutive segments of one TCP flow as one super-packet lets the
kernel take them through its IP and TCP stack once, as the NIC's GRO would
have. The kernel finishes the checksum (NEEDS_CSUM) from the pseudo-header
sum we put in the TCP checksum field, and splits the packet again only if it
forwards it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

VNET_HDR_LEN = 10
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_F_DATA_VALID = 2
VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1
VIRTIO_NET_HDR_GSO_TCPV6 = 4
VNET_HDR = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset

# Single packets were authenticated by WireGuard: their checksums need no check,
# as the kernel's own WireGuard marks them too.
DATA_VALID_HEADER = VNET_HDR.pack(VIRTIO_NET_HDR_F_DATA_VALID, 0, 0, 0, 0, 0)

_TCP = 6
_ACK, _PSH = 0x10, 0x08
_MAX_IP_PAYLOAD = 65535
_MAX_SEGMENTS = 64

# IPv4: version/ihl, tos, total length, id, flags/fragment, ttl, protocol, checksum, src, dst
_V4 = struct.Struct("!BBHHHBBH4s4s")
# IPv6: version/class/flow, payload length, next header, hop limit, src, dst
_V6 = struct.Struct("!IHBB16s16s")
# TCP: ports, seq, ack, data offset, flags, window
_TCP_HDR = struct.Struct("!HHIIBBH")
_V4_CSUM = struct.Struct("!10H")


def _fold(total: int) -> int:
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _sum16(data: bytes) -> int:
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


def ipv4_header_checksum(header: bytes | bytearray | memoryview) -> int:
    words = _V4_CSUM.unpack_from(header)
    return ~_fold(sum(words) - words[5]) & 0xFFFF


class _Run:
    """Consecutive segments of one flow being merged behind the first one's headers."""

    __slots__ = (
        "flow", "headers_len", "ip_len", "is_v6", "last_flags", "last_window",
        "next_seq", "offset", "options", "payload", "pieces", "segment",
    )  # fmt: skip

    def __init__(
        self, flow: bytes, offset: int, ip_len: int, headers_len: int, options: bytes,
        next_seq: int, segment: int, is_v6: bool, flags: int, window: int,
    ) -> None:  # fmt: skip
        self.flow = flow
        self.offset = offset
        self.ip_len = ip_len
        self.headers_len = headers_len
        self.options = options
        self.next_seq = next_seq
        self.segment = segment  # payload bytes of every segment but the last
        self.payload = segment
        self.pieces: list[tuple[int, int]] = []  # (offset, length) of later payloads
        self.is_v6 = is_v6
        self.last_flags = flags
        self.last_window = window


def coalesce(buffer: bytearray, records: list[tuple[int, int]]) -> Iterator[list]:
    """Group inner packets into TUN writes, each a list for os.writev.

    A write is [virtio header, first packet, payload of the 2nd, payload of the
    3rd, ...]; headers of merged packets are rewritten in place in buffer.
    """
    view = memoryview(buffer)
    run: _Run | None = None
    for offset, length in records:
        candidate = _tcp_segment(buffer, offset, length)
        if candidate is not None and run is not None and _extends(run, candidate):
            _flow, _seq, payload, flags, window, headers_len, _options, _ip_len, _v6 = candidate
            run.pieces.append((offset + headers_len, payload))
            run.payload += payload
            run.next_seq = (run.next_seq + payload) & 0xFFFFFFFF
            run.last_flags = flags
            run.last_window = window
            if payload < run.segment or flags & _PSH or len(run.pieces) + 1 >= _MAX_SEGMENTS:
                yield _finish(buffer, view, run)
                run = None
            continue
        if run is not None:
            yield _finish(buffer, view, run)
            run = None
        if candidate is None:
            yield [DATA_VALID_HEADER, view[offset : offset + length]]
            continue
        flow, seq, payload, flags, window, headers_len, options, ip_len, is_v6 = candidate
        if payload == 0 or flags & _PSH:
            yield [DATA_VALID_HEADER, view[offset : offset + length]]
            continue
        run = _Run(flow, offset, ip_len, headers_len, options, (seq + payload) & 0xFFFFFFFF,
                   payload, is_v6, flags, window)  # fmt: skip
    if run is not None:
        yield _finish(buffer, view, run)


def _tcp_segment(buffer: bytearray, offset: int, length: int) -> tuple | None:
    """The fields of a plain TCP segment that may be merged, or None.

    Only ACK or ACK+PSH segments without IP options, fragments or IPv6
    extension headers qualify; the flow key includes what must match exactly.
    """
    version = buffer[offset] >> 4
    if version == 4:
        if length < 40:
            return None
        ver_ihl, tos, total, _id, frag, ttl, proto, _csum, src, dst = _V4.unpack_from(
            buffer, offset
        )
        if ver_ihl != 0x45 or proto != _TCP or frag & 0x3FFF or total != length:
            return None
        ip_len, is_v6 = 20, False
        key = bytes((tos, ttl, frag >> 8)) + src + dst
    elif version == 6:
        if length < 60:
            return None
        first, payload_len, next_header, hops, src, dst = _V6.unpack_from(buffer, offset)
        if next_header != _TCP or payload_len + 40 != length:
            return None
        ip_len, is_v6 = 40, True
        key = first.to_bytes(4, "big") + bytes((hops,)) + src + dst
    else:
        return None
    sport, dport, seq, ack, data_offset, flags, window = _TCP_HDR.unpack_from(
        buffer, offset + ip_len
    )
    tcp_len = (data_offset >> 4) * 4
    if flags not in (_ACK, _ACK | _PSH) or tcp_len < 20 or ip_len + tcp_len > length:
        return None
    headers_len = ip_len + tcp_len
    options = bytes(buffer[offset + ip_len + 20 : offset + headers_len])
    flow = key + struct.pack("!HHI", sport, dport, ack)
    payload = length - headers_len
    return flow, seq, payload, flags, window, headers_len, options, ip_len, is_v6


def _extends(run: _Run, candidate: tuple) -> bool:
    flow, seq, payload, _flags, _window, headers_len, options, _ip_len, _v6 = candidate
    return (
        flow == run.flow
        and seq == run.next_seq
        and headers_len == run.headers_len
        and options == run.options
        and 0 < payload <= run.segment
        and run.headers_len + run.payload + payload - run.ip_len <= _MAX_IP_PAYLOAD
    )


def _finish(buffer: bytearray, view: memoryview, run: _Run) -> list:
    """Rewrite the first packet's headers for the whole run; return its writev list."""
    first = view[run.offset : run.offset + run.headers_len + run.segment]
    if not run.pieces:
        return [DATA_VALID_HEADER, first]
    o = run.offset
    tcp = o + run.ip_len
    tcp_length = run.headers_len - run.ip_len + run.payload
    if run.last_flags & _PSH:
        buffer[tcp + 13] |= _PSH
    struct.pack_into("!H", buffer, tcp + 14, run.last_window)
    if run.is_v6:
        struct.pack_into("!H", buffer, o + 4, tcp_length)
        pseudo = _sum16(bytes(buffer[o + 8 : o + 40])) + tcp_length + _TCP
        gso_type = VIRTIO_NET_HDR_GSO_TCPV6
    else:
        struct.pack_into("!H", buffer, o + 2, run.ip_len + tcp_length)
        struct.pack_into("!H", buffer, o + 10, 0)
        struct.pack_into("!H", buffer, o + 10, ipv4_header_checksum(buffer[o : o + 20]))
        pseudo = _sum16(bytes(buffer[o + 12 : o + 20])) + tcp_length + _TCP
        gso_type = VIRTIO_NET_HDR_GSO_TCPV4
    # NEEDS_CSUM: the kernel adds the segment's own sum to this folded seed
    struct.pack_into("!H", buffer, tcp + 16, _fold(pseudo))
    header = VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type, run.headers_len, run.segment,
                           run.ip_len, 16)  # fmt: skip
    return [header, first] + [view[p : p + n] for p, n in run.pieces]
