"""The mesh agent in an in-memory mesh: joins, revocation, catching up, bad input."""

from __future__ import annotations

import contextlib
import random
from dataclasses import replace
from ipaddress import ip_network

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mesh_memnet import MESH_ID, MemNet, SimNode

from meshnode.mesh import events as ev
from meshnode.mesh.agent import AgentError, MeshAgent, NotAdmin
from meshnode.mesh.authority import Authority
from meshnode.mesh.drops import MeshDrop
from meshnode.mesh.join import JoinState
from meshnode.mesh.messages import (
    Hello,
    HelloKind,
    JoinAccept,
    JoinReject,
    JoinRequest,
    Leave,
    PeersRequest,
    Push,
    Records,
    RejectReason,
    Want,
    decode,
    encode,
)
from meshnode.mesh.peerconfig import ConfigurePeer, RemovePeer
from meshnode.mesh.records import MemberRecord, Signed, Tombstone
from meshnode.mesh.state import MeshState, StateError

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def agent(node: SimNode) -> MeshAgent:
    assert node.agent is not None
    return node.agent


def mesh(*names: str) -> tuple[MemNet, list[SimNode]]:
    net = MemNet()
    nodes = [net.found()]
    for name in names:
        nodes.append(net.join(nodes[0], name))
    return net, nodes


def record_of(node: SimNode) -> MemberRecord:
    return agent(node).record


def peer_config(node: SimNode, other: SimNode) -> ConfigurePeer:
    config = node.peers[other.key]
    assert isinstance(config, ConfigurePeer)
    return config


def kinds(node: SimNode, kind: type) -> list:
    return [e for e in node.log if isinstance(e, kind)]


# ------------------------------------------------------------ joining


def test_two_joins_make_every_member_a_peer_of_every_other() -> None:
    net, (admin, bravo, charlie) = mesh("bravo", "charlie")
    net.run(65)  # the invites' temporary peers linger for a minute
    nodes = [admin, bravo, charlie]
    for node in nodes:
        others = {n.key for n in nodes if n is not node}
        assert set(node.peers) == others, node
        for other in nodes:
            if other is not node:
                config = peer_config(node, other)
                record = record_of(other)
                assert config.allowed_ips == (ip_network(record.ipv4), ip_network(record.ipv6))
                # set by the agent, or learned by the device when the other wrote first
                assert node.endpoints[other.key] == other.addresses[0]
                assert config.endpoint in (None, other.addresses[0])
                assert config.persistent_keepalive == 0 and not config.coordination_only
        assert agent(node).roster.digest() == agent(admin).roster.digest()
    assert {r.name for r in agent(charlie).roster.members()} == {"admin", "bravo", "charlie"}
    assert record_of(bravo).ipv4 != record_of(charlie).ipv4
    joined = kinds(admin, ev.MemberJoined)
    assert [e.name for e in joined] == ["bravo", "charlie"]
    assert joined[0].invite_id == record_of(bravo).invite_id is not None
    assert "bravo" in joined[0].describe() and joined[0].invite_id.hex() in joined[0].describe()
    assert [e.name for e in kinds(bravo, ev.MemberJoined)] == ["charlie"]
    for node in nodes:
        assert agent(node).drops() == {}, node


def test_members_learn_each_others_endpoints_and_reach_each_other() -> None:
    net, (admin, bravo, charlie) = mesh("bravo", "charlie")
    net.run(1)
    status = agent(bravo).status(net.now)
    assert status.name == "bravo" and status.state == "member" and not status.admin
    by_name = {m.name: m for m in status.members}
    assert by_name["charlie"].endpoint == charlie.addresses[0]
    assert by_name["admin"].path == "lan" and by_name["admin"].heard_ago is not None
    net.run(70)  # gossip rounds carry traffic between every pair sooner or later
    for node in (admin, bravo, charlie):
        for member in agent(node).status(net.now).members:
            assert member.path == "lan", (node, member)
            assert member.handshake_ago is not None
    assert kinds(bravo, ev.PeerReachable)
    assert agent(admin).status(net.now).admin


