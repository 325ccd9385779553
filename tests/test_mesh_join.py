"""The joiner's state machine: every step, and every way it can fail."""

from __future__ import annotations

import random
from dataclasses import replace
from ipaddress import IPv6Address, ip_network

import pytest
from mesh_memnet import MESH_ID, MemNet, endpoint

from meshnode.mesh.agent import MeshAgent
from meshnode.mesh.authority import Authority
from meshnode.mesh.bootstrap import BootstrapPeer
from meshnode.mesh.invite import Invite
from meshnode.mesh.join import Joiner, JoinError, JoinState, JoinStep
from meshnode.mesh.messages import (
    Hello,
    JoinAccept,
    JoinReject,
    JoinRequest,
    RejectReason,
    decode,
    encode,
)
from meshnode.mesh.peerconfig import ConfigurePeer
from meshnode.mesh.records import MemberRecord, Signed, Tombstone
from meshnode.wireguard.events import HandshakeCompleted, HandshakeGaveUp

KEY = b"\x42" * 32
A, B = ("192.0.2.10", 51820), ("2001:db8::10", 51821)


@pytest.fixture
def net() -> MemNet:
    return MemNet()


def make_invite(net: MemNet, name: str | None = "laptop", **kwargs) -> Invite:
    admin = net.found() if not net.nodes else next(iter(net.nodes.values()))
    return net.invite(admin, name, **kwargs)


def started(invite: Invite, now: float, **kwargs) -> Joiner:
    joiner = Joiner(invite, KEY, **kwargs)
    joiner.start(now)
    return joiner


def test_the_temporary_interface_is_what_the_admin_authorised(net: MemNet) -> None:
    invite = make_invite(net, bootstrap=[A, B])
    admin = next(iter(net.nodes.values()))
    joiner = Joiner(invite, KEY)
    temp = joiner.temp_interface()
    keys = invite.keys()
    assert temp.private_key == keys.private_key and temp.public_key == keys.public_key
    assert temp.address == admin.agent.pool.invite_address(invite.id)
    (peer,) = temp.peers
    assert peer.public_key == admin.key and peer.endpoint == A
    assert peer.allowed_ips == (ip_network(admin.agent.record.ipv6),)
    assert peer.preshared_key == keys.preshared_key and peer.coordination_only
    assert keys.private_key.hex() not in repr(temp) and str(keys.private_key) not in repr(temp)
    assert joiner.state is JoinState.START and joiner.get_timer() is None


def test_it_asks_every_second_and_tries_each_endpoint_in_turn(net: MemNet) -> None:
    invite = make_invite(net, bootstrap=[A, B])
    now = net.now
    joiner = started(invite, now)
    assert joiner.state is JoinState.CONTACTING
    ((to, payload),) = joiner.messages_to_send()
    request = decode(payload)
    assert isinstance(request, JoinRequest) and to == invite.bootstrap[0].public_key
    assert (request.public_key, request.invite_id, request.name) == (KEY, invite.id, None)
    assert [c.endpoint for c in joiner.config_changes()] == [A]
    assert joiner.get_timer() == now + 1
    joiner.handle_timer(now + 1)
    assert len(joiner.messages_to_send()) == 1 and joiner.config_changes() == []
    joiner.handle_timer(now + 5)
    assert [c.endpoint for c in joiner.config_changes()] == [B]
    joiner.handle_device_event(HandshakeGaveUp(invite.bootstrap[0].public_key), now + 6)
    assert [c.endpoint for c in joiner.config_changes()] == [A]  # round again
    texts = []
    while (event := joiner.next_event()) is not None:
        texts.append(event.text)
    assert texts[0] == "contacting the bootstrap member at 192.0.2.10:51820"
    assert texts[1] == "contacting the bootstrap member at [2001:db8::10]:51821"


def test_no_handshake_is_a_clear_timeout(net: MemNet) -> None:
    joiner = started(make_invite(net, bootstrap=[A, B]), net.now, timeout=20)
    t = net.now
    while joiner.state is JoinState.CONTACTING:
        t = joiner.get_timer()
        joiner.handle_timer(t)
    assert t == net.now + 20
    failure = joiner.failure
    assert failure is not None and failure.step is JoinStep.HANDSHAKE
    assert failure.reason == "timeout" and joiner.state is JoinState.FAILED
    assert "192.0.2.10:51820, [2001:db8::10]:51821 did not answer the WireGuard handshake" in str(
        failure
    )
    assert "UDP port 51820, 51821 is reachable" in failure.message
    assert joiner.get_timer() is None and joiner.result is None


