"""The mesh's coordination channel inside WireGuard, in the core: taken out of
the data path with the authenticated sender, never delivered to the TUN, and
not reachable from the TUN."""

from __future__ import annotations

import ipaddress

from memnet import MemNet, ip_packet

from meshnode.wireguard.coordination import coordination_packet, coordination_payload
from meshnode.wireguard.drops import Drop

PORT = 51900
A6, B6 = ipaddress.IPv6Address("fd00::1"), ipaddress.IPv6Address("fd00::2")


def mesh_pair() -> MemNet:
    net = MemNet()
    for node in (net.a, net.b):
        node.device.coordination_port = PORT
    net.send(net.a)  # a session both ways
    net.send(net.b)
    net.a.delivered.clear()
    net.b.delivered.clear()
    return net


def test_the_agents_messages_reach_the_other_agent_and_not_the_tun() -> None:
    net = mesh_pair()
    net.a.device.send_coordination(coordination_packet(A6, B6, PORT, b"hello agent"), net.now)
    net.run()
    assert net.b.device.coordination == [(net.a.device.public_key, b"hello agent")]
    assert net.b.delivered == []


def test_a_local_process_cannot_write_to_the_agents_port() -> None:
    net = mesh_pair()
    net.a.device.send(coordination_packet(A6, B6, PORT, b"forged"), net.now)
    net.run()
    assert net.a.device.drops[Drop.COORDINATION_FROM_TUN] == 1
    assert net.b.device.coordination == [] and net.b.delivered == []
    # other ports are ordinary traffic
    other = coordination_packet(A6, B6, PORT + 1, b"just udp")
    net.a.device.send(other, net.now)
    net.run()
    assert net.b.delivered == [other]


def test_a_coordination_only_peer_reaches_the_agent_and_nothing_else() -> None:
    net = mesh_pair()
    net.b.peer.coordination_only = True  # a is b's invite peer
    net.a.device.send_coordination(coordination_packet(A6, B6, PORT, b"join?"), net.now)
    net.send(net.a, b"anything else")
    assert net.b.device.coordination == [(net.a.device.public_key, b"join?")]
    assert net.b.delivered == []
    assert net.b.device.drops[Drop.NOT_COORDINATION] == 1


def test_only_unfragmented_udp_to_the_port_is_taken() -> None:
    udp = bytes(2) + PORT.to_bytes(2, "big") + bytes(4) + b"payload"
    v4 = bytearray(ip_packet("10.0.0.1", "10.0.0.2", udp))
    assert coordination_payload(v4, 0, len(v4), PORT) == b"payload"
    v4[6] = 0x20  # more fragments
    assert coordination_payload(v4, 0, len(v4), PORT) is None
    tcp = ip_packet("10.0.0.1", "10.0.0.2", bytes(20), proto=6)
    assert coordination_payload(tcp, 0, len(tcp), PORT) is None
    packet = coordination_packet(A6, B6, PORT, b"x")
    assert coordination_payload(packet, 0, len(packet), PORT) == b"x"
    assert coordination_payload(packet, 0, len(packet), PORT + 1) is None