def test_rendezvous_members_get_a_persistent_keepalive() -> None:
    net = MemNet()
    admin = net.found(roles=frozenset({"admin", "rendezvous"}))
    bravo = net.join(admin, "bravo")
    net.run(1)
    assert peer_config(bravo, admin).persistent_keepalive == 25
    assert peer_config(admin, bravo).persistent_keepalive == 0


def test_the_temporary_peer_is_authorised_then_removed() -> None:
    net, (admin,) = mesh()
    invite = net.invite(admin, "bravo")
    temp_key = invite.keys().public_key
    config = peer_config(admin, SimNode("temp", temp_key, []))
    assert config.coordination_only and config.preshared_key == invite.keys().preshared_key
    address = agent(admin).pool.invite_address(invite.id)
    assert config.allowed_ips == (ip_network(address),) and config.endpoint is None
    assert [i.status for i in agent(admin).invites(net.now)] == ["open"]
    temp = net.start_join(invite, "bravo")
    net.run(1)
    assert temp.joiner.state is JoinState.JOINED
    assert [i.status for i in agent(admin).invites(net.now)] == ["used"]
    # the accept may have been lost: a repeated request gets the same answer
    request = JoinRequest(MESH_ID, invite.id, temp.joiner.public_key, None, ())
    agent(admin).handle_message(temp_key, encode(request), net.now)
    ((to, payload),) = agent(admin).messages_to_send()
    assert to == temp_key and isinstance(decode(payload), JoinAccept)
    assert decode(payload).record.body == agent(admin).roster.signed_for(request.public_key).body
    net.run(61)
    assert temp_key not in admin.peers
    closed = kinds(admin, ev.InviteClosed)
    assert [(c.invite_id, c.why) for c in closed] == [(invite.id, "used")]
    assert agent(admin).invites(net.now) == []


def test_the_temporary_peer_may_only_ask_to_join() -> None:
    net, (admin,) = mesh()
    invite = net.invite(admin)
    temp_key = invite.keys().public_key
    hello = Hello(bytes(16), 0, 0, (), 0, HelloKind.CALL)
    for message in (hello, Want((temp_key,)), Leave(), PeersRequest((admin.key,))):
        agent(admin).handle_message(temp_key, encode(message), net.now)
    agent(admin).handle_message(temp_key, b"junk", net.now)
    assert agent(admin).drops() == {MeshDrop.TEMP_PEER_NOT_JOIN: 4, MeshDrop.MALFORMED: 1}
    assert agent(admin).messages_to_send() == []


def join_outcome(net: MemNet, invite, name: str = "x", **kwargs) -> tuple[str, str]:
    temp = net.start_join(invite, name, **kwargs)
    net.run_until(lambda: temp.joiner.state in (JoinState.JOINED, JoinState.FAILED), 30)
    net.drop_node(temp)
    if temp.joiner.failure is None:
        return "joined", ""
    return temp.joiner.failure.reason, temp.joiner.failure.message


def test_a_reused_revoked_or_expired_invite_is_refused_with_its_reason() -> None:
    net, (admin, _bravo) = mesh("bravo")
    invite = net.invite(admin)
    assert join_outcome(net, invite, request_name="one")[0] == "joined"
    reason, text = join_outcome(net, invite, request_name="two")
    assert reason == "used" and "already used" in text
    revoked = net.invite(admin)
    agent(admin).revoke_invite(revoked.id.hex(), net.now)
    reason, text = join_outcome(net, revoked, request_name="three")
    assert reason == "revoked" and "revoked" in text
    with pytest.raises(AgentError):
        agent(admin).revoke_invite(revoked.id, net.now)
    # an invite whose expiry passed (by the admin's clock) while its peer lingers
    expiring = net.invite(admin, lifetime=60)
    temp_key = expiring.keys().public_key
    net.run(61)
    request = JoinRequest(MESH_ID, expiring.id, b"\x99" * 32, "late", ())
    agent(admin).handle_message(temp_key, encode(request), net.now)
    ((_, payload),) = agent(admin).messages_to_send()
    assert decode(payload) == JoinReject(
        expiring.id, RejectReason.EXPIRED, "the invite has expired"
    )
    net.pump(admin)
    refused = kinds(admin, ev.JoinRefused)
    assert [r.reason for r in refused] == ["used", "revoked", "expired"]
    assert agent(admin).drops() == {MeshDrop.JOIN_REFUSED: 3}
    assert len(agent(admin).roster.members()) == 3  # nothing changed on either side
    net.run(120)
    assert not any(k in admin.peers for k in (revoked.keys().public_key, temp_key))


