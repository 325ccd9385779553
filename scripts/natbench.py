"""NAT traversal figures in the NAT lab (as root; not a CI test):

    .venv/bin/python scripts/natbench.py [SECONDS]

Builds the lab of scripts/demo (coturn, the hub on the internet, two easy
and two hard NAT homes), then for each pair of members prints the time from
the first packet to a direct path (or to the first relayed answer), and TCP
throughput (iperf3, SECONDS each, default 10) over a direct path (easy-easy)
and a relayed one (hard-hard, through the hub), with their ratio. Figures
move by tens of percent from hour to hour on a shared VM: compare within
one run.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from natmesh import NatMesh, overlay_of
from netns import Lab, wait_for


def iperf(mesh: NatMesh, sender: str, receiver: str, seconds: int) -> float:
    """Mbit/s of one TCP stream from sender to receiver over the overlay."""
    target = overlay_of(mesh.nodes[receiver])
    mesh.nodes[receiver].ns.spawn("iperf3", "-s", "-1", "-B", target)
    time.sleep(0.5)
    result = mesh.nodes[sender].ns.run(
        "iperf3", "-c", target, "-t", str(seconds), "-J", timeout=seconds + 60
    )
    report = json.loads(result.stdout)
    return report["end"]["sum_received"]["bits_per_second"] / 1e6


def time_to(mesh: NatMesh, a: str, b: str, paths: set[str]) -> float:
    start = time.monotonic()
    assert mesh.nodes[a].reaches(overlay_of(mesh.nodes[b]), within=10)
    mesh.wait_path(a, b, paths, within=30)
    return time.monotonic() - start


def main() -> int:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    with Lab() as lab:
        mesh = NatMesh.build(lab)
        homes = [mesh.home(t, k) for t, k in (("a", "easy"), ("b", "easy"), ("c", "hard"),
                                                ("d", "hard"))]  # fmt: skip
        for name, home in zip(("alice", "bob", "dave", "erin"), homes, strict=True):
            mesh.join(name, home)
        mesh.join("carol", homes[0])
        rows = [
            ("easy-easy (alice-bob)", time_to(mesh, "alice", "bob", {"direct"}), "direct"),
            ("same NAT (alice-carol)", time_to(mesh, "alice", "carol", {"lan"}), "lan"),
            ("hard-hard (dave-erin)", time_to(mesh, "dave", "erin", {"relayed"}), "relayed"),
            ("easy-hard (alice-dave)", time_to(mesh, "alice", "dave", {"relayed"}), "relayed"),
        ]
        print("time from the first packet to the path")
        for label, took, path in rows:
            print(f"  {label:<24} {path:<8} {took:5.1f} s")
        wait_for(lambda: mesh.path("dave", "erin").get("why") is not None, 30, "a reason")
        direct = iperf(mesh, "alice", "bob", seconds)
        relayed = iperf(mesh, "dave", "erin", seconds)
        print(f"TCP, {seconds} s each (iperf3)")
        print(f"  direct  (alice -> bob)          {direct:8.1f} Mbit/s")
        print(f"  relayed (dave -> hub -> erin)   {relayed:8.1f} Mbit/s")
        print(f"  relayed / direct                {relayed / direct:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
