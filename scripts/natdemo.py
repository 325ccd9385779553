"""The NAT demo (scripts/demo runs it as root): a mesh across home NAT routers.

    internet: coturn (STUN, two addresses), hub (the mesh's admin, public)
    home A, easy NAT (endpoint-independent):  alice, carol
    home B, easy NAT:                         bob
    home C, hard NAT (endpoint-dependent):    dave
    home D, hard NAT:                         erin

Every router drops unsolicited inbound packets, as home routers do. The hub
creates the mesh and invites everyone; then pings go across, `meshnode
status` shows direct, LAN and relayed paths with the reasons, `meshnode
ping` says which path answered, `meshnode netcheck` what each NAT does.
The lab (namespaces, processes, files) is removed at the end, also on
failure or Ctrl-C.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from natmesh import MESH, NatMesh, overlay_of
from netns import Lab, wait_for
from nodelab import MESHNODE


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def show(node, *args: str) -> None:
    result = node.ns.run(*MESHNODE, *args, env=node.env, check=False, timeout=90)
    for line in (result.stdout + result.stderr).decode().splitlines():
        print(f"   {line}")


def main() -> int:
    with Lab() as lab:
        say("building the NAT lab: an internet, coturn on two addresses, four homes")
        mesh = NatMesh.build(lab)
        homes = {
            "A": mesh.home("a", "easy"),
            "B": mesh.home("b", "easy"),
            "C": mesh.home("c", "hard"),
            "D": mesh.home("d", "hard"),
        }
        for tag, home in homes.items():
            print(f"   home {tag}: {home.nat} NAT, public {home.wan_address}, "
                  f"LAN {home.lan_subnet}")  # fmt: skip
        say(f"hub (public {mesh.hub.ns.name}): meshnode init {MESH} (done), meshnode invite ...")
        members = {"alice": "A", "carol": "A", "bob": "B", "dave": "C", "erin": "D"}
        for name, tag in members.items():
            mesh.join(name, homes[tag])
            print(f"   {name} joined from home {tag} with its invite")
        nodes = mesh.nodes
        pairs = [("alice", "bob"), ("alice", "carol"), ("dave", "erin"), ("alice", "dave")]
        say("pings across the mesh (the first packet goes at once, relayed if need be)")
        for a, b in pairs:
            start = time.monotonic()
            ok = nodes[a].reaches(overlay_of(nodes[b]), within=10)
            print(f"   {a} -> {b}: {'answered' if ok else 'NO ANSWER'} in "
                  f"{time.monotonic() - start:.1f} s")  # fmt: skip
            if not ok:
                return 1
        say("waiting for punching to settle (direct where the NATs allow it)")
        wait_for(lambda: mesh.path("alice", "bob").get("path") == "direct", 20, "alice-bob direct")
        wait_for(
            lambda: "endpoint-dependent" in (mesh.path("dave", "erin").get("why") or ""),
            40,
            "the netchecks to finish",
        )
        for name in ("alice", "dave"):
            say(f"{name}: meshnode status")
            show(nodes[name], "status")
        for a, b in pairs:
            say(f"{a}: meshnode ping {b} -c 2")
            show(nodes[a], "ping", b, "-c", "2")
        for name in ("alice", "dave"):
            say(f"{name}: meshnode netcheck")
            show(nodes[name], "netcheck")
        say("cleaning up")
    print("demo: members behind four NAT routers reached each other: direct between "
          "easy NATs, LAN inside a home, relayed through the hub where NATs forbid it")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
