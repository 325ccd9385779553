"""The NAT lab behaves like home NAT routers: mappings, firewall, hole
punching, LAN traffic, conntrack flush and timeouts, WAN address changes."""

from __future__ import annotations

import time
from collections.abc import Iterator

import netns
import pytest
from natlab import NatKind, NatLab, PublicHost, UdpAgent
from netns import netns_lab  # noqa: F401  (the fixture)

STUN = 3478
QUIET = 0.4  # seconds to wait for a datagram that must not arrive


@pytest.fixture
def natlab(netns_lab: netns.Lab) -> Iterator[NatLab]:  # noqa: F811
    yield NatLab(netns_lab)


def reflecting_hosts(lab: NatLab, *tags: str) -> list[PublicHost]:
    hosts = [lab.public_host(tag) for tag in tags]
    for host in hosts:
        lab.reflector(host.ns, host.addresses, STUN)
    return hosts


def exchange(a: UdpAgent, b: UdpAgent, a_to: tuple[str, int], b_to: tuple[str, int]) -> tuple:
    """Both send to the other's endpoint a few times at once (hole punching);
    what each received."""
    for _ in range(3):
        a.send(*a_to, b"from a")
        b.send(*b_to, b"from b")
        time.sleep(0.05)
    return a.recv(timeout=QUIET, count=10), b.recv(timeout=QUIET, count=10)


def test_easy_nat_maps_endpoint_independently_and_firewalls(natlab: NatLab) -> None:
    x, y = reflecting_hosts(natlab, "x", "y")
    z = natlab.public_host("z")
    home = natlab.home("a", nat="easy")
    member = home.member("m1")
    agent = natlab.agent(member.ns)

    seen_x, seen_y = agent.stun(x.address, STUN), agent.stun(y.address, STUN)
    assert seen_x == seen_y == (home.wan_address, agent.port)  # Linux keeps a free port

    # Unsolicited from a host the member never talked to: dropped by the router.
    z_agent = natlab.agent(z.ns)
    dropped = home.counters()["input_dropped"]
    z_agent.send(*seen_x, b"unsolicited")
    assert agent.recv(timeout=QUIET) == []
    assert home.counters()["input_dropped"] == dropped + 1

    # After the member sent to X, X can answer on that mapping.
    x_agent = natlab.agent(x.ns, x.address, 5000)
    agent.send(x.address, 5000, b"hi x")
    [got] = x_agent.recv()
    assert (got.addr, got.port, got.data) == (*seen_x, b"hi x")
    x_agent.send(got.addr, got.port, b"hi member")
    [answer] = agent.recv()
    assert (answer.addr, answer.port, answer.data) == (x.address, 5000, b"hi member")


def test_easy_nat_port_clash_still_maps_endpoint_independently(natlab: NatLab) -> None:
    x, y = reflecting_hosts(natlab, "x", "y")
    home = natlab.home("a", nat="easy")
    first = natlab.agent(home.member("m1").ns, port=40000)
    second = natlab.agent(home.member("m2").ns, port=40000)
    assert first.stun(x.address, STUN) == (home.wan_address, 40000)
    clash = second.stun(x.address, STUN)  # 40000 is taken towards X: another port
    assert clash[1] != 40000
    # Linux reuses the mapping of the same inside source (nf_nat's bysource
    # table) for every destination, even where 40000 would be free.
    assert second.stun(y.address, STUN) == clash
    assert first.stun(y.address, STUN) == (home.wan_address, 40000)


def test_hard_nat_maps_per_destination(natlab: NatLab) -> None:
    (x,) = reflecting_hosts(natlab, "x")
    second = x.add_address()  # RFC 5780 style: a second address on the same host
    natlab.reflector(x.ns, second, STUN)
    home = natlab.home("a", nat="hard")
    member = home.member("m1")
    # random-fully picks a random port per connection: two equal by chance
    # (p ~ 1/64000) is retried with a new socket; endpoint-independent
    # mapping would give the same port every time.
    for _ in range(3):
        agent = natlab.agent(member.ns)
        first, other = agent.stun(x.address, STUN), agent.stun(second, STUN)
        assert first[0] == other[0] == home.wan_address
        if first[1] != other[1]:
            break
    else:
        pytest.fail(f"hard NAT kept port {first[1]} for two destinations, three times")


def test_set_nat_switches_at_runtime(natlab: NatLab) -> None:
    x, y = reflecting_hosts(natlab, "x", "y")
    home = natlab.home("a", nat="hard")
    member = home.member("m1")
    home.set_nat("easy")
    agent = natlab.agent(member.ns)
    assert agent.stun(x.address, STUN) == agent.stun(y.address, STUN)
    home.set_nat("hard")  # flushes conntrack: the same socket gets new mappings
    ports = {agent.stun(x.address, STUN)[1], agent.stun(y.address, STUN)[1], agent.port}
    assert len(ports) >= 2  # all three are equal under easy NAT
    assert home.counters()["masqueraded"] == 2  # the new rule counts from zero


@pytest.mark.parametrize(("nat", "punches"), [("easy", True), ("hard", False)])
def test_simultaneous_open(natlab: NatLab, nat: NatKind, punches: bool) -> None:
    (stun,) = reflecting_hosts(natlab, "stun")
    home_a, home_b = natlab.home("a", nat=nat), natlab.home("b", nat=nat)
    a = natlab.agent(home_a.member("m1").ns)
    b = natlab.agent(home_b.member("m1").ns)
    mapped_a, mapped_b = a.stun(stun.address, STUN), b.stun(stun.address, STUN)
    got_a, got_b = exchange(a, b, mapped_b, mapped_a)
    if punches:
        assert got_a and got_b
        assert {(d.addr, d.port, d.data) for d in got_a} == {(*mapped_b, b"from b")}
        assert {(d.addr, d.port, d.data) for d in got_b} == {(*mapped_a, b"from a")}
    else:
        assert got_a == got_b == []
        assert home_a.counters()["input_dropped"] >= 1
        assert home_b.counters()["input_dropped"] >= 1