def test_a_handshake_without_an_answer_is_another_timeout(net: MemNet) -> None:
    invite = make_invite(net, bootstrap=[A])
    joiner = started(invite, net.now, timeout=10)
    bootstrap = invite.bootstrap[0].public_key
    joiner.handle_device_event(HandshakeCompleted(b"\x01" * 32, endpoint(A), True), net.now)
    assert joiner.state is JoinState.CONTACTING  # not the bootstrap's handshake
    joiner.handle_device_event(HandshakeCompleted(bootstrap, endpoint(A), True), net.now + 1)
    assert joiner.state is JoinState.WAITING_ACCEPT
    joiner.handle_timer(net.now + 5.5)
    assert joiner.config_changes()[1:] == []  # no more endpoint switching
    joiner.handle_timer(net.now + 10)
    failure = joiner.failure
    assert failure is not None and failure.step is JoinStep.REQUEST
    assert "completed the WireGuard handshake but did not answer the join request" in str(failure)
    assert "coordination port 51900" in failure.message


def real_answer(net: MemNet, joiner: Joiner) -> tuple[bytes, bytes]:
    admin = next(iter(net.nodes.values()))
    ((to, payload),) = joiner.messages_to_send()
    admin.agent.handle_message(joiner.temp_interface().public_key, payload, net.now)
    answers = [
        p for k, p in admin.agent.messages_to_send() if k == joiner.temp_interface().public_key
    ]
    return to, answers[-1]


def test_an_accept_becomes_a_members_state(net: MemNet) -> None:
    invite = make_invite(net, "laptop")
    joiner = started(invite, net.now)
    sender, answer = real_answer(net, joiner)
    joiner.handle_message(sender, answer, net.now)
    assert joiner.state is JoinState.JOINED and joiner.failure is None
    result = joiner.result
    assert result is not None and result.record.name == "laptop"
    assert result.record.public_key == KEY and result.sponsor.name == "admin"
    state = result.state
    assert state.public_key == KEY and state.authority_private is None
    assert state.directory[sender].candidates[0] == invite.bootstrap[0].endpoints[0]
    agent = MeshAgent(state, net.now, rng=random.Random(1))
    (config,) = agent.config_changes()
    assert isinstance(config, ConfigurePeer) and config.public_key == sender
    assert config.endpoint == invite.bootstrap[0].endpoints[0]
    assert isinstance(decode(agent.messages_to_send()[0][1]), Hello)
    assert joiner.get_timer() is None
    texts = [e.text for e in iter(joiner.next_event, None)]
    assert texts[-1].startswith("joined mesh testmesh as laptop (100.")
    # nothing moves it any more
    joiner.handle_message(sender, encode(JoinReject(invite.id, RejectReason.USED, "")), net.now)
    assert joiner.state is JoinState.JOINED


MESSAGES = {
    RejectReason.USED: "already used",
    RejectReason.REVOKED: "revoked by the mesh's admin",
    RejectReason.EXPIRED: "expired by the admin's clock",
    RejectReason.UNKNOWN: "does not know this invite",
    RejectReason.FOREIGN_MESH: "belongs to another mesh",
    RejectReason.NAME_TAKEN: "the name laptop is taken in mesh testmesh",
    RejectReason.NAME_MISMATCH: "the invite is for member None",
    RejectReason.NO_NAME: "give one with --name",
    RejectReason.FULL: "no free overlay address",
    RejectReason.KEY_REVOKED: "was revoked from mesh testmesh",
    RejectReason.KEY_IN_USE: "already a member of mesh testmesh",
    RejectReason.NOT_ADMIN: "is not an admin of mesh testmesh",
}


@pytest.mark.parametrize("reason", list(RejectReason))
def test_every_refusal_has_its_own_message(net: MemNet, reason: RejectReason) -> None:
    invite = make_invite(net, None)
    joiner = started(invite, net.now, name="laptop")
    ((to, _),) = joiner.messages_to_send()
    joiner.handle_message(to, encode(JoinReject(invite.id, reason, "words")), net.now)
    failure = joiner.failure
    assert failure is not None and failure.step is JoinStep.ANSWER
    assert failure.reason == reason.value and MESSAGES[reason] in failure.message
    assert joiner.state is JoinState.FAILED and joiner.result is None


def test_real_refusals_reach_the_joiner(net: MemNet) -> None:
    invite = make_invite(net, None)
    joiner = started(invite, net.now, name="admin")  # a name the mesh already has
    to, answer = real_answer(net, joiner)
    joiner.handle_message(to, answer, net.now)
    assert joiner.failure is not None and joiner.failure.reason == "name_taken"
    assert "the name admin is taken in mesh testmesh" in joiner.failure.message


MALLORY = Authority.from_private_bytes(b"\x66" * 32)


