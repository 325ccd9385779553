"""Overlay addresses of a mesh, all derived from its 16-byte mesh id.

Every node can compute the mesh's default IPv4 range and its IPv6 ULA prefix
from the mesh id alone, so the invite does not have to carry them and two
meshes on one host are unlikely to overlap. A member's IPv4 and IPv6 share one
host offset (100.64.16.7 <-> fdxx:...::7), which makes either address name the
other. Temporary join addresses live in a marked corner of the ULA /64 that
member offsets can never reach.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

MESH_ID_LEN = 16
INVITE_ID_LEN = 8

CGNAT = IPv4Network("100.64.0.0/10")  # RFC 6598 shared space, as Tailscale uses
DEFAULT_IPV4_PREFIXLEN = 20  # 4094 members; 1024 such ranges fit in CGNAT
ULA_PREFIXLEN = 64

# The interface id of a join address: 24 marker bits, then 40 invite-id bits.
# Member interface ids are host offsets below 2**32, so their top 24 bits are
# always zero and can never equal the marker.
INVITE_MARKER = 0xFF0000
INVITE_ID_BITS = 40


class AddressError(ValueError):
    """A mesh id, network or address does not fit the mesh's address plan."""


class PoolExhausted(AddressError):
    """Every host address of the mesh's range is in use."""


def new_mesh_id() -> bytes:
    return os.urandom(MESH_ID_LEN)


def _mesh_hash(mesh_id: bytes, person: bytes, size: int) -> bytes:
    if not isinstance(mesh_id, bytes) or len(mesh_id) != MESH_ID_LEN:
        raise AddressError(f"a mesh id is {MESH_ID_LEN} bytes")
    # personalised so the IPv4 and IPv6 choices are independent of each other
    return hashlib.blake2s(mesh_id, digest_size=size, person=person).digest()


def default_ipv4_cidr(mesh_id: bytes) -> IPv4Network:
    """A /20 inside 100.64.0.0/10: BLAKE2s(mesh_id, person="mn-ipv4")[:2] mod 1024.

    65536 is a multiple of 1024, so every /20 is equally likely.
    """
    count = 1 << (DEFAULT_IPV4_PREFIXLEN - CGNAT.prefixlen)
    index = int.from_bytes(_mesh_hash(mesh_id, b"mn-ipv4", 2), "big") % count
    base = int(CGNAT.network_address) + (index << (32 - DEFAULT_IPV4_PREFIXLEN))
    return IPv4Network((base, DEFAULT_IPV4_PREFIXLEN))


def ula_prefix(mesh_id: bytes) -> IPv6Network:
    """RFC 4193: fd00::/8, a 40-bit global id, subnet id 0, as a /64.

    The global id is BLAKE2s(mesh_id, person="mn-ula", digest_size=5); RFC 4193
    asks for a pseudo-random global id, and the mesh id is already random.
    """
    global_id = int.from_bytes(_mesh_hash(mesh_id, b"mn-ula", 5), "big")
    return IPv6Network(((0xFD << 120) | (global_id << 80), ULA_PREFIXLEN))


def _check_ula(prefix: object) -> IPv6Network:
    if not isinstance(prefix, IPv6Network) or prefix.prefixlen != ULA_PREFIXLEN:
        raise AddressError(f"the mesh's IPv6 prefix must be a /{ULA_PREFIXLEN} network")
    return prefix


def invite_address(prefix: IPv6Network, invite_id: bytes) -> IPv6Address:
    """The joiner's temporary address: prefix + ff00:00xx:xxxx:xxxx.

    The interface id is the 24-bit marker 0xff0000 followed by the first 40
    bits of the invite id. Two open invites share an address only with
    probability 2**-40 per pair.
    """
    prefix = _check_ula(prefix)
    if not isinstance(invite_id, bytes) or len(invite_id) != INVITE_ID_LEN:
        raise AddressError(f"an invite id is {INVITE_ID_LEN} bytes")
    id_bits = int.from_bytes(invite_id, "big") >> (64 - INVITE_ID_BITS)
    return prefix.network_address + ((INVITE_MARKER << INVITE_ID_BITS) | id_bits)


def is_invite_address(prefix: IPv6Network, address: IPv6Address) -> bool:
    """True for addresses of the join corner of `prefix` (never a member's)."""
    prefix = _check_ula(prefix)
    if address not in prefix:
        return False
    return (int(address) & ((1 << 64) - 1)) >> INVITE_ID_BITS == INVITE_MARKER


@dataclass(frozen=True)
class AddressPool:
    """The member addresses of one mesh: an IPv4 network and an IPv6 /64.

    Offset n (1 <= n <= size - 2, skipping the IPv4 network and broadcast
    addresses) names the pair (ipv4.network_address + n, ipv6.network_address + n).
    """

    ipv4: IPv4Network
    ipv6: IPv6Network

    def __post_init__(self) -> None:
        if not isinstance(self.ipv4, IPv4Network) or self.ipv4.prefixlen > 30:
            raise AddressError("the mesh's IPv4 range must be an IPv4 network of /30 or wider")
        _check_ula(self.ipv6)

    @classmethod
    def for_mesh(cls, mesh_id: bytes) -> AddressPool:
        """The default plan: `default_ipv4_cidr` and `ula_prefix` of the mesh id."""
        return cls(default_ipv4_cidr(mesh_id), ula_prefix(mesh_id))

    @property
    def last_offset(self) -> int:
        return self.ipv4.num_addresses - 2

    def pair(self, offset: int) -> tuple[IPv4Address, IPv6Address]:
        """The member addresses at host offset `offset`."""
        if not 1 <= offset <= self.last_offset:
            raise AddressError(f"host offset {offset} is outside 1..{self.last_offset}")
        return self.ipv4.network_address + offset, self.ipv6.network_address + offset

    def offset_of(self, address: IPv4Address | IPv6Address) -> int | None:
        """The host offset of a member address of this pool, else None."""
        network = self.ipv4 if isinstance(address, IPv4Address) else self.ipv6
        if address not in network:
            return None
        offset = int(address) - int(network.network_address)
        return offset if 1 <= offset <= self.last_offset else None

    def allocate(
        self, in_use: Iterable[IPv4Address | IPv6Address]
    ) -> tuple[IPv4Address, IPv6Address]:
        """The lowest offset whose IPv4 and IPv6 are both free.

        Only len(in_use) + 1 offsets can be taken before a free one turns up,
        so this costs O(members) however large the range is.
        """
        used = set(in_use)
        for offset in range(1, min(self.last_offset, len(used) + 1) + 1):
            v4, v6 = self.pair(offset)
            if v4 not in used and v6 not in used:
                return v4, v6
        raise PoolExhausted(f"all {self.last_offset} addresses of {self.ipv4} are in use")

    def invite_address(self, invite_id: bytes) -> IPv6Address:
        return invite_address(self.ipv6, invite_id)
