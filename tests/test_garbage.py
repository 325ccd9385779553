"""The device never raises on hostile input, and counts every datagram it drops.

Random datagrams, well-typed messages of every size, mutations of real captured
traffic and malformed inner packets are fed to devices of an in-memory pair
(tests/memnet.py). Each must be dropped with exactly one count (with a specific
reason where the reason is certain), must never deliver anything but the
original inner packet, and must leave the pair able to talk.
"""

from __future__ import annotations

import ipaddress
import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from memnet import EPOCH, MemNet, Node, ip_packet

from meshnode.wireguard import keys
from meshnode.wireguard import messages as m
from meshnode.wireguard.allowedips import parse_network
from meshnode.wireguard.constants import REJECT_AFTER_MESSAGES
from meshnode.wireguard.cookie import CookieGenerator
from meshnode.wireguard.device import Device, Drop
from meshnode.wireguard.endpoint import Endpoint
from meshnode.wireguard.icmp import host_unreachable

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SIZES = {
    m.MESSAGE_INITIATION: m.INITIATION_SIZE,
    m.MESSAGE_RESPONSE: m.RESPONSE_SIZE,
    m.MESSAGE_COOKIE_REPLY: m.COOKIE_REPLY_SIZE,
    m.MESSAGE_TRANSPORT: m.TRANSPORT_MIN_SIZE,
}
HEADERS = {
    m.HEADER_INITIATION: m.INITIATION_SIZE,
    m.HEADER_RESPONSE: m.RESPONSE_SIZE,
    m.HEADER_COOKIE_REPLY: m.COOKIE_REPLY_SIZE,
}