def request_reject(net: MemNet, admin: SimNode, invite, **fields) -> RejectReason:
    base = {"mesh_id": MESH_ID, "invite_id": invite.id, "public_key": b"\x42" * 32}
    base |= {"name": "newbie", "candidates": ()}
    base |= fields
    temp = invite.keys().public_key
    agent(admin).handle_message(temp, encode(JoinRequest(**base)), net.now)
    ((_, payload),) = [m for m in agent(admin).messages_to_send() if m[0] == temp]
    net.pump(admin)
    answer = decode(payload)
    assert isinstance(answer, JoinReject), answer
    return answer.reason


def test_every_join_rule_has_its_reason() -> None:
    net, (admin, bravo) = mesh("bravo")
    invite = net.invite(admin)
    assert request_reject(net, admin, invite, invite_id=b"\x01" * 8) is RejectReason.UNKNOWN
    assert request_reject(net, admin, invite, mesh_id=bytes(16)) is RejectReason.FOREIGN_MESH
    assert request_reject(net, admin, invite, name="bravo") is RejectReason.NAME_TAKEN
    assert request_reject(net, admin, invite, name=None) is RejectReason.NO_NAME
    assert request_reject(net, admin, invite, public_key=bravo.key) is RejectReason.KEY_IN_USE
    assert request_reject(net, admin, invite, public_key=admin.key) is RejectReason.KEY_IN_USE
    named = net.invite(admin, "carol")
    assert request_reject(net, admin, named, name="dave") is RejectReason.NAME_MISMATCH
    # a node that holds no authority key refuses any join request it gets
    request = JoinRequest(MESH_ID, invite.id, b"\x42" * 32, "x", ())
    agent(bravo).handle_message(admin.key, encode(request), net.now)
    ((to, payload),) = agent(bravo).messages_to_send()
    assert to == admin.key and decode(payload).reason is RejectReason.NOT_ADMIN
    assert agent(bravo).drops()[MeshDrop.NOT_ADMIN] == 1
    agent(admin).revoke_member("bravo", net.now)
    net.run(1)
    assert request_reject(net, admin, invite, public_key=bravo.key) is RejectReason.KEY_REVOKED


def test_a_full_mesh_refuses_joins() -> None:
    net = MemNet()
    admin = net.found()
    pool = agent(admin).pool
    agent(admin).pool = replace(pool, ipv4=ip_network(f"{pool.ipv4.network_address}/30"))
    net.join(admin, "bravo")  # offsets 1 and 2 are the only ones in a /30
    invite = net.invite(admin)
    assert request_reject(net, admin, invite) is RejectReason.FULL


def test_only_admins_invite_and_revoke() -> None:
    net, (admin, bravo) = mesh("bravo")
    with pytest.raises(NotAdmin):
        agent(bravo).create_invite(net.now, 60)
    with pytest.raises(NotAdmin):
        agent(bravo).revoke_member("admin", net.now)
    with pytest.raises(AgentError, match="no member"):
        agent(admin).revoke_member("nobody", net.now)
    with pytest.raises(AgentError, match="revoke itself"):
        agent(admin).revoke_member(admin.key, net.now)
    with pytest.raises(AgentError, match="already has a member"):
        agent(admin).create_invite(net.now, 60, "bravo")
    with pytest.raises(AgentError, match="lifetime"):
        agent(admin).create_invite(net.now, 0)
    lonely = MemNet().found()
    agent(lonely).reach.candidates = ()
    with pytest.raises(AgentError, match="no endpoint"):
        agent(lonely).create_invite(net.now, 60)


# ------------------------------------------------------------ revocation and leaving


