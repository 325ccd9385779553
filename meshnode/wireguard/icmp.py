"""ICMP "host unreachable" for an inner packet that no peer can take.

The kernel's WireGuard answers a packet towards an address no peer's allowed
IPs cover with an ICMP destination-unreachable (wg_xmit, icmp_ndo_send), so
a program that connects there fails at once (EHOSTUNREACH) instead of
waiting minutes for a timeout; wireguard-go sends nothing. meshnode answers
as the kernel does, by writing the error back into the TUN.

A packet written into the TUN arrives at the host as if from the network,
and the host drops one whose source is its own address: the error therefore
comes from the unreachable destination itself (ping shows "From
<destination> ... Destination Host Unreachable"). As RFC 1122 and RFC 4443
ask, there is no error about an error, a fragment after the first, or a
packet from or to a multicast, unspecified or loopback address.
"""

from __future__ import annotations

import struct

from .checksum import internet_checksum

_ICMP, _ICMPV6 = 1, 58
_V6_FRAGMENT = 44
_V6_EXTENSIONS = frozenset({0, 43, 60})  # hop-by-hop, routing, destination options
_V4_ERRORS = frozenset({3, 4, 5, 11, 12})  # destination unreachable, ..., parameter problem
_V4_QUOTE = 576 - 20 - 8  # the whole error fits in 576 bytes, as Linux sends them
_V6_QUOTE = 1280 - 40 - 8  # the whole error fits in the minimum IPv6 MTU (RFC 4443)
_V4_HEADER = struct.Struct("!BBHHHBBH4s4s")
_V6_HEADER = struct.Struct("!IHBB16s16s")
_ERROR_HEADER = struct.Struct("!BBHI")  # type, code, checksum, unused


def host_unreachable(packet: bytes | bytearray | memoryview, size: int) -> bytes | None:
    """The ICMP or ICMPv6 error to write back for the inner packet
    packet[:size], or None when none is due."""
    if size < 1:
        return None
    version = packet[0] >> 4
    if version == 4:
        return _unreachable_v4(bytes(packet[: min(size, _V4_QUOTE)]), size)
    if version == 6:
        return _unreachable_v6(bytes(packet[: min(size, _V6_QUOTE)]), size)
    return None


def _v4_ordinary(address: bytes) -> bool:
    # not 0.0.0.0/8, not loopback, not multicast or reserved (224/3, broadcast)
    return 0 < address[0] < 224 and address[0] != 127


def _unreachable_v4(quote: bytes, size: int) -> bytes | None:
    header_length = (quote[0] & 0x0F) * 4
    if header_length < 20 or size < header_length:
        return None
    _, tos, _, _, fragment, _, protocol, _, source, destination = _V4_HEADER.unpack_from(quote)
    if fragment & 0x1FFF:
        return None  # not the first fragment
    if not (_v4_ordinary(source) and _v4_ordinary(destination)):
        return None
    if protocol == _ICMP and (size <= header_length or quote[header_length] in _V4_ERRORS):
        return None  # an ICMP error (or a truncated ICMP message): never answered
    body = _ERROR_HEADER.pack(3, 1, 0, 0) + quote  # destination unreachable: host
    body = body[:2] + internet_checksum(body).to_bytes(2, "big") + body[4:]
    total = 20 + len(body)
    # the packet's TOS with precedence "internetwork control", TTL 64, as Linux's
    header = _V4_HEADER.pack(0x45, tos | 0xC0, total, 0, 0, 64, _ICMP, 0, destination, source)
    header = header[:10] + internet_checksum(header).to_bytes(2, "big") + header[12:]
    return header + body


_V6_LOOPBACK = bytes(15) + b"\x01"


def _v6_ordinary(address: bytes) -> bool:
    # not multicast, not unspecified, not loopback
    return address[0] != 0xFF and address not in (bytes(16), _V6_LOOPBACK)


def _v6_upper(quote: bytes, size: int, next_header: int) -> tuple[int, int] | None:
    """The upper-layer protocol and its offset past the extension headers, or
    None for a fragment after the first (or headers beyond the quote)."""
    offset = 40
    while next_header in _V6_EXTENSIONS or next_header == _V6_FRAGMENT:
        if offset + 8 > min(size, len(quote)):
            return None
        if next_header == _V6_FRAGMENT:
            if int.from_bytes(quote[offset + 2 : offset + 4], "big") & 0xFFF8:
                return None  # not the first fragment
            length = 8
        else:
            length = (quote[offset + 1] + 1) * 8
        next_header = quote[offset]
        offset += length
    return next_header, offset


def _unreachable_v6(quote: bytes, size: int) -> bytes | None:
    if size < 40:
        return None
    _, _, next_header, _, source, destination = _V6_HEADER.unpack_from(quote)
    if not (_v6_ordinary(source) and _v6_ordinary(destination)):
        return None
    upper = _v6_upper(quote, size, next_header)
    if upper is None:
        return None
    protocol, offset = upper
    if protocol == _ICMPV6 and (size <= offset or offset >= len(quote) or quote[offset] < 128):
        return None  # an ICMPv6 error (types below 128), or truncated
    body = _ERROR_HEADER.pack(1, 3, 0, 0) + quote  # destination unreachable: address
    pseudo = destination + source + struct.pack("!I3xB", len(body), _ICMPV6)
    body = body[:2] + internet_checksum(pseudo + body).to_bytes(2, "big") + body[4:]
    header = _V6_HEADER.pack(6 << 28, len(body), _ICMPV6, 64, destination, source)
    return header + body
