"""The allowed-IPs table against a naive reference model, and worked examples.

The model is a dict {network: peer}. A lookup scans every network of the
address's family that contains it and takes the longest prefix. The dict keeps
insertion order: a network moved to another peer is re-inserted at the end, so
the networks the model holds for one peer are in the order `networks(peer)`
promises ("the order they were added").
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from meshnode.wireguard.allowedips import AllowedIPs, Network, parse_network

IPv4Network = ipaddress.IPv4Network
IPv6Network = ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class P:
    """A peer with identity semantics, like meshnode's Peer."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"P({self.name})"


PEERS = [P(name) for name in "abcd"]
BITS = {4: 32, 6: 128}

# Networks are cut from a few base addresses so that they nest and overlap, plus
# some fully random ones; all prefix lengths are possible.
V4_BASES = [0x0A000000, 0x0A010203, 0xC0A80101, 0xFFFFFFFF, 0x00000000, 0x7F000001]
V6_BASES = [
    int(ipaddress.IPv6Address("fd00::1")),
    int(ipaddress.IPv6Address("fd00:1:2:3::abcd")),
    int(ipaddress.IPv6Address("2001:db8::")),
    int(ipaddress.IPv6Address("::ffff:10.1.2.3")),  # IPv4-mapped: must not match IPv4 routes
    (1 << 128) - 1,
    0,
]


def _network(version: int, address: int, length: int) -> Network:
    bits = BITS[version]
    mask = ((1 << bits) - 1) ^ ((1 << (bits - length)) - 1)
    cls = IPv4Network if version == 4 else IPv6Network
    return cls((address & mask, length))


@st.composite
def networks(draw: st.DrawFn) -> Network:
    version = draw(st.sampled_from([4, 6]))
    bits = BITS[version]
    bases = V4_BASES if version == 4 else V6_BASES
    address = draw(st.one_of(st.sampled_from(bases), st.integers(0, (1 << bits) - 1)))
    length = draw(st.integers(0, bits))
    return _network(version, address, length)


def _address(version: int, value: int) -> Address:
    if version == 4:
        return ipaddress.IPv4Address(value)
    return ipaddress.IPv6Address(value)


def addresses_near(draw: st.DrawFn, network: Network) -> Address:
    """An address inside network, at its edges, or just outside them."""
    version, bits = network.version, BITS[network.version]
    first, last = int(network.network_address), int(network.broadcast_address)
    choice = draw(st.sampled_from(["inside", "first", "last", "below", "above", "sibling"]))
    if choice == "inside":
        value = draw(st.integers(first, last))
    elif choice == "first":
        value = first
    elif choice == "last":
        value = last
    elif choice == "below":
        value = (first - 1) % (1 << bits)
    elif choice == "above":
        value = (last + 1) % (1 << bits)
    else:  # the other half of the enclosing prefix
        length = network.prefixlen
        value = first ^ (1 << (bits - length)) if length else first
    return _address(version, value)


class Model:
    def __init__(self) -> None:
        self.routes: dict[Network, P] = {}

    def insert(self, network: Network, peer: P) -> None:
        if self.routes.get(network) is not peer:
            self.routes.pop(network, None)  # moved: it is added anew for its new peer
            self.routes[network] = peer

    def remove(self, network: Network, peer: P) -> bool:
        if self.routes.get(network) is not peer:
            return False
        del self.routes[network]
        return True

    def remove_peer(self, peer: P) -> None:
        for network in [n for n, p in self.routes.items() if p is peer]:
            del self.routes[network]

    def lookup(self, address: Address) -> P | None:
        matches = [
            (network.prefixlen, peer)
            for network, peer in self.routes.items()
            if network.version == address.version and address in network
        ]
        return max(matches, key=lambda match: match[0])[1] if matches else None

    def networks(self, peer: P) -> list[Network]:
        return [n for n, p in self.routes.items() if p is peer]


def check_lookup(table: AllowedIPs[P], model: Model, address: Address) -> None:
    expected = model.lookup(address)
    assert table.lookup(address.packed) is expected, address
    if address.version == 4:
        assert table.lookup_v4(int(address)) is expected, address
    else:
        assert table.lookup_v6(int(address)) is expected, address


class AllowedIPsMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.table: AllowedIPs[P] = AllowedIPs()
        self.model = Model()

    @rule(network=networks(), peer=st.sampled_from(PEERS))
    def insert(self, network: Network, peer: P) -> None:
        self.table.insert(network, peer)
        self.model.insert(network, peer)

    @rule(peer=st.sampled_from(PEERS), data=st.data())
    def reinsert_existing(self, peer: P, data: st.DataObject) -> None:
        """Insert a prefix some peer already holds: it moves (or stays) with peer."""
        if not self.model.routes:
            return
        network = data.draw(st.sampled_from(sorted(self.model.routes, key=str)))
        self.table.insert(network, peer)
        self.model.insert(network, peer)

    @rule(network=networks(), peer=st.sampled_from(PEERS))
    def remove_random(self, network: Network, peer: P) -> None:
        assert self.table.remove(network, peer) == self.model.remove(network, peer)

    @precondition(lambda self: bool(self.model.routes))
    @rule(data=st.data(), owner=st.booleans())
    def remove_existing(self, data: st.DataObject, owner: bool) -> None:
        """Remove a held prefix, by its owner or by some other peer (which must fail)."""
        network = data.draw(st.sampled_from(sorted(self.model.routes, key=str)))
        peer = self.model.routes[network] if owner else data.draw(st.sampled_from(PEERS))
        expected = self.model.routes[network] is peer
        assert self.model.remove(network, peer) == expected
        assert self.table.remove(network, peer) == expected

    @rule(peer=st.sampled_from(PEERS))
    def remove_peer(self, peer: P) -> None:
        self.table.remove_peer(peer)
        self.model.remove_peer(peer)

    @rule(data=st.data())
    def lookup(self, data: st.DataObject) -> None:
        for _ in range(data.draw(st.integers(1, 8))):
            if self.model.routes and data.draw(st.integers(0, 4)):
                network = data.draw(st.sampled_from(sorted(self.model.routes, key=str)))
                address = addresses_near(data.draw, network)
            else:
                version = data.draw(st.sampled_from([4, 6]))
                address = _address(version, data.draw(st.integers(0, (1 << BITS[version]) - 1)))
            check_lookup(self.table, self.model, address)

    @invariant()
    def peers_agree(self) -> None:
        for peer in PEERS:
            expected = self.model.networks(peer)
            got = list(self.table.networks(peer))
            assert got == expected, peer
            assert self.table.count(peer) == len(expected), peer

    @invariant()
    def edges_agree(self) -> None:
        """Every held prefix's first and last address, and the ones just outside."""
        for network in self.model.routes:
            bits = BITS[network.version]
            first, last = int(network.network_address), int(network.broadcast_address)
            for value in (first, last, first - 1, last + 1):
                if 0 <= value < 1 << bits:
                    check_lookup(self.table, self.model, _address(network.version, value))


AllowedIPsMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestAllowedIPsMachine = AllowedIPsMachine.TestCase


# ---------------------------------------------------------------- examples


def n(text: str) -> Network:
    return parse_network(text)


def addr(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def test_inserting_an_existing_prefix_moves_it() -> None:
    a, b = P("a"), P("b")
    table: AllowedIPs[P] = AllowedIPs()
    table.insert(n("10.0.0.0/24"), a)
    table.insert(n("10.0.1.0/24"), a)
    table.insert(n("10.0.0.0/24"), b)
    assert table.lookup(addr("10.0.0.7")) is b
    assert table.lookup(addr("10.0.1.7")) is a
    assert list(table.networks(a)) == [n("10.0.1.0/24")]
    assert list(table.networks(b)) == [n("10.0.0.0/24")]
    assert (table.count(a), table.count(b)) == (1, 1)
    # the old owner can no longer remove it; the new one can
    assert not table.remove(n("10.0.0.0/24"), a)
    assert table.remove(n("10.0.0.0/24"), b)
    assert table.lookup(addr("10.0.0.7")) is None
    assert table.count(b) == 0
    assert list(table.networks(b)) == []


def test_moving_the_last_prefix_forgets_the_old_peer() -> None:
    a, b = P("a"), P("b")
    table: AllowedIPs[P] = AllowedIPs()
    table.insert(n("fd00::/64"), a)
    table.insert(n("fd00::/64"), b)
    assert table.count(a) == 0
    assert list(table.networks(a)) == []
    table.remove_peer(a)  # a holds nothing: must not touch b's prefix
    assert table.lookup(addr("fd00::1")) is b


def test_reinserting_for_the_same_peer_keeps_order_and_count() -> None:
    a = P("a")
    table: AllowedIPs[P] = AllowedIPs()
    for text in ("10.0.0.0/8", "fd00::/8", "192.168.0.0/16"):
        table.insert(n(text), a)
    table.insert(n("10.0.0.0/8"), a)
    assert list(table.networks(a)) == [n("10.0.0.0/8"), n("fd00::/8"), n("192.168.0.0/16")]
    assert table.count(a) == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.1.2.3/8", "10.0.0.0/8"),
        (" 10.1.2.3/8 ", "10.0.0.0/8"),
        ("10.1.2.3", "10.1.2.3/32"),
        ("10.1.2.3/0", "0.0.0.0/0"),
        ("255.255.255.255/31", "255.255.255.254/31"),
        ("fd00::1234/64", "fd00::/64"),
        ("fd00::1", "fd00::1/128"),
        ("fd00::1/0", "::/0"),
    ],
)
def test_parse_network_discards_host_bits(text: str, expected: str) -> None:
    assert parse_network(text) == ipaddress.ip_network(expected)


