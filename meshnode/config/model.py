"""What `meshnode up` runs: a node and its interfaces, whichever file they came from.

The WireGuard part of an interface (keys, port, fwmark, peers) is a wgtool
DeviceUpdate that replaces everything, exactly what `wg setconf` would send;
the rest is what wg-quick adds around it (addresses, MTU, DNS, routes, hooks)
and meshnode's gateway mode.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ..interface import Offloads
from ..log import ERROR
from ..wgtool.model import DeviceUpdate

DEFAULT_CONFIG = "/etc/meshnode/config.toml"
DEFAULT_STATE_DIR = "/var/lib/meshnode"

Address = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class ConfigError(Exception):
    """A configuration problem, located: "FILE:LINE: message"."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path, self.line, self.message = path, line, message
        where = path if line is None else f"{path}:{line}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Gateway:
    """Forward the peers' traffic and masquerade it out of out_interface."""

    out_interface: str


@dataclass
class InterfaceConfig:
    name: str
    wg: DeviceUpdate
    addresses: list[Address] = field(default_factory=list)
    mtu: int | None = None  # None: the daemon's default (1420)
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    table: str = "auto"  # "auto", "off", or a routing table number
    pre_up: list[str] = field(default_factory=list)
    post_up: list[str] = field(default_factory=list)
    pre_down: list[str] = field(default_factory=list)
    post_down: list[str] = field(default_factory=list)
    save_config: bool = False  # wg-quick's SaveConfig: write the state back on the way down
    gateway: Gateway | None = None
    offloads: Offloads = field(default_factory=Offloads)
    path: str = ""  # the file it came from
    line: int | None = None  # where its section starts

    def network_settings(self) -> tuple:
        """Everything but the WireGuard settings: a change here means the
        interface is set up again; a change in `wg` alone is applied in place."""
        return (
            self.addresses,
            self.mtu,
            self.dns,
            self.dns_search,
            self.table,
            self.pre_up,
            self.post_up,
            self.pre_down,
            self.post_down,
            self.save_config,
            self.gateway,
            self.offloads,
        )


@dataclass
class MeshConfig:
    """Settings of one mesh this node is in (the mesh itself comes from
    `meshnode init` or `join`; these override how it is run here)."""

    name: str
    interface: str | None = None  # default mn-NAME
    listen_port: int | None = None  # default: the port chosen at init/join
    persistent_keepalive: int | None = None  # toward rendezvous members (default 25 s)
    endpoints: list[str] = field(default_factory=list)  # HOST:PORT others reach this node at
    # auto: relay for others if a rendezvous member, use relays when punching fails;
    # never: relay nothing, use no relay; only: always through a relay, never probe
    relay: str = "auto"
    stun: list[str] = field(default_factory=list)  # HOST:PORT STUN servers (besides members)
    line: int | None = None


@dataclass
class NodeConfig:
    path: str
    interfaces: list[InterfaceConfig]
    log_level: int = ERROR
    state_dir: str = DEFAULT_STATE_DIR
    meshes: list[MeshConfig] = field(default_factory=list)
