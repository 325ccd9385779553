"""NAT traversal in memory: probes, punching, relays, LAN paths and recovery.

tests/mesh_memnet.py with `traversal=True`: every agent has a private key and
probes; members sit behind modelled NATs ("easy": endpoint-independent
mapping, "hard": a new port per destination, both with a stateful filter);
the admin (admin, rendezvous and relay roles) has a public address and no NAT.
"""

from __future__ import annotations

import itertools
import random

import pytest
from mesh_memnet import MemNet, Nat, SimNode

from meshnode.mesh.errors import AgentError
from meshnode.mesh.paths import Relay
from meshnode.wireguard.events import HandshakeCompleted, PeerEvent

ADMIN_ROLES = frozenset({"admin", "rendezvous", "relay"})
WORKING = ("direct", "relayed", "lan")


def mesh(**kwargs: object) -> tuple[MemNet, SimNode]:
    net = MemNet(traversal=True, **kwargs)  # type: ignore[arg-type]
    admin = net.found(roles=ADMIN_ROLES)
    return net, admin


def member(net: MemNet, admin: SimNode, name: str, nat: Nat | None) -> SimNode:
    node = net.join(admin, name, nat=nat)
    net.run(5)  # its first sync, netcheck and announcement
    return node


def paths(net: MemNet, a: SimNode, b: SimNode) -> tuple[str, str]:
    try:
        return net.status(a, b).path, net.status(b, a).path
    except KeyError:  # one does not know the other yet
        return "none", "none"


def test_keys_are_real_x25519_pairs_and_agents_probe() -> None:
    net, admin = mesh()
    alice = member(net, admin, "alice", net.nat("easy"))
    for node in (admin, alice):
        assert node.agent is not None and node.agent.reach.codec is not None
        assert node.agent.reach.codec.public_key == node.key
    # the netcheck published the NAT's mapping, after the LAN address
    nat = alice.nat
    assert nat is not None
    assert alice.agent.reach.candidates == (alice.addresses[0], *nat.mapped(alice.addresses[0]))
    assert alice.agent.reach.nat == "endpoint-independent"
    assert net.datagrams_sent[alice.key] > 0 and net.datagrams_sent[admin.key] > 0


def test_default_memnet_is_unchanged() -> None:
    net = MemNet()
    admin = net.found()
    assert not net.traversal and admin.addresses[0][0].startswith("10.")
    assert admin.agent is not None and admin.agent.reach.codec is None


def test_easy_to_easy_goes_direct_within_seconds() -> None:
    net, admin = mesh()
    first: list[float] = []  # when alice and bob first shook hands (their first message)
    alice = member(net, admin, "alice", net.nat("easy"))
    keys: set[bytes] = set()

    def watch(node: SimNode, event: PeerEvent) -> None:
        if isinstance(event, HandshakeCompleted) and {node.key, event.public_key} == keys:
            first.append(net.now)

    net.device_observers.append(watch)
    bob = net.join(admin, "bob", nat=net.nat("easy"))
    keys.update((alice.key, bob.key))
    net.talk(alice, bob)  # unless the gossip made them talk first
    took = net.run_until(lambda: paths(net, alice, bob) == ("direct", "direct"), 5.0)
    took = net.now - first[0]
    print(f"easy<->easy direct {took:.2f} s after their first handshake")
    assert took < 3.0
    # the admin is reached directly by both (no relay to a relay member)
    assert paths(net, alice, admin) == ("direct", "direct")
    assert alice.nat is not None and bob.nat is not None
    assert net.status(alice, bob).endpoint in bob.nat.mapped(bob.addresses[0])
    assert net.status(bob, alice).endpoint in alice.nat.mapped(alice.addresses[0])
    assert alice.endpoints[bob.key] == net.status(alice, bob).endpoint  # the device too
    net.run(60)  # and it stays so (heartbeats hold the mappings)
    assert paths(net, alice, bob) == ("direct", "direct")


def test_first_packet_goes_through_the_relay() -> None:
    net, admin = mesh()
    alice = member(net, admin, "alice", net.nat("easy"))
    bob = member(net, admin, "bob", net.nat("hard"))
    assert alice.endpoints[bob.key] == Relay(admin.key)
    before = net.relayed[admin.key]
    net.talk(alice, bob)
    net.run(1)
    assert net.relayed[admin.key] > before
    assert bob.key in alice.sessions and alice.key in bob.sessions
    assert bob.endpoints[alice.key] == Relay(admin.key)  # bob saw relayed(admin, alice)
    assert paths(net, alice, bob) == ("relayed", "relayed")
    assert alice.key in bob.agent.heard  # the HELLO crossed, and its answer too
    assert bob.key in alice.agent.heard