def resign(signed: Signed, by: Authority, **change: object) -> Signed:
    return Signed.issue(by, replace(MemberRecord.decode(signed.body), **change))


@pytest.mark.parametrize(
    "change",
    [
        lambda a, auth: replace(a, record=resign(a.record, MALLORY)),
        lambda a, auth: replace(a, sponsor=resign(a.sponsor, MALLORY)),
        lambda a, auth: replace(a, record=resign(a.record, auth, public_key=b"\x01" * 32)),
        lambda a, auth: replace(a, record=resign(a.record, auth, name="desktop")),
        lambda a, auth: replace(a, record=resign(a.record, auth, invite_id=b"\x01" * 8)),
        lambda a, auth: replace(a, record=resign(a.record, auth, mesh_id=bytes(16))),
        lambda a, auth: replace(a, record=resign(a.record, auth, ipv6=IPv6Address("fd00::9"))),
        lambda a, auth: replace(a, sponsor=a.record),
        lambda a, auth: replace(a, mesh_id=bytes(16)),
        lambda a, auth: replace(a, authority=MALLORY.key),
        lambda a, auth: replace(a, ipv4_cidr=ip_network("10.9.0.0/16")),
        lambda a, auth: replace(
            a, record=Signed.issue(auth, Tombstone(MESH_ID, KEY, 1, "admin", ""))
        ),
    ],
)
def test_an_accept_that_does_not_check_out_fails(net: MemNet, change) -> None:
    invite = make_invite(net, "laptop")
    joiner = started(invite, net.now)
    to, answer = real_answer(net, joiner)
    accept = decode(answer)
    assert isinstance(accept, JoinAccept)
    joiner.handle_message(to, encode(change(accept, net.authority)), net.now)
    assert joiner.state is JoinState.FAILED and joiner.failure is not None
    assert joiner.failure.step is JoinStep.ANSWER and joiner.failure.reason == "bad_answer"
    assert "does not check out against the invite" in joiner.failure.message
    assert joiner.result is None


def test_an_expired_invite_fails_before_any_traffic(net: MemNet) -> None:
    invite = make_invite(net, lifetime=60)
    joiner = started(invite, net.now + 60)
    assert joiner.state is JoinState.FAILED and joiner.messages_to_send() == []
    assert joiner.failure is not None and joiner.failure.step is JoinStep.INVITE
    assert "expired" in joiner.failure.message


def test_a_name_is_needed_when_the_invite_has_none(net: MemNet) -> None:
    with pytest.raises(JoinError, match="--name"):
        Joiner(make_invite(net, None), KEY)


def test_strangers_and_garbage_are_ignored(net: MemNet) -> None:
    invite = make_invite(net)
    joiner = started(invite, net.now)
    ((to, _),) = joiner.messages_to_send()
    joiner.handle_message(b"\x01" * 32, encode(JoinReject(invite.id, RejectReason.USED, "")), 0)
    joiner.handle_message(to, b"\xc1garbage", net.now)
    joiner.handle_message(to, encode(Hello(bytes(16), 0, 0, (), 0)), net.now)
    assert joiner.state is JoinState.CONTACTING and joiner.failure is None
    joiner.start(net.now)  # starting twice changes nothing
    assert joiner.messages_to_send() == []


def test_a_join_through_the_in_memory_network(net: MemNet) -> None:
    admin = net.found()
    bravo = net.join(admin, "bravo")
    assert bravo.agent.record.name == "bravo"
    invite = net.invite(admin, "carol", bootstrap=[("192.0.2.99", 51820), admin.addresses[0]])
    temp = net.start_join(invite, "carol")
    took = net.run_until(lambda: temp.joiner.state is JoinState.JOINED, 20)
    assert 5 <= took < 6  # the first endpoint never answers
    texts = [e.text for e in temp.log]
    assert texts[:3] == [
        "contacting the bootstrap member at 192.0.2.99:51820",
        "contacting the bootstrap member at 10.0.0.1:51820",
        "WireGuard handshake with 10.0.0.1:51820 done; waiting for the answer",
    ]
    assert texts[3].startswith("joined mesh testmesh as carol")


def test_bootstrap_peers_of_other_admins_are_tried_too(net: MemNet) -> None:
    invite = make_invite(net)
    other = BootstrapPeer(b"\x09" * 32, IPv6Address("fd00::9"), (("198.51.100.1", 1),))
    two = replace(invite, bootstrap=(*invite.bootstrap, other))
    joiner = started(two, net.now)
    assert len(joiner.temp_interface().peers) == 2
    joiner.messages_to_send()
    joiner.handle_timer(net.now + 5)
    ((to, _),) = joiner.messages_to_send()
    assert to == other.public_key
