"""Which routes an interface's peers need, decided as wg-quick decides them.

Pure: the configuration in, a plan out. For each allowed IP, most specific
first: with `table = off` nothing; with a table number, a route in that
table; with `auto`, a route in the main table unless the interface's own
addresses already route it, and for 0.0.0.0/0 or ::/0 policy routing: the
default route goes into a table of its own, used by everything that does
not carry the interface's fwmark, which the tunnel's own UDP sockets do, so
they keep using the main table (no loop through the tunnel).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from ..config import InterfaceConfig

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
FIRST_POLICY_TABLE = 51820  # wg-quick's first choice, then the next free one


@dataclass(frozen=True)
class RoutePlan:
    routes: list[tuple[Network, int | None]] = field(default_factory=list)  # None: main table
    default_table: int | None = None  # the policy routing table (and fwmark), if any
    default_versions: tuple[int, ...] = ()  # 4 and/or 6: families routed by default

    @property
    def policy(self) -> tuple[int | None, tuple[int, ...]]:
        return self.default_table, self.default_versions


def allowed_networks(config: InterfaceConfig) -> list[Network]:
    """The peers' allowed IPs, most specific first, each once."""
    seen: dict[Network, None] = {}
    for peer in config.wg.peers:
        for allowed in peer.allowed_ips:
            seen.setdefault(ipaddress.ip_network(str(allowed.masked())), None)
    return sorted(seen, key=lambda net: -net.prefixlen)


def plan_routes(config: InterfaceConfig, table_in_use: Callable[[int], bool]) -> RoutePlan:
    if config.table == "off":
        return RoutePlan()
    networks = allowed_networks(config)
    if config.table != "auto":
        return RoutePlan([(net, int(config.table)) for net in networks])
    own = [address.network for address in config.addresses]
    routes: list[tuple[Network, int | None]] = []
    defaults: list[Network] = []
    for net in networks:
        if net.prefixlen == 0:
            defaults.append(net)
        elif not any(net.version == o.version and net.subnet_of(o) for o in own):  # type: ignore[arg-type]
            routes.append((net, None))
    if not defaults:
        return RoutePlan(routes)
    table = config.wg.fwmark or _free_table(table_in_use)
    routes += [(net, table) for net in defaults]
    return RoutePlan(routes, table, tuple(sorted(net.version for net in defaults)))


def _free_table(table_in_use: Callable[[int], bool]) -> int:
    table = FIRST_POLICY_TABLE
    while table_in_use(table):
        table += 1
    return table