def test_hard_to_hard_stays_relayed_and_says_why() -> None:
    net, admin = mesh()
    carol = member(net, admin, "carol", net.nat("hard"))
    dave = member(net, admin, "dave", net.nat("hard"))
    assert carol.agent.reach.nat == "endpoint-dependent"  # the netcheck's set_nat
    net.talk(carol, dave)
    net.run(90)
    for a, b in ((carol, dave), (dave, carol)):
        status = net.status(a, b)
        assert status.path == "relayed" and status.via == "admin"
        assert status.why is not None and "both behind endpoint-dependent NATs" in status.why
    assert carol.nat is not None and carol.nat.dropped > 0  # the punches did hit the NAT


def test_set_nat_reaches_the_reasons() -> None:
    net, admin = mesh(report_nat=False)
    carol = member(net, admin, "carol", net.nat("hard"))
    dave = member(net, admin, "dave", net.nat("hard"))
    net.talk(carol, dave)
    net.run(10)
    assert net.status(carol, dave).path == "relayed"
    assert "endpoint-dependent" not in (net.status(carol, dave).why or "")
    for node in (carol, dave):
        node.agent.reach.set_nat("endpoint-dependent", net.now)
        net.pump(node)
    net.run(2)  # the PUNCH that carries it
    assert "both behind endpoint-dependent NATs" in (net.status(carol, dave).why or "")


def test_members_behind_one_nat_reach_each_other_by_lan() -> None:
    net, admin = mesh()
    home = net.nat("hard")  # even a hard NAT: the LAN does not cross it
    one = member(net, admin, "one", home)
    two = member(net, admin, "two", home)
    net.talk(one, two)
    net.run_until(lambda: paths(net, one, two) == ("lan", "lan"), 5.0)
    assert net.status(one, two).endpoint == two.addresses[0]
    assert net.status(two, one).endpoint == one.addresses[0]
    net.run(60)
    assert paths(net, one, two) == ("lan", "lan")


def recovery(net: MemNet, a: SimNode, b: SimNode, seconds: float) -> list[tuple[float, str]]:
    """`a` and `b` talk every 2 s; the path `a` shows for `b`, sampled every 10 ms:
    [(when, path)] at each change, until both show direct again (or `seconds`)."""
    start, history = net.now, [(0.0, net.status(a, b).path)]
    path = a.agent.reach.paths[b.key]
    while net.now - start < seconds:
        if round((net.now - start) * 100) % 200 == 0:
            net.talk(a, b)
            net.talk(b, a)
        net.run(0.01)
        if path.label != history[-1][1]:
            history.append((round(net.now - start, 2), path.label))
        if len(history) > 1 and paths(net, a, b) == ("direct", "direct"):
            break
    return history


def test_easy_pair_recovers_after_a_nat_flush() -> None:
    net, admin = mesh()
    alice = member(net, admin, "alice", net.nat("easy"))
    bob = member(net, admin, "bob", net.nat("easy"))
    net.talk(alice, bob)
    net.run_until(lambda: paths(net, alice, bob) == ("direct", "direct"), 5.0)
    net.run(20)
    assert alice.nat is not None
    old = alice.nat.mapped(alice.addresses[0])
    net.flush(alice.nat)  # conntrack -F on alice's router: new ports from now on
    history = recovery(net, alice, bob, 30.0)
    print(f"after a flush: {history}")
    assert [p for _, p in history] == ["direct", "relayed", "direct"], history
    assert paths(net, alice, bob) == ("direct", "direct")
    assert net.status(bob, alice).endpoint in alice.nat.mapped(alice.addresses[0])
    assert net.status(bob, alice).endpoint not in old  # the new mapping
    heard = bob.agent.heard[alice.key]
    net.talk(alice, bob)  # and messages cross again
    net.run(1)
    assert bob.agent.heard[alice.key] > heard


