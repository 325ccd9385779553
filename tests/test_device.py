"""Two devices in memory with a fake clock: handshake, transport, PSK, roaming,
cryptokey routing, cookies under load, counters and configuration."""

import pytest
from memnet import EPOCH, MemNet, ip_packet

from meshnode.wireguard import keys
from meshnode.wireguard import messages as m
from meshnode.wireguard.allowedips import parse_network
from meshnode.wireguard.device import ConfigError, Device, Drop
from meshnode.wireguard.endpoint import Endpoint
from meshnode.wireguard.noise import create_initiation
from meshnode.wireguard.ratelimit import RateLimiter


@pytest.mark.parametrize("psk", [None, bytes(range(32))], ids=["no-psk", "psk"])
def test_handshake_and_transport_both_ways(psk: bytes | None) -> None:
    net = MemNet(psk=psk)
    p1 = net.send(net.a, b"hello b")
    assert net.b.delivered == [p1]
    p2 = net.send(net.b, b"hello a")
    assert net.a.delivered == [p2]
    p3 = net.send(net.a, b"over v6", v6=True)
    p4 = net.send(net.b, b"back over v6", v6=True)
    assert net.b.delivered[-1] == p3 and net.a.delivered[-1] == p4
    # initiation, response, then only transport messages
    sizes_a = [len(d) for _, d in net.sent_by(net.a)]
    sizes_b = [len(d) for _, d in net.sent_by(net.b)]
    assert sizes_a[0] == 148 and sizes_b[0] == 92
    assert all(s >= 32 and (s - 32) % 16 == 0 for s in sizes_a[1:] + sizes_b[1:])
    assert not net.a.device.drops and not net.b.device.drops


def test_mismatched_psk_fails_the_handshake() -> None:
    net = MemNet()
    net.b.device.set_preshared_key(net.b.peer, bytes(range(32)))
    net.send(net.a)
    assert net.b.delivered == []
    assert net.a.device.drops[Drop.HANDSHAKE_DECRYPT] == 1  # the response does not authenticate
    assert net.a.peer.keypairs.current is None


