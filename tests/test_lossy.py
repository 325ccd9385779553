"""Lossy and disordered links (issue 15).

Network tests (as root, namespaces): two peers whose underlay runs through a
middle namespace M (L 192.168.70.1 - M - R 192.168.71.2, tunnel 10.70.0.0/24).

- Loss: M forwards between the two sides and drops 20 % of the UDP datagrams
  each way (`iptables -m statistic --mode random`; this kernel has no netem),
  plus, to make a retransmission certain, the very first handshake initiation
  (`-m quota`). The handshake completes (retransmitted after REKEY_TIMEOUT)
  and a 4 MiB TCP transfer through the tunnel (LOSSY_MIB=N for another
  size) delivers identical bytes (SHA-256). meshnode-wg against
  meshnode-wg, and against wireguard-go.
- Reordering and duplication: M runs tests/udprelay.py, which holds 15 % of
  the datagrams back by 30 ms and sends 10 % twice. 3000 numbered UDP
  datagrams each way through the tunnel each arrive exactly once (and out of
  order); each side's `replayed` drop counter equals the number of duplicated
  transport messages the relay sent it, and its received-bytes counter (`wg
  show transfer`) the bytes of the first copies. Both sides run `meshnode up
  WG.conf` (the same runtime as meshnode-wg), whose `meshnode stats` gives
  the device's drop counters; meshnode-wg has no way to show them.

The daemons send runs of datagrams as UDP GSO packets, which a veth carries
whole; the outer veths have tx-udp-segmentation off so that M sees, drops
and relays single datagrams, as a real link would.

In memory (tests/memnet.py, no root): the replay window accepts transport
messages reordered within 8128 counters, rejects a duplicate and one older
than the window.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from memnet import MemNet, ip_packet
from netns import Lab, Namespace, Process, netns_lab, wait_for  # noqa: F401  (the fixture)
from nodelab import Node, make_node

from meshnode.wireguard import keys
from meshnode.wireguard.drops import Drop
from meshnode.wireguard.replay import WINDOW_SIZE

PORT = 51820
DAEMONS = {"meshnode-wg": (sys.executable, "-m", "meshnode.wgdaemon", "-f"),
           "wireguard-go": ("wireguard-go", "-f")}  # fmt: skip
RELAY = str(Path(__file__).with_name("udprelay.py"))
INITIATION_IP_LENGTH = 20 + 8 + 148  # IPv4 + UDP + a handshake initiation
MIB = int(os.environ.get("LOSSY_MIB", "4"))  # the TCP transfer's size; more on demand

# A TCP sink: accepts one connection, reads to EOF, prints length and SHA-256.
TCP_SINK = """
import hashlib, socket, sys
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
srv.settimeout(60)
conn, _ = srv.accept()
conn.settimeout(60)
h, n = hashlib.sha256(), 0
while chunk := conn.recv(65536):
    h.update(chunk)
    n += len(chunk)
print(n, h.hexdigest(), flush=True)
"""

# A TCP source: connects (retrying while the tunnel comes up), sends SIZE
# seeded random bytes, prints length and SHA-256 of what it sent.
TCP_SOURCE = """
import hashlib, random, socket, sys, time
host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = random.Random(7).randbytes(size)
deadline = time.monotonic() + 30
while True:
    try:
        sock = socket.create_connection((host, port), timeout=5)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.2)
sock.settimeout(60)
sock.sendall(data)
sock.shutdown(socket.SHUT_WR)
sock.recv(1)
print(len(data), hashlib.sha256(data).hexdigest(), flush=True)
"""

# A UDP sink: prints, as JSON, the sequence numbers of the datagrams it got, in
# order of arrival, once COUNT arrived or nothing came for 3 s.
UDP_SINK = """
import json, socket, struct, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
sock.bind((sys.argv[1], int(sys.argv[2])))
count, got = int(sys.argv[3]), []
sock.settimeout(20)
try:
    while len(got) < count:
        data = sock.recv(2048)
        got.append(struct.unpack_from(">I", data)[0])
        sock.settimeout(3)
except TimeoutError:
    pass
print(json.dumps(got), flush=True)
"""

# A UDP source: COUNT datagrams numbered 0..COUNT-1, each sent once, paced.
UDP_SOURCE = """
import socket, struct, sys, time
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for seq in range(count):
    sock.sendto(struct.pack(">I", seq) + bytes(200), (host, port))
    time.sleep(0.001)
