#!/usr/bin/env python3
"""A real mesh of N machines on this one (network namespaces on one bridge,
one `meshnode up` each), measured as a user would feel it (not a CI test;
as root):

- join: wall time of each `meshnode join` (the command, Python's start-up
  included), median and worst;
- idle: CPU time and wakeups (context switches) per second of the admin's
  node and of an ordinary member's node over a quiet minute;
- memory: resident memory of the admin's node, and per member (the growth
  from a 3-member mesh to N members, divided by the members added);
- revoke: from `meshnode revoke` until the last member logged the revocation
  (the logs have one-second resolution).

Usage: .venv/bin/python scripts/mesh_idle.py [N] [--idle SECONDS]
Everything it creates is removed at the end, also on failure.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from meshlab import MeshNode, mesh_nodes
from netns import Lab, require_netns, wait_for

HZ = 100  # clock ticks per second in /proc/PID/stat


def proc_sample(pid: int) -> tuple[float, int, int]:
    """(CPU seconds, context switches, resident KiB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / HZ
    status = Path(f"/proc/{pid}/status").read_text()
    switches = sum(int(v) for v in re.findall(r"ctxt_switches:\s+(\d+)", status))
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    return cpu, switches, rss


def idle_rates(node: MeshNode, seconds: float) -> tuple[float, float]:
    """(CPU %, wakeups/s) of a node's process over `seconds` of quiet."""
    assert node.process is not None
    cpu0, sw0, _ = proc_sample(node.process.pid)
    time.sleep(seconds)
    cpu1, sw1, _ = proc_sample(node.process.pid)
    return 100 * (cpu1 - cpu0) / seconds, (sw1 - sw0) / seconds


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("members", nargs="?", type=int, default=50)
    parser.add_argument("--idle", type=float, default=60.0)
    args = parser.parse_args()
    require_netns()
    with Lab() as lab:
        nodes = [node.start(timeout=60) for node in mesh_nodes(lab, args.members)]
        admin = nodes[0]
        admin.cli("init", "scale", "--member", "n1")
        joins = []
        rss_small = 0
        for node in nodes[1:]:
            invite = admin.invite("--name", f"n{node.host}")
            started = time.monotonic()
            node.cli("join", invite)
            joins.append(time.monotonic() - started)
            if node.host == 3:
                time.sleep(5)
                assert admin.process is not None
                rss_small = proc_sample(admin.process.pid)[2]
        wait_for(lambda: len(nodes[-1].members()) == args.members - 1, 120,
                 "the last member to know every other")  # fmt: skip
        time.sleep(40)  # let the joins' gossip settle before measuring quiet
        admin_cpu, admin_wakeups = idle_rates(admin, args.idle)
        member_cpu, member_wakeups = idle_rates(nodes[-1], args.idle)
        assert admin.process is not None
        rss_big = proc_sample(admin.process.pid)[2]
        victim = nodes[1]
        revoked_at = datetime.now(UTC).replace(microsecond=0)
        admin.cli("revoke", f"n{victim.host}")
        latest = None
        deadline = time.monotonic() + 60
        pending = [n for n in nodes if n is not victim]
        while pending and time.monotonic() < deadline:
            still = []
            for node in pending:
                _, log = node.cli("log", check=False)
                found = [line for line in log.splitlines() if "was revoked" in line]
                if found:
                    when = datetime.strptime(found[-1][:23], "%Y-%m-%d %H:%M:%S UTC")
                    when = when.replace(tzinfo=UTC)
                    latest = when if latest is None or when > latest else latest
                else:
                    still.append(node)
            pending = still
        revoke = "not everywhere within 60 s" if pending or latest is None else \
            f"{(latest - revoked_at).total_seconds():.0f} s (1 s resolution)"
        print(f"members: {args.members}")
        print(f"join: median {statistics.median(joins):.2f} s, worst {max(joins):.2f} s "
              f"(`meshnode join` wall time, Python start-up included)")
        print(f"idle, admin's node:  {admin_cpu:.2f} % CPU, {admin_wakeups:.1f} wakeups/s")
        print(f"idle, member's node: {member_cpu:.2f} % CPU, {member_wakeups:.1f} wakeups/s")
        per_member = (rss_big - rss_small) / max(1, args.members - 3)
        print(f"memory: admin's node {rss_big / 1024:.1f} MiB with {args.members} members, "
              f"{per_member:.1f} KiB more per member")
        print(f"revocation reached every member in {revoke}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
