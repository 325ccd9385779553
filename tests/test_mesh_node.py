"""The mesh as users run it: `meshnode init`, `invite`, `join`, `status`,
`revoke`, restarts, on real nodes in namespaces on one bridge (no NAT yet),
with real TUNs, real WireGuard between them and pings across."""

from __future__ import annotations

import ipaddress
import time

import netns
import pytest
from meshlab import MeshNode, mesh_nodes, overlay
from netns import Lab, wait_for
from nodelab import MESHNODE

netns_lab = netns.netns_lab


def found_mesh(lab: Lab, count: int, mesh: str = "lab") -> list[MeshNode]:
    """count machines; the first inits the mesh, the others join with invites."""
    nodes = [node.start() for node in mesh_nodes(lab, count)]
    admin = nodes[0]
    admin.cli("init", mesh, "--member", "n1")
    for node in nodes[1:]:
        invite = admin.invite(mesh, "--name", f"n{node.host}")
        node.cli("join", invite)
    return nodes


def all_know_each_other(nodes: list[MeshNode], mesh: str = "lab") -> bool:
    names = {f"n{node.host}" for node in nodes}
    return all(set(node.members(mesh)) == names - {f"n{node.host}"} for node in nodes)


def test_three_machines_form_a_mesh_and_reach_each_other(netns_lab: Lab) -> None:
    nodes = found_mesh(netns_lab, 3)
    wait_for(lambda: all_know_each_other(nodes), 15, "every member to know every other")
    for node in nodes:
        for other in nodes:
            if other is node:
                continue
            for v6 in (False, True):
                target = overlay(other, v6=v6)
                assert node.reaches(target, within=10), f"n{node.host} -> {target}"
    # every pair is direct, over the shared LAN
    for node in nodes:
        members = node.members()
        assert {m["path"] for m in members.values()} == {"lan"}, members
    # an invite as a QR code for the terminal (on stderr: stdout's last line stays the invite)
    admin = nodes[0]
    result = admin.ns.run(*MESHNODE, "invite", "--qr", "--name", "n9", env=admin.env)
    assert "\u2588" in result.stderr.decode(), result.stderr
    assert result.stdout.decode().strip().splitlines()[-1].startswith("mn1")
    # the admin's log says who joined with which invite
    _, log = nodes[0].cli("log")
    assert "n2" in log and "n3" in log and "joined with invite" in log, log


def test_a_killed_node_comes_back_with_its_identity_and_without_the_admin(netns_lab: Lab) -> None:
    a, b, c = found_mesh(netns_lab, 3)
    wait_for(lambda: all_know_each_other([a, b, c]), 15, "every member to know every other")
    b_address = overlay(b)
    b.kill9()
    b.start()
    assert overlay(b) == b_address  # same identity and addresses, no new invite
    assert a.reaches(b_address, within=20)
    # the admin goes away; the other two restart and still reach each other
    a.kill9()
    c.kill9()
    c.start()
    assert c.reaches(b_address, within=20)
    assert b.reaches(overlay(c), within=20)


def test_a_revoked_member_is_dropped_everywhere_and_cannot_come_back(netns_lab: Lab) -> None:
    a, b, c = found_mesh(netns_lab, 3)
    wait_for(lambda: all_know_each_other([a, b, c]), 15, "every member to know every other")
    c_address = overlay(c)
    assert b.reaches(c_address, within=10)
    started = time.monotonic()
    a.cli("revoke", "n3")
    wait_for(lambda: "n3" not in a.members() and "n3" not in b.members(), 10,
             "the revocation to reach every member")  # fmt: skip
    assert time.monotonic() - started < 10
    assert not c.ping(overlay(a), count=2) and not c.ping(overlay(b), count=2)
    # c cannot come back: a rejoin with its old identity after a restart is refused
    c.kill9()
    c.start()
    assert not c.ping(overlay(b), count=2)
    _, log = b.cli("log")
    assert "n3" in log and "revoked" in log, log


def test_a_member_offline_learns_what_changed_when_it_comes_back(netns_lab: Lab) -> None:
    nodes = [node.start() for node in mesh_nodes(netns_lab, 4)]
    a, b, c, d = nodes
    a.cli("init", "lab", "--member", "n1")
    for node in (b, c):
        node.cli("join", a.invite("--name", f"n{node.host}"))
    wait_for(lambda: all_know_each_other([a, b, c]), 15, "every member to know every other")
    b.kill9()
    d.cli("join", a.invite("--name", "n4"))
    a.cli("revoke", a.members()["n3"]["public_key"])  # by its key, as `members` shows it
    b.start()
    wait_for(lambda: set(b.members()) == {"n1", "n4"}, 10, "b to learn of d and of c's revocation")
    assert b.reaches(overlay(d), within=10)