# X25519 points of small order (the all-zero shared secret), as ephemerals.
LOW_ORDER_POINTS = [
    bytes(32),
    b"\x01" + bytes(31),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    bytes.fromhex("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    bytes.fromhex("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
]


# ---------------------------------------------------------------- helpers


def established(v6: bool = False) -> MemNet:
    """A pair with a session both ways (each side has sent and received data)."""
    net = MemNet()
    delivered = net.send(net.a)
    assert net.b.delivered == [delivered]
    delivered = net.send(net.b, v6=v6)
    assert net.a.delivered == [delivered]
    return net


def with_cookie_exchange() -> MemNet:
    """A pair whose first handshake went through a cookie reply: b is always under load."""
    net = MemNet()
    net.b.device.under_load_threshold = 0
    packet = net.send(net.a)
    assert net.b.device.drops[Drop.COOKIE_SENT] == 1
    net.advance(6.0)  # a retransmits, now with mac2
    assert net.b.delivered == [packet]
    packet = net.send(net.b)
    assert net.a.delivered == [packet]
    kinds = {d[0] for n in (net.a, net.b) for _, d, _ in n.sent}
    assert kinds == {1, 2, 3, 4}
    return net


def drops(node: Node) -> int:
    return sum(node.device.drops.values())


def feed(net: MemNet, node: Node, datagram: bytes) -> tuple[bytes | None, list[Drop]]:
    """Deliver one datagram to node (from the other node); the result and the drops it added.

    A datagram that is not WireGuard's is handed back for the runtime's
    handlers; with none (as here) the runtime counts it UNKNOWN_DATAGRAM,
    which this does in its place."""
    before = Counter(node.device.drops)
    packet = node.device.receive(datagram, net.other(node).address, net.now)
    handed_up, node.device.other_datagrams = node.device.other_datagrams, []
    node.device.drops[Drop.UNKNOWN_DATAGRAM] += len(handed_up)
    return packet, list((node.device.drops - before).elements())


def known_indexes(net: MemNet, node: Node) -> set[bytes]:
    """Receiver indexes the other node has used for node's sessions."""
    return {d[4:8] for _, d, _ in net.other(node).sent if d[:4] == m.HEADER_TRANSPORT}


def answered_unreachable(packet: bytes) -> list[bytes]:
    """What the device writes back for a packet no peer takes (wireguard/icmp.py)."""
    error = host_unreachable(packet, len(packet))
    return [error] if error is not None else []


def still_works(net: MemNet) -> None:
    net.blackhole = False
    for node in (net.a, net.b):
        other = net.other(node)
        before = len(other.delivered)
        packet = net.send(node, payload=b"still alive")
        if len(other.delivered) == before:  # a handshake may be due: let the timers run
            net.advance(30.0)
        assert other.delivered[before:] == [packet]


def garbage_reasons(datagram: bytes, known: set[bytes]) -> set[Drop]:
    """The drop reasons possible for a datagram that was not made by the peer."""
    header, size = datagram[:4], len(datagram)
    if size < 4:
        return {Drop.MALFORMED, Drop.UNKNOWN_TYPE}
    if header == m.HEADER_TRANSPORT:
        if size < m.TRANSPORT_MIN_SIZE:
            return {Drop.MALFORMED}
        if datagram[4:8] not in known:
            return {Drop.UNKNOWN_INDEX}
        return {Drop.DECRYPT, Drop.REPLAYED}
    expected = HEADERS.get(header)
    if expected is None:
        return {Drop.UNKNOWN_DATAGRAM}  # not WireGuard: for the runtime's handlers
    if size != expected:
        return {Drop.MALFORMED}
    if header == m.HEADER_COOKIE_REPLY:
        return {Drop.NO_HANDSHAKE, Drop.INVALID_COOKIE}
    return {Drop.INVALID_MAC1}  # a random 16-byte mac1 does not verify


def filler(seed: int, style: str, size: int) -> bytes:
    if style == "zeros":
        return bytes(size)
    if style == "ones":
        return b"\xff" * size
    return random.Random(seed).randbytes(size)


fillers = st.tuples(
    st.integers(0, 2**32 - 1), st.sampled_from(["random", "random", "zeros", "ones"])
)


# ---------------------------------------------------------------- random datagrams


@SETTINGS
@given(datagrams=st.lists(st.binary(max_size=2000), min_size=1, max_size=6), to_a=st.booleans())
def test_random_datagrams_are_dropped_and_counted(datagrams: list[bytes], to_a: bool) -> None:
    net = established()
    node = net.a if to_a else net.b
    known = known_indexes(net, node)
    for i, datagram in enumerate(datagrams):
        packet, added = feed(net, node, datagram)
        assert packet is None
        assert len(added) == 1, added
        assert added[0] in garbage_reasons(datagram, known), (datagram[:8], added)
        assert drops(node) == i + 1  # established() drops nothing
    assert node.device.datagrams_to_send() == []  # nothing is answered
    still_works(net)


@pytest.mark.parametrize(
    "datagram",
    [b"", b"\x01", b"\x04\x00", b"\x01\x00\x00", b"\x00" * 3],
    ids=lambda datagram: datagram.hex() or "empty",
)
def test_datagrams_shorter_than_a_header(datagram: bytes) -> None:
    net = established()
    packet, added = feed(net, net.b, datagram)
    assert packet is None
    assert len(added) == 1
    assert added[0] in {Drop.MALFORMED, Drop.UNKNOWN_TYPE}


@pytest.mark.parametrize(
    "header",
    [b"\x00\x00\x00\x00", b"\x05\x00\x00\x00", b"\xff\x00\x00\x00", b"\x01\x00\x00\x01",
     b"\x04\x01\x00\x00", b"\x02\x00\x80\x00", b"\x01\x00\x00\x00"[::-1]],
    ids=lambda datagram: datagram.hex() or "empty",
)  # fmt: skip
def test_unknown_headers(header: bytes) -> None:
    net = established()
    for size in (4, 32, 64, 92, 148, 1500):
        packet, added = feed(net, net.b, header + bytes(size - 4))
        assert (packet, added) == (None, [Drop.UNKNOWN_DATAGRAM])


# ---------------------------------------------------------------- typed messages of every size


@st.composite
def typed_datagrams(draw: st.DrawFn) -> tuple[int, bytes]:
    kind = draw(st.sampled_from(sorted(SIZES)))
    size = SIZES[kind]
    edges = [4, 5, size - 1, size, size + 1, 2 * size, 1500, 65534, 65535]
    if kind == m.MESSAGE_TRANSPORT:
        edges += [16, 31, 33, 48, 64, 1452]
    length = draw(st.one_of(st.sampled_from(edges), st.integers(4, 65535)))
    seed, style = draw(fillers)
    header = bytes([kind, 0, 0, 0])
    return kind, header + filler(seed, style, length - 4)


@SETTINGS
@given(messages=st.lists(typed_datagrams(), min_size=1, max_size=4), to_a=st.booleans())
def test_typed_messages_of_any_size(messages: list[tuple[int, bytes]], to_a: bool) -> None:
    net = established()
    node = net.a if to_a else net.b
    known = known_indexes(net, node)
    for kind, datagram in messages:
        packet, added = feed(net, node, datagram)
        assert packet is None
        assert len(added) == 1, added
        reasons = garbage_reasons(datagram, known)
        assert added[0] in reasons, (kind, len(datagram), added)
        if kind != m.MESSAGE_TRANSPORT and len(datagram) != SIZES[kind]:
            assert added == [Drop.MALFORMED]
        if kind == m.MESSAGE_TRANSPORT and len(datagram) < m.TRANSPORT_MIN_SIZE:
            assert added == [Drop.MALFORMED]
        if kind == m.MESSAGE_COOKIE_REPLY and len(datagram) == m.COOKIE_REPLY_SIZE:
            assert added == [Drop.NO_HANDSHAKE]  # no handshake is in flight
    still_works(net)


@SETTINGS
@given(filling=fillers, length=st.integers(m.TRANSPORT_MIN_SIZE, 2000), to_a=st.booleans())
def test_transport_with_a_live_index_but_forged_content(
    filling: tuple[int, str], length: int, to_a: bool
) -> None:
    net = established()
    node = net.a if to_a else net.b
    known = known_indexes(net, node)
    assert known
    for receiver in sorted(known):
        body = filler(*filling, length - 8)
        packet, added = feed(net, node, m.HEADER_TRANSPORT + receiver + body)
        assert packet is None
        counter = int.from_bytes(body[:8], "little")
        expected = Drop.REPLAYED if counter >= REJECT_AFTER_MESSAGES else Drop.DECRYPT
        assert added == [expected]
    still_works(net)


# ---------------------------------------------------------------- handshakes with a valid mac1


def with_mac1(message: bytearray, receiver: Node) -> bytes:
    """Sign message as anyone knowing receiver's public key can (mac1 only, mac2 zero)."""
    public_key = receiver.device.public_key
    assert public_key is not None
    CookieGenerator(public_key).add_macs(message, 0.0)
    return bytes(message)


@SETTINGS
@given(
    filling=fillers,
    ephemeral=st.one_of(st.sampled_from(LOW_ORDER_POINTS), st.binary(min_size=32, max_size=32)),
    under_load=st.booleans(),
)
def test_initiation_with_valid_mac1_and_forged_content(
    filling: tuple[int, str], ephemeral: bytes, under_load: bool
) -> None:
    net = established()
    if under_load:
        net.b.device.mark_under_load(net.now)
    message = bytearray(m.HEADER_INITIATION + filler(*filling, m.INITIATION_SIZE - 4))
    message[8:40] = ephemeral
    packet, added = feed(net, net.b, with_mac1(message, net.b))
    assert packet is None
    if under_load:  # no mac2: answered with a cookie reply, nothing else
        assert added == [Drop.COOKIE_SENT]
        (reply, to), *rest = net.b.device.datagrams_to_send()
        assert (len(reply), reply[:4], to, rest) == (64, m.HEADER_COOKIE_REPLY, net.a.address, [])
    else:
        assert added == [Drop.HANDSHAKE_DECRYPT]
        assert net.b.device.datagrams_to_send() == []
    net.now += 2.0  # past the load window
    still_works(net)


def pending_initiation(net: MemNet) -> tuple[bytes, bytes]:
    """Have a start a handshake that is lost in flight; its initiation and the inner packet."""
    net.blackhole = True
    packet = net.send(net.a)
    (_, initiation, _), *_ = [s for s in net.a.sent if s[1][:4] == m.HEADER_INITIATION]
    assert net.b.delivered == []
    return initiation, packet


@SETTINGS
@given(
    filling=fillers,
    ephemeral=st.one_of(st.sampled_from(LOW_ORDER_POINTS), st.binary(min_size=32, max_size=32)),
    sender_receiver=st.sampled_from(["pending", "random"]),
)
def test_response_and_cookie_reply_with_forged_content(
    filling: tuple[int, str], ephemeral: bytes, sender_receiver: str
) -> None:
    net = MemNet()
    initiation, packet = pending_initiation(net)
    index = initiation[4:8] if sender_receiver == "pending" else filler(*filling, 4)
    live = index == initiation[4:8]

    response = bytearray(m.HEADER_RESPONSE + filler(*filling, m.RESPONSE_SIZE - 4))
    response[8:12] = index
    response[12:44] = ephemeral
    got, added = feed(net, net.a, with_mac1(response, net.a))
    assert got is None
    assert added == [Drop.HANDSHAKE_DECRYPT if live else Drop.NO_HANDSHAKE]

    reply = m.HEADER_COOKIE_REPLY + index + filler(*filling, m.COOKIE_REPLY_SIZE - 8)
    got, added = feed(net, net.a, reply)
    assert got is None
    assert added == [Drop.INVALID_COOKIE if live else Drop.NO_HANDSHAKE]

    # the real handshake still completes when a retransmits
    net.blackhole = False
    net.advance(6.0)
    assert net.b.delivered == [packet]
    still_works(net)


# ---------------------------------------------------------------- mutations of real traffic


@st.composite
def mutations(draw: st.DrawFn, original: bytes) -> bytes:
    data = bytearray(original)
    ops = st.sampled_from(["flip_body", "flip", "truncate", "extend", "set", "flip_body"])
    for op in draw(st.lists(ops, min_size=1, max_size=4)):
        if op == "flip" and data:
            bit = draw(st.integers(0, 8 * len(data) - 1))
            data[bit // 8] ^= 1 << (bit % 8)
        elif op == "flip_body" and len(data) > 4:  # keep the header: reach the deeper checks
            bit = draw(st.integers(32, 8 * len(data) - 1))
            data[bit // 8] ^= 1 << (bit % 8)
        elif op == "set" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[draw(st.integers(0, len(data))) :]
        elif op == "extend":
            seed, style = draw(fillers)
            size = draw(st.sampled_from([1, 15, 16, 17, 100, max(1, 65535 - len(data))]))
            data += filler(seed, style, size)
    return bytes(data)


@SETTINGS
@given(scenario=st.sampled_from(["plain", "plain6", "cookie"]), data=st.data())
def test_mutated_replays_of_captured_traffic(scenario: str, data: st.DataObject) -> None:
    """Every message of a finished exchange, mutated or not, replayed: all are dropped."""
    net = with_cookie_exchange() if scenario == "cookie" else established(v6=scenario == "plain6")
    captured = [(d, net.nodes[to]) for n in (net.a, net.b) for _, d, to in n.sent]
    delivered = {node.name: list(node.delivered) for node in (net.a, net.b)}
    for _ in range(data.draw(st.integers(1, 5), label="rounds")):
        original, target = data.draw(st.sampled_from(captured), label="message")
        mutant = data.draw(st.one_of(st.just(original), mutations(original)), label="mutant")
        before = drops(target)
        packet, _ = feed(net, target, mutant)
        assert packet is None  # a replay or a forgery never delivers
        assert drops(target) == before + 1
        event("unchanged replay" if mutant == original else "mutated replay")
        net.run()  # whatever was answered (cookie replies) must not disturb the pair
        assert {node.name: node.delivered for node in (net.a, net.b)} == delivered
    still_works(net)


@SETTINGS
@given(data=st.data(), v6=st.booleans())
def test_mutated_fresh_transport_never_delivers(data: st.DataObject, v6: bool) -> None:
    """Forgeries of a data message not yet received are dropped; the real one then arrives."""
    net = established()
    net.blackhole = True
    packet = net.send(net.a, payload=b"the real one", v6=v6)
    (_, original, _) = net.a.sent[-1]
    assert original[:4] == m.HEADER_TRANSPORT
    known = known_indexes(net, net.b)
    mutants = data.draw(st.lists(mutations(original), min_size=1, max_size=6), label="mutants")
    for mutant in mutants:
        if mutant == original:
            continue
        got, added = feed(net, net.b, mutant)
        assert got is None
        assert len(added) == 1, added
        assert added[0] in garbage_reasons(mutant, known), (len(mutant), added)
        event(f"dropped as {added[0]}")
    got, added = feed(net, net.b, original)
    assert (got, added) == (packet, [])
    got, added = feed(net, net.b, original)
    assert (got, added) == (None, [Drop.REPLAYED])
    still_works(net)


@SETTINGS
@given(data=st.data(), stage=st.sampled_from(["initiation", "response"]))
def test_mutated_fresh_handshake_messages(data: st.DataObject, stage: str) -> None:
    """Forgeries of a handshake message in flight: dropped unless only mac2 changed.

    mac2 is only checked under load, so a copy differing in mac2 alone is as good
    as the original (as in wireguard-go); anything else must be dropped.
    """
    net = MemNet()
    initiation, packet = pending_initiation(net)
    if stage == "initiation":
        original, target = initiation, net.b
    else:
        assert net.b.device.receive(initiation, net.a.address, net.now) is None
        ((original, to),) = net.collect(net.b)
        assert original[:4] == m.HEADER_RESPONSE
        assert to == net.a.address
        target = net.a
    mutants = data.draw(st.lists(mutations(original), min_size=1, max_size=6), label="mutants")
    for mutant in [*mutants, original]:
        known = known_indexes(net, target)
        got, added = feed(net, target, mutant)
        assert got is None
        same_but_mac2 = len(mutant) == len(original) and mutant[:-16] == original[:-16]
        if not same_but_mac2:
            assert len(added) == 1, added
            assert added[0] in garbage_reasons(mutant, known), (len(mutant), added)
        else:  # as good as the original: accepted at most once, then a replay
            assert len(added) <= 1, added
        event(f"{stage} {'dropped as ' + added[0] if added else 'accepted'}")
    # whichever copy was accepted, the handshake completes and the packet arrives
    net.blackhole = False
    net.run()
    if net.b.delivered != [packet]:
        net.advance(30.0)
    assert net.b.delivered == [packet]
    still_works(net)


# ---------------------------------------------------------------- outgoing inner packets

A_INNER = {4: "10.0.0.1", 6: "fd00::1"}
B_INNER = {4: "10.0.0.2", 6: "fd00::2"}
HEADER_LEN = {4: 20, 6: 40}
SRC = {4: slice(12, 16), 6: slice(8, 24)}
DST = {4: slice(16, 20), 6: slice(24, 40)}


@st.composite
def inner_packets(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=100))
    version = draw(st.one_of(st.sampled_from([4, 6]), st.integers(0, 15)))
    ip_version = version if version in (4, 6) else draw(st.sampled_from([4, 6]))
    header = HEADER_LEN[ip_version]
    size = draw(st.one_of(st.sampled_from([0, 1, header - 1, header, header + 1, 1420, 2000]),
                          st.integers(header, 2000), st.integers(0, 2000)))  # fmt: skip
    data = bytearray(filler(draw(st.integers(0, 2**32 - 1)), "random", size))
    if data:
        data[0] = version << 4 | data[0] & 0x0F
    if size >= header:
        family = ipaddress.IPv4Address if ip_version == 4 else ipaddress.IPv6Address
        for field, ours in ((SRC, A_INNER), (DST, B_INNER)):
            if draw(st.integers(0, 3)):
                data[field[ip_version]] = family(ours[ip_version]).packed
        choice = draw(st.sampled_from(["exact", "exact", "random", "short", "long"]))
        length = {"exact": size, "short": size - 1, "long": size + 1}.get(choice)
        if length is None:
            length = draw(st.integers(0, 65535))
        if ip_version == 6:
            length -= 40
        at = 2 if ip_version == 4 else 4
        data[at : at + 2] = (length % 65536).to_bytes(2, "big")
    return bytes(data)


def check_sent(net: MemNet, packet: bytes) -> None:
    a, b = net.a, net.b
    a_before, b_before, delivered_before = (
        Counter(a.device.drops),
        Counter(b.device.drops),
        len(b.delivered),
    )
    assert a.device.send(packet, net.now) is None
    net.run()
    a_added = list((a.device.drops - a_before).elements())
    b_reasons = list((b.device.drops - b_before).elements())
    b_added = len(b_reasons)
    b_delivered = b.delivered[delivered_before:]

    version = packet[0] >> 4 if packet else 0
    if version not in (4, 6) or len(packet) < HEADER_LEN[version]:
        assert a_added == [Drop.INNER_MALFORMED]
        assert (b_added, b_delivered) == (0, [])
        event("not sent: malformed")
        return
    family = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    if family(packet[DST[version]]) != ipaddress.ip_address(B_INNER[version]):
        assert a_added == [Drop.NO_ROUTE]
        assert (b_added, b_delivered) == (0, [])
        assert a.device.inbox.take() == answered_unreachable(packet)
        event("not sent: no route")
        return
    assert a_added == []  # routed and sent: the rest is up to b

    if version == 4:
        length = int.from_bytes(packet[2:4], "big")
        valid_length = length >= 20
    else:
        length = int.from_bytes(packet[4:6], "big") + 40
        valid_length = True
    source_ok = family(packet[SRC[version]]) == ipaddress.ip_address(A_INNER[version])
    if b_delivered:
        # trimmed to the IP length, which may reach into the zero padding (as wireguard-go)
        (got,) = b_delivered
        assert b_added == 0
        assert len(got) == length
        assert got == (packet + bytes(16))[:length]
        assert valid_length and source_ok
        assert length <= len(packet) + 15
        event("delivered" if length <= len(packet) else "delivered with padding")
    else:
        assert b_added == 1
        assert not (valid_length and source_ok and length <= len(packet))
        expected = set()
        if not valid_length or length > len(packet):
            expected.add(Drop.INNER_MALFORMED)
        if not source_ok:
            expected.add(Drop.DISALLOWED_SOURCE)
        assert b_reasons[0] in expected, (b_reasons, expected)
        event(f"sent, dropped by b as {b_reasons[0]}")


@SETTINGS
@given(packets=st.lists(inner_packets(), min_size=1, max_size=8), session=st.booleans())
def test_random_inner_packets_to_send(packets: list[bytes], session: bool) -> None:
    net = established() if session else MemNet()
    for packet in packets:
        check_sent(net, packet)
    still_works(net)


V4 = ip_packet("10.0.0.1", "10.0.0.2")
V6 = ip_packet("fd00::1", "fd00::2")


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        pytest.param(b"", Drop.INNER_MALFORMED, id="empty"),
        pytest.param(b"\x45", Drop.INNER_MALFORMED, id="one-byte"),
        pytest.param(V4[:19], Drop.INNER_MALFORMED, id="v4-short-header"),
        pytest.param(V6[:39], Drop.INNER_MALFORMED, id="v6-short-header"),
        pytest.param(b"\x55" + V4[1:], Drop.INNER_MALFORMED, id="version-5"),
        pytest.param(b"\x05" + V4[1:], Drop.INNER_MALFORMED, id="version-0"),
        pytest.param(b"\xf5" + V4[1:], Drop.INNER_MALFORMED, id="version-15"),
        pytest.param(b"\x45" + V6[1:], Drop.NO_ROUTE, id="v6-read-as-v4"),
        pytest.param(b"\x65" + V4[1:], Drop.INNER_MALFORMED, id="v4-read-as-v6"),  # 24 < 40
        pytest.param(ip_packet("10.0.0.1", "10.0.0.3"), Drop.NO_ROUTE, id="v4-unrouted"),
        pytest.param(ip_packet("10.0.0.1", "10.0.0.1"), Drop.NO_ROUTE, id="v4-to-self"),
        pytest.param(ip_packet("fd00::1", "fd00::3"), Drop.NO_ROUTE, id="v6-unrouted"),
        pytest.param(ip_packet("fd00::1", "::ffff:10.0.0.2"), Drop.NO_ROUTE, id="v4-mapped"),
    ],
)
def test_unsendable_inner_packets(packet: bytes, reason: Drop) -> None:
    net = established()
    before = Counter(net.a.device.drops)
    assert net.a.device.send(packet, net.now) is None
    assert list((net.a.device.drops - before).elements()) == [reason]
    answer = net.a.device.inbox.take()  # for the host: an ICMP error, if one is due
    assert answer == (answered_unreachable(packet) if reason is Drop.NO_ROUTE else [])
    assert net.a.device.datagrams_to_send() == []
    still_works(net)


