"""Bootstrap peers: the members an invite tells the joiner to reach first.

Endpoints are (host, port) with the host an IP literal or a DNS name, so
what the admin typed is checked once, when the invite is made, rather than
failing on the joiner's side.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv6Address, ip_address

from .authority import KEY_LEN
from .codec import Checker

MAX_ENDPOINTS = 8
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", re.IGNORECASE)


class BootstrapError(ValueError):
    """A bootstrap peer or one of its endpoints is invalid."""


def _check_host(c: Checker, host: object) -> str:
    """An IP literal or a DNS name (never an IP look-alike such as 1.2.3.456)."""
    host = c.text(host, "endpoint host", 253)
    try:
        ip = ip_address(host)
    except ValueError:
        labels = host.split(".")
        # an all-digit last label is a mistyped IPv4 address, not a name (RFC 3696)
        if not all(_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
            c.fail(f"endpoint host {host!r} is neither an IP address nor a DNS name")
        return host
    # a scope (fe80::1%eth0) names an interface of the admin's machine, not the joiner's
    if "%" in host:
        c.fail(f"endpoint host {host!r} has a scope; use {str(ip).split('%')[0]!r} instead")
    return host


@dataclass(frozen=True)
class BootstrapPeer:
    """A member to join through: its WireGuard key, overlay address and endpoints.

    The overlay address is where the joiner sends its join request through
    the tunnel (the coordination port on that member).
    """

    public_key: bytes
    overlay: IPv6Address
    endpoints: tuple[tuple[str, int], ...]

    def __post_init__(self) -> None:
        c = Checker(BootstrapError, "bootstrap peer")
        c.blob(self.public_key, "public key", KEY_LEN)
        c.instance(self.overlay, "overlay address", IPv6Address)
        c.instance(self.endpoints, "endpoints", tuple)
        if not 1 <= len(self.endpoints) <= MAX_ENDPOINTS:
            c.fail(f"must have 1 to {MAX_ENDPOINTS} endpoints, has {len(self.endpoints)}")
        for endpoint in self.endpoints:
            c.instance(endpoint, "endpoint", tuple)
            if len(endpoint) != 2:
                c.fail("an endpoint is a (host, port) pair")
            _check_host(c, endpoint[0])
            c.integer(endpoint[1], "endpoint port", 1, 65535)

    def fields(self) -> list[object]:
        return [self.public_key, self.overlay.packed, [list(e) for e in self.endpoints]]

    @classmethod
    def from_fields(cls, value: object) -> BootstrapPeer:
        c = Checker(BootstrapError, "bootstrap peer")
        key, overlay, endpoints = c.seq(value, "encoding", (3, 3))
        pairs = c.seq(endpoints, "endpoints", (1, MAX_ENDPOINTS))
        return cls(
            key,
            IPv6Address(c.blob(overlay, "overlay address", 16)),
            tuple(tuple(c.seq(pair, "endpoint", (2, 2))) for pair in pairs),
        )
