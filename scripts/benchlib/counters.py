"""Kernel drop counters around a test: where the packets that went missing were lost.

Per side: UDP receive/send buffer overflows of the namespace (the daemons'
underlay sockets, /proc/net/snmp and snmp6) and the TUN's dropped packets
(`ip -s link`: tx dropped = the TUN queue to the daemon was full).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import netns

UDP_KEYS = ("RcvbufErrors", "SndbufErrors", "InErrors")
TUN_KEYS = (("tx", "dropped"), ("rx", "dropped"))


def _snmp_pairs(text: str, prefixes: Iterable[str]) -> dict[str, int]:
    """/proc/net/snmp: a header line then a value line per protocol."""
    found: dict[str, int] = {}
    lines = text.splitlines()
    for header, values in zip(lines[::2], lines[1::2], strict=False):
        proto, _, names = header.partition(": ")
        if proto in prefixes:
            numbers = values.partition(": ")[2].split()
            found.update(
                {f"{proto}{n}": int(v) for n, v in zip(names.split(), numbers, strict=False)}
            )
    return found


def _snmp6(text: str) -> dict[str, int]:
    """/proc/net/snmp6: one "Name value" pair a line."""
    return {name: int(value) for name, value in (line.split() for line in text.splitlines())}


def udp_errors(ns: netns.Namespace) -> dict[str, int]:
    v4 = _snmp_pairs(ns.run("cat", "/proc/net/snmp", timeout=10).stdout.decode(), ("Udp",))
    v6 = _snmp6(ns.run("cat", "/proc/net/snmp6", timeout=10).stdout.decode())
    return {f"udp_{key}": v4.get(f"Udp{key}", 0) + v6.get(f"Udp6{key}", 0) for key in UDP_KEYS}


def tun_drops(ns: netns.Namespace, ifname: str) -> dict[str, int]:
    out = ns.run("ip", "-s", "-j", "link", "show", "dev", ifname, timeout=10).stdout
    stats = json.loads(out)[0].get("stats64", {})
    return {f"tun_{way}_{key}": int(stats.get(way, {}).get(key, 0)) for way, key in TUN_KEYS}


def snapshot(sides: Iterable[tuple[str, netns.Namespace, str]]) -> dict[str, int]:
    """Counters of each (role, namespace, TUN name), keyed "role.counter"."""
    values: dict[str, int] = {}
    for role, ns, ifname in sides:
        for key, value in (udp_errors(ns) | tun_drops(ns, ifname)).items():
            values[f"{role}.{key}"] = value
    return values


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """What changed, zero changes left out."""
    return {k: after[k] - before[k] for k in after if k in before and after[k] != before[k]}


def total(changes: dict[str, int], counter: str) -> int:
    """One counter summed over both sides."""
    return sum(v for k, v in changes.items() if k.split(".", 1)[1] == counter)
