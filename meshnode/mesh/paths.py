"""How this node reaches one other member: an explicit per-peer path state machine.

In the style of h11's `_state.py`: every state is named, every allowed
transition is listed in `TRANSITIONS`, and a move the table does not allow
raises `PathStateError` (a bug, never a peer's doing). The agent feeds a
`Path` what it sees (the member's published candidates, that it sent the
member something, WireGuard's device events, the time) and gets back a
`PathUpdate`: the endpoint to configure, if it changed, and whether the
member became reachable or unreachable.

    UNKNOWN      no candidate known: nothing to try (the device may still learn
                 an endpoint when the member writes first)
    TRYING       the device's endpoint is one candidate; once the agent sends
                 the member something, a handshake must complete within
                 `try_timeout` or the next candidate is tried
    LAN          a handshake completed from a private or same-subnet address
    DIRECT       a handshake completed from any other address
    UNREACHABLE  every candidate was tried without an answer; tried again
                 after `retry_interval`, or at once on new candidates

NAT traversal adds PROBING (both sides punching through a rendezvous) and
RELAYED (traffic through a relay member while punching runs) to the table.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import NamedTuple

HostPort = tuple[str, int]

TRY_TIMEOUT = 5.0
RETRY_INTERVAL = 60.0


class PathState(enum.Enum):
    UNKNOWN = "unknown"
    TRYING = "trying"
    LAN = "lan"
    DIRECT = "direct"
    UNREACHABLE = "unreachable"


WORKING = frozenset({PathState.LAN, PathState.DIRECT})

TRANSITIONS: dict[PathState, frozenset[PathState]] = {
    PathState.UNKNOWN: frozenset({PathState.TRYING, PathState.LAN, PathState.DIRECT}),
    PathState.TRYING: frozenset(
        {
            PathState.UNKNOWN,
            PathState.TRYING,
            PathState.LAN,
            PathState.DIRECT,
            PathState.UNREACHABLE,
        }
    ),
    PathState.LAN: frozenset(
        {PathState.LAN, PathState.DIRECT, PathState.TRYING, PathState.UNKNOWN}
    ),
    PathState.DIRECT: frozenset(
        {PathState.LAN, PathState.DIRECT, PathState.TRYING, PathState.UNKNOWN}
    ),
    PathState.UNREACHABLE: frozenset(
        {PathState.UNKNOWN, PathState.TRYING, PathState.LAN, PathState.DIRECT}
    ),
}


class PathStateError(RuntimeError):
    """A transition the table does not allow: a bug in the agent."""


class PathUpdate(NamedTuple):
    endpoint: HostPort | None = None  # configure the device's endpoint to this
    reachable: bool | None = None  # True: became reachable; False: stopped answering
    exhausted: bool = False  # every candidate failed: ask the mesh for fresher ones


# Addresses that only make sense inside a site: RFC 1918, loopback and link-local,
# unique local IPv6. (ipaddress's is_private also counts documentation ranges.)
_SITE = tuple(
    ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
        "::1/128",
    )
)


@lru_cache(maxsize=65536)
def _ip(host: str) -> IPv4Address | IPv6Address | None:
    """The address of a candidate host, None for a DNS name (cached: hosts repeat a lot)."""
    try:
        return ip_address(host)
    except ValueError:
        return None


@dataclass(frozen=True)
class LocalNetworks:
    """This node's own addresses, widened to /24 and /64: 'the same subnet' for LAN paths."""

    networks: tuple[IPv4Network | IPv6Network, ...] = ()

    @classmethod
    def of(cls, candidates: Iterable[HostPort]) -> LocalNetworks:
        nets = []
        for host, _port in candidates:
            ip = _ip(host)
            if ip is None:
                continue
            nets.append(ip_network(f"{ip}/{24 if ip.version == 4 else 64}", strict=False))
        return cls(tuple(dict.fromkeys(nets)))

    def same_subnet(self, host: str) -> bool:
        ip = _ip(host)
        if ip is None:
            return False
        return any(ip.version == net.version and ip in net for net in self.networks)

    def classify(self, host: str) -> PathState:
        """LAN for a site-local (RFC 1918, ULA, link-local) or same-subnet address, else DIRECT."""
        ip = _ip(host)
        if ip is None:  # a DNS name: configured public endpoints
            return PathState.DIRECT
        if any(ip.version == n.version and ip in n for n in _SITE) or self.same_subnet(host):
            return PathState.LAN
        return PathState.DIRECT

    def order(self, candidates: Sequence[HostPort]) -> tuple[HostPort, ...]:
        """Same-subnet candidates first, otherwise in the member's own order."""
        if not self.networks or len(candidates) < 2:
            return tuple(candidates)
        return tuple(sorted(candidates, key=lambda c: not self.same_subnet(c[0])))


