"""Clocks (issue 15): WireGuard uses the wall clock as a monotonic counter.

Each handshake initiation carries a TAI64N timestamp, and a responder drops
an initiation whose timestamp is not later than the last one it accepted
from that peer (the replay check; the kernel's noise.c and wireguard-go's
noise-protocol.go do the same). The WireGuard guide ("unreliable monotonic
counter") warns: if the clock jumps forward, a node may lock itself out
later; if it jumps back, its handshakes are refused.

How meshnode stands (shown below with fake clocks, no root, no real time):

- The core never reads a clock. `now` is monotonic and `Device.epoch` turns
  it into Unix time for the timestamps; the runtime computes epoch once, at
  start, as time.time() - trio.current_time(). So the wall clock jumping back
  an hour or forward a day while the node runs changes nothing: its
  timestamps keep increasing with the monotonic clock, and rekeying goes on
  (tests 1 and 2).
- The kernel (noise.c's tai64n_now(): ktime_get_real_ts64) and wireguard-go
  (tai64n.Now(): time.Now()) read the wall clock at every initiation.
  Modelled with a runtime that would recompute epoch after the jump: after
  a jump back of an hour the peer drops every initiation from the node as a
  replay. If the node keeps sending, the peer's keepalive
  reply, once the peer's session has expired (REJECT_AFTER_TIME), starts a
  handshake from the peer and the tunnel is back within 3 minutes, the peer
  renewing it from then on; if the tunnel was idle, the node is refused
  until the hour has passed. After a jump forward a day rekeying goes on,
  but once the clock is set right again an idle node is locked out for that
  day (test 3).
- A node restarted after its wall clock went back an hour (meshnode, the
  kernel and wireguard-go alike: a new process or interface starts from the
  wall clock): the peer drops its initiations as replays until the clock has
  caught up with what the peer last saw, unless the peer's side is reset
  or the peer initiates (test 4, which says what a user sees and does).
- A node that starts while its clock is behind (a machine without RTC,
  before NTP): the runtime follows the wall clock forward (never back) at
  each timer wakeup, so once NTP sets the clock right its initiations are
  accepted again, as with the kernel and wireguard-go (test 5).
"""

from __future__ import annotations

import contextlib
import itertools
import random
import time

import pytest
import trio
import trio.testing
from memnet import EPOCH, MemNet, Node, ip_packet
from runtimelab import link, make_interface

from meshnode.wireguard import tai64n
from meshnode.wireguard.allowedips import parse_network
from meshnode.wireguard.constants import REJECT_AFTER_TIME, REKEY_AFTER_TIME
from meshnode.wireguard.device import Device
from meshnode.wireguard.drops import Drop
from meshnode.wireguard.events import HandshakeCompleted, HandshakeGaveUp

HOUR, DAY = 3600.0, 86400.0
STEP = 10.0  # traffic every 10 s of fake time


# ------------------------------------------------------------ memnet helpers


class Log:
    """What happened during a memnet run: (time, node name, initiator) of each
    completed handshake, times of give-ups, packets delivered per node."""

    def __init__(self, net: MemNet) -> None:
        self.net = net
        self.handshakes: list[tuple[float, str, bool]] = []
        self.gave_up: list[tuple[float, str]] = []

    def drain(self) -> None:
        for node in (self.net.a, self.net.b):
            while node.device.events:
                event = node.device.events.popleft()
                if isinstance(event, HandshakeCompleted):
                    self.handshakes.append((self.net.now, node.name, event.initiator))
                elif isinstance(event, HandshakeGaveUp):
                    self.gave_up.append((self.net.now, node.name))

    def initiated(self, name: str, after: float = float("-inf")) -> list[float]:
        """Times of the handshakes initiated by node `name` (seen from its side)."""
        return [t for t, n, init in self.handshakes if n == name and init and t > after]


def drive(net: MemNet, log: Log, seconds: float, senders: tuple[Node, ...]) -> None:
    """Advance fake time in steps, each sender sending one packet per step."""
    end = net.now + seconds
    while net.now < end - 1e-9:
        net.advance(min(STEP, end - net.now))
        for node in senders:
            net.send(node, b"tick")
        log.drain()


def delivered_to(node: Node) -> int:
    return sum(1 for p in node.delivered if p.endswith(b"tick"))