"""


@dataclass
class Side:
    ns: Namespace
    ifname: str
    impl: str
    private: bytes
    underlay: str
    inner: str
    node: Node | None = None  # `meshnode up`
    daemon: Process | None = None  # meshnode-wg or wireguard-go

    @property
    def public_b64(self) -> str:
        return keys.to_base64(keys.public_key(self.private))

    def wg(self, *args: str) -> str:
        return self.ns.run("wg", *args).stdout.decode()

    def stats(self) -> dict[str, int]:
        """The device's drop counters (meshnode only)."""
        assert self.node is not None
        _, out = self.node.cli("stats")
        return json.loads(out)[self.ifname]["drops"]

    def transfer(self) -> tuple[int, int]:
        """(received, sent) bytes of its one peer, as `wg show transfer` prints them."""
        line = self.wg("show", self.ifname, "transfer").split()
        return int(line[1]), int(line[2])

    def handshake(self) -> int:
        out = self.wg("show", self.ifname, "latest-handshakes").split()
        return int(out[1]) if len(out) > 1 else 0


def start(lab: Lab, side: Side, peer: Side, endpoint: str) -> None:
    """Bring up one side: `meshnode up` from a wg-quick file, or a userspace
    daemon (meshnode-wg, wireguard-go) set up with wg and ip."""
    if side.impl == "meshnode up":
        text = (
            f"[Interface]\nPrivateKey = {keys.to_base64(side.private)}\nListenPort = {PORT}\n"
            f"Address = {side.inner}/24\n\n[Peer]\nPublicKey = {peer.public_b64}\n"
            f"Endpoint = {endpoint}\nAllowedIPs = {peer.inner}/32\n"
        )
        side.node = make_node(lab, side.ns, f"{side.ifname}.conf", text).start(side.ifname)
        return
    side.daemon = lab.start_userspace_wg(side.ns, side.ifname, argv=DAEMONS[side.impl])
    key_file = lab.tmp_path / f"{side.ifname}.key"
    key_file.write_text(keys.to_base64(side.private) + "\n")
    side.wg("set", side.ifname, "private-key", str(key_file), "listen-port", str(PORT), "peer",
            peer.public_b64, "endpoint", endpoint, "allowed-ips", f"{peer.inner}/32")  # fmt: skip
    side.ns.ip("addr", "add", f"{side.inner}/24", "dev", side.ifname)
    side.ns.ip("link", "set", side.ifname, "up")


def three_namespaces(lab: Lab, left_impl: str, right_impl: str) -> tuple[Side, Namespace, Side]:
    """L (192.168.70.1) - M (.70.254 | .71.254) - R (192.168.71.2); tunnel 10.70.0.0/24."""
    ln, mid, rn = lab.namespace("l"), lab.namespace("m"), lab.namespace("r")
    left_veth = lab.veth(ln, mid, "192.168.70.1/24", "192.168.70.254/24")
    right_veth = lab.veth(mid, rn, "192.168.71.254/24", "192.168.71.2/24")
    # The daemons send runs of datagrams as one UDP GSO packet, which a veth
    # carries whole: M would drop or keep a whole run at once. Segmented before
    # the veth, each datagram is lost on its own, as on a real link.
    for ns, ifname in ((ln, left_veth.a_ifname), (rn, right_veth.b_ifname)):
        ns.run("ethtool", "-K", ifname, "tx-udp-segmentation", "off")
    ln.ip("route", "add", "192.168.71.0/24", "via", "192.168.70.254")
    rn.ip("route", "add", "192.168.70.0/24", "via", "192.168.71.254")
    mid.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
    left = Side(ln, lab.ifname("l"), left_impl, keys.generate_private_key(),
                "192.168.70.1", "10.70.0.1")  # fmt: skip
    right = Side(rn, lab.ifname("r"), right_impl, keys.generate_private_key(),
                 "192.168.71.2", "10.70.0.2")  # fmt: skip
    return left, mid, right


def wait_for_handshake(lab: Lab, side: Side, target: str, timeout: float) -> None:
    """Ping the other side until a handshake completed (pings may be lost)."""
    pinger = side.ns.spawn("ping", "-n", "-q", "-i", "0.2", "-W", "1",
                           "-w", str(int(timeout)), target)  # fmt: skip
    try:
        wait_for(lambda: side.handshake() > 0, timeout, f"a handshake of {side.ifname}")
    finally:
        pinger.stop()


def iptables_count(ns: Namespace, comment: str) -> int:
    """Packets matched by the FORWARD rule carrying this comment."""
    out = ns.run("iptables", "-w", "-L", "FORWARD", "-v", "-x", "-n").stdout.decode()
    for line in out.splitlines():
        if f"/* {comment} */" in line:
            return int(line.split()[0])
    raise AssertionError(f"no rule {comment}:\n{out}")