class Path:
    """One member's path. Methods return a PathUpdate, or None when nothing changed."""

    __slots__ = (
        "_deadline",
        "candidates",
        "endpoint",
        "index",
        "last_handshake",
        "retry_at",
        "session",
        "since",
        "state",
    )

    def __init__(self, candidates: Sequence[HostPort], now: float) -> None:
        """`candidates` already in preference order (`LocalNetworks.order`).

        The device was configured with the first candidate as the endpoint.
        """
        self.candidates = tuple(candidates)
        self.state = PathState.TRYING if self.candidates else PathState.UNKNOWN
        self.index = 0
        self.endpoint: HostPort | None = self.candidates[0] if self.candidates else None
        self._deadline: float | None = None
        self.retry_at = 0.0
        self.since = now
        self.last_handshake: float | None = None
        self.session = False

    # ------------------------------------------------------------ internals

    def _go(self, new: PathState, now: float) -> None:
        if new not in TRANSITIONS[self.state]:
            raise PathStateError(f"path cannot go from {self.state.name} to {new.name}")
        if new is not self.state:
            self.since = now
        self.state = new

    def _try(self, index: int, now: float, armed: bool) -> PathUpdate | None:
        old = self.endpoint
        self._go(PathState.TRYING, now)
        self.index = index
        self.endpoint = self.candidates[index]
        self._deadline = now + TRY_TIMEOUT if armed else None
        return PathUpdate(endpoint=self.endpoint) if self.endpoint != old else None

    def _working(self, endpoint: HostPort | None, local: LocalNetworks, now: float) -> PathUpdate:
        was_working = self.state in WORKING
        if endpoint is not None:
            self.endpoint = endpoint
        host = self.endpoint[0] if self.endpoint else ""
        self._go(local.classify(host) if self.endpoint else PathState.DIRECT, now)
        self._deadline = None
        return PathUpdate(reachable=None if was_working else True)

    # ------------------------------------------------------------ inputs

    @property
    def working(self) -> bool:
        return self.state in WORKING

    def deadline(self) -> float | None:
        return self._deadline if self.state is PathState.TRYING else None

    def set_candidates(self, candidates: Sequence[HostPort], now: float) -> PathUpdate | None:
        candidates = tuple(candidates)
        if candidates == self.candidates:
            return None
        self.candidates = candidates
        if self.working:
            return None  # a path that works is kept; the new list waits until it fails
        if not candidates:
            if self.state is not PathState.UNKNOWN:
                self._go(PathState.UNKNOWN, now)
            self._deadline = None
            return None
        armed = self._deadline is not None or self.state is PathState.UNREACHABLE
        return self._try(0, now, armed)

    def note_send(self, now: float) -> PathUpdate | None:
        """The agent sent the member a message: a handshake is due within the timeout."""
        if self.state is PathState.TRYING and self._deadline is None:
            self._deadline = now + TRY_TIMEOUT
        elif self.state is PathState.UNREACHABLE and now >= self.retry_at:
            return self._try(0, now, armed=True)
        return None

    def on_timer(self, now: float) -> PathUpdate | None:
        if self.state is not PathState.TRYING or self._deadline is None or now < self._deadline:
            return None
        return self._next(now)

    def _next(self, now: float) -> PathUpdate | None:
        if self.index + 1 < len(self.candidates):
            return self._try(self.index + 1, now, armed=True)
        self._go(PathState.UNREACHABLE, now)
        self._deadline = None
        self.retry_at = now + RETRY_INTERVAL
        return PathUpdate(exhausted=True)

    def on_handshake(
        self, endpoint: HostPort | None, local: LocalNetworks, now: float
    ) -> PathUpdate:
        self.last_handshake = now
        self.session = True
        return self._working(endpoint, local, now)

    def on_roamed(self, endpoint: HostPort, local: LocalNetworks, now: float) -> PathUpdate:
        """EndpointChanged: an authenticated datagram came from `endpoint`."""
        return self._working(endpoint, local, now)

    def on_gave_up(self, now: float) -> PathUpdate | None:
        self.session = False
        if self.state is PathState.TRYING:
            return self._next(now)
        if not self.working:
            return None
        if not self.candidates:
            self._go(PathState.UNKNOWN, now)
            return PathUpdate(reachable=False)
        update = self._try(0, now, armed=True)
        return PathUpdate(endpoint=update.endpoint if update else None, reachable=False)

    def on_keys_zeroed(self) -> None:
        """The session lapsed for want of traffic; the endpoint is still the one that worked."""
        self.session = False

    @property
    def label(self) -> str:
        """What `meshnode status` shows: lan, direct, or none."""
        return self.state.value if self.working else "none"