def restart(net: MemNet, node: Node, epoch: float) -> None:
    """The node's process restarts: a new device with the same key and peer,
    whose runtime computed `epoch` from the wall clock at start."""
    other = net.other(node)
    assert node.device.identity is not None and other.device.public_key is not None
    private = node.device.identity.private_key.private_bytes_raw()
    device = Device(private, epoch=epoch, rng=random.Random(7))
    peer = device.add_peer(other.device.public_key)
    device.add_allowed_ip(peer, parse_network(other.inner + "/32"))
    peer.endpoint = other.address
    node.device, node.peer = device, peer


def reset_peer(node: Node, other: Node) -> None:
    """`wg set IF peer KEY remove` and the peer added again (or the interface
    restarted): the peer's record of the last timestamp is gone."""
    key = node.peer.public_key
    node.device.remove_peer(key)
    peer = node.device.add_peer(key)
    node.device.add_allowed_ip(peer, parse_network(other.inner + "/32"))
    peer.endpoint = other.address
    node.peer = peer


# ------------------------------------------------------------ 1. the core reads no clock


def test_rekeying_goes_on_for_hours_and_the_core_reads_no_clock(monkeypatch) -> None:
    """Three hours of fake time with traffic both ways: a new session every
    REKEY_AFTER_TIME or so, no initiation refused, and no clock read at all
    (every clock of the time module raises while the devices run)."""
    net = MemNet()
    log = Log(net)

    def no_clock(*_args: object) -> float:
        raise AssertionError("the protocol core read a clock")

    clocks = ("time", "time_ns", "monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns",
              "clock_gettime", "clock_gettime_ns", "localtime", "gmtime")  # fmt: skip
    for name in clocks:
        monkeypatch.setattr(time, name, no_clock)
    drive(net, log, 3 * HOUR, (net.a, net.b))
    monkeypatch.undo()

    times = [t for t, n, _ in log.handshakes if n == "a"]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) >= 3 * HOUR / (REKEY_AFTER_TIME + 2 * STEP), len(times)
    assert max(gaps) <= REKEY_AFTER_TIME + 2 * STEP, gaps
    assert delivered_to(net.b) == delivered_to(net.a) == 3 * HOUR / STEP  # nothing lost
    for node in (net.a, net.b):
        assert node.device.drops[Drop.REPLAYED_INITIATION] == 0
        assert not log.gave_up


# ------------------------------------------------------------ 2. the runtime's epoch


class WallClock:
    """A wall clock for time.time() that a test can set: real time at the
    start, then moved by `offset` and following trio's (mock) clock."""

    def __init__(self, offset: float = 0.0) -> None:
        self.base = time.time()
        self.offset = offset

    def __call__(self) -> float:
        return self.base + self.offset + trio.current_time()


def handshakes_of(events: list) -> list[HandshakeCompleted]:
    return [e for e in events if isinstance(e, HandshakeCompleted)]


