"""Which remembered sources the route check looks at (the lookups themselves
are driven in tests/test_sticky_source.py, in namespaces)."""

from __future__ import annotations

from meshnode.net.sourceroute import pinned_pairs
from meshnode.wireguard.endpoint import Endpoint, LocalSource


def test_only_ipv4_endpoints_with_a_source_and_an_interface_are_looked_at() -> None:
    eth = LocalSource("10.0.0.1", 3)
    pinned = Endpoint(("10.0.0.2", 51820), eth)
    same_host_other_port = Endpoint(("10.0.0.2", 51821), eth)
    endpoints = [
        pinned,
        same_host_other_port,  # the same lookup: one pair
        Endpoint(("10.0.0.9", 51820)),  # no source remembered: the route chooses anyway
        Endpoint(("10.0.0.8", 51820), LocalSource("10.0.0.1", 0)),  # interface unknown
        Endpoint(("fd00::2", 51820, 0, 0), LocalSource("fd00::1", 3)),  # IPv6 keeps it
        Endpoint.relayed(b"r" * 32, b"t" * 32),
        None,
    ]
    assert pinned_pairs(endpoints) == {("10.0.0.2", eth)}
