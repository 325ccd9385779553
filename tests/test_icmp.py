"""ICMP host unreachable for inner packets no peer takes (wireguard/icmp.py),
and the device's use of it: into the inbox, within the rate limits."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from meshnode.wireguard.checksum import internet_checksum
from meshnode.wireguard.device import ICMP_ERRORS_BURST, ICMP_ERRORS_PER_SECOND, Device
from meshnode.wireguard.icmp import host_unreachable

LOCAL4, FAR4 = "10.77.0.1", "10.77.0.50"
LOCAL6, FAR6 = "fd77::1", "fd77::50"


def ipv4(source: str, destination: str, protocol: int = 17, payload: bytes = b"x" * 30,
         fragment: int = 0) -> bytes:  # fmt: skip
    total = 20 + len(payload)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 7, fragment, 64, protocol, 0,
                         ipaddress.IPv4Address(source).packed,
                         ipaddress.IPv4Address(destination).packed)  # fmt: skip
    header = header[:10] + internet_checksum(header).to_bytes(2, "big") + header[12:]
    return header + payload


def ipv6(source: str, destination: str, next_header: int = 17, payload: bytes = b"y" * 30) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), next_header, 64,
                       ipaddress.IPv6Address(source).packed,
                       ipaddress.IPv6Address(destination).packed) + payload  # fmt: skip


def test_an_ipv4_packet_gets_host_unreachable_from_its_destination() -> None:
    packet = ipv4(LOCAL4, FAR4)
    error = host_unreachable(packet, len(packet))
    assert error is not None
    assert internet_checksum(error[:20]) == 0  # a valid header checksum
    version_ihl, _, total, _, _, ttl, protocol, _, source, destination = struct.unpack(
        "!BBHHHBBH4s4s", error[:20]
    )
    assert (version_ihl, total, protocol, ttl) == (0x45, len(error), 1, 64)
    assert (source, destination) == (packet[16:20], packet[12:16])  # from the destination
    icmp = error[20:]
    assert icmp[:2] == b"\x03\x01" and internet_checksum(icmp) == 0  # host unreachable
    assert icmp[8:] == packet  # the whole original, as it is short


def test_an_ipv6_packet_gets_address_unreachable_from_its_destination() -> None:
    packet = ipv6(LOCAL6, FAR6)
    error = host_unreachable(packet, len(packet))
    assert error is not None
    first, length, next_header, hops, source, destination = struct.unpack(
        "!IHBB16s16s", error[:40]
    )
    assert (first >> 28, length, next_header, hops) == (6, len(error) - 40, 58, 64)
    assert (source, destination) == (packet[24:40], packet[8:24])
    icmp = error[40:]
    pseudo = source + destination + struct.pack("!I3xB", len(icmp), 58)
    assert icmp[:2] == b"\x01\x03" and internet_checksum(pseudo + icmp) == 0
    assert icmp[8:] == packet


def test_the_quote_keeps_the_error_small() -> None:
    big4 = ipv4(LOCAL4, FAR4, payload=bytes(1400))
    big6 = ipv6(LOCAL6, FAR6, payload=bytes(1400))
    assert len(host_unreachable(big4, len(big4)) or b"") == 576
    assert len(host_unreachable(big6, len(big6)) or b"") == 1280


@pytest.mark.parametrize(
    "packet",
    [
        ipv4(LOCAL4, FAR4, protocol=1, payload=b"\x03\x01" + bytes(30)),  # an ICMP error
        ipv4(LOCAL4, FAR4, protocol=1, payload=b""),  # ICMP, truncated
        ipv4(LOCAL4, FAR4, fragment=100),  # not the first fragment
        ipv4(LOCAL4, "224.0.0.251"),  # multicast
        ipv4(LOCAL4, "255.255.255.255"),  # broadcast
        ipv4("0.0.0.0", FAR4),  # unspecified source (DHCP)
        ipv6(LOCAL6, FAR6, next_header=58, payload=b"\x01\x03" + bytes(30)),  # ICMPv6 error
        ipv6(LOCAL6, "ff02::16"),  # multicast (MLD)
        ipv6("::", FAR6),  # unspecified source
        ipv4(LOCAL4, FAR4)[:19],  # shorter than a header
        ipv6(LOCAL6, FAR6)[:39],
        b"\x00" * 40,  # no IP version
        ipv4("127.0.0.1", FAR4),  # loopback
        ipv6("::1", FAR6),
        # an ICMPv6 error behind a destination-options header
        ipv6(LOCAL6, FAR6, next_header=60,
             payload=bytes([58, 0]) + bytes(6) + b"\x01\x03" + bytes(30)),
        # a later fragment
        ipv6(LOCAL6, FAR6, next_header=44, payload=bytes([17, 0, 0, 8]) + bytes(4) + bytes(30)),
    ],
    ids=["icmp-error", "icmp-truncated", "fragment", "multicast", "broadcast",
         "unspecified", "icmpv6-error", "v6-multicast", "v6-unspecified", "short-v4",
         "short-v6", "no-version", "loopback", "v6-loopback", "icmpv6-error-behind-options",
         "v6-later-fragment"],
)
def test_no_error_is_due(packet: bytes) -> None:
    assert host_unreachable(packet, len(packet)) is None


def test_an_echo_request_is_answered() -> None:
    echo = ipv4(LOCAL4, FAR4, protocol=1, payload=b"\x08\x00" + bytes(30))
    echo6 = ipv6(LOCAL6, FAR6, next_header=58, payload=b"\x80\x00" + bytes(30))
    assert host_unreachable(echo, len(echo)) is not None
    assert host_unreachable(echo6, len(echo6)) is not None


def test_extension_headers_and_first_fragments_are_answered() -> None:
    hop_by_hop = ipv6(LOCAL6, FAR6, next_header=0, payload=bytes([17, 0]) + bytes(6) + bytes(30))
    first = ipv6(LOCAL6, FAR6, next_header=44, payload=bytes([17, 0, 0, 1]) + bytes(4) + bytes(30))
    assert host_unreachable(hop_by_hop, len(hop_by_hop)) is not None
    assert host_unreachable(first, len(first)) is not None


def test_the_error_keeps_the_packets_tos() -> None:
    packet = bytearray(ipv4(LOCAL4, FAR4))
    packet[1] = 0x10
    error = host_unreachable(packet, len(packet))
    assert error is not None and error[1] == 0x10 | 0xC0


def _send(device: Device, packets: list[bytes], now: float) -> list[bytes]:
    slots = [memoryview(bytearray(p + bytes(64))) for p in packets]
    device.send_batch(slots, [len(p) for p in packets], len(packets), now)
    return device.inbox.take()


def test_the_device_answers_within_its_rate_limit() -> None:
    device = Device()
    to_far = ipv4(LOCAL4, FAR4)
    answered = _send(device, [to_far] * (ICMP_ERRORS_BURST + 3), 100.0)
    assert len(answered) == ICMP_ERRORS_BURST  # a burst, no more
    assert answered[0] == host_unreachable(to_far, len(to_far))
    assert not _send(device, [to_far], 100.0)
    later = 100.0 + 2.5 / ICMP_ERRORS_PER_SECOND
    assert len(_send(device, [to_far] * 3, later)) == 2  # refilled at the rate
    assert device.icmp_errors_sent == ICMP_ERRORS_BURST + 2
    assert device.drops["no_route"] == ICMP_ERRORS_BURST + 3 + 1 + 3


def test_the_nodes_own_packets_get_no_error() -> None:
    # the agent's coordination packets and relay frames go through the same
    # routing: one to a member just removed is dropped, and the host, which
    # never sent it, is told nothing
    device = Device()
    device.send_coordination(ipv6(LOCAL6, FAR6), 100.0)
    assert not device.inbox.take() and device.icmp_errors_sent == 0
    assert device.drops["no_route"] == 1
