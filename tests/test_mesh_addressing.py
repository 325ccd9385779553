"""The mesh's address plan: derived ranges, allocation, join addresses."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.mesh.addressing import (
    CGNAT,
    AddressError,
    AddressPool,
    PoolExhausted,
    default_ipv4_cidr,
    invite_address,
    is_invite_address,
    new_mesh_id,
    ula_prefix,
)

MESH_ID = bytes(range(16))
mesh_ids = st.binary(min_size=16, max_size=16)


@given(mesh_ids)
def test_derived_ranges_are_deterministic_and_well_formed(mesh_id: bytes) -> None:
    v4 = default_ipv4_cidr(mesh_id)
    assert v4 == default_ipv4_cidr(mesh_id)
    assert v4.prefixlen == 20 and v4.subnet_of(CGNAT)
    v6 = ula_prefix(mesh_id)
    assert v6 == ula_prefix(mesh_id)
    assert v6.prefixlen == 64
    assert v6.subnet_of(IPv6Network("fd00::/8"))
    assert int(v6.network_address) >> 64 & 0xFFFF == 0  # subnet id 0


def test_meshes_spread_over_the_ranges() -> None:
    ids = [bytes([i]) * 16 for i in range(200)]
    assert len({default_ipv4_cidr(i) for i in ids}) > 150
    assert len({ula_prefix(i) for i in ids}) == 200
    assert len(new_mesh_id()) == 16 and new_mesh_id() != new_mesh_id()


@pytest.mark.parametrize("bad", [b"", bytes(15), bytes(17), "x" * 16, None])
def test_bad_mesh_ids_are_refused(bad: object) -> None:
    with pytest.raises(AddressError):
        default_ipv4_cidr(bad)  # type: ignore[arg-type]
    with pytest.raises(AddressError):
        ula_prefix(bad)  # type: ignore[arg-type]


def test_allocation_pairs_addresses_and_skips_used_ones() -> None:
    pool = AddressPool.for_mesh(MESH_ID)
    v4, v6 = pool.allocate([])
    assert v4 == pool.ipv4.network_address + 1 and v6 == pool.ipv6.network_address + 1
    # either half in use takes the offset out
    used = {pool.pair(1)[0], pool.pair(2)[1], pool.pair(4)[0], pool.pair(4)[1]}
    assert pool.allocate(used) == pool.pair(3)
    assert pool.offset_of(pool.pair(3)[1]) == 3 == pool.offset_of(pool.pair(3)[0])
    assert pool.offset_of(pool.ipv4.network_address) is None
    assert pool.offset_of(pool.ipv4.broadcast_address) is None
    assert pool.offset_of(IPv6Address("fe80::1")) is None


def test_network_and_broadcast_are_never_allocated() -> None:
    pool = AddressPool(IPv4Network("10.0.0.0/30"), ula_prefix(MESH_ID))
    first = pool.allocate([])
    second = pool.allocate([first[0]])
    assert {first[0], second[0]} == {IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")}
    with pytest.raises(PoolExhausted):
        pool.allocate([first[0], second[1]])
    with pytest.raises(AddressError):
        pool.pair(3)


@pytest.mark.parametrize(
    ("v4", "v6"),
    [("10.0.0.0/31", "fd00::/64"), ("10.0.0.0/24", "fd00::/48"), ("fd00::/64", "fd00::/64")],
)
def test_pools_that_cannot_pair_addresses_are_refused(v4: str, v6: str) -> None:
    from ipaddress import ip_network

    with pytest.raises(AddressError):
        AddressPool(ip_network(v4), ip_network(v6))  # type: ignore[arg-type]


@settings(max_examples=50)
@given(st.binary(min_size=8, max_size=8), st.integers(1, 2**22 - 2))
def test_join_addresses_never_collide_with_members(invite_id: bytes, offset: int) -> None:
    pool = AddressPool(IPv4Network("100.64.0.0/10"), ula_prefix(MESH_ID))
    address = invite_address(pool.ipv6, invite_id)
    assert address in pool.ipv6 and address == pool.invite_address(invite_id)
    assert is_invite_address(pool.ipv6, address)
    assert pool.offset_of(address) is None
    member_v6 = pool.pair(offset)[1]
    assert member_v6 != address and not is_invite_address(pool.ipv6, member_v6)


def test_join_addresses_differ_per_invite() -> None:
    prefix = ula_prefix(MESH_ID)
    assert invite_address(prefix, b"\x01" * 8) != invite_address(prefix, b"\x02" * 8)
    assert str(invite_address(prefix, bytes.fromhex("0123456789abcdef"))).endswith(
        ":ff00:1:2345:6789"
    )
    with pytest.raises(AddressError):
        invite_address(prefix, b"short")
    assert not is_invite_address(prefix, IPv6Address("2001:db8::ff00:1:2345:6789"))