def test_padding_and_keepalive_sizes() -> None:
    net = MemNet()
    net.send(net.a)
    for n in range(0, 60):
        net.send(net.a, b"x" * n)
        size = len(net.a.sent[-1][1])
        assert size == 32 + ((20 + n + 15) // 16) * 16
    net.a.device.send_keepalive(net.a.peer, net.now)
    net.run()
    assert len(net.a.sent[-1][1]) == 32


def test_padding_stops_at_the_mtu() -> None:
    net = MemNet(mtu=1420)
    net.send(net.a)
    packet = net.send(net.a, b"y" * (1419 - 20))
    assert len(net.a.sent[-1][1]) == 32 + 1420
    assert net.b.delivered[-1] == packet  # the padding is trimmed by the IP length


def test_inner_source_outside_allowed_ips_is_dropped() -> None:
    net = MemNet()
    net.send(net.a)
    spoofed = ip_packet("10.9.9.9", "10.0.0.1", b"spoof")
    # b routes by destination, so it seals it; a must refuse it by its source
    net.b.device.send(spoofed, net.now)
    net.run()
    assert spoofed not in net.a.delivered
    assert net.a.device.drops[Drop.DISALLOWED_SOURCE] == 1


def test_packet_towards_no_peer_is_dropped() -> None:
    net = MemNet()
    net.a.device.send(ip_packet("10.0.0.1", "10.7.7.7"), net.now)
    net.a.device.send(ip_packet("fd00::1", "fd00::7"), net.now)
    assert net.a.device.datagrams_to_send() == []
    assert net.a.device.drops[Drop.NO_ROUTE] == 2


def test_roaming_follows_authenticated_packets_only() -> None:
    net = MemNet()
    net.send(net.a)
    assert net.a.peer.endpoint == net.b.address
    # b moves: its next packet comes from a new address and port
    new_address = Endpoint(("198.51.100.7", 40000))
    net.nodes[new_address] = net.b
    old_address, net.b.address = net.b.address, new_address
    net.send(net.b, b"from the new place")
    assert net.a.peer.endpoint == new_address
    net.send(net.a, b"reply")
    assert net.sent_by(net.a)[-1] and net.a.sent[-1][2] == new_address
    assert net.b.delivered[-1].endswith(b"reply")
    # a replay of an old datagram from the old address must not move the endpoint back
    _, old_datagram, _ = next(s for s in net.b.sent if s[0] == 0 and s[1][0] == 4)
    assert net.a.device.receive(old_datagram, old_address, net.now) is None
    assert net.a.device.drops[Drop.REPLAYED] == 1
    assert net.a.peer.endpoint == new_address
    # and garbage from elsewhere does not either
    forged = m.HEADER_TRANSPORT + bytes(60)
    net.a.device.receive(forged, Endpoint(("203.0.113.9", 1)), net.now)
    assert net.a.peer.endpoint == new_address


def test_replayed_transport_and_initiation_are_dropped() -> None:
    net = MemNet()
    net.send(net.a)
    ((_, initiation, _),) = [s for s in net.a.sent if s[1][0] == 1]
    data = next(d for _, d, _ in net.a.sent if d[0] == 4 and len(d) > 32)
    assert net.b.device.receive(data, net.a.address, net.now) is None
    assert net.b.device.drops[Drop.REPLAYED] == 1
    assert net.b.device.receive(initiation, net.a.address, net.now + 1) is None
    assert net.b.device.drops[Drop.REPLAYED_INITIATION] == 1


def test_initiations_faster_than_20ms_are_dropped() -> None:
    net = MemNet()
    a, b = net.a.device, net.b.device
    assert b.identity is not None and a.identity is not None

    def initiation(unix_time: float) -> bytes:
        msg = create_initiation(a.identity, net.a.peer.handshake, 7, unix_time)
        net.a.peer.cookies.add_macs(msg, 0)
        return bytes(msg)

    assert b.receive(initiation(EPOCH + 1), net.a.address, 10.000) is None
    assert not b.drops
    # a newer timestamp, but only 10 ms later on the responder's clock
    assert b.receive(initiation(EPOCH + 2), net.a.address, 10.010) is None
    assert b.drops[Drop.INITIATION_FLOOD] == 1
    assert b.receive(initiation(EPOCH + 3), net.a.address, 10.030) is None
    assert b.drops[Drop.INITIATION_FLOOD] == 1  # 30 ms after the last accepted one: fine


def test_unknown_initiator_and_wrong_mac1_are_dropped() -> None:
    net = MemNet()
    stranger = Device(keys.generate_private_key())
    peer = stranger.add_peer(net.b.device.public_key)
    stranger.set_endpoint(peer, net.b.address)
    stranger.add_allowed_ip(peer, parse_network("0.0.0.0/0"))
    stranger.send(ip_packet("10.0.0.3", "10.0.0.2"), 0)
    ((initiation, _),) = stranger.datagrams_to_send()
    assert net.b.device.receive(initiation, Endpoint(("192.0.2.3", 1)), 0) is None
    assert net.b.device.drops[Drop.UNKNOWN_PEER] == 1
    # the same bytes aimed at a's key: mac1 is wrong for b
    wrong_peer = Device(keys.generate_private_key())
    p = wrong_peer.add_peer(net.a.device.public_key)
    wrong_peer.set_endpoint(p, net.b.address)
    wrong_peer.add_allowed_ip(p, parse_network("0.0.0.0/0"))
    wrong_peer.send(ip_packet("10.0.0.3", "10.0.0.2"), 0)
    ((initiation, _),) = wrong_peer.datagrams_to_send()
    net.b.device.receive(initiation, Endpoint(("192.0.2.3", 1)), 0)
    assert net.b.device.drops[Drop.INVALID_MAC1] == 1


def test_cookie_reply_under_load_then_handshake_with_mac2() -> None:
    net = MemNet()
    net.b.device.under_load_threshold = 0  # every handshake message counts as load
    packet = net.send(net.a)
    assert net.b.delivered == []
    assert net.b.device.drops[Drop.COOKIE_SENT] == 1
    ((_, reply),) = net.sent_by(net.b)
    assert len(reply) == m.COOKIE_REPLY_SIZE and reply[:4] == m.HEADER_COOKIE_REPLY
    assert not net.a.device.drops  # the cookie was taken
    # a's retransmission carries mac2 made with that cookie and is answered
    net.advance(5.4)
    assert net.b.delivered == [packet]
    initiations = net.sent_by(net.a, kind=1)
    assert len(initiations) == 2
    assert initiations[0][1][-16:] == bytes(16) and initiations[1][1][-16:] != bytes(16)
    assert net.b.device.drops[Drop.COOKIE_SENT] == 1


def test_mac2_is_bound_to_the_source_address() -> None:
    net = MemNet()
    net.b.device.under_load_threshold = 0
    net.send(net.a)  # a learns a cookie for its address
    net.a.address, old = Endpoint(("192.0.2.99", 51820)), net.a.address
    net.nodes[net.a.address] = net.a
    net.advance(5.4)  # the retransmission comes from elsewhere: a new cookie is demanded
    assert net.b.delivered == []
    assert net.b.device.drops[Drop.COOKIE_SENT] == 2
    assert old != net.a.address


def test_rate_limiter_burst_and_rate() -> None:
    limiter = RateLimiter()
    assert [limiter.allow("198.51.100.1", 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert limiter.allow("198.51.100.2", 0.0)  # another source has its own bucket
    assert not limiter.allow("198.51.100.1", 0.01)
    assert limiter.allow("198.51.100.1", 0.05)  # one token per 50 ms
    allowed = sum(limiter.allow("198.51.100.1", 1.0 + i / 1000) for i in range(1000))
    assert 20 <= allowed <= 26  # 20 per second, plus the burst


def test_rate_limited_handshakes_under_load() -> None:
    net = MemNet()
    b = net.b.device
    b.mark_under_load(0.0)
    a_identity = net.a.device.identity
    assert a_identity is not None
    # teach a's cookie generator a cookie by one round of initiation + cookie reply
    net.send(net.a)
    assert b.drops[Drop.COOKIE_SENT] == 1
    results = []
    for i in range(8):
        msg = create_initiation(a_identity, net.a.peer.handshake, 100 + i, EPOCH + i)
        net.a.peer.cookies.add_macs(msg, 0.0)
        b.mark_under_load(0.0)
        b.receive(bytes(msg), net.a.address, 0.0)
        results.append(b.drops[Drop.RATE_LIMITED])
    assert results[-1] == 3  # 5 pass the bucket, then 3 are limited


def test_counters_and_last_handshake() -> None:
    net = MemNet()
    net.now = 3.0
    net.send(net.a, b"a" * 100)
    net.send(net.b, b"b" * 10)
    for node in (net.a, net.b):
        other = net.other(node)
        assert node.peer.tx_bytes == sum(len(d) for _, d, _ in node.sent)
        assert node.peer.rx_bytes == sum(len(d) for _, d, _ in other.sent)
        assert node.peer.last_handshake == EPOCH + 3.0


def test_staging_keeps_the_newest_128_packets() -> None:
    net = MemNet()
    net.blackhole = True
    packets = [net.send(net.a, i.to_bytes(2, "big")) for i in range(200)]
    net.blackhole = False
    assert net.a.device.drops[Drop.STAGED_OVERFLOW] == 72
    net.advance(6)  # the retransmitted initiation gets through
    assert net.b.delivered == packets[72:]


def test_peer_configuration_errors() -> None:
    device = Device(keys.generate_private_key())
    with pytest.raises(ConfigError, match="own"):
        device.add_peer(device.public_key or b"")
    assert device.peers == {}


# The low-order points of the Linux kernel's selftest (netns.sh): X25519 with any
# of them gives an all-zero secret.
LOW_ORDER_POINTS = [
    bytes.fromhex(h)
    for h in (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    )
]


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda p: p.hex()[:8])
def test_a_low_order_peer_is_accepted_but_never_sent_to(point: bytes) -> None:
    """As wg and wireguard-go: the peer is configured, but with an all-zero
    static-static secret no initiation, keepalive or data ever leaves for it."""
    device = Device(keys.generate_private_key(), epoch=EPOCH)
    peer = device.add_peer(point)
    device.set_endpoint(peer, Endpoint(("192.0.2.7", 51820)))
    device.add_allowed_ip(peer, parse_network("10.9.0.0/24"))
    device.set_persistent_keepalive(peer, 1, 0.0)
    for second in range(1, 200):
        device.send(ip_packet("10.0.0.1", "10.9.0.1"), float(second))
        device.handle_timers(float(second))
    assert device.datagrams_to_send() == []
    assert device.peers[point] is peer


def test_an_unclamped_private_key_is_kept_clamped() -> None:
    unclamped = bytes(range(224, 256))
    device = Device(unclamped)
    assert device.identity is not None
    stored = device.identity.private_key.private_bytes_raw()
    assert stored == keys.clamp(unclamped) != unclamped
    assert device.public_key == keys.public_key(unclamped)


def test_removing_a_peer_ends_its_sessions() -> None:
    net = MemNet()
    net.send(net.a)
    net.a.device.remove_peer(net.b.device.public_key or b"")
    net.send(net.b, b"anyone there?")
    assert net.a.delivered == []
    assert net.a.device.drops[Drop.UNKNOWN_INDEX] == 1
    assert net.a.device.next_deadline() is None


def test_changing_the_private_key_rekeys_at_once() -> None:
    net = MemNet()
    net.send(net.a)
    new_key = keys.generate_private_key()
    net.a.device.set_private_key(new_key, net.now)
    net.now += 1
    net.a.device.send(ip_packet("10.0.0.1", "10.0.0.2"), net.now)
    out = net.collect(net.a)
    assert [len(d) for d, _ in out] == [148]  # no stale session used, no 5 s wait