def test_host_bits_do_not_leak_into_lookups() -> None:
    a = P("a")
    table: AllowedIPs[P] = AllowedIPs()
    table.insert(parse_network("10.1.2.3/8"), a)
    assert list(table.networks(a)) == [n("10.0.0.0/8")]
    assert table.lookup(addr("10.200.0.1")) is a
    assert table.lookup(addr("11.0.0.0")) is None
    assert table.remove(n("10.0.0.0/8"), a)


def test_default_routes_for_both_families() -> None:
    v4, v6, specific = P("v4"), P("v6"), P("specific")
    table: AllowedIPs[P] = AllowedIPs()
    table.insert(n("0.0.0.0/0"), v4)
    for text in ("0.0.0.0", "10.0.0.1", "255.255.255.255"):
        assert table.lookup(addr(text)) is v4
    for text in ("::", "fd00::1", "::ffff:10.0.0.1"):
        assert table.lookup(addr(text)) is None
    table.insert(n("::/0"), v6)
    for text in ("::", "fd00::1", "::ffff:10.0.0.1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"):
        assert table.lookup(addr(text)) is v6
    table.insert(n("10.0.0.0/8"), specific)
    table.insert(n("fd00::/8"), specific)
    assert table.lookup(addr("10.0.0.1")) is specific
    assert table.lookup(addr("11.0.0.1")) is v4
    assert table.lookup(addr("fd00::1")) is specific
    assert table.lookup(addr("fe00::1")) is v6
    assert table.remove(n("0.0.0.0/0"), v4)
    assert table.lookup(addr("11.0.0.1")) is None
    assert table.lookup(addr("fe00::1")) is v6
    assert table.lookup(addr("10.0.0.1")) is specific


def test_families_do_not_interfere() -> None:
    a, b = P("a"), P("b")
    table: AllowedIPs[P] = AllowedIPs()
    table.insert(n("::/0"), a)
    table.insert(n("::/96"), a)  # the IPv4-compatible range: still IPv6 only
    table.insert(n("::ffff:0:0/96"), a)  # IPv4-mapped: still IPv6 only
    assert table.lookup(addr("10.0.0.1")) is None
    assert table.lookup(addr("0.0.0.0")) is None
    assert table.lookup_v4(0x0A000001) is None
    # the same integer as an IPv4 prefix and as an IPv6 prefix are different routes
    table.insert(IPv4Network((0x0A000000, 8)), b)
    table.insert(IPv6Network((0x0A000000, 120)), P("c"))
    assert table.lookup_v4(0x0A000001) is b
    assert table.lookup_v6(0x0A000001) is not b
    assert table.lookup(addr("::a00:1")) is not b
    assert table.remove(n("::/0"), a)
    assert table.lookup(addr("10.0.0.1")) is b
    assert not table.remove(IPv4Network((0x0A000000, 8)), a)
    table.remove_peer(a)
    assert table.lookup(addr("10.0.0.1")) is b
    assert table.lookup(addr("::ffff:10.0.0.1")) is None
    assert table.count(b) == 1


def test_longest_prefix_wins_regardless_of_insertion_order() -> None:
    peers = {length: P(str(length)) for length in (0, 8, 16, 24, 32)}
    for order in (sorted(peers), sorted(peers, reverse=True), [16, 0, 32, 8, 24]):
        table: AllowedIPs[P] = AllowedIPs()
        for length in order:
            table.insert(_network(4, 0x0A010203, length), peers[length])
        assert table.lookup(addr("10.1.2.3")) is peers[32]
        assert table.lookup(addr("10.1.2.4")) is peers[24]
        assert table.lookup(addr("10.1.3.4")) is peers[16]
        assert table.lookup(addr("10.2.3.4")) is peers[8]
        assert table.lookup(addr("11.2.3.4")) is peers[0]


@pytest.mark.parametrize(
    "text",
    ["0.0.0.0", "10.0.0.1", "10.255.255.255", "11.0.0.0", "255.255.255.255",
     "::", "fd00::", "fd00::1", "fdff:ffff::1", "fe00::", "::ffff:10.0.0.1"],
)  # fmt: skip
def test_int_lookups_agree_with_byte_lookups(text: str) -> None:
    table: AllowedIPs[P] = AllowedIPs()
    for i, route in enumerate(["10.0.0.0/8", "10.0.0.0/24", "0.0.0.0/1", "fd00::/8", "fd00::/127"]):
        table.insert(n(route), PEERS[i % len(PEERS)])
    address = ipaddress.ip_address(text)
    by_int = table.lookup_v4 if address.version == 4 else table.lookup_v6
    assert table.lookup(address.packed) is by_int(int(address))
