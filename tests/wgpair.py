"""Two userspace WireGuard daemons in two namespaces joined by a veth, set up
with the real `wg` and `ip`: the starting point of the interop tests.

Underlay: 192.168.50.1/.2 and fd50::1/::2. Tunnel: 10.77.0.1/.2 and fd77::1/::2.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

from netns import Lab, Namespace, Process, Veth, wait_for

from meshnode.wireguard import keys

MESHNODE_WG = (sys.executable, "-m", "meshnode.wgdaemon", "-f")
WIREGUARD_GO = ("wireguard-go", "-f")
IMPLEMENTATIONS = {"meshnode": MESHNODE_WG, "wireguard-go": WIREGUARD_GO}
PORT = 51820


@dataclass
class Side:
    ns: Namespace
    ifname: str
    daemon: Process
    impl: str
    private_key: bytes
    underlay4: str
    underlay6: str
    inner4: str
    inner6: str

    @property
    def public_b64(self) -> str:
        return keys.to_base64(keys.public_key(self.private_key))

    def wg(self, *args: str, check: bool = True) -> str:
        result = self.ns.run("wg", *args, check=check)
        return (result.stdout + result.stderr).decode()

    def ping(self, target: str, count: int = 3, source: str | None = None) -> str:
        extra = ["-I", source] if source else []
        result = self.ns.run(
            "ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2", *extra, target, check=False
        )
        return result.stdout.decode()


def loss(ping_output: str) -> int:
    match = re.search(r"(\d+)% packet loss", ping_output)
    assert match, ping_output
    return int(match.group(1))


@dataclass
class Pair:
    lab: Lab
    left: Side
    right: Side
    veth: Veth

    def ping_all(self) -> None:
        """Ping over IPv4 and IPv6 in both directions; every reply must come back."""
        for src, dst in ((self.left, self.right), (self.right, self.left)):
            for target in (dst.inner4, dst.inner6):
                out = src.ping(target)
                assert loss(out) == 0, f"{src.impl} -> {dst.impl} {target}:\n{out}"


class Capture:
    """tcpdump on an interface: the UDP payload lengths seen, in order."""

    def __init__(self, ns: Namespace, ifname: str) -> None:
        self.process = ns.spawn("tcpdump", "-i", ifname, "-nn", "-l", "-U", "udp")
        wait_for(lambda: "listening on" in self.process.log(), 10, "tcpdump to start")

    def lengths(self, source: str | None = None) -> list[int]:
        """UDP lengths of the packets sent from source (an IP) or all of them."""
        found = []
        for line in self.process.log().splitlines():
            match = re.search(r"IP6? (\S+)\.\d+ > \S+: UDP, length (\d+)", line)
            if match and (source is None or match.group(1) == source):
                found.append(int(match.group(2)))
        return found

    def times(self, source: str, length: int) -> list[float]:
        """Seconds since midnight of each packet of one length from source."""
        found = []
        for line in self.process.log().splitlines():
            match = re.match(r"(\d+):(\d+):([\d.]+) IP6? (\S+)\.\d+ > \S+: UDP, length (\d+)", line)
            if match and match.group(4) == source and int(match.group(5)) == length:
                h, m, sec = match.group(1, 2, 3)
                found.append(int(h) * 3600 + int(m) * 60 + float(sec))
        return found

    def stop(self) -> None:
        self.process.stop()


def start_side(lab: Lab, ns: Namespace, impl: str, n: int, extra: tuple[str, ...] = ()) -> Side:
    """A daemon of one implementation (extra: more arguments before the name)."""
    ifname = lab.ifname("w")
    daemon = lab.start_userspace_wg(ns, ifname, argv=(*IMPLEMENTATIONS[impl], *extra))
    side = Side(
        ns, ifname, daemon, impl, keys.generate_private_key(),
        f"192.168.50.{n}", f"fd50::{n}", f"10.77.0.{n}", f"fd77::{n}",
    )  # fmt: skip
    key_file = lab.tmp_path / f"{ifname}.key"
    key_file.write_text(keys.to_base64(side.private_key) + "\n")
    side.wg("set", ifname, "private-key", str(key_file), "listen-port", str(PORT))
    ns.ip("addr", "add", f"{side.inner4}/24", "dev", ifname)
    ns.ip("addr", "add", f"{side.inner6}/64", "dev", ifname, "nodad")
    ns.ip("link", "set", ifname, "up")
    return side


def connect(
    lab: Lab,
    side: Side,
    other: Side,
    *,
    endpoint: bool = True,
    psk: bytes | None = None,
    allowed: str | None = None,
    extra: tuple[str, ...] = (),
) -> None:
    args = ["set", side.ifname, "peer", other.public_b64]
    args += ["allowed-ips", allowed or f"{other.inner4}/32,{other.inner6}/128"]
    if endpoint:
        args += ["endpoint", f"{other.underlay4}:{PORT}"]
    if psk is not None:
        psk_file = lab.tmp_path / f"{side.ifname}.psk"
        psk_file.write_text(keys.to_base64(psk) + "\n")
        args += ["preshared-key", str(psk_file)]
    side.wg(*args, *extra)


def make_pair(
    lab: Lab,
    left_impl: str,
    right_impl: str,
    *,
    psk: bool = False,
    only_left_knows_endpoint: bool = False,
) -> Pair:
    """Left and right daemons, each the other's peer. With only_left_knows_endpoint
    the right side cannot initiate: left is the initiator, right the responder."""
    a, b = lab.namespace("l"), lab.namespace("r")
    veth = lab.veth(a, b, ["192.168.50.1/24", "fd50::1/64"], ["192.168.50.2/24", "fd50::2/64"])
    left = start_side(lab, a, left_impl, 1)
    right = start_side(lab, b, right_impl, 2)
    shared = keys.generate_preshared_key() if psk else None
    connect(lab, left, right, psk=shared)
    connect(lab, right, left, psk=shared, endpoint=not only_left_knows_endpoint)
    return Pair(lab, left, right, veth)