def test_a_revocation_reaches_every_member_within_seconds() -> None:
    net, nodes = mesh("bravo", "charlie", "delta", "echo", "foxtrot")
    admin, victim = nodes[0], nodes[2]
    net.run(40)
    pending = net.invite(admin, "charlie-2")  # an invite made out to ... someone else
    own_invite = net.invite(admin, "x")
    tombstone = agent(admin).revoke_member("charlie", net.now, "lost laptop")
    assert tombstone.by == "admin" and tombstone.public_key == victim.key
    net.pump(admin)
    assert victim.key not in admin.peers  # at once on the admin
    others = [n for n in nodes if n is not victim]
    took = net.run_until(lambda: all(victim.key not in n.peers for n in others), 10)
    assert took < 3
    for node in others:
        (revoked,) = kinds(node, ev.MemberRevoked)
        assert (revoked.name, revoked.by, revoked.reason) == ("charlie", "admin", "lost laptop")
        assert "charlie" in revoked.describe() and "lost laptop" in revoked.describe()
        assert agent(node).roster.is_revoked(victim.key)
        assert victim.key not in {m.public_key for m in agent(node).status(net.now).members}
    # the revoked member is refused from then on
    hello = encode(agent(victim).hello(HelloKind.CALL))
    net.inject(nodes[1], victim.key, hello)
    assert agent(nodes[1]).drops()[MeshDrop.REVOKED_SENDER] == 1
    statuses = {i.invite_id: i.status for i in agent(admin).invites(net.now)}
    assert statuses[pending.id] == statuses[own_invite.id] == "open"


def test_a_revoked_members_invites_are_refused() -> None:
    net, (admin, _bravo) = mesh("bravo")
    invite = net.invite(admin, "carol")
    net.join(admin, "carol")  # a second invite for carol was not used
    agent(admin).revoke_member("carol", net.now)
    statuses = {i.invite_id: i.status for i in agent(admin).invites(net.now)}
    assert statuses[invite.id] == "revoked" and set(statuses.values()) == {"revoked", "used"}
    assert request_reject(net, admin, invite, name=None) is RejectReason.REVOKED


def test_a_member_that_learns_it_was_revoked_stops() -> None:
    net, (admin, bravo, _charlie) = mesh("bravo", "charlie")
    net.run(1)
    assert net.authority is not None
    tombstone = Signed.issue(net.authority, Tombstone(MESH_ID, bravo.key, 1, "admin", "bye"))
    net.inject(bravo, admin.key, encode(Push((tombstone,))))
    (event,) = kinds(bravo, ev.SelfRevoked)
    assert "revoked" in event.describe() and agent(bravo).state == "revoked"
    assert bravo.peers == {} and agent(bravo).get_timer() is None
    net.inject(bravo, admin.key, encode(agent(admin).hello(HelloKind.ROUND)))
    assert agent(bravo).drops()[MeshDrop.INACTIVE] == 1
    assert agent(bravo).status(net.now).state == "revoked"


def test_a_member_that_leaves_is_dropped_everywhere() -> None:
    net, (admin, bravo, charlie) = mesh("bravo", "charlie")
    net.run(5)
    agent(charlie).leave(net.now, "moving out")
    net.pump(charlie)
    assert charlie.peers  # the agent leaves taking the interface down to the glue
    assert agent(charlie).state == "left" and agent(charlie).get_timer() is None
    with pytest.raises(AgentError):
        agent(charlie).leave(net.now)
    net.run(3)
    for node in (admin, bravo):
        assert charlie.key not in node.peers
        (left,) = kinds(node, ev.MemberLeft)
        assert left.name == "charlie" and "left the mesh" in left.describe()
        assert not kinds(node, ev.MemberRevoked)
        assert agent(node).roster.is_revoked(charlie.key)  # the admin made it permanent


def test_a_leave_heard_without_an_admin_is_kept_locally() -> None:
    net, (admin, bravo, charlie) = mesh("bravo", "charlie")
    net.run(5)
    net.offline(admin)
    agent(charlie).leave(net.now)
    net.pump(charlie)
    net.run(3)
    assert charlie.key not in bravo.peers
    assert not agent(bravo).roster.is_revoked(charlie.key)
    state = MeshState.decode(agent(bravo).to_state().encode(), net.now)
    assert charlie.key in state.left
    net.inject(bravo, charlie.key, encode(Leave()))
    assert agent(bravo).drops()[MeshDrop.LEFT_SENDER] == 1