@pytest.mark.parametrize("right_impl", ["meshnode-wg", "wireguard-go"])
def test_twenty_percent_loss_handshake_and_tcp_transfer(netns_lab: Lab, right_impl: str) -> None:  # noqa: F811
    lab = netns_lab
    left, mid, right = three_namespaces(lab, "meshnode-wg", right_impl)
    ipt = ("iptables", "-w", "-A", "FORWARD", "-p", "udp")
    # the first initiation, whichever side sends it, is lost for certain ...
    mid.run(*ipt, "-m", "length", "--length", str(INITIATION_IP_LENGTH),
            "-m", "quota", "--quota", str(INITIATION_IP_LENGTH),
            "-m", "comment", "--comment", "first-initiation", "-j", "DROP")  # fmt: skip
    # ... and 20 % of every datagram each way, at random
    for src, name in (("192.168.70.0/24", "loss-l2r"), ("192.168.71.0/24", "loss-r2l")):
        mid.run(*ipt, "-s", src, "-m", "statistic", "--mode", "random", "--probability", "0.2",
                "-m", "comment", "--comment", name, "-j", "DROP")  # fmt: skip
    start(lab, left, right, f"{right.underlay}:{PORT}")
    start(lab, right, left, f"{left.underlay}:{PORT}")

    began = time.monotonic()
    wait_for_handshake(lab, left, right.inner, timeout=40)
    assert iptables_count(mid, "first-initiation") == 1  # so the handshake was a retry
    handshake_took = time.monotonic() - began

    size = MIB << 20
    sink = right.ns.spawn(sys.executable, "-c", TCP_SINK, right.inner, "5001")
    wait_for(lambda: b":5001" in right.ns.run("ss", "-ltn").stdout, 10, "the TCP sink")
    sent = left.ns.run(sys.executable, "-c", TCP_SOURCE, right.inner, "5001", str(size),
                       timeout=60 + 10 * MIB).stdout.decode().split()  # fmt: skip
    sink.popen.wait(30)
    received = sink.log().split()
    assert received == sent and sent[0] == str(size), (sent, sink.log())
    # the loss really happened, both ways
    l2r, r2l = iptables_count(mid, "loss-l2r"), iptables_count(mid, "loss-r2l")
    assert l2r > 50 and r2l > 20, (l2r, r2l)
    print(
        f"handshake after {handshake_took:.1f} s, transfer {time.monotonic() - began:.1f} s, "
        f"dropped {l2r} and {r2l}"
    )
    for side in (left, right):
        assert side.daemon is not None and side.daemon.running(), side.daemon


def test_reordered_and_duplicated_datagrams(netns_lab: Lab) -> None:  # noqa: F811
    lab = netns_lab
    left, mid, right = three_namespaces(lab, "meshnode up", "meshnode up")
    stats_file = lab.tmp_path / "relay.json"
    relay = mid.spawn(sys.executable, RELAY,
                      "--a", f"192.168.70.254:{PORT}={left.underlay}:{PORT}",
                      "--b", f"192.168.71.254:{PORT}={right.underlay}:{PORT}",
                      "--hold", "0.15", "--dup", "0.1", "--delay", "0.03", "--seed", "86",
                      "--duration", "45", "--stats", str(stats_file))  # fmt: skip
    wait_for(stats_file.exists, 10, "the relay")
    # each side has the relay's address on its side as the other's endpoint
    start(lab, left, right, f"192.168.70.254:{PORT}")
    start(lab, right, left, f"192.168.71.254:{PORT}")
    wait_for_handshake(lab, left, right.inner, timeout=20)

    # numbered datagrams both ways at once, each sent once
    count = 3000
    sinks = {}
    for side in (left, right):
        sinks[side.ifname] = side.ns.spawn(sys.executable, "-c", UDP_SINK, side.inner, "6000",
                                           str(count))  # fmt: skip
        wait_for(lambda side=side: b":6000" in side.ns.run("ss", "-lun").stdout, 10, "a UDP sink")
    backwards = right.ns.spawn(sys.executable, "-c", UDP_SOURCE, left.inner, "6000", str(count))
    left.ns.run(sys.executable, "-c", UDP_SOURCE, right.inner, "6000", str(count), timeout=60)
    backwards.popen.wait(30)
    for side in (left, right):
        sink = sinks[side.ifname]
        sink.popen.wait(30)
        got = json.loads(sink.log())
        # every datagram sent once arrived exactly once ...
        assert sorted(got) == list(range(count)), f"{len(got)} of {count}, {len(set(got))} distinct"
        # ... and not all in order: the relay's reordering went through the tunnel
        overtaken = sum(1 for a, b in itertools.pairwise(got) if b < a)
        assert overtaken > 10, overtaken

    # let held datagrams and late copies land, then stop the relay for its counters
    time.sleep(0.5)
    relay.stop()
    relay_stats = json.loads(stats_file.read_text())
    assert relay_stats["unexpected"] == 0
    dup, held = relay_stats["duplicated"], relay_stats["held"]
    for side, direction in ((right, "a2b"), (left, "b2a")):
        assert dup.get(f"{direction}/4", 0) > 100, relay_stats
        assert held.get(f"{direction}/4", 0) > 200, relay_stats
        drops = side.stats()
        # every duplicated transport message was dropped as a replay ...
        assert drops.get(Drop.REPLAYED, 0) == dup[f"{direction}/4"], (drops, relay_stats)
        # ... and nothing else but what a duplicated handshake message or the
        # kernel's own IPv6 chatter into the TUN can cause
        assert not set(drops) - {Drop.REPLAYED, Drop.NO_ROUTE, Drop.REPLAYED_INITIATION,
                                 Drop.INITIATION_FLOOD, Drop.NO_HANDSHAKE}, drops  # fmt: skip
        # the received-bytes counter counts each first copy, no duplicate
        first_copies = sum(n for k, n in relay_stats["forwarded_bytes"].items()
                           if k.startswith(direction))  # fmt: skip
        assert side.transfer()[0] == first_copies, (side.transfer(), relay_stats)
    print("relay:", relay_stats)
    print("left:", left.stats(), left.transfer(), "right:", right.stats(), right.transfer())


