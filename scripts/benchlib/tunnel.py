"""Two userspace WireGuard daemons joined by a tunnel over a veth.

The namespaces and the veth (the underlay) live for a whole section; each
pair run starts its two daemons on fresh interface names, configures them
with the real `wg` and `ip` as wg-quick would (MTU 1420, the daemon's own
txqueuelen), waits for the first handshake, and stops them afterwards.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import netns

from meshnode.wireguard import keys

from . import procfs
from .config import (
    CLIENT,
    PORT,
    SERVER,
    TUNNEL_MTU,
    TUNNEL_PREFIX4,
    TUNNEL_PREFIX6,
    UNDERLAY_PREFIX4,
    UNDERLAY_PREFIX6,
    Addresses,
    Impl,
    PairSpec,
)


@dataclass
class Underlay:
    client: netns.Namespace
    server: netns.Namespace
    veth: netns.Veth


def make_underlay(lab: netns.Lab) -> Underlay:
    client, server = lab.namespace("cl"), lab.namespace("sv")
    veth = lab.veth(
        client,
        server,
        [f"{CLIENT.underlay4}/{UNDERLAY_PREFIX4}", f"{CLIENT.underlay6}/{UNDERLAY_PREFIX6}"],
        [f"{SERVER.underlay4}/{UNDERLAY_PREFIX4}", f"{SERVER.underlay6}/{UNDERLAY_PREFIX6}"],
    )
    return Underlay(client, server, veth)


@dataclass
class Side:
    impl: Impl
    ns: netns.Namespace
    ifname: str
    daemon: netns.Process
    private_key: bytes
    addresses: Addresses

    @property
    def public_b64(self) -> str:
        return keys.to_base64(keys.public_key(self.private_key))

    def wg(self, *args: str, timeout: float = 30) -> str:
        return self.ns.run("wg", *args, timeout=timeout).stdout.decode()

    def link_info(self) -> dict[str, object]:
        """The TUN's MTU and txqueuelen as the daemon left them."""
        out = self.ns.run("ip", "-j", "link", "show", self.ifname).stdout
        info = json.loads(out)[0]
        return {"mtu": info.get("mtu"), "txqlen": info.get("txqlen")}


@dataclass
class Tunnel:
    spec: PairSpec
    client: Side
    server: Side
    ipv6: bool

    @property
    def sides(self) -> tuple[Side, Side]:
        return self.client, self.server

    def daemons_running(self) -> bool:
        return all(side.daemon.running() for side in self.sides)

    def daemon_pids(self) -> dict[str, int]:
        return {"client": self.client.daemon.pid, "server": self.server.daemon.pid}

    def counter_sides(self) -> list[tuple[str, netns.Namespace, str]]:
        """(role, namespace, TUN name) of each side, for benchlib.counters."""
        return [("client", self.client.ns, self.client.ifname),
                ("server", self.server.ns, self.server.ifname)]  # fmt: skip

    def netns_inodes(self) -> set[int]:
        """Our two namespaces, to tell our processes from everyone else's."""
        inodes = {procfs.netns_inode(f"/run/netns/{side.ns.name}") for side in self.sides}
        return {inode for inode in inodes if inode is not None}

    def target(self) -> str:
        """The server's tunnel address, what iperf3 and ping aim at."""
        return self.server.addresses.tunnel(self.ipv6)


def _start_side(lab: netns.Lab, ns: netns.Namespace, impl: Impl, addresses: Addresses) -> Side:
    ifname = lab.ifname("w")
    daemon = lab.start_userspace_wg(ns, ifname, argv=impl.argv)
    side = Side(impl, ns, ifname, daemon, keys.generate_private_key(), addresses)
    key_file = lab.tmp_path / f"{ifname}.key"
    key_file.write_text(keys.to_base64(side.private_key) + "\n")
    side.wg("set", ifname, "private-key", str(key_file), "listen-port", str(PORT))
    ns.ip("addr", "add", f"{addresses.tunnel4}/{TUNNEL_PREFIX4}", "dev", ifname)
    ns.ip("addr", "add", f"{addresses.tunnel6}/{TUNNEL_PREFIX6}", "dev", ifname, "nodad")
    ns.ip("link", "set", ifname, "mtu", str(TUNNEL_MTU), "up")
    return side


def _add_peer(side: Side, other: Side, ipv6: bool) -> None:
    allowed = f"{other.addresses.tunnel4}/32,{other.addresses.tunnel6}/128"
    endpoint = other.addresses.endpoint(ipv6)
    side.wg("set", side.ifname, "peer", other.public_b64, "allowed-ips", allowed,
            "endpoint", endpoint)  # fmt: skip


def _wait_for_handshake(tunnel: Tunnel, attempts: int = 10) -> bool:
    """Ping through the tunnel until a reply comes back (the first handshake)."""
    for _ in range(attempts):
        result = tunnel.client.ns.run(
            "ping", "-n", "-c", "1", "-W", "1", tunnel.target(), check=False, timeout=10
        )
        if result.returncode == 0:
            return True
        if not tunnel.daemons_running():
            return False
    return False


class TunnelError(RuntimeError):
    """The tunnel did not come up; the message has the daemons' logs."""


def open_tunnel(lab: netns.Lab, underlay: Underlay, spec: PairSpec, ipv6: bool) -> Tunnel:
    """Start and configure both daemons; raises TunnelError (after stopping them)
    if a daemon exits or no ping gets through within 10 s."""
    client = _start_side(lab, underlay.client, spec.client, CLIENT)
    try:
        server = _start_side(lab, underlay.server, spec.server, SERVER)
    except Exception:
        client.daemon.stop()
        raise
    tunnel = Tunnel(spec, client, server, ipv6)
    _add_peer(client, server, ipv6)
    _add_peer(server, client, ipv6)
    if not _wait_for_handshake(tunnel):
        logs = "\n".join(f"--- {s.impl.name} ({s.ifname}):\n{s.daemon.log()}" for s in tunnel.sides)
        close_tunnel(tunnel, None)
        raise TunnelError(f"{spec.id}: no ping through the tunnel in 10 s\n{logs}")
    return tunnel


def close_tunnel(tunnel: Tunnel, log_dir: Path | None) -> None:
    """Stop both daemons; keep their logs in log_dir."""
    for role, side in (("client", tunnel.client), ("server", tunnel.server)):
        side.daemon.stop()
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(side.daemon.log_path, log_dir / f"{role}-{side.impl.name}.log")