def test_members_of_one_home_reach_each_other_on_the_lan(natlab: NatLab) -> None:
    home = natlab.home("a", nat="hard")
    m1, m2 = home.member("m1"), home.member("m2")
    assert m1.address != m2.address
    a1, a2 = natlab.agent(m1.ns), natlab.agent(m2.ns)
    a1.send(m2.address, a2.port, b"lan")
    [got] = a2.recv()
    assert (got.addr, got.port, got.data) == (m1.address, a1.port, b"lan")  # no NAT
    a2.send(got.addr, got.port, b"back")
    assert [d.data for d in a1.recv()] == [b"back"]
    assert m1.address6 is not None
    m2.ns.run("ping", "-n", "-c", "1", "-W", "2", m1.address6)
    assert home.counters()["masqueraded"] == 0  # never went through the router


def test_ipv6_is_routed_without_nat_behind_the_firewall(natlab: NatLab) -> None:
    x, z = natlab.public_host("x"), natlab.public_host("z")
    home = natlab.home("a")
    member = home.member("m1")
    assert member.address6 is not None
    agent = natlab.agent(member.ns, "::")
    x_agent, z_agent = natlab.agent(x.ns, "::", 5000), natlab.agent(z.ns, "::")
    z_agent.send(member.address6, agent.port, b"unsolicited")
    assert agent.recv(timeout=QUIET) == []
    assert home.counters(v6=True)["forward_dropped"] == 1
    agent.send(x.address6, 5000, b"hi")
    [got] = x_agent.recv()
    assert (got.addr, got.port) == (member.address6, agent.port)  # its own address
    x_agent.send(got.addr, got.port, b"answer")
    assert [d.data for d in agent.recv()] == [b"answer"]


def test_flush_conntrack_closes_the_pinhole(natlab: NatLab) -> None:
    x = natlab.public_host("x")
    home = natlab.home("a")
    agent = natlab.agent(home.member("m1").ns)
    x_agent = natlab.agent(x.ns, x.address, 5000)
    agent.send(x.address, 5000)
    [got] = x_agent.recv()
    x_agent.send(got.addr, got.port, b"before")
    assert [d.data for d in agent.recv()] == [b"before"]
    assert home.conntrack("-p", "udp")
    home.flush_conntrack()
    assert home.conntrack("-p", "udp") == []
    x_agent.send(got.addr, got.port, b"after")
    assert agent.recv(timeout=QUIET) == []


def test_udp_timeout_is_per_router_and_expires_mappings(natlab: NatLab) -> None:
    x = natlab.public_host("x")
    home, other = natlab.home("a"), natlab.home("b")
    root = netns._run(["sysctl", "-n", "net.netfilter.nf_conntrack_udp_timeout"])
    root_value = int(root.stdout)
    untouched = other.udp_timeout()
    home.set_udp_timeout(30)
    assert home.udp_timeout() == (30, 30)
    home.set_udp_timeout(root_value + 7, stream=root_value + 8)
    assert home.udp_timeout() == (root_value + 7, root_value + 8)
    root = netns._run(["sysctl", "-n", "net.netfilter.nf_conntrack_udp_timeout"])
    assert int(root.stdout) == root_value
    assert other.udp_timeout() == untouched

    home.set_udp_timeout(1)  # now an idle mapping lives one second
    agent = natlab.agent(home.member("m1").ns)
    x_agent = natlab.agent(x.ns, x.address, 5000)
    agent.send(x.address, 5000)
    [got] = x_agent.recv()
    x_agent.send(got.addr, got.port, b"in time")
    assert [d.data for d in agent.recv()] == [b"in time"]
    time.sleep(2.2)
    x_agent.send(got.addr, got.port, b"too late")
    assert agent.recv(timeout=QUIET) == []


def test_change_wan_address(natlab: NatLab) -> None:
    (x,) = reflecting_hosts(natlab, "x")
    home = natlab.home("a")
    agent = natlab.agent(home.member("m1").ns)
    old = home.wan_address
    assert agent.stun(x.address, STUN)[0] == old
    new = home.change_wan_address()
    assert new == home.wan_address != old
    addrs = home.ns.run("ip", "-4", "-o", "addr", "show", "dev", home.wan_ifname).stdout.decode()
    assert new in addrs and old not in addrs
    assert agent.stun(x.address, STUN)[0] == new  # the same socket, remapped
    fresh = natlab.agent(home.member("m2").ns)
    assert fresh.stun(x.address, STUN)[0] == new


def test_everything_is_removed_when_the_lab_closes() -> None:
    netns.require_netns()
    with netns.Lab() as lab:
        natlab = NatLab(lab)
        (x,) = reflecting_hosts(natlab, "x")
        home = natlab.home("a", nat="hard")
        natlab.agent(home.member("m1").ns).stun(x.address, STUN)
        names = [natlab.internet.name, x.ns.name, home.ns.name, home.members[0].ns.name]
        assert all(name.startswith(f"{netns.PREFIX}{lab.run_id}-") for name in names)
    assert lab.leftovers() == []
    assert not set(names) & set(netns._netns_names())
