"""Cryptokey routing: the allowed-IPs table.

One table per device maps prefixes (IPv4 and IPv6 mixed) to peers. It chooses
the peer for an outgoing packet by its destination and checks an incoming
packet's inner source. Longest prefix wins.

Rather than a bit trie, each family keeps one dict per prefix length in use; a
lookup probes the lengths from longest to shortest. Real tables use few
distinct lengths, so this is a handful of dict probes in C instead of a
per-bit walk in Python.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Generic, TypeVar

P = TypeVar("P")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(text: str) -> Network:
    """Parse 'addr/len' or a bare address, discarding host bits as wg does."""
    return ipaddress.ip_network(text.strip(), strict=False)


class _FamilyTable(Generic[P]):
    __slots__ = ("_bits", "_by_length", "_lengths", "_masks")

    def __init__(self, bits: int) -> None:
        self._bits = bits
        self._by_length: dict[int, dict[int, P]] = {}
        self._lengths: list[int] = []  # in use, longest first
        self._masks: list[tuple[int, int]] = []  # (mask, length), same order

    def _reindex(self) -> None:
        self._lengths = sorted(self._by_length, reverse=True)
        full = (1 << self._bits) - 1
        self._masks = [(full ^ (full >> n), n) for n in self._lengths]

    def insert(self, prefix: int, length: int, peer: P) -> P | None:
        table = self._by_length.get(length)
        if table is None:
            table = self._by_length[length] = {}
            self._reindex()
        previous = table.get(prefix)
        table[prefix] = peer
        return previous

    def remove(self, prefix: int, length: int) -> None:
        table = self._by_length[length]
        del table[prefix]
        if not table:
            del self._by_length[length]
            self._reindex()

    def owner(self, prefix: int, length: int) -> P | None:
        table = self._by_length.get(length)
        return None if table is None else table.get(prefix)

    def lookup(self, address: int) -> P | None:
        by_length = self._by_length
        for mask, length in self._masks:
            peer = by_length[length].get(address & mask)
            if peer is not None:
                return peer
        return None


class AllowedIPs(Generic[P]):
    """Prefix -> peer, with longest-prefix lookups for raw 4- or 16-byte addresses."""

    __slots__ = ("_by_peer", "_v4", "_v6")

    def __init__(self) -> None:
        self._v4: _FamilyTable[P] = _FamilyTable(32)
        self._v6: _FamilyTable[P] = _FamilyTable(128)
        # peer -> its prefixes as (version, prefix int, length), in insertion order
        self._by_peer: dict[P, dict[tuple[int, int, int], None]] = {}

    def _family(self, version: int) -> _FamilyTable[P]:
        return self._v4 if version == 4 else self._v6

    def insert(self, network: Network, peer: P) -> None:
        """Route network to peer, taking it from any peer that had it."""
        key = (network.version, int(network.network_address), network.prefixlen)
        previous = self._family(key[0]).insert(key[1], key[2], peer)
        if previous is not None and previous is not peer:
            del self._by_peer[previous][key]
            if not self._by_peer[previous]:
                del self._by_peer[previous]
        self._by_peer.setdefault(peer, {})[key] = None

    def remove(self, network: Network, peer: P) -> bool:
        """Remove network if peer holds it; tell whether it did."""
        key = (network.version, int(network.network_address), network.prefixlen)
        family = self._family(key[0])
        owner = family.owner(key[1], key[2])
        if owner is None or owner is not peer:
            return False
        family.remove(key[1], key[2])
        del self._by_peer[peer][key]
        if not self._by_peer[peer]:
            del self._by_peer[peer]
        return True

    def remove_peer(self, peer: P) -> None:
        for version, prefix, length in self._by_peer.pop(peer, {}):
            self._family(version).remove(prefix, length)

    def lookup(self, address: bytes) -> P | None:
        """The peer owning a raw IPv4 (4 bytes) or IPv6 (16 bytes) address."""
        table = self._v4 if len(address) == 4 else self._v6
        return table.lookup(int.from_bytes(address, "big"))

    def lookup_v4(self, address: int) -> P | None:
        return self._v4.lookup(address)

    def lookup_v6(self, address: int) -> P | None:
        return self._v6.lookup(address)

    def networks(self, peer: P) -> Iterator[Network]:
        """The prefixes routed to peer, in the order they were added."""
        for version, prefix, length in self._by_peer.get(peer, {}):
            if version == 4:
                yield ipaddress.IPv4Network((prefix, length))
            else:
                yield ipaddress.IPv6Network((prefix, length))

    def count(self, peer: P) -> int:
        return len(self._by_peer.get(peer, ()))
