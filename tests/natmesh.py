"""A mesh in the NAT lab (natlab.py): coturn as an RFC 5780 STUN server on two
public addresses, the mesh's admin (a rendezvous and relay member) on a
public host, and members behind home NAT routers, each `meshnode up` run as
a user runs it, joined with invites.

    coturn 198.18.0.10/.11:3478   hub (admin) 198.18.0.12
                 \\                 /
                  ---- internet ----
                 /                 \\
        home A (easy|hard)      home B (easy|hard)
          alice [bob ...]          carol ...
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field

from meshlab import MeshNode
from natlab import Home, NatKind, NatLab, PublicHost
from netns import Lab, Namespace, Process, wait_for

MESH = "lab"
STUN_PORT = 3478


def start_coturn(lab: Lab, host: PublicHost) -> Process:
    """coturn's STUN server (no TURN) on the host's two addresses, RFC 5780's
    alternate port beside the main one."""
    exe = shutil.which("turnserver")
    assert exe is not None, "coturn's turnserver is not installed (scripts/setup installs it)"
    root = lab.tmp_path / f"coturn-{host.tag}"
    root.mkdir(parents=True, exist_ok=True)
    args = [exe, "-n", "--stun-only", "--no-cli", "--no-tls", "--no-dtls", "--no-tcp",
            "--fingerprint", "--log-file", "stdout", "--simple-log",
            "--pidfile", str(root / "pid"), "--userdb", str(root / "turndb"),
            "--listening-port", str(STUN_PORT),
            "--alt-listening-port", str(STUN_PORT + 1)]  # fmt: skip
    for address in host.addresses:
        args += ["-L", address]
    process = host.ns.spawn(*args)
    probe = (
        "import socket,os,sys;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(0.3)\n"
        "req=bytes.fromhex('00010000'+'2112a442')+os.urandom(12)\n"
        "for _ in range(30):\n"
        f"  s.sendto(req,('{host.addresses[0]}',{STUN_PORT}))\n"
        "  try: s.recv(2048); sys.exit(0)\n"
        "  except OSError: pass\n"
        "sys.exit(1)"
    )
    result = host.ns.run("python3", "-c", probe, check=False, timeout=30)
    if result.returncode != 0:
        raise AssertionError(f"coturn does not answer:\n{process.log()}")
    return process


@dataclass
class NatMesh:
    lab: Lab
    natlab: NatLab
    stun: PublicHost
    hub: MeshNode
    nodes: dict[str, MeshNode] = field(default_factory=dict)
    homes: dict[str, Home] = field(default_factory=dict)
    servers: list[str] = field(default_factory=list)  # the STUN servers members are given

    @classmethod
    def build(cls, lab: Lab, stun_servers: bool = True, hub_relay: str = "auto") -> NatMesh:
        """The internet, coturn, and the hub with the mesh initialised."""
        natlab = NatLab(lab)
        stun = natlab.public_host("stun")
        stun.add_address()
        start_coturn(lab, stun)
        public = natlab.public_host("hub")
        mesh = cls(lab, natlab, stun, _node(lab, public.ns, "hub"))
        mesh.servers = [f"{a}:{STUN_PORT}" for a in stun.addresses] if stun_servers else []
        _configure(mesh.hub, mesh.servers, hub_relay)
        mesh.hub.start()
        mesh.hub.cli("init", MESH, "--member", "hub")
        mesh.nodes["hub"] = mesh.hub
        return mesh

    def home(self, tag: str, nat: NatKind = "easy", ipv6: bool = False) -> Home:
        home = self.homes[tag] = self.natlab.home(tag, nat=nat, ipv6=ipv6)
        return home

    def join(self, name: str, home: Home, relay: str = "auto") -> MeshNode:
        member = home.member(name)
        node = _node(self.lab, member.ns, name)
        _configure(node, self.servers, relay)
        node.start()
        invite = self.hub.invite(MESH, "--name", name)
        node.cli("join", invite)
        self.nodes[name] = node
        return node

    def path(self, node: str, other: str) -> dict:
        return node_members(self.nodes[node]).get(other, {})

    def wait_path(self, node: str, other: str, paths: set[str], within: float,
                  host: str | None = None) -> dict:  # fmt: skip
        """Wait for `node`'s path to `other` to be one of `paths` (and to use
        `host` as its endpoint's address, if given)."""
        seen: dict = {}

        def ok() -> bool:
            nonlocal seen
            seen = self.path(node, other)
            at = seen.get("endpoint")
            return seen.get("path") in paths and (host is None or (at and at[0] == host))

        wait_for(ok, within, f"{node} -> {other} to be {paths} {host or ''} (last {seen})")
        return seen


def node_members(node: MeshNode) -> dict[str, dict]:
    return node.members(MESH)


def _node(lab: Lab, ns: Namespace, name: str) -> MeshNode:
    root = lab.tmp_path / f"node-{name}"
    for sub in ("run", "state", "wg"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return MeshNode(lab, ns, 0, root)


def _configure(node: MeshNode, servers: list[str], relay: str = "auto") -> None:
    stun = ", ".join(f'"{s}"' for s in servers)
    text = f'[[mesh]]\nname = "{MESH}"\nrelay = "{relay}"\nstun = [{stun}]\n'
    path = node.root / "no-config.toml"
    path.write_text(text)
    path.chmod(0o600)


def overlay_of(node: MeshNode) -> str:
    for entry in node.status():
        if entry["mesh_name"] == MESH:
            return entry["ipv4"]
    raise AssertionError("not in the mesh")


def counters(node: MeshNode) -> dict:
    """The node's `meshnode stats`."""
    _, text = node.cli("stats")
    return json.loads(text)


def ping_until(node: MeshNode, target: str, within: float) -> float:
    """Seconds until a ping gets through (raises after `within`)."""
    start = time.monotonic()
    assert node.reaches(target, within=within), f"{node.ns.name} cannot reach {target}"
    return time.monotonic() - start