# ---------------------------------------------------------------- other senders


def exchange(
    first: Device, second: Device, first_at: tuple, second_at: tuple, now: float
) -> list[bytes]:
    """Carry datagrams between two devices until quiet; what second delivered."""
    delivered: list[bytes] = []
    for _ in range(20):
        moved = False
        for source, target, at in ((first, second, first_at), (second, first, second_at)):
            for datagram, _to in source.datagrams_to_send():
                moved = True
                packet = target.receive(datagram, at, now)
                if packet is not None and target is second:
                    delivered.append(packet)
        if not moved:
            return delivered
    raise AssertionError("never went quiet")


def third_party(net: MemNet, known: bool) -> tuple[Device, tuple]:
    """A device c (10.0.0.3) that knows b; b knows c too if known."""
    c = Device(keys.generate_private_key(), epoch=EPOCH)
    c_at = Endpoint(("192.0.2.3", 51820))
    peer = c.add_peer(net.b.device.public_key)
    c.set_endpoint(peer, net.b.address)
    c.add_allowed_ip(peer, parse_network("0.0.0.0/0"))
    if known:
        assert c.public_key is not None
        b_peer = net.b.device.add_peer(c.public_key)
        net.b.device.add_allowed_ip(b_peer, parse_network("10.0.0.3/32"))
    return c, c_at


