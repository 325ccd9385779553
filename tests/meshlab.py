"""Mesh nodes in test namespaces: one namespace per machine, all on one bridge
(192.168.80.N/24, fd80::N/64), each `meshnode up` with its own run, state and
UAPI socket directories, so several nodes run on one host; the CLI run the
way a user runs it."""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from netns import Lab, Namespace, Process, wait_for
from nodelab import MESHNODE


@dataclass
class MeshNode:
    lab: Lab
    ns: Namespace
    host: int  # 192.168.80.HOST
    root: Path
    process: Process | None = None
    started: list[Process] = field(default_factory=list)

    @property
    def underlay(self) -> str:
        return f"192.168.80.{self.host}"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "MESHNODE_RUN_DIR": str(self.root / "run"),
                "MESHNODE_STATE_DIR": str(self.root / "state"),
                "WG_SOCKET_DIR": str(self.root / "wg"), "LOG_LEVEL": "verbose",
                "MESHNODE_CONFIG": str(self.root / "no-config.toml")}  # fmt: skip

    def start(self, timeout: float = 20) -> MeshNode:
        """`meshnode up` in the foreground (a process the lab tracks and stops);
        returns once its control socket answers (every mesh is up by then)."""
        self.process = self.ns.spawn(*MESHNODE, "up", env=self.env)
        self.started.append(self.process)
        wait_for(self._answers, timeout, f"the node in {self.ns.name}")
        return self

    def _answers(self) -> bool:
        assert self.process is not None
        if not self.process.running():
            raise AssertionError(f"meshnode up exited early:\n{self.process.log()}")
        rc, _ = self.cli("stats", check=False)
        return rc == 0

    def kill9(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.popen.wait(10)

    def cli(self, *args: str, check: bool = True, timeout: float = 90) -> tuple[int, str]:
        result = self.ns.run(*MESHNODE, *args, env=self.env, check=check, timeout=timeout)
        return result.returncode, (result.stdout + result.stderr).decode()

    def invite(self, *args: str) -> str:
        """The invite: the last line of `meshnode invite`'s standard output."""
        result = self.ns.run(*MESHNODE, "invite", *args, env=self.env, timeout=30)
        return result.stdout.decode().strip().splitlines()[-1]

    def status(self) -> list[dict]:
        result = self.ns.run(*MESHNODE, "status", "--json", env=self.env, timeout=30)
        return json.loads(result.stdout)

    def members(self, mesh: str | None = None) -> dict[str, dict]:
        """The other members this node knows, by name, with their path."""
        found = {}
        for entry in self.status():
            if mesh is None or entry["mesh_name"] == mesh:
                found.update({m["name"]: m for m in entry["members"]})
        return found

    def ping(self, target: str, count: int = 3, deadline: float | None = None) -> bool:
        extra = ["-w", str(deadline)] if deadline else []
        result = self.ns.run("ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2", *extra,
                             target, check=False, timeout=60)  # fmt: skip
        return result.returncode == 0

    def reaches(self, target: str, within: float) -> bool:
        """Pings get through to target within `within` seconds."""
        end = time.monotonic() + within
        while time.monotonic() < end:
            if self.ping(target, count=1):
                return True
            time.sleep(0.3)
        return False


def mesh_nodes(lab: Lab, count: int) -> list[MeshNode]:
    """count machines on one bridge, not started."""
    bridge = lab.namespace("br")
    bridge.ip("link", "add", "br0", "type", "bridge")
    bridge.ip("link", "set", "br0", "up")
    nodes = []
    for host in range(1, count + 1):
        ns = lab.namespace(f"m{host}")
        veth = lab.veth(ns, bridge, [f"192.168.80.{host}/24", f"fd80::{host}/64"])
        bridge.ip("link", "set", veth.b_ifname, "master", "br0")
        ns.ip("link", "set", "lo", "up")
        root = lab.tmp_path / f"node{host}"
        for sub in ("run", "state", "wg"):
            (root / sub).mkdir(parents=True)
        nodes.append(MeshNode(lab, ns, host, root))
    return nodes


def overlay(node: MeshNode, mesh: str | None = None, v6: bool = False) -> str:
    """A node's own overlay address in a mesh."""
    for entry in node.status():
        if mesh is None or entry["mesh_name"] == mesh:
            return entry["ipv6" if v6 else "ipv4"]
    raise AssertionError(f"{node.ns.name} is in no mesh {mesh}")
