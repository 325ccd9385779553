"""Every per-peer timer, to the millisecond, with a fake clock (wireguard-go's
device/timers.go is the reference)."""

import itertools

import pytest
from memnet import MemNet

from meshnode.wireguard.device import Drop

INITIATION, RESPONSE, TRANSPORT = 1, 2, 4


def times(entries: list) -> list[float]:
    return [round(t, 6) for t, _ in entries]


def test_unanswered_handshake_gives_up_after_20_initiations() -> None:
    net = MemNet()
    net.blackhole = True
    net.send(net.a)
    net.advance(300)
    sent = times(net.sent_by(net.a, kind=INITIATION))
    assert len(sent) == 20
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert all(5.000 <= g <= 5.334 for g in gaps), gaps
    assert len({round(g, 3) for g in gaps}) > 1  # jittered, not a fixed period
    assert net.a.device.drops[Drop.HANDSHAKE_GAVE_UP] == 1  # the staged packet
    assert net.a.peer.staged == type(net.a.peer.staged)()
    net.advance(1000)
    assert len(net.sent_by(net.a, kind=INITIATION)) == 20  # and then silence
    # new traffic starts a new round
    net.blackhole = False
    packet = net.send(net.a)
    assert net.b.delivered == [packet]


def test_at_most_one_initiation_every_5_seconds() -> None:
    net = MemNet()
    net.blackhole = True
    for i in range(50):
        net.now = i * 0.1
        net.send(net.a)
    assert len(net.sent_by(net.a, kind=INITIATION)) == 1


def test_keepalive_10s_after_received_data_when_nothing_was_sent() -> None:
    net = MemNet()
    net.send(net.a)  # b receives data at t=0 and answers nothing
    net.advance(12)
    b_transport = net.sent_by(net.b, kind=TRANSPORT)
    assert times(b_transport) == [10.0]
    assert len(b_transport[0][1]) == 32
    net.advance(100)
    assert len(net.sent_by(net.b, kind=TRANSPORT)) == 1


def test_no_keepalive_when_data_went_back() -> None:
    net = MemNet()
    net.send(net.a)
    net.now = 2.0
    net.send(net.b, b"reply")
    net.advance(30)
    assert [len(d) for _, d in net.sent_by(net.b, kind=TRANSPORT)] == [64]
    # a received b's data at t=2, so a keepalives at 12
    assert times(net.sent_by(net.a, kind=TRANSPORT))[-1] == 12.0


def test_new_handshake_15s_after_data_sent_without_answer() -> None:
    net = MemNet()
    net.send(net.a)
    net.advance(11)  # b's keepalive at 10 reaches a
    net.cut.add("a")  # from now on nothing reaches a
    net.now = 20.0
    net.send(net.a, b"hello?")
    net.advance(20)
    first, second = times(net.sent_by(net.a, kind=INITIATION))
    assert first == 0.0
    assert 35.0 <= second < 35.334  # 15 s, plus 0-333 ms of jitter


def test_new_handshake_timer_is_jittered() -> None:
    """Keepalive timeout + rekey timeout + 0-333 ms, as wireguard-go's
    timersDataSent and the kernel's: two peers that lost each other at the
    same moment do not retry in lockstep."""
    delays = set()
    for seed in range(12):
        net = MemNet(seed=seed)
        net.send(net.a)
        net.advance(11)
        net.cut.add("a")
        net.now = 20.0
        net.send(net.a, b"hello?")
        net.advance(20)
        second = times(net.sent_by(net.a, kind=INITIATION))[1]
        assert 35.0 <= second <= 35.333, second
        delays.add(round(second - 35.0, 3))
    assert len(delays) > 3, delays  # spread over the range, not one fixed value


def test_rekey_after_120s_loses_no_packet() -> None:
    net = MemNet()
    sent_a, sent_b = [], []
    for second in range(400):
        net.advance(1.0 if second else 0.0)
        sent_a.append(net.send(net.a, b"a%d" % second))
        sent_b.append(net.send(net.b, b"b%d" % second))
    assert net.b.delivered == sent_a
    assert net.a.delivered == sent_b
    initiations = times(net.sent_by(net.a, kind=INITIATION))
    # the first session is 120 s old after t=120: the next send at 121 rekeys
    assert initiations[:2] == [0.0, 121.0]
    assert len(initiations) == 4
    assert net.sent_by(net.b, kind=INITIATION) == []  # only the initiator rekeys on time
    assert not net.a.device.drops and not net.b.device.drops


@pytest.mark.parametrize(("when", "rekeys"), [(164.0, False), (166.0, True)])
def test_initiator_rekeys_on_receive_after_165s(when: float, rekeys: bool) -> None:
    net = MemNet()
    net.send(net.a)
    net.send(net.b)  # b's session is confirmed
    net.now = when
    net.send(net.b, b"late")  # b, the responder, does not rekey on time
    assert len(net.sent_by(net.a, kind=INITIATION)) == (2 if rekeys else 1)


def test_keypair_older_than_180s_is_neither_used_nor_accepted() -> None:
    net = MemNet()
    net.send(net.a)
    net.send(net.b)
    # b seals a packet at 179 s that arrives late, at 181 s
    net.cut.add("a")
    net.now = 179.0
    net.send(net.b, b"late")
    late = net.sent_by(net.b, kind=TRANSPORT)[-1][1]
    net.cut.clear()
    net.now = 181.0
    assert net.a.device.receive(late, net.b.address, net.now) is None
    assert net.a.device.drops[Drop.EXPIRED_KEYPAIR] == 1
    # and a, sending at 181 s, makes a new session rather than use the old one
    packet = net.send(net.a, b"fresh")
    assert times(net.sent_by(net.a, kind=INITIATION)) == [0.0, 181.0]
    assert net.b.delivered[-1] == packet


def test_key_material_zeroed_after_540s() -> None:
    net = MemNet()
    net.send(net.a)
    net.advance(539)
    assert net.a.peer.keypairs.current is not None
    net.advance(2)
    for node in (net.a, net.b):
        assert node.peer.keypairs.all() == []
        assert node.device.keypairs_by_index == {} and node.device._handshakes == {}
    assert net.a.device.next_deadline() is None


def test_persistent_keepalive_interval() -> None:
    net = MemNet()
    net.a.device.set_persistent_keepalive(net.a.peer, 25, net.now)
    net.run()  # turning it on sends one at once: here it needs a handshake first
    net.advance(110)
    keepalives = times(net.sent_by(net.a, size=32))
    assert keepalives == [0.0, 25.0, 50.0, 75.0, 100.0]
    net.a.device.set_persistent_keepalive(net.a.peer, 0, net.now)
    net.advance(100)
    assert len(net.sent_by(net.a, size=32)) == 5


def test_deadline_is_exact() -> None:
    net = MemNet()
    net.blackhole = True
    net.send(net.a)
    deadline = net.a.device.next_deadline()
    assert deadline is not None and 5.0 <= deadline <= 5.334
    net.a.device.handle_timers(deadline - 1e-6)
    assert net.a.device.datagrams_to_send() == []
    net.a.device.handle_timers(deadline)
    assert [len(d) for d, _ in net.a.device.datagrams_to_send()] == [148]