@pytest.mark.parametrize("case", ["reused", "mistyped", "forged", "revoked", "expired", "garbage"])
def test_a_bad_invite_is_refused_with_its_own_message(netns_lab: Lab, case: str) -> None:
    a, b, c = [node.start() for node in mesh_nodes(netns_lab, 3)]
    a.cli("init", "lab", "--member", "n1")
    invite = a.invite("--name", "n2", "--ttl", "2s" if case == "expired" else "1h")
    expected = {
        "reused": "already used",
        "mistyped": "mistyped",
        "forged": "forged",
        "revoked": "revoked",
        "expired": "expired",
        "garbage": "not a meshnode invite",
    }[case]
    if case == "reused":
        b.cli("join", invite)
    elif case == "mistyped":
        position = len(invite) // 2
        flipped = "a" if invite[position] != "a" else "b"
        invite = invite[:position] + flipped + invite[position + 1 :]
    elif case == "forged":
        invite = forge(invite)
    elif case == "garbage":
        invite = "https://example.com/not-an-invite"
    elif case == "revoked":
        _, listing = a.cli("invites")
        invite_id = listing.split()[0]
        a.cli("invite", "--revoke", invite_id)
    else:
        time.sleep(2.5)
    rc, out = c.cli("join", invite, "--name", "n3", "--timeout", "10", check=False)
    assert rc != 0 and expected in out, out
    # nothing changed: c is in no mesh, a has the members it had
    assert c.status() == [] or all(entry["mesh_name"] != "lab" for entry in c.status())
    assert set(a.members()) <= {"n2"}


def forge(text: str) -> str:
    """The invite with a changed endpoint and a correct checksum: only the
    authority's signature can tell."""
    from meshnode.mesh.bootstrap import BootstrapPeer
    from meshnode.mesh.invite import Invite, format_invite, parse_invite

    invite = parse_invite(text, time.time())
    peer = invite.bootstrap[0]
    moved = BootstrapPeer(peer.public_key, peer.overlay, (("192.168.80.99", 51820),))
    forged = Invite.from_body(
        Invite(invite.mesh_id, invite.mesh_name, invite.authority, (moved,), invite.secret,
               invite.expires, invite.member_name, invite.signature).body(),
        invite.signature,
    )  # fmt: skip
    return format_invite(forged)


def test_one_node_in_two_meshes_beside_a_static_interface(netns_lab: Lab) -> None:
    """x creates mesh one, y creates mesh two and x joins it; x also has a
    classic tunnel to wireguard-go from its configuration file."""
    from nodelab import new_key, write_private
    from test_node import wireguard_go

    x, y, g = mesh_nodes(netns_lab, 3)
    static_if = netns_lab.ifname("s")
    x_private, x_public = new_key()
    _, go_public = wireguard_go(netns_lab, g.ns, 51820, "10.93.0.2/24", x_public,
                                "10.93.0.1/32", f"{x.underlay}:51830")  # fmt: skip
    key_file = write_private(x.root / "static.key", x_private + "\n")
    (x.root / "no-config.toml").write_text(f"""
[[interface]]
name = "{static_if}"
private_key_file = "{key_file}"
listen_port = 51830
address = "10.93.0.1/24"

[[interface.peer]]
public_key = "{go_public}"
endpoint = "{g.underlay}:51820"
allowed_ips = ["10.93.0.2/32"]

[[mesh]]
name = "one"
interface = "mn-uno"
listen_port = 51931
""")
    x.start()
    y.start()
    x.cli("init", "one", "--member", "x1")
    y.cli("init", "two", "--member", "y2", "--cidr", "10.94.0.0/24")
    x.cli("join", y.invite("two", "--name", "x2"))
    y.cli("join", x.invite("one", "--name", "y1"))
    status = {entry["mesh_name"]: entry for entry in x.status()}
    assert set(status) == {"one", "two"}
    # the [[mesh]] table of x's file says how x runs mesh one
    assert (status["one"]["interface"], status["two"]["interface"]) == ("mn-uno", "mn-two")
    assert any(c[1] == 51931 for c in status["one"]["candidates"]), status["one"]
    assert status["two"]["ipv4"].startswith("10.94.0.")
    for mesh in ("one", "two"):
        assert x.reaches(overlay(y, mesh), within=15), mesh
        assert y.reaches(overlay(x, mesh), within=15), mesh
    assert x.reaches("10.93.0.2", within=10)
    # a reload of the file leaves both meshes' peers alone
    x.cli("reload")
    assert x.ping(overlay(y, "one")) and x.ping(overlay(y, "two")) and x.ping("10.93.0.2")


