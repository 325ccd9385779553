"""`meshnode up` nodes in test namespaces: config files, starting, the CLI,
and what a node leaves in a namespace (to check that it leaves nothing)."""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from netns import Lab, Namespace, Process, uapi_socket_ready, wait_for

from meshnode.wireguard import keys

MESHNODE = (sys.executable, "-m", "meshnode.cli")


def new_key() -> tuple[str, str]:
    """(private, public), base64."""
    private = keys.generate_private_key()
    return keys.to_base64(private), keys.to_base64(keys.public_key(private))


def write_private(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


@dataclass
class Node:
    """A `meshnode up` process in a namespace, with its own run directory."""

    lab: Lab
    ns: Namespace
    config: Path
    run_dir: Path
    process: Process | None = None

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "MESHNODE_RUN_DIR": str(self.run_dir), "LOG_LEVEL": "verbose",
                "MESHNODE_STATE_DIR": str(self.run_dir / "state")}  # fmt: skip

    def start(self, *ifnames: str, timeout: float = 20) -> Node:
        """Start the node and wait until it says every named interface is up
        (its control socket answers only once all are)."""
        self.process = self.ns.spawn(*node_argv(self), env=self.env)

        def ready() -> bool:
            assert self.process is not None
            if not self.process.running():
                raise AssertionError(f"meshnode up exited early:\n{self.process.log()}")
            status = self.status()
            return status is not None and set(ifnames) <= set(status.get("interfaces", []))

        wait_for(ready, timeout, f"interfaces {', '.join(ifnames)} of the node")
        assert all(uapi_socket_ready(name) for name in ifnames)
        return self

    def status(self) -> dict | None:
        """The node's answer to "status" on its control socket, None if none yet."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(2)
                sock.connect(str(self.run_dir / "control.sock"))
                sock.sendall(b'{"command": "status"}\n')
                return json.loads(sock.makefile("rb").readline())
        except (OSError, ValueError):
            return None

    def cli(self, *args: str, check: bool = True, timeout: float = 60,
            quiet: bool = False) -> tuple[int, str]:  # fmt: skip
        """Run `meshnode ARGS` against this node; (exit status, stdout + stderr).
        quiet: without LOG_LEVEL, so that `up --daemon` lets go of stdout."""
        env = {k: v for k, v in self.env.items() if not (quiet and k == "LOG_LEVEL")}
        result = self.ns.run(*MESHNODE, *args, env=env, check=check, timeout=timeout)
        return result.returncode, (result.stdout + result.stderr).decode()

    def log(self) -> str:
        return self.process.log() if self.process else ""

    def terminate(self, timeout: float = 20) -> int:
        """SIGTERM (to the node's own PID) and its exit status."""
        assert self.process is not None
        self.process.stop(timeout)
        return self.process.popen.returncode


def node_argv(node: Node) -> list[str]:
    """`meshnode up CONFIG`, to start a node without waiting for it."""
    return [*MESHNODE, "up", str(node.config)]


def make_node(lab: Lab, ns: Namespace, config_name: str, text: str) -> Node:
    config = write_private(lab.tmp_path / config_name, text)
    run_dir = lab.tmp_path / f"run-{ns.name}"
    return Node(lab, ns, config, run_dir)


def links(ns: Namespace) -> list[str]:
    out = ns.run("ip", "-j", "link", "show").stdout
    return [link["ifname"] for link in json.loads(out)]


def rules(ns: Namespace, version: int) -> list[str]:
    return ns.run("ip", f"-{version}", "rule", "show").stdout.decode().splitlines()


def routes(ns: Namespace, version: int, table: str = "all") -> list[str]:
    out = ns.run("ip", f"-{version}", "route", "show", "table", table).stdout.decode()
    return out.splitlines()


def firewall_rules(ns: Namespace) -> list[str]:
    """Every iptables/ip6tables rule of every table (for leftovers)."""
    found = []
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "raw", "mangle"):
            out = ns.run(tool, "-w", "-t", table, "-S").stdout.decode()
            found += [f"{tool} -t {table} {line}" for line in out.splitlines()]
    return found
