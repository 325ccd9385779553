"""`meshnode ping MEMBER`: ICMP echo over the overlay, through the TUN like
any traffic, and after each answer the path the node used for the member
(direct to which endpoint, lan, relayed via whom) from its status.
`--until-direct` goes on until the path is direct or LAN, or gives up after
a minute with the node's reason."""

from __future__ import annotations

import argparse
import ipaddress
import os
import select
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

from ..wireguard.checksum import internet_checksum

Ask = Callable[..., dict[str, Any]]

_UNTIL_DIRECT_FOR = 60.0
_TIMEOUT = 2.0
_INTERVAL = 1.0


class Pinger:
    """ICMP echo over a raw socket (root, as the node itself needs)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.v6 = ipaddress.ip_address(target).version == 6
        family = socket.AF_INET6 if self.v6 else socket.AF_INET
        proto = socket.IPPROTO_ICMPV6 if self.v6 else socket.IPPROTO_ICMP
        self.sock = socket.socket(family, socket.SOCK_RAW, proto)
        self.ident = os.getpid() & 0xFFFF

    def echo(self, seq: int, timeout: float = _TIMEOUT) -> float | None:
        """The round-trip time in seconds, or None without an answer in time."""
        kind = 128 if self.v6 else 8
        payload = b"meshnode ping " + struct.pack("!d", time.monotonic())
        header = struct.pack("!BBHHH", kind, 0, 0, self.ident, seq)
        checksum = 0 if self.v6 else internet_checksum(header + payload)  # the kernel does ICMPv6's
        packet = struct.pack("!BBHHH", kind, 0, checksum, self.ident, seq) + payload
        sent = time.monotonic()
        self.sock.sendto(packet, (self.target, 0))
        deadline = sent + timeout
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                break
            data = self.sock.recv(2048)
            icmp = data if self.v6 else data[(data[0] & 0x0F) * 4 :]
            if len(icmp) < 8:
                continue
            kind_in, _code, _sum, ident, seq_in = struct.unpack_from("!BBHHH", icmp)
            if kind_in == (129 if self.v6 else 0) and ident == self.ident and seq_in == seq:
                return time.monotonic() - sent
        return None

    def close(self) -> None:
        self.sock.close()


def _find(meshes: list[dict], wanted: str, mesh: str | None) -> tuple[dict, dict]:
    for entry in meshes:
        if mesh is not None and entry["mesh_name"] != mesh:
            continue
        for member in entry["members"]:
            if wanted in (member["name"], member["ipv4"], member["ipv6"]):
                return entry, member
    where = f"mesh {mesh}" if mesh else "any mesh of this node"
    raise SystemExit(f"meshnode ping: no member {wanted!r} in {where}")


def _path_text(member: dict) -> str:
    path = member["path"]
    if path == "relayed":
        return f"relay {member.get('via') or '?'}"
    endpoint = member.get("endpoint")
    if path in ("direct", "lan") and endpoint:
        return f"{path} {endpoint[0]}:{endpoint[1]}"
    return path


def run(args: argparse.Namespace, ask: Ask) -> int:
    entry, member = _find(ask("mesh-status", mesh=args.mesh)["meshes"], args.member, args.mesh)
    mesh = entry["mesh_name"]
    target = member["ipv6" if args.v6 else "ipv4"]
    try:
        pinger = Pinger(target)
    except PermissionError:
        sys.stderr.write("meshnode ping: needs root (a raw ICMP socket)\n")
        return 1
    answered = 0
    direct = False
    start = time.monotonic()
    seq = 0
    try:
        while True:
            seq += 1
            rtt = pinger.echo(seq)
            _, member = _find(ask("mesh-status", mesh=mesh)["meshes"], args.member, mesh)
            path = _path_text(member)
            if rtt is None:
                print(f"no answer from {member['name']} ({target}) in {_TIMEOUT:.0f} s; "
                      f"path {path}")  # fmt: skip
            else:
                answered += 1
                print(f"pong from {member['name']} ({target}) via {path} in "
                      f"{rtt * 1000:.1f} ms")  # fmt: skip
            direct = rtt is not None and member["path"] in ("direct", "lan")
            if args.until_direct:
                if direct:
                    break
                if time.monotonic() - start > _UNTIL_DIRECT_FOR:
                    why = member.get("why") or "no reason known"
                    print(f"{member['name']} is still {member['path']} after "
                          f"{_UNTIL_DIRECT_FOR:.0f} s: {why}")  # fmt: skip
                    return 1
            elif seq >= args.count:
                break
            time.sleep(_INTERVAL)
    finally:
        pinger.close()
    if answered == 0:
        why = member.get("why")
        print(f"{member['name']} did not answer" + (f": {why}" if why else ""))
        return 1
    return 0
