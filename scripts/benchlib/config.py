"""Addresses, daemon commands, pairs and the options of one bench run."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
MESHNODE_WG = REPO / ".venv" / "bin" / "meshnode-wg"

PORT = 51820
TUNNEL_MTU = 1420  # what wg-quick sets over a 1500-byte underlay
MESHNODE = "mn"  # the meshnode daemon's short name in pair ids and tables
HS_PEERS, HS_SOURCES, HS_RATE, HS_DURATION = 1000, 1000, 8000, 10.0
MEMORY_PEERS = 10_000
QUIET_MAX_WAIT = 30.0  # seconds to wait for other load to stop before measuring anyway
NAME_PATTERN = re.compile(r"[A-Za-z0-9_]{1,16}")


@dataclass(frozen=True)
class Addresses:
    """One side's underlay (veth) and tunnel addresses."""

    underlay4: str
    underlay6: str
    tunnel4: str
    tunnel6: str

    def underlay(self, ipv6: bool) -> str:
        return self.underlay6 if ipv6 else self.underlay4

    def tunnel(self, ipv6: bool) -> str:
        return self.tunnel6 if ipv6 else self.tunnel4

    def endpoint(self, ipv6: bool) -> str:
        return f"[{self.underlay6}]:{PORT}" if ipv6 else f"{self.underlay4}:{PORT}"


CLIENT = Addresses("192.168.70.1", "fd70::1", "10.70.0.1", "fd70:1::1")
SERVER = Addresses("192.168.70.2", "fd70::2", "10.70.0.2", "fd70:1::2")
UNDERLAY_PREFIX4, UNDERLAY_PREFIX6 = 24, 64
TUNNEL_PREFIX4, TUNNEL_PREFIX6 = 24, 64


@dataclass(frozen=True)
class Impl:
    """A userspace WireGuard daemon: its argv prefix, to which IFNAME is appended."""

    name: str
    argv: tuple[str, ...]

    @property
    def is_meshnode(self) -> bool:
        return self.name == MESHNODE

    def command(self) -> str:
        return " ".join(self.argv)


@dataclass(frozen=True)
class PairSpec:
    """The daemon on the client side (iperf3 client, ping) and on the server side."""

    client: Impl
    server: Impl

    @property
    def id(self) -> str:
        return f"{self.client.name}-{self.server.name}"

    @property
    def reference(self) -> Impl | None:
        """The reference this pair is compared with (None for meshnode↔meshnode)."""
        for impl in (self.client, self.server):
            if not impl.is_meshnode:
                return impl
        return None


@dataclass
class Options:
    meshnode: Impl
    refs: list[Impl]
    rounds: int = 3
    duration: int = 10
    quick: bool = False
    ipv6: bool = False
    pairs: list[str] = field(default_factory=list)  # pair ids to run; empty: the default set
    out: Path = REPO / "bench-results"
    throughput: bool = True
    handshakes: bool = True
    memory: bool = True
    hs_peers: int = HS_PEERS
    hs_sources: int = HS_SOURCES
    hs_rate: int = HS_RATE
    hs_duration: float = HS_DURATION
    memory_peers: int = MEMORY_PEERS
    quiet_threshold: float = 10.0  # % of all CPUs busy that counts as "something else runs"