def test_initiation_from_an_unknown_key() -> None:
    net = established()
    c, c_at = third_party(net, known=False)
    c.send(ip_packet("10.0.0.3", "10.0.0.2"), net.now)
    ((initiation, _),) = c.datagrams_to_send()
    before = Counter(net.b.device.drops)
    assert net.b.device.receive(initiation, c_at, net.now) is None
    assert list((net.b.device.drops - before).elements()) == [Drop.UNKNOWN_PEER]
    assert net.b.device.datagrams_to_send() == []
    still_works(net)


def test_a_peer_cannot_use_another_peers_inner_address() -> None:
    net = established()
    c, c_at = third_party(net, known=True)
    own = ip_packet("10.0.0.3", "10.0.0.2", b"from c")
    c.send(own, net.now)
    assert exchange(c, net.b.device, c_at, net.a.address, net.now) == [own]
    for source in ("10.0.0.1", "10.0.0.4", "0.0.0.0"):
        before = Counter(net.b.device.drops)
        c.send(ip_packet(source, "10.0.0.2", b"spoofed"), net.now)
        assert exchange(c, net.b.device, c_at, net.a.address, net.now) == []
        assert list((net.b.device.drops - before).elements()) == [Drop.DISALLOWED_SOURCE]
    still_works(net)


@SETTINGS
@given(datagrams=st.lists(st.one_of(st.binary(max_size=200), typed_datagrams()), max_size=6))
def test_a_device_without_a_private_key(datagrams: list[bytes | tuple[int, bytes]]) -> None:
    device = Device()
    assert device.public_key is None
    for item in datagrams:
        datagram = item[1] if isinstance(item, tuple) else item
        before = Counter(device.drops)
        assert device.receive(datagram, Endpoint(("192.0.2.9", 1)), 0.0) is None
        handed_up, device.other_datagrams = device.other_datagrams, []
        device.drops[Drop.UNKNOWN_DATAGRAM] += len(handed_up)  # as the runtime would count it
        added = list((device.drops - before).elements())
        if len(datagram) == HEADERS.get(datagram[:4]):
            assert added == [Drop.NO_PRIVATE_KEY]
        else:
            assert len(added) == 1, added
            assert added[0] in garbage_reasons(datagram, set())
    before = sum(device.drops.values())
    device.send(ip_packet("10.0.0.1", "10.0.0.2"), 0.0)
    assert device.drops[Drop.NO_ROUTE] == 1
    assert sum(device.drops.values()) == before + 1
    assert device.datagrams_to_send() == []
