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

# The fields a segment is matched on, in one unpack (ints only, nothing allocated).
# IPv4 + TCP: ver/ihl+tos, total length, (id), frag+ttl+protocol, (checksum),
# addresses, ports, seq, ack, data offset, flags, window.
_V4_TCP = struct.Struct("!HH2xI2xQIIIBBH")
# IPv6 + TCP: version/class/flow, payload length, next header, hop limit,
# addresses, ports, seq, ack, data offset, flags, window.
_V6_TCP = struct.Struct("!IHBBQQQQIIIBBH")
_V4_CSUM = struct.Struct("!10H")
_V4_PLAIN = 0x4500  # version 4, 20-byte header (the TOS byte is masked off)
_V4_NOT_FIRST = 0x3FFF << 16  # a fragment offset or more-fragments, in frag+ttl+protocol
_MERGEABLE = (_ACK, _ACK | _PSH)


def _fold(total: int) -> int:
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _sum16(data: bytes) -> int:
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


def ipv4_header_checksum(header: bytes | bytearray | memoryview) -> int:
    words = _V4_CSUM.unpack_from(header)
    return ~_fold(sum(words) - words[5]) & 0xFFFF


def coalesce(buffer: bytearray, records: list[tuple[int, int]]) -> Iterator[list]:
    """Group inner packets into TUN writes, each a list for os.writev.

    A write is [virtio header, first packet, payload of the 2nd, payload of the
    3rd, ...]; headers of merged packets are rewritten in place in buffer.

    Only ACK or ACK+PSH segments without IP options, fragments or IPv6
    extension headers are merged, and only with the segment that directly
    precedes them in sequence, with the same addresses, ports, ACK number,
    TOS or traffic class, TTL and options (as the kernel's GRO). This runs for
    every received packet, so it is written flat: one unpack per packet, the
    run being built kept in locals.
    """
    view = memoryview(buffer)
    unpack_v4 = _V4_TCP.unpack_from
    unpack_v6 = _V6_TCP.unpack_from
    # the run being built: its first packet, and the payloads merged after it
    pieces: list | None = None
    start = run_ip_len = run_headers_len = segment = merged = last_flags = last_window = 0
    key: tuple = ()
    options = b""
    next_seq = limit = 0
    for offset, length in records:
        version = buffer[offset] >> 4
        if version == 4 and length >= 40:
            vt, total, fpt, addresses, ports, seq, ack, data_offset, flags, window = unpack_v4(
                buffer, offset
            )
            ip_len = 20
            mergeable = (
                vt & 0xFF00 == _V4_PLAIN and fpt & 0xFF == _TCP and not fpt & _V4_NOT_FIRST
                and total == length
            )  # fmt: skip
            if mergeable:
                candidate = (vt, fpt, addresses, ports, ack, data_offset)
        elif version == 6 and length >= 60:
            (first, payload_len, next_header, hops, s1, s2, d1, d2, ports, seq, ack, data_offset,
             flags, window) = unpack_v6(buffer, offset)  # fmt: skip
            ip_len = 40
            mergeable = next_header == _TCP and payload_len + 40 == length
            if mergeable:
                candidate = (first, hops, s1, s2, d1, d2, ports, ack, data_offset)
        else:
            mergeable = False
        if mergeable:
            headers_len = ip_len + (data_offset >> 4) * 4
            mergeable = flags in _MERGEABLE and data_offset >= 0x50 and headers_len <= length
        if not mergeable:
            if pieces is not None:
                yield _finish(buffer, view, start, run_ip_len, run_headers_len, segment, merged,
                              last_flags, last_window, pieces)  # fmt: skip
                pieces = None
            yield [DATA_VALID_HEADER, view[offset : offset + length]]
            continue
        payload = length - headers_len
        opts = buffer[offset + ip_len + 20 : offset + headers_len] if data_offset > 0x50 else b""
        if (
            pieces is not None
            and seq == next_seq
            and candidate == key
            and opts == options
            and 0 < payload <= segment
            and merged + payload <= limit
        ):
            pieces.append(view[offset + headers_len : offset + length])
            merged += payload
            next_seq = (seq + payload) & 0xFFFFFFFF
            last_flags = flags
            last_window = window
            if payload < segment or flags & _PSH or len(pieces) + 1 >= _MAX_SEGMENTS:
                yield _finish(buffer, view, start, run_ip_len, run_headers_len, segment, merged,
                              last_flags, last_window, pieces)  # fmt: skip
                pieces = None
            continue
        if pieces is not None:
            yield _finish(buffer, view, start, run_ip_len, run_headers_len, segment, merged,
                          last_flags, last_window, pieces)  # fmt: skip
            pieces = None
        if payload == 0 or flags & _PSH:
            yield [DATA_VALID_HEADER, view[offset : offset + length]]
            continue
        pieces = []
        start, run_ip_len, run_headers_len = offset, ip_len, headers_len
        segment = merged = payload  # every segment but the last has this payload size
        last_flags, last_window = flags, window
        key, options = candidate, opts
        next_seq = (seq + payload) & 0xFFFFFFFF
        # the merged length must fit its 16-bit field: IPv4's counts the IP
        # header, IPv6's does not
        limit = _MAX_IP_PAYLOAD - headers_len + (ip_len if ip_len == 40 else 0)
    if pieces is not None:
        yield _finish(buffer, view, start, run_ip_len, run_headers_len, segment, merged,
                      last_flags, last_window, pieces)  # fmt: skip


def _finish(buffer: bytearray, view: memoryview, o: int, ip_len: int, headers_len: int,
            segment: int, payload: int, last_flags: int, last_window: int,
            pieces: list) -> list:  # fmt: skip
    """Rewrite the run's first packet's headers for the whole run (o is its offset,
    payload the run's payload bytes); return its writev list."""
    first = view[o : o + headers_len + segment]
    if not pieces:
        return [DATA_VALID_HEADER, first]
    tcp = o + ip_len
    tcp_length = headers_len - ip_len + payload
    if last_flags & _PSH:
        buffer[tcp + 13] |= _PSH
    struct.pack_into("!H", buffer, tcp + 14, last_window)
    if ip_len == 40:
        struct.pack_into("!H", buffer, o + 4, tcp_length)
        pseudo = _sum16(bytes(buffer[o + 8 : o + 40])) + tcp_length + _TCP
        gso_type = VIRTIO_NET_HDR_GSO_TCPV6
    else:
        struct.pack_into("!H", buffer, o + 2, ip_len + tcp_length)
        struct.pack_into("!H", buffer, o + 10, 0)
        struct.pack_into("!H", buffer, o + 10, ipv4_header_checksum(buffer[o : o + 20]))
        pseudo = _sum16(bytes(buffer[o + 12 : o + 20])) + tcp_length + _TCP
        gso_type = VIRTIO_NET_HDR_GSO_TCPV4
    # NEEDS_CSUM: the kernel adds the segment's own sum to this folded seed
    struct.pack_into("!H", buffer, tcp + 16, _fold(pseudo))
    header = VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type, headers_len, segment, ip_len, 16)
    return [header, first, *pieces]