# ------------------------------------------------------------ catching up


def test_a_member_back_online_catches_up_within_seconds() -> None:
    net, (admin, bravo, charlie, delta) = mesh("bravo", "charlie", "delta")
    net.run(40)
    net.offline(bravo)
    echo = net.join(admin, "echo")
    agent(admin).revoke_member("charlie", net.now)
    net.run(600)
    assert echo.key not in bravo.peers
    bravo.log.clear()
    net.online(bravo)
    took = net.run_until(
        lambda: (
            echo.key in bravo.peers
            and charlie.key not in bravo.peers
            and agent(bravo).roster.digest() == agent(admin).roster.digest()
        ),
        10,
    )
    assert took < 2
    assert [e.name for e in kinds(bravo, ev.MemberJoined)] == ["echo"]
    assert [e.name for e in kinds(bravo, ev.MemberRevoked)] == ["charlie"]
    net.run(2)
    assert bravo.endpoints[echo.key] == echo.addresses[0]
    assert set(bravo.peers) == {admin.key, delta.key, echo.key}


def test_members_exchange_records_while_the_admin_is_offline() -> None:
    net, (admin, bravo, charlie, delta) = mesh("bravo", "charlie", "delta")
    net.run(40)
    net.offline(charlie)
    echo = net.join(admin, "echo")
    net.run(5)
    net.offline(admin)
    net.run(300)
    net.online(charlie)  # only bravo, delta and echo are there to tell it
    took = net.run_until(lambda: echo.key in charlie.peers, 10)
    assert took < 3
    assert agent(charlie).roster.digest() == agent(bravo).roster.digest()
    net.run(2)  # asked for the newcomer's endpoint
    assert charlie.endpoints[echo.key] == echo.addresses[0]
    net.run(120)  # and they keep talking without the admin
    for node in (bravo, charlie, delta, echo):
        heard = {m.name: m.heard_ago for m in agent(node).status(net.now).members}
        assert all(ago is not None and ago < 200 for n, ago in heard.items() if n != "admin")


def test_a_handshake_after_a_long_silence_catches_up_at_once() -> None:
    net, (admin, bravo, _charlie) = mesh("bravo", "charlie")
    net.run(5)
    agent(bravo)._last_handshake -= 1000  # as if bravo's network had been down
    sent = net.types_sent[1]
    net.at(net.now, net._established, bravo, admin, admin.addresses[0])
    net.run(0.1)
    assert net.types_sent[1] > sent  # HELLO calls went out at once
    assert agent(bravo).gossip.catching_up is False


# ------------------------------------------------------------ bad input


def test_forged_and_stale_records_are_dropped_and_configure_nothing() -> None:
    net, (admin, bravo, charlie) = mesh("bravo", "charlie")
    net.run(5)
    mallory = Authority.from_private_bytes(b"\x66" * 32)
    pool = agent(admin).pool
    v4, v6 = pool.pair(50)
    fake = MemberRecord(MESH_ID, "evil", b"\x66" * 32, v4, v6, frozenset({"admin"}), 1)
    forged = Signed.issue(mallory, fake)
    resigned = replace(Signed.issue(net.authority, fake), signature=forged.signature)
    net.inject(charlie, bravo.key, encode(Push((forged, resigned))))
    net.inject(charlie, bravo.key, encode(Records((forged,))))
    # an older version of bravo's record, after the admin re-issued it
    old = agent(admin).roster.signed_for(bravo.key)
    newer = replace(record_of(bravo), version=2, roles=frozenset({"relay"}))
    agent(admin).apply_blob(Signed.issue(net.authority, newer), net.now)
    agent(admin).gossip.spread([agent(admin).roster.signed_for(bravo.key)], net.now)
    net.pump(admin)
    net.run(3)
    net.inject(charlie, admin.key, encode(Push((old,))))
    net.run(3)
    drops = agent(charlie).drops()
    assert drops[MeshDrop.RECORD_BAD_SIGNATURE] == 3 and drops[MeshDrop.RECORD_STALE] == 1
    for node in (admin, bravo, charlie):
        assert fake.public_key not in node.peers
        assert agent(node).roster.member(fake.public_key) is None
    assert record_of(bravo).version == 2 and agent(charlie).roster.member(bravo.key).version == 2
    assert kinds(charlie, ev.MemberUpdated)[0].roles == {"relay"}