def test_an_invites_temporary_key_reaches_the_coordination_port_and_nothing_else(
    netns_lab: Lab,
) -> None:
    """Someone holding an invite sets up a plain WireGuard peer with its derived
    key, as an attacker would: the handshake succeeds (the admin authorised
    the key), yet no packet of it reaches the admin's TUN or another member."""
    from nodelab import write_private
    from wgpair import MESHNODE_WG

    from meshnode.mesh.addressing import ula_prefix
    from meshnode.mesh.invite import parse_invite
    from meshnode.wireguard import keys

    a, b, c = mesh_nodes(netns_lab, 3)
    a.start()
    b.start()
    a.cli("init", "lab", "--member", "n1")
    b.cli("join", a.invite("--name", "n2"))
    invite = parse_invite(a.invite("--name", "n3"), time.time())
    derived = invite.keys()
    bootstrap = invite.bootstrap[0]
    ifname = netns_lab.ifname("x")
    netns_lab.start_userspace_wg(c.ns, ifname, argv=MESHNODE_WG)
    key = write_private(c.root / "invite.key", keys.to_base64(derived.private_key) + "\n")
    psk = write_private(c.root / "invite.psk", keys.to_base64(derived.preshared_key) + "\n")
    host, port = bootstrap.endpoints[0]
    a_entry = a.status()[0]
    mesh_v4 = ipaddress.ip_network(f"{a_entry['ipv4']}/16", strict=False)
    c.ns.run("wg", "set", ifname, "private-key", str(key), "peer",
             keys.to_base64(bootstrap.public_key), "preshared-key", str(psk),
             "endpoint", f"{host}:{port}", "persistent-keepalive", "1",
             "allowed-ips", f"{ula_prefix(invite.mesh_id)},{mesh_v4}")  # fmt: skip
    c.ns.ip("addr", "add", f"{netns_lab_address(invite)}/128", "dev", ifname, "nodad")
    c.ns.ip("addr", "add", "100.127.255.254/32", "dev", ifname)
    c.ns.ip("link", "set", ifname, "up")
    c.ns.ip("route", "add", str(ula_prefix(invite.mesh_id)), "dev", ifname)
    c.ns.ip("route", "add", str(mesh_v4), "dev", ifname)

    def handshaken() -> bool:
        out = c.ns.run("wg", "show", ifname, "latest-handshakes").stdout.decode()
        return any(line.split("\t")[1] != "0" for line in out.splitlines())

    wait_for(handshaken, 15, "the handshake with the invite's key")
    for target in (a_entry["ipv6"], a_entry["ipv4"], overlay(b, v6=True), overlay(b)):
        assert not c.ping(target, count=2), target
    _, stats = a.cli("stats")
    assert '"not_coordination"' in stats, stats


def netns_lab_address(invite) -> str:
    from meshnode.mesh.addressing import invite_address, ula_prefix

    return str(invite_address(ula_prefix(invite.mesh_id), invite.id))


def test_a_member_that_leaves_is_dropped_and_its_interface_goes(netns_lab: Lab) -> None:
    a, b, c = found_mesh(netns_lab, 3)
    wait_for(lambda: all_know_each_other([a, b, c]), 15, "every member to know every other")
    c.cli("leave")
    wait_for(lambda: "n3" not in a.members() and "n3" not in b.members(), 10,
             "the others to drop the member that left")  # fmt: skip
    assert c.status() == []
    links = c.ns.run("ip", "-br", "link").stdout.decode()
    assert "mn-lab" not in links, links
    assert not (c.root / "state" / "meshes" / "lab").exists()
    _, log = a.cli("log")
    assert "n3" in log and "left" in log, log


def test_the_admin_makes_a_member_a_rendezvous_and_every_member_learns_it(netns_lab: Lab) -> None:
    a, b, c = found_mesh(netns_lab, 3)
    wait_for(lambda: all_know_each_other([a, b, c]), 15, "every member to know every other")
    assert c.members()["n2"]["roles"] == []
    _, out = a.cli("roles", "n2", "rendezvous")
    assert "n2" in out and "rendezvous" in out, out

    def everyone_knows() -> bool:
        return all(node.members()["n2"]["roles"] == ["relay", "rendezvous"] for node in (a, c))

    wait_for(everyone_knows, 10, "the new roles to reach every member")
    # only the admin gives roles, never the admin's, and only these
    for node, args, words in (
        (b, ("roles", "n3", "rendezvous"), "not an admin"),
        (a, ("roles", "n1", "none"), "is an admin"),
        (a, ("roles", "n9", "rendezvous"), "no member"),
    ):
        code, out = node.cli(*args, check=False)
        assert code != 0 and words in out, out
    code, out = a.cli("roles", "n2", "admin", check=False)
    assert code != 0 and "invalid choice" in out, out
    a.cli("roles", a.members()["n2"]["public_key"], "none")  # by its key, as `members` shows it
    wait_for(lambda: c.members()["n2"]["roles"] == [], 10, "the roles to be taken back")
    _, log = c.cli("log")
    assert "was re-issued (version 2, roles relay, rendezvous)" in log, log
    assert "was re-issued (version 3, roles none)" in log, log
