"""The mesh's coordination channel inside WireGuard: UDP datagrams to a
reserved port on a member's overlay address, taken out of the data path by
the core, where the authenticated sender is known, and never written to the
TUN. Packets from the TUN to that port are dropped, so no local process can
speak for this node's agent; the agent's own go in with `Device.send_coordination`.

Only plain UDP is taken: IPv4 without fragments, IPv6 without extension
headers (the agent's messages are small and never fragmented).
"""

from __future__ import annotations

import ipaddress
import struct

from .checksum import internet_checksum

_UDP = 17
_PORTS = struct.Struct("!HH")
_V6_HEADER = struct.Struct("!IHBB16s16s")  # version/class/flow, length, next header, hops


def coordination_payload(packet: bytes | bytearray | memoryview, offset: int, length: int,
                         port: int) -> bytes | None:  # fmt: skip
    """The UDP payload if the IP packet at buffer[offset:offset+length] is a
    datagram to `port`, else None."""
    version = packet[offset] >> 4
    if version == 4:
        if packet[offset + 9] != _UDP:
            return None
        if (packet[offset + 6] & 0x3F) or packet[offset + 7]:
            return None  # a fragment (more fragments, or an offset)
        start = offset + (packet[offset] & 0x0F) * 4
    elif version == 6:
        if packet[offset + 6] != _UDP:
            return None
        start = offset + 40
    else:
        return None
    end = offset + length
    if start + 8 > end:
        return None
    _source_port, destination_port = _PORTS.unpack_from(packet, start)
    if destination_port != port:
        return None
    return bytes(packet[start + 8 : end])


def is_coordination(packet: bytes | bytearray | memoryview, length: int, port: int) -> bool:
    """Whether an inner packet (from the TUN) is addressed to the coordination port."""
    return length >= 28 and coordination_payload(packet, 0, length, port) is not None


def coordination_packet(source: ipaddress.IPv6Address, destination: ipaddress.IPv6Address,
                        port: int, payload: bytes) -> bytes:  # fmt: skip
    """An IPv6 UDP packet from port to port carrying payload, with its checksum
    (mandatory in IPv6)."""
    udp_length = 8 + len(payload)
    src, dst = source.packed, destination.packed
    pseudo = src + dst + struct.pack("!IxxxB", udp_length, _UDP)
    header = struct.pack("!HHHH", port, port, udp_length, 0)
    checksum = internet_checksum(pseudo + header + payload) or 0xFFFF
    udp = struct.pack("!HHHH", port, port, udp_length, checksum) + payload
    ip = _V6_HEADER.pack(6 << 28, udp_length, _UDP, 64, src, dst)
    return ip + udp