def test_malformed_messages_and_strangers_are_dropped_and_counted() -> None:
    net, (admin, bravo) = mesh("bravo")
    target = agent(bravo)
    for payload in (b"", b"\xc1", encode(Leave())[:-1], b"\x93\x02\x01\x00", b"\x92\x01\x63"):
        target.handle_message(admin.key, payload, net.now)
    target.handle_message(admin.key, b"\x00" * 1500, net.now)
    target.handle_message(b"\x55" * 32, encode(Leave()), net.now)
    target.handle_message(bravo.key, encode(Leave()), net.now)
    accept = JoinAccept(
        MESH_ID,
        "x",
        agent(admin).authority_key,
        agent(admin).pool.ipv4,
        agent(admin).pool.ipv6,
        agent(admin).roster.signed_for(admin.key),
        agent(admin).roster.signed_for(admin.key),
        (),
    )
    target.handle_message(admin.key, encode(accept), net.now)
    assert target.drops() == {
        MeshDrop.MALFORMED: 3,
        MeshDrop.BAD_VERSION: 1,
        MeshDrop.UNKNOWN_TYPE: 1,
        MeshDrop.OVERSIZED: 1,
        MeshDrop.UNKNOWN_SENDER: 2,
        MeshDrop.UNEXPECTED: 1,
    }
    assert target.state == "member" and admin.key in bravo.peers


AGENT_MESH = mesh("bravo")


@SETTINGS
@given(st.binary(max_size=1300) | st.sampled_from([b"\x96\x01\x01", b"\x92\x01\x05"]))
def test_no_payload_from_a_member_breaks_the_agent(payload: bytes) -> None:
    net, (admin, bravo) = AGENT_MESH
    before = agent(admin).roster.digest()
    agent(admin).handle_message(bravo.key, payload, net.now)
    agent(admin).messages_to_send()
    assert agent(admin).roster.digest() == before


# ------------------------------------------------------------ paths


def test_an_unreachable_candidate_is_skipped_after_five_seconds() -> None:
    net, (admin, bravo) = mesh("bravo")
    charlie = net.join(admin, "charlie", address=("203.0.113.9", 51820))
    # charlie publishes a dead address first, then the one that works
    dead, good = ("198.51.100.1", 51820), ("203.0.113.9", 51820)
    agent(charlie).set_local_candidates([dead, good], net.now)
    net.pump(charlie)
    net.run(3)
    assert agent(bravo).reach.directory.get(charlie.key).candidates == (dead, good)
    net.offline(bravo)  # bravo restarts: no session, no path, only what charlie published
    net.online(bravo)
    assert bravo.endpoints[charlie.key] == dead
    agent(bravo).send(charlie.key, agent(bravo).hello(HelloKind.CALL), net.now)
    net.pump(bravo)
    took = net.run_until(lambda: charlie.key in bravo.sessions, 12)
    assert 5 <= took < 6
    assert bravo.endpoints[charlie.key] == good
    member = {m.name: m for m in agent(bravo).status(net.now).members}["charlie"]
    assert member.path == "direct" and member.endpoint == good
    assert kinds(bravo, ev.PeerReachable)[-1].path == "direct"


def test_a_peer_that_stops_answering_is_reported() -> None:
    net, (admin, bravo) = mesh("bravo")
    net.run(40)
    net.offline(admin)
    agent(bravo).send(admin.key, agent(bravo).hello(HelloKind.CALL), net.now)
    net.pump(bravo)
    bravo.sessions.discard(admin.key)
    net.run(200)
    assert kinds(bravo, ev.PeerUnreachable)
    assert "stopped answering" in kinds(bravo, ev.PeerUnreachable)[0].describe()
    assert {m.name: m.path for m in agent(bravo).status(net.now).members}["admin"] == "none"


# ------------------------------------------------------------ persistence


