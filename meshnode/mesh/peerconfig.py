"""What the mesh asks of its WireGuard device: typed peer changes the glue applies.

The agent never touches the device. It returns these, in order, from
`config_changes()`; the glue turns them into `Interface.apply` requests.
A `ConfigurePeer` is the peer's whole desired configuration (allowed IPs
replace the old ones), so applying the same one twice changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from .paths import Target
from .records import MemberRecord

Network = IPv4Network | IPv6Network
HostPort = tuple[str, int]


@dataclass(frozen=True)
class ConfigurePeer:
    """Add the peer or replace its configuration.

    `endpoint` None leaves the device's endpoint as it is (a new peer then
    has none until it writes first, which WireGuard's roaming picks up); a
    `Relay` is the peer reached through that relay member.
    `coordination_only` marks an invite's temporary peer: the runtime hands
    its packets to the agent (coordination port only) and never to the TUN.
    """

    public_key: bytes
    allowed_ips: tuple[Network, ...]
    endpoint: Target | None = None
    persistent_keepalive: int = 0
    preshared_key: bytes | None = field(default=None, repr=False)
    coordination_only: bool = False


@dataclass(frozen=True)
class RemovePeer:
    public_key: bytes


PeerChange = ConfigurePeer | RemovePeer


def member_networks(record: MemberRecord) -> tuple[Network, ...]:
    """A member's AllowedIPs: its overlay /32 and /128."""
    return _host_networks(record.ipv4, record.ipv6)


@lru_cache(maxsize=16384)
def _host_networks(ipv4: IPv4Address, ipv6: IPv6Address) -> tuple[Network, ...]:
    # the tuple form skips ipaddress's string round trip, and the cache the rest:
    # a member's networks are built again on every change of its configuration
    return (IPv4Network((int(ipv4), 32)), IPv6Network((int(ipv6), 128)))


def host_route(address: IPv6Address) -> tuple[Network, ...]:
    return (IPv6Network(address),)
