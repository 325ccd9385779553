"""The fast path's output is checked by kernels that verify checksums.

When meshnode writes to its TUN with NEEDS_CSUM (coalesced TCP) or DATA_VALID,
its own kernel trusts the packet, so a meshnode pair cannot catch a checksum
bug. So every direction here crosses a checker:

- meshnode -> wireguard-go: wireguard-go writes plain packets to its TUN, and
  that kernel verifies every checksum.
- wireguard-go -> meshnode -> host: meshnode forwards to a host on a veth whose
  checksum offload is off, so the kernel finishes each checksum in software
  from what meshnode wrote (the pseudo-header seed of a coalesced packet), and
  the host verifies it.

Each direction carries TCP (a bulk transfer, compared by SHA-256) and UDP
(datagrams of odd and even lengths, compared one by one), over IPv4 and IPv6,
with the offloads on and off.
"""

from __future__ import annotations

import hashlib
import random
import sys
from dataclasses import dataclass

import pytest
from netns import Lab, Namespace, netns_lab, wait_for  # noqa: F401  (the fixture)
from wgpair import Side, connect, start_side

# A receiver that prints what it got: sha256 of a TCP stream, or each UDP datagram's hash.
RECEIVER = r"""
import hashlib, socket, sys
family = socket.AF_INET6 if ":" in sys.argv[2] else socket.AF_INET
if sys.argv[1] == "tcp":
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[2], 7000)); s.listen(1)
    print("ready", flush=True)
    conn, _ = s.accept(); h = hashlib.sha256(); n = 0
    while chunk := conn.recv(1 << 16):
        h.update(chunk); n += len(chunk)
    print("tcp", n, h.hexdigest(), flush=True)
else:
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((sys.argv[2], 7001)); s.settimeout(3)
    print("ready", flush=True)
    try:
        while True:
            data = s.recv(65535)
            print("udp", len(data), hashlib.sha256(data).hexdigest()[:16], flush=True)
    except socket.timeout:
        print("done", flush=True)
"""

SENDER = r"""
import random, socket, sys, time
family = socket.AF_INET6 if ":" in sys.argv[2] else socket.AF_INET
rng = random.Random(int(sys.argv[3]))
if sys.argv[1] == "tcp":
    data = rng.randbytes(int(sys.argv[4]))
    s = socket.create_connection((sys.argv[2], 7000), timeout=20)
    s.sendall(data); s.close()
else:
    s = socket.socket(family, socket.SOCK_DGRAM)
    for size in map(int, sys.argv[4].split(",")):
        s.sendto(rng.randbytes(size), (sys.argv[2], 7001)); time.sleep(0.002)
"""

TCP_BYTES = 6_000_000
UDP_SIZES = [1, 2, 3, 17, 511, 512, 999, 1000, 1001, 1371, 1372, 1373, 1399, 1400, 2047, 3001, 8191]


@dataclass
class Path:
    """sender namespace -> receiver namespace, through a tunnel, with addresses."""

    sender: Namespace
    receiver: Namespace
    target4: str
    target6: str


def _receiver(lab: Lab, ns: Namespace, kind: str, address: str):
    process = ns.spawn(sys.executable, "-c", RECEIVER, kind, address)
    wait_for(lambda: "ready" in process.log(), 10, "the receiver")
    return process


def check_tcp(lab: Lab, path: Path, target: str) -> None:
    receiver = _receiver(lab, path.receiver, "tcp", target)
    seed = random.randrange(1 << 30)
    path.sender.run(sys.executable, "-c", SENDER, "tcp", target, str(seed), str(TCP_BYTES),
                    timeout=60)  # fmt: skip
    wait_for(lambda: "tcp " in receiver.log(), 20, "the TCP stream to arrive")
    expected = hashlib.sha256(random.Random(seed).randbytes(TCP_BYTES)).hexdigest()
    assert f"tcp {TCP_BYTES} {expected}" in receiver.log()


def check_udp(lab: Lab, path: Path, target: str) -> None:
    receiver = _receiver(lab, path.receiver, "udp", target)
    seed = random.randrange(1 << 30)
    path.sender.run(sys.executable, "-c", SENDER, "udp", target, str(seed),
                    ",".join(map(str, UDP_SIZES)))  # fmt: skip
    wait_for(lambda: "done" in receiver.log(), 15, "the UDP receiver to finish")
    rng = random.Random(seed)
    expected = [f"udp {n} {hashlib.sha256(rng.randbytes(n)).hexdigest()[:16]}" for n in UDP_SIZES]
    got = [line for line in receiver.log().splitlines() if line.startswith("udp ")]
    assert got == expected


def build(lab: Lab, sender_impl: str, offloads: str) -> tuple[Path, Path]:
    """wireguard-go or meshnode as the far end W; meshnode M in the middle,
    forwarding to host H over a veth with checksum offload off. Returns the path
    W -> H (through M's receive side) and H -> W (through M's send side)."""
    w_ns, m_ns, h_ns = lab.namespace("w"), lab.namespace("m"), lab.namespace("h")
    lab.veth(w_ns, m_ns, ["192.168.50.2/24", "fd50::2/64"], ["192.168.50.1/24", "fd50::1/64"])
    lan = lab.veth(m_ns, h_ns, ["172.31.9.1/24", "fd31::1/64"], ["172.31.9.2/24", "fd31::2/64"])
    # software checksums on the way out of M: H's kernel then verifies them
    m_ns.run("ethtool", "-K", lan.a_ifname, "tx", "off", "tso", "off", "gso", "off")
    for setting in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"):
        m_ns.run("sysctl", "-q", "-w", setting)
    m = start_side(lab, m_ns, "meshnode", 1, extra=(f"--offloads={offloads}",))
    w = start_side(lab, w_ns, sender_impl, 2)
    connect(lab, m, w)
    connect(lab, w, m, allowed="10.77.0.0/24,fd77::/64,172.31.9.0/24,fd31::/64")
    # the tunnel's MTU on H's routes, or H learns it by losing its first large datagram
    h_ns.ip("route", "add", "10.77.0.0/24", "via", "172.31.9.1", "mtu", "1420")
    h_ns.ip("-6", "route", "add", "fd77::/64", "via", "fd31::1", "mtu", "1420")
    w_ns.ip("route", "add", "172.31.9.0/24", "dev", w.ifname)
    w_ns.ip("-6", "route", "add", "fd31::/64", "dev", w.ifname)
    for target in ("172.31.9.2", "fd31::2"):
        assert "0% packet loss" in Side.ping(w, target, count=2), target
    inbound = Path(w_ns, h_ns, "172.31.9.2", "fd31::2")
    outbound = Path(h_ns, w_ns, w.inner4, w.inner6)
    return inbound, outbound


@pytest.mark.parametrize("offloads", ["none", "all"])
@pytest.mark.parametrize("family", [4, 6])
def test_through_meshnode_to_a_verifying_host(netns_lab, family: int, offloads: str) -> None:  # noqa: F811
    inbound, outbound = build(netns_lab, "wireguard-go", offloads)
    for path in (inbound, outbound):
        target = path.target4 if family == 4 else path.target6
        check_tcp(netns_lab, path, target)
        check_udp(netns_lab, path, target)