def test_state_round_trips_and_brings_back_invites() -> None:
    net, (admin, bravo) = mesh("bravo")
    invite = net.invite(admin, "carol")
    net.run(5)
    state = agent(admin).to_state()
    data = state.encode()
    loaded = MeshState.decode(data, net.now)
    assert loaded.encode() == data
    assert [p.invite_id for p in loaded.pending] == [invite.id]
    assert loaded.roster.digest() == state.roster.digest()
    again = MeshAgent(loaded, net.now, rng=random.Random(1))
    changes = again.config_changes()
    temp = [c for c in changes if isinstance(c, ConfigurePeer) and c.coordination_only]
    assert [c.public_key for c in temp] == [invite.keys().public_key]
    assert {c.public_key for c in changes} == {bravo.key, invite.keys().public_key}
    assert not any(isinstance(c, RemovePeer) for c in changes)
    assert again.messages_to_send()  # catching up at start
    member = MeshState.decode(agent(bravo).to_state().encode(), net.now)
    assert member.authority_private is None and member.pending == ()
    assert member.directory[admin.key].candidates == tuple(admin.addresses)


def test_state_files_are_checked() -> None:
    net, (_admin, bravo) = mesh("bravo")
    data = agent(bravo).to_state().encode()
    for bad in (b"", data[:-1], data[:50], b"\x91\x02"):
        with pytest.raises(StateError):
            MeshState.decode(bad, net.now)
    state = agent(bravo).to_state()
    state.authority_private = b"\x01" * 32
    with pytest.raises(StateError, match="does not match"):
        state.check()
    state = agent(bravo).to_state()
    state.public_key = b"\x02" * 32
    with pytest.raises(StateError, match="no record"):
        state.check()


@SETTINGS
@given(st.data())
def test_state_decoding_raises_only_state_errors(data: st.DataObject) -> None:
    blob = bytearray(STATE)
    for _ in range(data.draw(st.integers(1, 3))):
        blob[data.draw(st.integers(0, len(blob) - 1))] ^= data.draw(st.integers(1, 255))
    with contextlib.suppress(StateError):
        MeshState.decode(bytes(blob), 1_700_000_000)


STATE = agent(AGENT_MESH[1][1]).to_state().encode()


def test_a_member_that_moves_is_found_at_its_new_address() -> None:
    net, nodes = mesh("bravo", "charlie", "delta", "echo")
    net.run(40)
    mover = nodes[2]
    before = agent(mover).reach.seq
    mover.addresses = [("10.9.9.9", 51820)]
    agent(mover).set_local_candidates(mover.addresses, net.now + 5)
    net.pump(mover)
    assert agent(mover).reach.seq > before
    net.run(3)
    for node in nodes:
        if node is not mover:
            info = agent(node).reach.directory.get(mover.key)
            assert info is not None and info.candidates == (("10.9.9.9", 51820),), node


def test_messages_are_addressed_to_overlay_addresses() -> None:
    net, (admin, bravo) = mesh("bravo")
    invite = net.invite(admin)
    a = agent(admin)
    assert a.overlay_address(bravo.key) == record_of(bravo).ipv6
    assert a.overlay_address(invite.keys().public_key) == a.pool.invite_address(invite.id)
    assert a.overlay_address(admin.key) is None and a.overlay_address(b"\x00" * 32) is None
    assert agent(bravo).overlay_address(invite.keys().public_key) is None


def test_every_event_reads_as_plain_words() -> None:
    net, (admin, bravo, charlie, delta) = mesh("bravo", "charlie", "delta")
    invite = net.invite(admin, "echo", uses=2)
    agent(admin).revoke_invite(invite.id, net.now)
    agent(admin).revoke_member("charlie", net.now, "stolen")
    net.pump(admin)
    agent(delta).leave(net.now)
    net.pump(delta)
    net.run(120)
    seen = {}
    for node in (admin, bravo, charlie, delta):
        for event in node.log:
            seen.setdefault(type(event).__name__, event.describe())
    assert {
        "InviteCreated",
        "InviteRevoked",
        "InviteClosed",
        "MemberJoined",
        "MemberRevoked",
        "MemberLeft",
        "PeerReachable",
    } <= set(seen)
    assert all(text and "\n" not in text for text in seen.values())
    assert seen["InviteCreated"].startswith("invite ") and "(1 use(s))" in seen["InviteCreated"]