def test_a_new_public_address_is_found_again() -> None:
    net, admin = mesh()
    alice = member(net, admin, "alice", net.nat("easy"))
    bob = member(net, admin, "bob", net.nat("easy"))
    net.talk(alice, bob)
    net.run_until(lambda: paths(net, alice, bob) == ("direct", "direct"), 5.0)
    assert alice.nat is not None
    new_ip = net.renumber(alice.nat)
    net.run_until(lambda: (net.status(bob, alice).endpoint or ("",))[0] == new_ip, 40.0)
    net.run(1)
    assert paths(net, alice, bob) == ("direct", "direct")
    assert (new_ip, alice.nat.mapped(alice.addresses[0])[0][1]) in alice.agent.reach.candidates


def test_fifty_members_half_easy_half_hard() -> None:
    net, admin = mesh()
    members = []
    for i in range(50):
        kind = "easy" if i % 2 == 0 else "hard"
        members.append(net.join(admin, f"m{i}", nat=net.nat(kind)))
    net.run(10)
    rng = random.Random(7)
    pairs = rng.sample(list(itertools.combinations(members, 2)), 60)
    for a, b in pairs:
        net.talk(a, b)
    net.run(10)
    counts = {"direct": 0, "relayed": 0}
    for a, b in pairs:
        both_easy = a.nat.kind == b.nat.kind == "easy"  # type: ignore[union-attr]
        expected = ("direct", "direct") if both_easy else ("relayed", "relayed")
        assert paths(net, a, b) == expected, (a.name, b.name)
        assert a.key in b.agent.heard and b.key in a.agent.heard  # messages crossed
        counts[expected[0]] += 1
    # every pair the gossip made talk has a working path too
    broken = []
    for a in members:
        for b in members:
            path = a.agent.reach.paths.get(b.key)
            if a is not b and path is not None and path.session and path.label not in WORKING:
                broken.append((a.name, b.name, path.label))
    assert not broken
    # idle: probes per member per minute
    before = sum(net.datagrams_sent[m.key] for m in members)
    minutes = 1
    net.run(60 * minutes)
    sent = sum(net.datagrams_sent[m.key] for m in members) - before
    rate = sent / len(members) / minutes
    print(f"50 members: {counts}; idle probes per member per minute: {rate:.1f}")
    assert rate < 600  # measured: about 330, the pings and pongs of direct sessions' heartbeats


def test_a_member_made_rendezvous_relays_when_the_admin_is_away() -> None:
    net, admin = mesh()
    vps = member(net, admin, "vps", None)  # a public address, no NAT
    carol = member(net, admin, "carol", net.nat("hard"))
    dave = member(net, admin, "dave", net.nat("hard"))
    assert not net.relays(vps)
    record = admin.agent.set_roles("vps", frozenset({"rendezvous", "relay"}), net.now)
    assert record.version == 2 and net.relays(vps) is False  # pushed, not yet there
    net.pump(admin)
    net.run(10)
    for node in (carol, dave, vps):
        assert node.agent.roster.member(vps.key).roles == {"rendezvous", "relay"}
    assert net.relays(vps)
    net.talk(carol, dave)
    net.run(10)
    assert paths(net, carol, dave) == ("relayed", "relayed")
    net.offline(admin)
    took = net.run_until(
        lambda: net.status(carol, dave).via == "vps" and net.status(dave, carol).via == "vps"
        and paths(net, carol, dave) == ("relayed", "relayed"),
        120,
    )
    print(f"relayed via vps {took:.1f} s after the admin went away")
    before = net.relayed[vps.key]
    net.talk(carol, dave)
    net.run(2)
    assert net.relayed[vps.key] > before
    # taken back: vps relays no more, and the others stop choosing it
    net.online(admin)
    net.run(10)
    admin.agent.set_roles(vps.key, frozenset(), net.now)
    net.pump(admin)
    net.run(30)
    assert not net.relays(vps)
    assert carol.agent.reach.relay == admin.key and dave.agent.reach.relay == admin.key


def test_only_rendezvous_and_relay_can_be_given_and_not_to_an_admin() -> None:
    net, admin = mesh()
    alice = member(net, admin, "alice", net.nat("easy"))
    with pytest.raises(AgentError, match="cannot be given"):
        admin.agent.set_roles("alice", frozenset({"admin"}), net.now)
    with pytest.raises(AgentError, match="is an admin"):
        admin.agent.set_roles("admin", frozenset({"relay"}), net.now)
    with pytest.raises(AgentError, match="no member"):
        admin.agent.set_roles("zed", frozenset({"relay"}), net.now)
    with pytest.raises(AgentError, match="not an admin"):
        alice.agent.set_roles("alice", frozenset({"relay"}), net.now)
    assert admin.agent.roster.member(alice.key).version == 1
