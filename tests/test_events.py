"""The device's peer events (what the mesh layer consumes), with a fake clock."""

from __future__ import annotations

from memnet import MemNet

from meshnode.wireguard.endpoint import Endpoint, LocalSource
from meshnode.wireguard.events import (
    EndpointChanged,
    HandshakeCompleted,
    HandshakeGaveUp,
    KeysZeroed,
    PeerEvent,
)


def drain(net: MemNet, node) -> list[PeerEvent]:
    events = []
    while (event := node.device.next_event()) is not None:
        events.append(event)
    return events


def test_a_handshake_is_an_event_on_both_sides() -> None:
    net = MemNet()
    net.send(net.a)
    a_key, b_key = net.a.device.public_key, net.b.device.public_key
    a_events = drain(net, net.a)
    b_events = drain(net, net.b)
    assert HandshakeCompleted(b_key, net.b.address, initiator=True) in a_events
    # the responder's session counts from the first packet under it (key confirmation)
    assert HandshakeCompleted(a_key, net.a.address, initiator=False) in b_events
    # b had a's address configured, and a wrote from it: no roam
    assert not any(isinstance(e, EndpointChanged) for e in a_events + b_events)
    net.send(net.a, b"again")
    assert drain(net, net.a) == [] and drain(net, net.b) == []  # nothing new happened


def test_roaming_is_an_event_only_when_the_remote_address_changes() -> None:
    net = MemNet()
    net.send(net.a)
    net.send(net.b)
    drain(net, net.a)
    b_key = net.b.device.public_key
    # the same remote, written to another local address of a's: a new path, no roam
    same_remote = Endpoint(net.b.address.sockaddr, LocalSource("192.0.2.11", 3))
    net.nodes[same_remote] = net.b
    old, net.b.address = net.b.address, same_remote
    net.send(net.b, b"via another local address")
    assert net.a.peer.endpoint == same_remote
    assert drain(net, net.a) == []
    # a new remote address is one
    moved = Endpoint(("198.51.100.7", 40000))
    net.nodes[moved] = net.b
    net.b.address = moved
    net.send(net.b, b"from elsewhere")
    assert drain(net, net.a) == [EndpointChanged(b_key, same_remote, moved)]
    assert old != moved


def test_giving_up_and_zeroing_keys_are_events() -> None:
    net = MemNet()
    net.send(net.a)
    drain(net, net.a)
    b_key = net.b.device.public_key
    net.blackhole = True
    net.advance(200)  # the session goes stale, a retries for 90 s and gives up
    net.send(net.a, b"anyone?")
    net.advance(200)
    events = drain(net, net.a)
    assert HandshakeGaveUp(b_key) in events
    net.advance(600)
    assert KeysZeroed(b_key) in drain(net, net.a)
