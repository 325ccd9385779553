"""A packet towards an address no peer owns is answered with ICMP host
unreachable, as the kernel's WireGuard answers it (wireguard-go sends
nothing): ping says so at once, and a TCP connect fails at once instead of
timing out."""

from __future__ import annotations

import sys

import netns
from wgpair import start_side

netns_lab = netns.netns_lab

_CONNECT = """
import errno, socket, sys, time
start = time.monotonic()
try:
    socket.create_connection((sys.argv[1], 80), timeout=10)
except OSError as exc:
    print(errno.errorcode.get(exc.errno, exc), round(time.monotonic() - start, 2))
"""


def test_no_peer_for_the_destination_answers_host_unreachable(netns_lab) -> None:
    ns = netns_lab.namespace("i")
    side = start_side(netns_lab, ns, "meshnode", 1)  # 10.77.0.1/24, fd77::1/64, no peer
    out = ns.run("ping", "-n", "-c", "1", "-W", "2", "10.77.0.50", check=False).stdout.decode()
    assert "From 10.77.0.50 icmp_seq=1 Destination Host Unreachable" in out, out
    out = ns.run("ping", "-n", "-c", "1", "-W", "2", "fd77::50", check=False).stdout.decode()
    assert "From fd77::50 icmp_seq=1 Destination unreachable: Address unreachable" in out, out
    for target in ("10.77.0.51", "fd77::51"):
        out = ns.run(sys.executable, "-c", _CONNECT, target).stdout.decode().split()
        assert out[0] == "EHOSTUNREACH" and float(out[1]) < 2, out
    assert side.daemon.running()
