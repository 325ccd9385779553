"""Whether a peer's remembered source address still suits the route to the peer.

A reply leaves from the local address the peer wrote to (net/udp.py). The
kernel's WireGuard also remembers the interface that datagram came in on, and
pins the IPv4 source only while the route to the peer leaves by that same
interface: once a better route by another interface appears, it forgets the
address and lets that route choose (net/wireguard/socket.c, send4; the
kernel selftest's "route precedence" case). IPv6 keeps the address for as
long as it exists (send6 has no such check), and so does meshnode.

The lookups are netlink round trips (about half a millisecond each): the
runtime makes them in a thread, when routes change and for sources learned
since the last look, never on the send path, which only consults the result.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..wireguard.endpoint import Endpoint, LocalSource

# (the peer's IPv4 address, the local source its datagrams came in at)
SourcePair = tuple[str, LocalSource]


def pinned_pairs(endpoints: Iterable[Endpoint | None]) -> set[SourcePair]:
    """The IPv4 endpoints that carry a remembered source, as pairs to look up."""
    pairs = set()
    for endpoint in endpoints:
        if endpoint is None or endpoint.local is None or endpoint.via is not None:
            continue
        if endpoint.family == socket.AF_INET and endpoint.local.ifindex:
            pairs.add((endpoint.sockaddr[0], endpoint.local))
    return pairs


def misrouted(pairs: Iterable[SourcePair], fwmark: int) -> set[SourcePair]:
    """The pairs whose route to the peer (from that source, under `fwmark`)
    leaves by another interface than the one the peer's datagrams came in on.

    Blocking: run it in a thread. A pair whose source has gone is left out:
    the send path finds that out by itself (UdpSockets.stale_sources).
    """
    found = set()
    with IPRoute() as ipr:
        for host, local in pairs:
            try:
                routes = ipr.route("get", dst=host, src=local.address, mark=fwmark)
            except NetlinkError:
                continue  # no route from that source (it went, or it is unreachable)
            oif = routes[0].get_attr("RTA_OIF") if routes else None
            if oif is not None and oif != local.ifindex:
                found.add((host, local))
    return found
