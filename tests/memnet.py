"""Two WireGuard devices joined by an in-memory network with a fake clock.

Used by the protocol-core tests: no sockets, no real time. Datagrams a device
queues are carried to the device whose address they are sent to, as many
rounds as it takes for both to go quiet.
"""

from __future__ import annotations

import ipaddress
import random
import struct
from dataclasses import dataclass, field

from meshnode.wireguard import keys
from meshnode.wireguard.allowedips import parse_network
from meshnode.wireguard.device import Device
from meshnode.wireguard.endpoint import Endpoint
from meshnode.wireguard.peer import Peer

EPOCH = 1_700_000_000.0


def ip_packet(src: str, dst: str, payload: bytes = b"ping", proto: int = 17) -> bytes:
    """A minimal IPv4 or IPv6 packet (checksums are not checked by the core)."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 4:
        header = bytearray(20)
        header[0] = 0x45
        struct.pack_into(">H", header, 2, 20 + len(payload))
        header[8], header[9] = 64, proto
        header[12:16], header[16:20] = s.packed, d.packed
        return bytes(header) + payload
    header = bytearray(40)
    header[0] = 0x60
    struct.pack_into(">H", header, 4, len(payload))
    header[6], header[7] = proto, 64
    header[8:24], header[24:40] = s.packed, d.packed
    return bytes(header) + payload


@dataclass
class Node:
    name: str
    device: Device
    address: Endpoint
    inner: str  # this node's tunnel address
    peer: Peer  # its one peer: the other node
    delivered: list[bytes] = field(default_factory=list)
    sent: list[tuple[float, bytes, tuple]] = field(default_factory=list)  # (time, datagram, to)


class MemNet:
    """Nodes a (10.0.0.1, fd00::1) and b (10.0.0.2, fd00::2), each the other's peer."""

    def __init__(self, psk: bytes | None = None, seed: int = 1, **device_args) -> None:
        self.now = 0.0
        self.nodes: dict[Endpoint, Node] = {}
        ka, kb = keys.generate_private_key(), keys.generate_private_key()
        at_a, at_b = Endpoint(("192.0.2.1", 51820)), Endpoint(("192.0.2.2", 51820))
        self.a = self._node("a", ka, kb, at_a, "10.0.0.1", "fd00::1", seed, psk, device_args)
        self.b = self._node("b", kb, ka, at_b, "10.0.0.2", "fd00::2", seed + 1, psk, device_args)
        self.a.peer.endpoint = self.b.address
        self.b.peer.endpoint = self.a.address
        self.blackhole = False  # when set, every datagram vanishes in flight
        self.cut: set[str] = set()  # names of nodes whose incoming datagrams vanish

    def _node(self, name, own, other, address, inner4, inner6, seed, psk, device_args) -> Node:
        device = Device(own, epoch=EPOCH, rng=random.Random(seed), **device_args)
        peer = device.add_peer(keys.public_key(other))
        if psk is not None:
            device.set_preshared_key(peer, psk)
        other_inner4 = "10.0.0.2" if inner4 == "10.0.0.1" else "10.0.0.1"
        other_inner6 = "fd00::2" if inner6 == "fd00::1" else "fd00::1"
        device.add_allowed_ip(peer, parse_network(other_inner4 + "/32"))
        device.add_allowed_ip(peer, parse_network(other_inner6 + "/128"))
        node = Node(name, device, address, inner4, peer)
        self.nodes[address] = node
        return node

    def other(self, node: Node) -> Node:
        return self.b if node is self.a else self.a

    def collect(self, node: Node) -> list[tuple[bytes, tuple]]:
        out = node.device.datagrams_to_send()
        node.sent.extend((self.now, d, to) for d, to in out)
        return out

    def run(self, max_rounds: int = 50) -> None:
        """Carry datagrams both ways until nothing is in flight."""
        for _ in range(max_rounds):
            moved = False
            for node in (self.a, self.b):
                for datagram, to in self.collect(node):
                    moved = True
                    target = self.nodes.get(to)
                    if target is None or self.blackhole or target.name in self.cut:
                        continue
                    packet = target.device.receive(datagram, node.address, self.now)
                    if packet is not None:
                        target.delivered.append(packet)
            if not moved:
                return
        raise AssertionError("the two devices never went quiet")

    def advance(self, seconds: float) -> None:
        """Move time forward, firing every timer on the way, exactly at its deadline."""
        end = self.now + seconds
        while True:
            deadlines = [d for n in (self.a, self.b) if (d := n.device.next_deadline()) is not None]
            upcoming = min((d for d in deadlines if d <= end), default=None)
            if upcoming is None:
                break
            self.now = max(self.now, upcoming)
            for node in (self.a, self.b):
                node.device.handle_timers(self.now)
            self.run()
        self.now = end

    def sent_by(self, node: Node, size: int | None = None, kind: int | None = None) -> list:
        """(time, datagram) of what node sent, optionally only of one size or message type."""
        return [
            (t, d)
            for t, d, _ in node.sent
            if (size is None or len(d) == size) and (kind is None or d[0] == kind)
        ]

    def send(self, node: Node, payload: bytes = b"ping", v6: bool = False) -> bytes:
        other = self.other(node)
        if v6:
            src = "fd00::1" if node is self.a else "fd00::2"
            dst = "fd00::2" if node is self.a else "fd00::1"
        else:
            src, dst = node.inner, other.inner
        packet = ip_packet(src, dst, payload)
        node.device.send(packet, self.now)
        self.run()
        return packet
