"""NAT traversal as users meet it: members behind home NAT routers (natlab.py:
endpoint-independent "easy" MASQUERADE or endpoint-dependent "hard"
--random-fully, each with a firewall that drops unsolicited packets) join a
mesh whose admin sits on the internet, with coturn as the STUN server, and
reach each other directly when the NATs allow it, relayed through the admin
when they do not; `status`, `ping` and `netcheck` say which and why."""

from __future__ import annotations

import json
import sys
import time

import netns
from meshlab import MeshNode
from natmesh import MESH, NatMesh, overlay_of, ping_until
from netns import Lab, wait_for
from nodelab import MESHNODE

netns_lab = netns.netns_lab

_SINK = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5201)); s.listen(1); print("ready", flush=True)
c, _ = s.accept(); total = 0
while (d := c.recv(65536)): total += len(d)
print(total, flush=True)
"""
_SOURCE = """
import socket, sys
s = socket.create_connection((sys.argv[1], 5201), timeout=30)
chunk = b"x" * 65536
for _ in range(int(sys.argv[2]) // 65536): s.sendall(chunk)
s.close()
"""


def traversal(node: MeshNode) -> dict:
    return next(e for e in node.status() if e["mesh_name"] == MESH)["traversal"]


def relayed_bytes(node: MeshNode) -> int:
    return traversal(node)["relay"].get("relayed_bytes", 0)


def transfer(mesh: NatMesh, sender: str, receiver: str, size: int) -> float:
    """`size` bytes over TCP between two members' overlay addresses; seconds taken."""
    target = overlay_of(mesh.nodes[receiver])
    sink = mesh.nodes[receiver].ns.spawn(sys.executable, "-c", _SINK, target)
    wait_for(lambda: "ready" in sink.log(), 10, "the TCP sink")
    start = time.monotonic()
    mesh.nodes[sender].ns.run(sys.executable, "-c", _SOURCE, target, str(size), timeout=120)
    wait_for(lambda: str(size) in sink.log(), 30, f"{size} bytes at {receiver}")
    return time.monotonic() - start


def netcheck_says(node: MeshNode, address: str, mapping: str | None) -> None:
    """`meshnode netcheck --json` finds this public address (and mapping)."""
    report = json.loads(node.cli("netcheck", "--json")[1])
    assert report["ipv4"][0] == address, report
    if mapping is not None:
        assert report["mapping"] == mapping, report


def meshnode_ping(node: MeshNode, member: str, *args: str) -> str:
    result = node.ns.run(*MESHNODE, "ping", member, *args, env=node.env, check=False, timeout=90)
    return (result.stdout + result.stderr).decode()


def test_easy_nats_go_direct_a_shared_nat_goes_lan_and_links_recover(netns_lab: Lab) -> None:
    mesh = NatMesh.build(netns_lab)
    home_a, home_b = mesh.home("a", "easy"), mesh.home("b", "easy")
    alice, bob = mesh.join("alice", home_a), mesh.join("bob", home_b)
    carol = mesh.join("carol", home_a)
    netcheck_says(alice, home_a.wan_address, "endpoint-independent")
    # the first packet goes at once (relayed if need be); direct within 10 s of it
    start = time.monotonic()
    assert alice.reaches(overlay_of(bob), within=5)
    mesh.wait_path("alice", "bob", {"direct"}, within=10)
    mesh.wait_path("bob", "alice", {"direct"}, within=10)
    to_direct = time.monotonic() - start
    print(f"easy-easy: direct {to_direct:.1f} s after the first packet")
    seen = mesh.path("alice", "bob")
    assert seen["endpoint"][0] == home_b.wan_address and seen["why"] is None, seen
    # two members behind one NAT use their LAN addresses
    assert alice.reaches(overlay_of(carol), within=5)
    seen = mesh.wait_path("alice", "carol", {"lan"}, within=10)
    assert seen["endpoint"][0] == home_a.members[1].address, seen
    # a bulk transfer does not cross the rendezvous
    before = relayed_bytes(mesh.hub)
    took = transfer(mesh, "alice", "bob", 8 << 20)
    assert relayed_bytes(mesh.hub) - before < 64 << 10
    print(f"easy-easy: 8 MiB direct in {took:.2f} s")
    out = meshnode_ping(alice, "bob", "-c", "2")
    assert "pong from bob" in out and f"via direct {home_b.wan_address}:" in out, out
    # the NAT forgets every mapping: traffic comes back by itself within 30 s
    home_a.flush_conntrack()
    took = ping_until(alice, overlay_of(bob), within=30)
    print(f"easy-easy: traffic back {took:.1f} s after conntrack -F")
    # a router reboots into a new public address
    home_b.change_wan_address()
    took = ping_until(bob, overlay_of(alice), within=30)
    print(f"easy-easy: traffic back {took:.1f} s after a new public address")
    start = time.monotonic()
    mesh.wait_path("alice", "bob", {"direct"}, within=40, host=home_b.wan_address)
    mesh.wait_path("bob", "alice", {"direct"}, within=10, host=home_a.wan_address)
    print(f"easy-easy: direct to the new address {took + time.monotonic() - start:.1f} s on")


def test_hard_nats_are_relayed_at_once_and_go_direct_when_the_nats_allow(netns_lab: Lab) -> None:
    mesh = NatMesh.build(netns_lab)
    home_c, home_d = mesh.home("c", "hard"), mesh.home("d", "hard")
    dave, erin = mesh.join("dave", home_c), mesh.join("erin", home_d)
    fay = mesh.join("fay", home_c)
    # netcheck: the router's address, the mapping that varies by destination
    netcheck_says(dave, home_c.wan_address, "endpoint-dependent")
    # relayed from the first packet: an answer within 5 s
    start = time.monotonic()
    assert dave.reaches(overlay_of(erin), within=5)
    print(f"hard-hard: first answer in {time.monotonic() - start:.1f} s (relayed)")
    seen = mesh.wait_path("dave", "erin", {"relayed"}, within=5)
    assert seen["via"] == "hub", seen
    wait_for(
        lambda: "both behind endpoint-dependent NATs" in (mesh.path("dave", "erin")["why"] or ""),
        40,
        "the reason to be given",
    )
    # the relay carries the traffic, and nobody else gets any of it
    before, fay_before = relayed_bytes(mesh.hub), traversal(fay)["relay"]
    took = transfer(mesh, "dave", "erin", 2 << 20)
    assert relayed_bytes(mesh.hub) - before > 2 << 20
    # fay, behind dave's NAT, gets her own few relayed messages, none of the ~1,700
    # datagrams of the transfer
    fay_after = traversal(fay)["relay"].get("received_via_relay", 0)
    assert fay_after - fay_before.get("received_via_relay", 0) < 50
    print(f"hard-hard: 2 MiB relayed in {took:.2f} s")
    out = meshnode_ping(dave, "erin", "-c", "1")
    assert "via relay hub" in out, out
    # easy on one side, hard on the other: still relayed, and status says why
    home_c.set_nat("easy")
    assert dave.reaches(overlay_of(erin), within=30)
    wait_for(
        lambda: (
            "the member is behind an endpoint-dependent NAT"
            in (mesh.path("dave", "erin")["why"] or "")
        ),
        40,
        "the easy side's reason",
    )
    # both easy: the path turns direct by itself
    home_d.set_nat("easy")
    assert dave.reaches(overlay_of(erin), within=30)
    out = meshnode_ping(dave, "erin", "--until-direct")
    assert "via direct" in out, out
    mesh.wait_path("erin", "dave", {"direct"}, within=30)


def test_relay_never_relays_nothing_and_says_so(netns_lab: Lab) -> None:
    mesh = NatMesh.build(netns_lab, hub_relay="never")
    home_e, home_f = mesh.home("e", "hard"), mesh.home("f", "hard")
    gina, hank = mesh.join("gina", home_e), mesh.join("hank", home_f)
    ivan = mesh.join("ivan", home_e, relay="never")
    assert not gina.reaches(overlay_of(hank), within=8)
    hub = traversal(mesh.hub)
    assert hub["relays_for_others"] is False and hub["relay"].get("relayed", 0) == 0, hub
    assert hub["relay"].get("refused_policy", 0) > 0, hub
    assert mesh.path("gina", "hank")["path"] == "none"
    # a member that will not be relayed says so
    assert not ivan.reaches(overlay_of(hank), within=6)
    wait_for(
        lambda: "relay disabled by policy" in (mesh.path("ivan", "hank")["why"] or ""),
        20,
        "ivan's reason",
    )


def test_an_idle_link_outlives_a_30_s_nat_timeout_with_only_the_rendezvous_as_stun(
    netns_lab: Lab,
) -> None:
    mesh = NatMesh.build(netns_lab, stun_servers=False)
    home_g, home_h = mesh.home("g", "easy"), mesh.home("h", "easy")
    for home in (home_g, home_h):
        home.set_udp_timeout(30)
    jack, kate = mesh.join("jack", home_g), mesh.join("kate", home_h)
    # the rendezvous answers STUN on its WireGuard port: the public address is known
    netcheck_says(jack, home_g.wan_address, None)
    assert jack.reaches(overlay_of(kate), within=5)
    mesh.wait_path("jack", "kate", {"direct"}, within=10)
    time.sleep(120)
    assert jack.ping(overlay_of(kate), count=1)
    assert mesh.path("jack", "kate")["path"] == "direct"


def test_global_ipv6_behind_stateful_firewalls_punches_where_ipv4_cannot(netns_lab: Lab) -> None:
    """Hard IPv4 NATs on both sides, global IPv6 behind the same conntrack
    firewalls (no NAT): both probe at once over IPv6, and the path is direct."""
    mesh = NatMesh.build(netns_lab)
    home_i, home_j = mesh.home("i", "hard", ipv6=True), mesh.home("j", "hard", ipv6=True)
    lena, mike = mesh.join("lena", home_i), mesh.join("mike", home_j)
    assert lena.reaches(overlay_of(mike), within=5)
    seen = mesh.wait_path("lena", "mike", {"direct"}, within=15)
    assert seen["endpoint"][0] == home_j.members[0].address6, seen
    seen = mesh.wait_path("mike", "lena", {"direct"}, within=15)
    assert seen["endpoint"][0] == home_i.members[0].address6, seen
