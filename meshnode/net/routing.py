"""Addresses, routes, policy rules and sysctls for one interface, each change
registered with its undo, so that whatever way the interface goes down,
everything it added is taken back (in reverse order).

Addresses and routes go over netlink with pyroute2. Policy rules are made
with iproute2's `ip rule`, exactly as wg-quick makes them: "not fwmark" and
"suppress_prefixlength" are flags and attributes pyroute2's rule API does
not spell out.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

from pyroute2 import IPRoute

from .firewall import Recorder
from .link import mtu_of

_TIMEOUT = 10  # seconds for an `ip` command

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class RoutingError(OSError):
    pass


def _family(net: Network | Address) -> int:
    return socket.AF_INET6 if net.version == 6 else socket.AF_INET


class Routing:
    """The routing changes of one interface; `undo` is registered for each."""

    def __init__(self, ifname: str, on_undo: Callable[[Callable[[], None]], None],
                 record: Recorder | None = None) -> None:  # fmt: skip
        self.ifname = ifname
        self._on_undo = on_undo
        # journals each change before it is made (see meshnode/node/journal.py)
        self._record: Recorder = record or (lambda entry: lambda: None)
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise RoutingError(f"no interface {ifname}")
        self.index = found[0]

    def add_address(self, address: Address) -> None:
        with IPRoute() as ipr:
            try:
                ipr.addr(
                    "add",
                    index=self.index,
                    address=str(address.ip),
                    prefixlen=address.network.prefixlen,
                    family=_family(address),
                )
            except Exception as exc:
                raise RoutingError(f"cannot add address {address} to {self.ifname}: {exc}") from exc
        # the address goes with the interface; nothing to undo

    def add_route(self, network: Network, table: int | None = None) -> Callable[[], None]:
        """Add a route through the interface; returns its undo (routes come and
        go one by one on reload, so the caller keeps the undo)."""
        arguments = {
            "dst": str(network.network_address),
            "dst_len": network.prefixlen,
            "oif": self.index,
            "family": _family(network),
        }
        if table is not None:
            arguments["table"] = table
        forget = self._record({"kind": "route", "dst": str(network), "table": table,
                               "dev": self.ifname})  # fmt: skip
        with IPRoute() as ipr:
            try:
                ipr.route("add", **arguments)
            except Exception as exc:
                forget()
                where = f" table {table}" if table is not None else ""
                raise RoutingError(f"cannot add route {network}{where}: {exc}") from exc

        def undo() -> None:
            with IPRoute() as ipr, contextlib.suppress(Exception):
                ipr.route("del", **arguments)  # gone already if the interface is
            forget()

        return undo

    def add_rule(self, version: int, *words: str) -> None:
        """`ip -4|-6 rule add WORDS`, and its `rule del` as the undo."""
        family = f"-{version}"
        forget = self._record({"kind": "rule", "version": version, "words": list(words)})
        try:
            _ip(family, "rule", "add", *words)
        except RoutingError:
            forget()
            raise

        def undo() -> None:
            _ip(family, "rule", "del", *words, check=False)
            forget()

        self._on_undo(undo)

    def set_sysctl(self, name: str, value: str) -> None:
        """Write /proc/sys/NAME; the old value comes back when the last
        interface of this process that wanted it goes down."""
        path = Path("/proc/sys") / name.replace(".", "/")
        if name in _sysctl_holders:
            # every holder journals the value from before the node changed
            # it: whichever interface is still up when the node dies has it
            forget = self._record({"kind": "sysctl", "name": name,
                                   "old": _sysctl_holders[name][0], "new": value})  # fmt: skip
        else:
            old = path.read_text().strip()
            if old == value:
                return
            forget = self._record({"kind": "sysctl", "name": name, "old": old, "new": value})
            try:
                path.write_text(value + "\n")
            except OSError:
                forget()
                raise
            _sysctl_holders[name] = [old, 0]
        _sysctl_holders[name][1] += 1

        def undo() -> None:
            holder = _sysctl_holders[name]
            holder[1] -= 1
            if holder[1] == 0:
                del _sysctl_holders[name]
                path.write_text(f"{holder[0]}\n")
            forget()

        self._on_undo(undo)


# sysctls are shared by every interface of the node: name -> [value before, holders]
_sysctl_holders: dict[str, list] = {}


def table_in_use(table: int) -> bool:
    """Whether a routing table has any route, IPv4 or IPv6 (wg-quick picks a free one)."""
    with IPRoute() as ipr:
        for family in (socket.AF_INET, socket.AF_INET6):
            if any(True for _ in ipr.route("dump", table=table, family=family)):
                return True
    return False


def path_mtu(hosts: list[str]) -> int:
    """wg-quick's guess of the underlay MTU: the largest MTU of the routes to
    the endpoints, else that of the default route, else 1500."""
    best = max((_route_mtu("get", host) for host in hosts), default=0)
    return best or _route_mtu("show", "default") or 1500


def _route_mtu(*args: str) -> int:
    try:
        out = subprocess.run(["ip", "route", *args], capture_output=True, text=True,
                             timeout=_TIMEOUT).stdout  # fmt: skip
    except subprocess.TimeoutExpired:
        return 0
    if found := re.search(r"\bmtu (\d+)", out):
        return int(found.group(1))
    if found := re.search(r"\bdev (\S+)", out):
        return mtu_of(found.group(1)) or 0
    return 0


def _ip(*args: str, check: bool = True) -> None:
    try:
        result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise RoutingError(f"ip {' '.join(args)}: no answer in {_TIMEOUT} s") from None
    if check and result.returncode != 0:
        raise RoutingError(f"ip {' '.join(args)}: {result.stderr.strip()}")
