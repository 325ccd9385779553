#!/usr/bin/env python3
"""Scale run of the mesh agents in memory (not a CI test).

Builds meshes of N members (default 100, 300 and 1000) in the in-memory
network of tests/mesh_memnet.py, with 3 rendezvous members (the admin among
them), lets them settle, then measures in simulated time:

- idle: coordination bytes and messages each member sends per minute when
  nothing changes (must not grow with N);
- join: from the admin accepting a new member until every member holds its
  record, and until the new member holds the whole roster;
- revoke: from the admin revoking a member until every member dropped it.

Usage: .venv/bin/python scripts/mesh_scale.py [N ...]
"""

from __future__ import annotations

import random
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from mesh_memnet import EPOCH, MESH_ID, PORT, MemNet, SimNode

from meshnode.mesh import events as ev
from meshnode.mesh.addressing import AddressPool
from meshnode.mesh.authority import Authority
from meshnode.mesh.directory import PeerInfo
from meshnode.mesh.join import JoinState
from meshnode.mesh.records import MemberRecord, Signed
from meshnode.mesh.roster import Roster
from meshnode.mesh.state import MeshState

RENDEZVOUS = 3
WARMUP = 120.0
IDLE = 300.0


def build(n: int, seed: int) -> tuple[MemNet, SimNode]:
    """N members that already share one roster and know each other's candidates."""
    net = MemNet(seed=seed, lite=True)
    authority = net.authority = Authority.from_private_bytes(net.rng.randbytes(32))
    pool = AddressPool.for_mesh(MESH_ID)
    roster = Roster(MESH_ID, authority.key)
    nodes = []
    for i in range(n):
        key = net.rng.randbytes(32)
        roles = {"admin", "rendezvous"} if i == 0 else {"rendezvous"} if i < RENDEZVOUS else set()
        v4, v6 = pool.pair(i + 1)
        name = "admin" if i == 0 else f"m{i}"
        record = MemberRecord(MESH_ID, name, key, v4, v6, frozenset(roles), int(EPOCH))
        roster.apply(Signed.issue(authority, record), int(EPOCH))
        nodes.append(SimNode(name, key, [net._address(i + 1)]))
    infos = {node.key: PeerInfo(int(EPOCH), tuple(node.addresses), None) for node in nodes}
    for i, node in enumerate(nodes):
        directory = {k: v for k, v in infos.items() if k != node.key}
        state = MeshState(
            MESH_ID,
            "scale",
            authority.key,
            node.key,
            roster.copy(),
            pool.ipv4,
            pool.ipv6,
            authority.private_bytes() if i == 0 else None,
            directory=directory,
            candidates=tuple(node.addresses),
            candidates_seq=int(EPOCH),
        )
        node.agent = net._agent(state)
        net._add(node)
    for node in nodes:
        net.pump(node)
    return net, nodes[0]


class Reached:
    """When each member saw an event about one key."""

    def __init__(self, net: MemNet, kind: type[ev.MeshEvent], key: bytes) -> None:
        self.at: dict[bytes, float] = {}
        self.kind, self.key = kind, key
        net.observers.append(self)

    def __call__(self, node: SimNode, event: ev.MeshEvent) -> None:
        if isinstance(event, self.kind) and getattr(event, "public_key", None) == self.key:
            self.at.setdefault(node.key, event.at)


def run(n: int, seed: int = 7) -> dict[str, float]:
    wall = time.monotonic()
    net, admin = build(n, seed)
    built = time.monotonic() - wall
    net.run(WARMUP)

    # idle cost
    before, count_before = dict(net.bytes_sent), sum(net.types_sent.values())
    net.run(IDLE)
    minutes = IDLE / 60
    per_member = [
        (net.bytes_sent[k] - before.get(k, 0)) / minutes for k in net.nodes if k in before
    ]
    messages = (sum(net.types_sent.values()) - count_before) / len(per_member) / minutes

    # a join: from the accept to every member holding the record
    new_key = net.rng.randbytes(32)
    joined = Reached(net, ev.MemberJoined, new_key)
    invite = net.invite(admin, "newcomer")
    temp = net.start_join(invite, "newcomer", key=new_key, address=("10.200.0.1", PORT))
    net.run_until(lambda: temp.joiner.state is JoinState.JOINED, 30)
    newcomer = net.finish_join(temp, "newcomer")
    accepted = joined.at[admin.key]
    members = [node for node in net.members() if node is not newcomer]
    synced: list[float] = []

    def done() -> bool:
        if not synced and newcomer.agent.roster.digest() == admin.agent.roster.digest():
            synced.append(net.now)
        return bool(synced) and all(node.key in joined.at for node in members)

    net.run_until(done, 120, step=0.01)
    join_all = max(joined.at.values()) - accepted
    join_times = sorted(t - accepted for t in joined.at.values())
    caught_up = synced[0] - accepted
    net.run(30)

    # a revocation
    victim = random.Random(seed).choice([m for m in members if m is not admin])
    revoked = Reached(net, ev.MemberRevoked, victim.key)
    start = net.now
    admin.agent.revoke_member(victim.name, net.now)
    net.pump(admin)
    others = [node for node in net.members() if node is not victim]
    net.run_until(lambda: all(node.key in revoked.at for node in others), 120)
    still_peer = sum(victim.key in node.peers for node in others)
    revoke_times = sorted(t - start for t in revoked.at.values())
    return {
        "n": n,
        "build_s": built,
        "idle_bytes_mean": statistics.mean(per_member),
        "idle_bytes_max": max(per_member),
        "idle_msgs": messages,
        "join_p50": join_times[len(join_times) // 2],
        "join_p99": join_times[int(len(join_times) * 0.99)],
        "join_all": join_all,
        "newcomer_caught_up": caught_up,
        "revoke_p50": revoke_times[len(revoke_times) // 2],
        "revoke_p99": revoke_times[int(len(revoke_times) * 0.99)],
        "revoke_all": max(revoke_times),
        "still_peer": still_peer,
        "wall_s": time.monotonic() - wall,
    }


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [100, 300, 1000]
    print(
        f"in-memory mesh, {RENDEZVOUS} rendezvous members, HELLO every 30 s +-20 %, "
        "fanout 3, 10 ms per message"
    )
    header = (
        f"{'members':>7} | {'idle B/min/member':>17} {'(max)':>7} {'msgs/min':>8} | "
        f"{'join p50/p99/all s':>19} {'newcomer synced s':>17} | "
        f"{'revoke p50/p99/all s':>20} | {'wall s':>6}"
    )
    print(header)
    print("-" * len(header))
    for n in sizes:
        r = run(n)
        print(
            f"{r['n']:>7} | {r['idle_bytes_mean']:>17.0f} {r['idle_bytes_max']:>7.0f} "
            f"{r['idle_msgs']:>8.1f} | "
            f"{r['join_p50']:>5.2f}/{r['join_p99']:>5.2f}/{r['join_all']:>5.2f}  "
            f"{r['newcomer_caught_up']:>17.2f} | "
            f"{r['revoke_p50']:>5.2f}/{r['revoke_p99']:>5.2f}/{r['revoke_all']:>5.2f}  "
            f"     | {r['wall_s']:>6.0f}"
        )
        assert r["still_peer"] == 0, "a revoked member is still configured somewhere"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"(peak memory of the whole simulation: {rss:.0f} MiB)")
    print(
        "idle B/min/member: coordination bytes each member sends per minute when "
        "nothing changes; join: from the admin's accept until every member holds the "
        "new record; newcomer synced: until the new member holds the whole roster; "
        "revoke: until every member dropped the revoked peer"
    )


if __name__ == "__main__":
    main()