# ------------------------------------------------------------ in memory


def _transport_messages(net: MemNet, count: int) -> list[bytes]:
    """COUNT transport messages from a to b, built but not delivered (after a
    handshake and its keepalive, which are)."""
    net.send(net.a, b"first")
    messages = []
    for i in range(count):
        net.a.device.send(ip_packet("10.0.0.1", "10.0.0.2", struct.pack(">I", i)), net.now)
        out = net.collect(net.a)
        assert len(out) == 1 and out[0][0][0] == 4
        messages.append(out[0][0])
    return messages


def _counter(message: bytes) -> int:
    return struct.unpack_from("<Q", message, 8)[0]


def _seq(packet: bytes) -> int:
    return struct.unpack_from(">I", packet, 20)[0]


def test_replay_window_in_memory() -> None:
    net = MemNet()
    b = net.b.device
    messages = _transport_messages(net, WINDOW_SIZE + 700)
    first = _counter(messages[0])
    assert [_counter(m) for m in messages] == list(range(first, first + len(messages)))

    # a window of 500 messages, shuffled: every one is delivered once
    window = messages[:500]
    shuffled = window[:]
    random.Random(3).shuffle(shuffled)
    delivered = [b.receive(m, net.a.address, net.now) for m in shuffled]
    assert sorted(_seq(p) for p in delivered if p is not None) == list(range(500))
    # each again: every one is a replay
    for m in shuffled[:50]:
        assert b.receive(m, net.a.address, net.now) is None
    assert b.drops[Drop.REPLAYED] == 50

    # newest first, then the held-back ones as far back as the window reaches
    newest = messages[-1]
    assert b.receive(newest, net.a.address, net.now) is not None
    top = _counter(newest)
    by_counter = {_counter(m): m for m in messages}
    for distance in (1, 100, 4000, WINDOW_SIZE - 1, WINDOW_SIZE):
        packet = b.receive(by_counter[top - distance], net.a.address, net.now)
        assert packet is not None and _seq(packet) == top - distance - first
    # one counter further back is outside the window: dropped, though never seen
    assert b.receive(by_counter[top - WINDOW_SIZE - 1], net.a.address, net.now) is None
    assert b.drops[Drop.REPLAYED] == 51
    # and a duplicate of one accepted just now
    assert b.receive(by_counter[top - 100], net.a.address, net.now) is None
    assert b.drops[Drop.REPLAYED] == 52
    assert set(b.drops) == {Drop.REPLAYED}


def test_reordering_with_duplicates_in_memory() -> None:
    """A stream of 2000 messages, each delayed by a random 0-300 positions and a
    tenth of them sent twice: each inner packet is delivered exactly once."""
    net = MemNet()
    messages = _transport_messages(net, 2000)
    rng = random.Random(11)
    schedule = []
    for i, m in enumerate(messages):
        schedule.append((i + rng.randint(0, 300), rng.random(), m))
        if rng.random() < 0.1:
            schedule.append((i + rng.randint(0, 300), rng.random(), m))
    schedule.sort()
    delivered = []
    for _, _, m in schedule:
        packet = net.b.device.receive(m, net.a.address, net.now)
        if packet is not None:
            delivered.append(_seq(packet))
    assert sorted(delivered) == list(range(2000))
    assert net.b.device.drops[Drop.REPLAYED] == len(schedule) - 2000