async def test_runtime_keeps_rekeying_when_the_wall_clock_jumps(
    autojump_clock: trio.testing.MockClock, monkeypatch
) -> None:
    """Two interfaces on loopback, in virtual time, traffic both ways every
    10 s; the wall clock jumps back an hour after 3 minutes and forward a day
    after 8: sessions keep being renewed every two minutes or so, nothing is
    refused, every packet arrives. Today the runtime's epoch does not move at
    all; whatever it does, it must never move back."""
    wall = WallClock()
    monkeypatch.setattr(time, "time", wall)
    a, a_tun, a_key = make_interface("ck-a")
    b, b_tun, b_key = make_interface("ck-b")
    epochs = (a.device.epoch, b.device.epoch)
    link(a, b, b_key, "10.0.0.2")
    link(b, a, a_key, "10.0.0.1")
    times: list[float] = []
    a.event_handlers.append(
        lambda e: times.append(trio.current_time()) if isinstance(e, HandshakeCompleted) else None
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        for tick in range(90):  # 15 minutes
            if tick == 18:
                wall.offset -= HOUR
            if tick == 48:
                wall.offset += DAY + HOUR
            a_tun.outside.send(ip_packet("10.0.0.1", "10.0.0.2", b"tick"))
            b_tun.outside.send(ip_packet("10.0.0.2", "10.0.0.1", b"tick"))
            await trio.sleep(STEP)
        nursery.cancel_scope.cancel()
    received = []
    for tun in (a_tun, b_tun):
        tun.outside.setblocking(False)
        got = 0
        with contextlib.suppress(BlockingIOError):
            while True:
                got += tun.outside.recv(65536).endswith(b"tick")
        received.append(got)
        tun.close()
    assert received == [90, 90]
    assert a.device.epoch >= epochs[0] and b.device.epoch >= epochs[1]
    gaps = [later - earlier for earlier, later in itertools.pairwise([0.0, *times, 900.0])]
    assert len(times) >= 6 and max(gaps) <= REKEY_AFTER_TIME + 2 * STEP, times
    for interface in (a, b):
        drops = interface.stats()["drops"]
        assert Drop.REPLAYED_INITIATION not in drops and Drop.HANDSHAKE_GAVE_UP not in drops


# ------------------------------------------------------------ 3. following the wall clock


def test_following_the_wall_clock_back_an_hour_while_a_sends() -> None:
    """What the kernel and wireguard-go do, modelled by a runtime that would
    recompute epoch after the jump. a sends all the time, b sends nothing of
    its own: b drops a's rekeying initiations as replays; but b answers a's
    data with keepalives, and the first one after b's session expired
    (REJECT_AFTER_TIME) starts a handshake from b, whose clock is fine. From
    then on b renews the sessions; a's packets are lost between the expiry
    of a's session and b's handshake."""
    net = MemNet()
    log = Log(net)
    drive(net, log, 300, (net.a,))
    last = log.initiated("a")[-1]
    net.a.device.epoch -= HOUR  # the clock jumped back; the runtime follows it
    drive(net, log, 900, (net.a,))
    assert net.b.device.drops[Drop.REPLAYED_INITIATION] >= 1
    by_b = log.initiated("b", after=last)
    assert by_b and by_b[0] <= last + REJECT_AFTER_TIME + STEP, (last, by_b)
    assert len(by_b) >= 5 and not log.initiated("a", after=last)
    assert delivered_to(net.b) >= (1200 - (REJECT_AFTER_TIME - REKEY_AFTER_TIME) - 2 * STEP) / STEP


def test_following_the_wall_clock_back_an_hour_while_idle() -> None:
    """The same jump while the tunnel is idle: when a has something to send
    again, its sessions have expired and b has nothing to answer, so a is
    refused until the hour has passed (to a step and a retry)."""
    net = MemNet()
    log = Log(net)
    drive(net, log, 300, (net.a,))
    last = log.initiated("a")[-1]
    net.advance(60)
    net.a.device.epoch -= HOUR
    net.advance(600)  # idle: the sessions expire
    log.drain()
    mark, before = net.now, delivered_to(net.b)
    drive(net, log, last + HOUR - STEP - net.now, (net.a,))
    assert delivered_to(net.b) == before  # nothing for almost an hour
    assert not [h for h in log.handshakes if h[0] > mark]
    assert net.b.device.drops[Drop.REPLAYED_INITIATION] > 400  # a retried all the time
    drive(net, log, 120, (net.a,))
    renewed = log.initiated("a", after=mark)
    assert renewed, "the tunnel never came back"
    assert last + HOUR <= renewed[0] <= last + HOUR + STEP + 6, (last, renewed[0])
    assert not log.initiated("b", after=mark)
    assert delivered_to(net.b) > before


def test_following_the_wall_clock_forward_a_day_then_back() -> None:
    """A jump forward a day does not stop rekeying; setting the clock right
    again locks a out (for a day, unless b initiates): the guide's self-DoS."""
    net = MemNet()
    log = Log(net)
    drive(net, log, 200, (net.a,))
    net.a.device.epoch += DAY
    mark = net.now
    drive(net, log, 600, (net.a,))
    assert len(log.initiated("a", after=mark)) >= 4
    assert net.b.device.drops[Drop.REPLAYED_INITIATION] == 0
    net.a.device.epoch -= DAY  # NTP sets the clock right
    net.advance(600)  # while the tunnel is idle (else b would take over, as above)
    log.drain()
    mark = net.now
    drive(net, log, 1800, (net.a,))
    assert not [h for h in log.handshakes if h[0] > mark]
    assert net.b.device.drops[Drop.REPLAYED_INITIATION] > 300


# ------------------------------------------------------------ 4. restarted, the clock an hour back


@pytest.mark.parametrize("remedy", ["peer reset", "time passes", "peer sends"])
def test_restart_with_the_clock_an_hour_back(remedy: str) -> None:
    """a restarts after its wall clock went back an hour (a new process computes
    its epoch from that clock; the kernel and wireguard-go read it directly):
    its initiations carry older timestamps than b last saw, so b drops them as
    replays. This is WireGuard's documented behaviour, not a meshnode bug.

    What a user sees on a (the restarted node): `wg show` has no "latest
    handshake" for b, its transfer shows only bytes sent (148 B every 5 s for
    as long as it has packets to send, 18 tries after the last one), pings fail.
    On b: the peer's last handshake stays where it was; `meshnode stats`
    counts `replayed_initiation` (with log_level verbose: "initiation
    replayed (timestamp not newer)"); wireguard-go logs "Received invalid
    initiation message", the kernel (dynamic debug) "Invalid handshake
    initiation".

    What to do: set a's clock right (NTP), then restart a's meshnode (it takes
    its epoch from the clock at start; the kernel and wireguard-go need no
    restart); or reset the peer on b (`wg set IF peer A remove`, then add it
    again, e.g. `meshnode reload` or `wg syncconf`, or restart b's
    interface); or let b initiate (b sending to a, or PersistentKeepalive on
    b); or wait until a's clock has passed what b last saw."""
    net = MemNet()
    log = Log(net)
    drive(net, log, 300, (net.a,))
    last = max(t for t, _, _ in log.handshakes)
    restart(net, net.a, EPOCH - HOUR)
    mark = net.now
    drive(net, log, 300, (net.a,))  # b is silent: a pure responder
    assert not [h for h in log.handshakes if h[0] > mark], log.handshakes
    assert net.b.device.drops[Drop.REPLAYED_INITIATION] >= 50  # a tries every 5 s
    refused = delivered_to(net.b)

    if remedy == "peer reset":
        reset_peer(net.b, net.a)
        mark = net.now
        drive(net, log, 30, (net.a,))
        assert log.initiated("a", after=mark)[0] <= mark + STEP
    elif remedy == "time passes":
        mark = net.now
        drive(net, log, last + HOUR + 120 - net.now, (net.a,))
        renewed = log.initiated("a", after=mark)
        assert renewed and last + HOUR - STEP <= renewed[0] <= last + HOUR + STEP + 6, (
            last, renewed)  # fmt: skip
    else:
        mark = net.now
        drive(net, log, 60, (net.a, net.b))
        # b's old session is useless to a (a drops it: unknown index); having
        # sent and heard nothing back, b starts a handshake of its own
        assert net.a.device.drops[Drop.UNKNOWN_INDEX] >= 1
        by_b = log.initiated("b", after=mark)
        assert by_b and by_b[0] <= mark + 30, by_b
    drive(net, log, 60, (net.a,))
    assert delivered_to(net.b) >= refused + 5


# ------------------------------------------------------------ 5. started before the clock was right


async def test_a_node_started_before_ntp_recovers_once_the_clock_is_right(
    autojump_clock: trio.testing.MockClock, monkeypatch
) -> None:
    """a boots with its clock a week behind (no RTC, NTP not yet synchronised)
    and meshnode starts; b, a pure responder, saw a's correct timestamps
    before the reboot. A minute later NTP steps a's clock right: a's next
    initiations should be accepted, as they are with the kernel or wireguard-go."""
    wall = WallClock()
    monkeypatch.setattr(time, "time", wall)
    b, b_tun, b_key = make_interface("ck-d")  # b's clock is right
    wall.offset = -7 * DAY  # a's is not
    a, a_tun, a_key = make_interface("ck-c")
    link(a, b, b_key, "10.0.0.2")
    link(b, a, a_key, "10.0.0.1")
    # what b accepted from a before the reboot: a timestamp of the right time
    b.device.peers[a_key].handshake.last_timestamp = tai64n.stamp(wall.base - 60)
    events: list = []
    a.event_handlers.append(events.append)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        await trio.sleep(60)
        wall.offset = 0.0  # NTP steps the clock right
        for _ in range(6):
            a_tun.outside.send(ip_packet("10.0.0.1", "10.0.0.2", b"tick"))
            await trio.sleep(STEP)
        nursery.cancel_scope.cancel()
    for tun in (a_tun, b_tun):
        tun.close()
    assert handshakes_of(events), b.stats()["drops"]


def test_timestamps_compare_as_time_does() -> None:
    """The replay check compares the 12-byte labels: later is greater, an hour
    back is smaller, and times within one 2**24 ns step are equal (not after)."""
    now = EPOCH
    assert tai64n.is_after(tai64n.stamp(now + 1), tai64n.stamp(now))
    assert not tai64n.is_after(tai64n.stamp(now - HOUR), tai64n.stamp(now))
    assert tai64n.is_after(tai64n.stamp(now + DAY), tai64n.stamp(now))
    assert not tai64n.is_after(tai64n.stamp(now + 0.001), tai64n.stamp(now))
