"""Where a peer is reached, as the core sees it: one type for every path.

The core needs three things from an endpoint: bytes that identify the source
for cookie MACs, a key for the per-source rate limiter, and the address
family. The runtime needs the socket address to send to and, for replies
that must leave from the address the peer sent to (sticky source, as the
kernel and wireguard-go do), the local address the datagram arrived at.

Two endpoints are equal when both the remote address and the local source
are: a datagram from the same peer address to another local address is a
new path (its replies leave from another address). `same_remote` compares
the remote part only, which is what "the peer roamed" means.

A relayed endpoint (`Endpoint.relayed`) is a peer reached through another
member of the mesh: `via` is the relay's public key, `to` the peer's. The
core treats it as any other path (roaming to it and away from it); the
runtime hands datagrams for it to the relay glue instead of the socket. Its
`sockaddr` is a label ("relay:<hex of via>", 0) that no socket accepts.
"""

from __future__ import annotations

import ipaddress
import socket

SocketAddress = tuple  # ("192.0.2.1", 51820) or ("2001:db8::1", 51820, flowinfo, scope_id)


def source_bytes(sockaddr: SocketAddress) -> bytes:
    """A socket address as the bytes mac2 cookies are made of: the packed
    address and the port (Endpoint.cookie_bytes; the runtime's under-load
    path computes it without making an Endpoint)."""
    host = sockaddr[0]
    if ":" not in host:
        packed = socket.inet_pton(socket.AF_INET, host)
    else:
        packed = socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
    return packed + sockaddr[1].to_bytes(2, "big")


class LocalSource:
    """Our address a peer's datagram arrived at, and the interface it came in on."""

    __slots__ = ("_hash", "address", "ifindex")

    def __init__(self, address: str, ifindex: int = 0) -> None:
        self.address = address
        self.ifindex = ifindex
        self._hash = hash((address, ifindex))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, LocalSource)
            and self.address == other.address
            and self.ifindex == other.ifindex
        )

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"LocalSource({self.address!r}, {self.ifindex})"


class Endpoint:
    """A peer's address (and the local address replies leave from, if known)."""

    __slots__ = ("_cookie_bytes", "_hash", "family", "local", "sockaddr", "to", "via")

    def __init__(self, sockaddr: SocketAddress, local: LocalSource | None = None) -> None:
        self.via: bytes | None = None
        self.to: bytes | None = None
        if len(sockaddr) == 2:
            self.family = socket.AF_INET
            sockaddr = (sockaddr[0], sockaddr[1])
        elif len(sockaddr) == 4:
            self.family = socket.AF_INET6
            sockaddr = (sockaddr[0], sockaddr[1], sockaddr[2], sockaddr[3])
        else:
            raise ValueError(f"not a socket address: {sockaddr!r}")
        self.sockaddr = sockaddr
        self.local = local
        self._hash = hash((sockaddr, local))
        self._cookie_bytes: bytes | None = None

    @classmethod
    def literal(cls, host: str, port: int) -> Endpoint | None:
        """The endpoint of an IP literal and a port; None for a name (names are
        resolved elsewhere, never by a blocking lookup in the event loop)."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return None
        if address.version == 4:
            return cls((str(address), port))
        return cls((str(address), port, 0, 0))

    @classmethod
    def relayed(cls, via: bytes, to: bytes) -> Endpoint:
        """The peer `to`, reached through the relay member `via`."""
        endpoint = cls.__new__(cls)
        endpoint.family = 0  # no socket of this node sends to it
        endpoint.sockaddr = (f"relay:{via.hex()}", 0)
        endpoint.local = None
        endpoint.via, endpoint.to = via, to
        endpoint._hash = hash((endpoint.sockaddr, to))
        # mac2 cookies and the rate limiter count a relayed peer by its relay
        endpoint._cookie_bytes = b"relay" + via
        return endpoint

    @property
    def host(self) -> str:
        return self.sockaddr[0]

    @property
    def port(self) -> int:
        return self.sockaddr[1]

    @property
    def rate_key(self) -> str:
        """What the handshake rate limiter counts by: the source address."""
        return self.sockaddr[0]

    @property
    def cookie_bytes(self) -> bytes:
        """The source as bytes for mac2 cookies: the packed address and port.

        Only this node computes them (the initiator echoes the cookie), so
        the form need not match other implementations, only be stable."""
        cached = self._cookie_bytes
        if cached is None:
            cached = self._cookie_bytes = source_bytes(self.sockaddr)
        return cached

    def same_remote(self, other: Endpoint | None) -> bool:
        return other is not None and self.sockaddr == other.sockaddr

    def without_local(self) -> Endpoint:
        return self if self.local is None else Endpoint(self.sockaddr)

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        return (
            isinstance(other, Endpoint)
            and self.sockaddr == other.sockaddr
            and self.local == other.local
            and self.to == other.to
        )

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        if self.via is not None:
            return f"Endpoint(relay via {self.via.hex()[:8]})"
        local = "" if self.local is None else f" via {self.local.address}"
        return f"Endpoint({self.sockaddr!r}{local})"
