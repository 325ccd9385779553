"""Sticky source addresses, as the Linux kernel's WireGuard selftest checks them.

A reply leaves from the address the peer sent to, so the peer (here the real
wireguard-go, which roams to wherever authenticated packets come from) keeps
the endpoint it configured: our secondary IPv4 address, our IPv6 address on a
link that has both, or an address of ours on another interface. When that
address goes away, replies fall back to the routing table's choice.
"""

from __future__ import annotations

import netns
import pytest
from wgpair import PORT, Side, connect, loss, start_side

netns_lab = netns.netns_lab

PRIMARY, SECONDARY, OTHER_LINK = "192.168.50.2", "192.168.50.3", "10.60.0.1"


def _lab(lab: netns.Lab) -> tuple[Side, Side]:
    """wireguard-go in `observer` (192.168.50.1) and meshnode-wg in `node`, which
    has a primary and a secondary IPv4 address, two IPv6 addresses on the same
    link, and an address on another interface that the observer routes to."""
    observer_ns, node_ns, far_ns = lab.namespace("o"), lab.namespace("n"), lab.namespace("f")
    lab.veth(observer_ns, node_ns, ["192.168.50.1/24", "fd50::1/64"],
             [f"{PRIMARY}/24", f"{SECONDARY}/24", "fd50::2/64", "fd50::3/64"])  # fmt: skip
    lab.veth(node_ns, far_ns, f"{OTHER_LINK}/24", "10.60.0.2/24")
    observer_ns.ip("route", "add", "10.60.0.0/24", "via", PRIMARY)
    observer = start_side(lab, observer_ns, "wireguard-go", 1)
    node = start_side(lab, node_ns, "meshnode", 2)
    connect(lab, node, observer, endpoint=False)  # the node only answers
    return observer, node


def _endpoint_seen_by(side: Side) -> str:
    (line,) = side.wg("show", side.ifname, "endpoints").splitlines()
    return line.split("\t")[1]


@pytest.mark.parametrize(
    "target",
    [SECONDARY, "[fd50::2]", "[fd50::3]", OTHER_LINK],
    ids=["secondary-ipv4", "ipv6-beside-ipv4", "second-ipv6", "address-of-another-interface"],
)
def test_replies_leave_from_the_address_the_peer_wrote_to(netns_lab, target: str) -> None:
    observer, node = _lab(netns_lab)
    connect(netns_lab, observer, node, endpoint=False)
    observer.wg("set", observer.ifname, "peer", node.public_b64, "endpoint", f"{target}:{PORT}")
    for inner in (node.inner4, node.inner6):
        out = observer.ping(inner)
        assert loss(out) == 0, out
    # wireguard-go roams to the source of every authenticated packet: had a
    # reply come from another address, this would show that address
    assert _endpoint_seen_by(observer) == f"{target}:{PORT}"
    out = node.ping(observer.inner4)
    assert loss(out) == 0, out
    assert _endpoint_seen_by(observer) == f"{target}:{PORT}"


def test_a_removed_source_falls_back_to_the_routing_table(netns_lab) -> None:
    observer, node = _lab(netns_lab)
    connect(netns_lab, observer, node, endpoint=False)
    observer.wg("set", observer.ifname, "peer", node.public_b64, "endpoint", f"{SECONDARY}:{PORT}")
    assert loss(observer.ping(node.inner4)) == 0
    veth_of_node = node.ns.run("ip", "-o", "addr", "show", "to", SECONDARY).stdout.split()[1]
    node.ns.ip("addr", "del", f"{SECONDARY}/24", "dev", veth_of_node.decode())
    # the node's replies can no longer leave from SECONDARY: they leave from
    # PRIMARY, the observer roams there, and the tunnel goes on
    out = node.ping(observer.inner4, count=5)
    assert loss(out) < 100, out
    assert loss(node.ping(observer.inner4)) == 0
    assert _endpoint_seen_by(observer) == f"{PRIMARY}:{PORT}"


def _sysctl(ns: netns.Namespace, key: str, value: str) -> None:
    ns.run("sysctl", "-q", "-w", f"{key}={value}")


def test_a_better_route_by_another_interface_drops_the_remembered_source(netns_lab) -> None:
    # the kernel selftest's "route precedence": the node reaches the observer by
    # link one (source 10.0.0.1), then a better route by link three appears with
    # source 10.0.0.3; the kernel forgets the remembered source, as must we
    observer_ns, node_ns = netns_lab.namespace("o"), netns_lab.namespace("n")
    one = netns_lab.veth(node_ns, observer_ns, "10.0.0.1/24", "10.0.0.2/24")
    three = netns_lab.veth(node_ns, observer_ns, "10.0.0.3/24")
    for veth in (one, three):
        node_ns.ip("route", "flush", "dev", veth.a_ifname)
    node_ns.ip("route", "add", "10.0.0.0/24", "dev", one.a_ifname, "src", "10.0.0.1", "metric", "2")
    observer = start_side(netns_lab, observer_ns, "wireguard-go", 1)
    node = start_side(netns_lab, node_ns, "meshnode", 2)
    connect(netns_lab, observer, node, endpoint=False)
    connect(netns_lab, node, observer, endpoint=False)
    node.wg("set", node.ifname, "peer", observer.public_b64, "endpoint", f"10.0.0.2:{PORT}")
    assert loss(node.ping(observer.inner4)) == 0
    assert _endpoint_seen_by(observer) == f"10.0.0.1:{PORT}"
    # the observer's answers reach 10.0.0.3 by link one: no reverse-path filter
    for ns, ifname in ((node_ns, one.a_ifname), (observer_ns, three.b_ifname)):
        _sysctl(ns, f"net.ipv4.conf.{ifname}.rp_filter", "0")
        _sysctl(ns, "net.ipv4.conf.all.rp_filter", "0")
    node_ns.ip("route", "add", "10.0.0.0/24", "dev", three.a_ifname, "src", "10.0.0.3",
               "metric", "1")  # fmt: skip
    out = node.ping(observer.inner4)
    assert loss(out) == 0, out
    assert _endpoint_seen_by(observer) == f"10.0.0.3:{PORT}"
