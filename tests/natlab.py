"""A NAT lab on test namespaces: an "internet", public hosts, and homes behind
NAT routers that behave like real home routers (Linux conntrack + iptables).

    public hosts: 198.18.0.N/16, 2001:db8::N/64       (N = 10, 11, ...)
      [pub-a]  [pub-b]  ...
         |        |
    ==== br ====================================  internet namespace "inet":
         |                     |                  bridge + core router
    198.18.1.1 (wan)      198.18.1.2 (wan)        198.18.0.1, 2001:db8::1
    2001:db8::1:1         2001:db8::1:2           (routes 2001:db8:X::/64
      [home-a router]       [home-b router]        to home X's router)
       NAT easy|hard,        ...
       stateful firewall
    10.1.0.1 (lan bridge)  10.2.0.1
    2001:db8:1::1/64       2001:db8:2::1/64
      |          |           |
    [a-m1]     [a-m2]      [b-m1]       members: 10.X.0.(9+n)/24,
    10.1.0.10  10.1.0.11   10.2.0.10    2001:db8:X::(9+n)/64, default via router

Addresses come from the benchmarking range 198.18.0.0/15 and the documentation
prefix 2001:db8::/32; nothing is connected to the root namespace, so no packet
leaves the lab. Home X (X = 1, 2, ... in creation order) NATs IPv4 from
10.X.0.0/24 to its WAN address: "easy" is MASQUERADE (endpoint-independent
mapping: Linux keeps the source port if free, and otherwise reuses one other
port for all destinations while a flow from that source lives), "hard"
is MASQUERADE --random-fully (a new random port for every destination
address:port). IPv6 (if the home has it) is routed without NAT behind the same
conntrack firewall: inbound only for ESTABLISHED,RELATED (plus neighbour
discovery to the router itself), everything from the LAN out.

    lab = NatLab(netns_lab)
    stun = lab.public_host("stun"); stun.add_address()     # two IPs (RFC 5780)
    home = lab.home("a", nat="easy"); m = home.member("m1")
    lab.reflector(stun.ns, stun.addresses, 3478)           # STUN-like echo
    agent = lab.agent(m.ns)                                 # a UDP socket in m
    agent.stun(stun.address, 3478)                          # -> (home.wan_address, port)

Namespaces are named mn<id>-inet<n>, mn<id>-pub-TAG<n>, mn<id>-home-TAG<n>,
mn<id>-HOMETAG-TAG<n>. Everything is made through the netns.Lab (namespaces, unique interface names,
spawned processes), so it all disappears when the Lab closes.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Literal

from netns import Lab, Namespace, Process, wait_for

NatKind = Literal["easy", "hard"]
NAT_KINDS: tuple[NatKind, ...] = ("easy", "hard")

INTERNET_PREFIXLEN = 16
INTERNET_GATEWAY = "198.18.0.1"
INTERNET_GATEWAY6 = "2001:db8::1"
INTERNET_PREFIXLEN6 = 64

# A UDP socket inside a namespace, driven over a Unix socket (pathname Unix
# sockets work across network namespaces): one JSON command per line.
AGENT_SCRIPT = r"""
import json, select, socket, sys, time
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
udp = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
udp.bind((host, port))
ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
ctl.bind(path)
ctl.listen(1)
print("ready", udp.getsockname()[1], flush=True)
while True:
    conn, _ = ctl.accept()
    with conn, conn.makefile("rwb") as f:
        for line in f:
            cmd = json.loads(line)
            out = None
            if cmd["op"] == "send":
                udp.sendto(bytes.fromhex(cmd["data"]), (cmd["host"], cmd["port"]))
            elif cmd["op"] == "recv":
                out, end = [], time.monotonic() + cmd["timeout"]
                while len(out) < cmd["count"]:
                    left = end - time.monotonic()
                    if left <= 0 or not select.select([udp], [], [], left)[0]:
                        break
                    data, addr = udp.recvfrom(65535)
                    out.append([addr[0], addr[1], data.hex()])
            elif cmd["op"] == "local":
                out = list(udp.getsockname()[:2])
            f.write((json.dumps(out) + "\n").encode())
            f.flush()
"""

# A STUN-like reflector: answers every datagram with JSON naming the source
# address and port it saw, and the local address and port it arrived on.
REFLECTOR_SCRIPT = r"""
import json, selectors, socket, sys
port = int(sys.argv[1])
sel = selectors.DefaultSelector()
for host in sys.argv[2:]:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, port))
    sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        data, addr = key.fileobj.recvfrom(65535)
        local = key.fileobj.getsockname()
        reply = {"addr": addr[0], "port": addr[1], "to": [local[0], local[1]]}
        key.fileobj.sendto(json.dumps(reply).encode(), addr)
"""


@dataclass
class Datagram:
    addr: str
    port: int
    data: bytes


class UdpAgent:
    """One UDP socket bound inside a namespace (a spawned script the Lab owns),
    sending and receiving on command."""

    def __init__(self, lab: Lab, ns: Namespace, host: str = "0.0.0.0", port: int = 0) -> None:
        self.ns = ns
        path = lab.tmp_path / f"agent{lab._next()}.sock"
        self.process: Process = ns.spawn(
            sys.executable, "-c", AGENT_SCRIPT, host, str(port), str(path)
        )

        def ready() -> bool:
            if not self.process.running():
                raise RuntimeError(f"UDP agent in {ns.name} exited:\n{self.process.log()}")
            return self.process.log().startswith("ready")

        wait_for(ready, 10, f"the UDP agent in {ns.name}")
        self._ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._ctl.connect(str(path))
        self._file = self._ctl.makefile("rwb")
        local = self._call(op="local")
        self.host: str = local[0]
        self.port: int = local[1]

    def _call(self, **cmd: object) -> list:
        self._file.write((json.dumps(cmd) + "\n").encode())
        self._file.flush()
        line = self._file.readline()
        if not line:
            raise RuntimeError(f"UDP agent in {self.ns.name} died:\n{self.process.log()}")
        return json.loads(line)

    def send(self, host: str, port: int, data: bytes = b"hello") -> None:
        self._call(op="send", host=host, port=port, data=data.hex())

    def recv(self, timeout: float = 1.0, count: int = 1) -> list[Datagram]:
        """Up to count datagrams arriving within timeout seconds (also those
        already queued)."""
        got = self._call(op="recv", timeout=timeout, count=count)
        return [Datagram(a, p, bytes.fromhex(d)) for a, p, d in got]

    def drain(self) -> list[Datagram]:
        return self.recv(timeout=0, count=1_000_000)

    def stun(self, host: str, port: int, timeout: float = 0.5, tries: int = 3) -> tuple[str, int]:
        """The (address, port) a reflector at host:port sees this socket as."""
        for _ in range(tries):
            self.send(host, port, b"stun?")
            end = time.monotonic() + timeout
            while (left := end - time.monotonic()) > 0:
                for datagram in self.recv(timeout=left):
                    if (datagram.addr, datagram.port) == (host, port):
                        reply = json.loads(datagram.data)
                        return reply["addr"], reply["port"]
        raise TimeoutError(f"no answer from the reflector {host}:{port} to {self.ns.name}")

    def close(self) -> None:
        self._file.close()
        self._ctl.close()
        self.process.stop()


@dataclass
class PublicHost:
    """A namespace on the internet bridge with public addresses."""

    natlab: NatLab
    tag: str
    ns: Namespace
    ifname: str
    addresses: list[str] = field(default_factory=list)  # IPv4, first is primary
    addresses6: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.addresses[0]

    @property
    def address6(self) -> str:
        return self.addresses6[0]

    def add_address(self, address: str | None = None) -> str:
        """Another public address (IPv4 by default; pass one, either family, to
        choose it: it must lie in 198.18.0.0/16 or 2001:db8::/64)."""
        if address is None:
            address = self.natlab._public_v4()
        v6 = ":" in address
        plen = INTERNET_PREFIXLEN6 if v6 else INTERNET_PREFIXLEN
        extra = ["nodad"] if v6 else []
        self.ns.ip("addr", "add", f"{address}/{plen}", "dev", self.ifname, *extra)
        (self.addresses6 if v6 else self.addresses).append(address)
        return address


@dataclass
class Member:
    """A machine on a home's LAN."""

    home: Home
    tag: str
    ns: Namespace
    ifname: str
    address: str
    address6: str | None


@dataclass
class Home:
    """A home: a NAT router namespace (WAN on the internet, LAN bridge) and
    its members."""

    natlab: NatLab
    tag: str
    index: int  # X in 10.X.0.0/24 and 2001:db8:X::/64
    ns: Namespace  # the router
    nat: NatKind
    wan_ifname: str
    lan_ifname: str  # the LAN bridge in the router namespace
    wan_address: str
    wan_address6: str | None
    members: list[Member] = field(default_factory=list)

    @property
    def lan_subnet(self) -> str:
        return f"10.{self.index}.0.0/24"

    @property
    def lan_address(self) -> str:
        return f"10.{self.index}.0.1"

    @property
    def ipv6(self) -> bool:
        return self.wan_address6 is not None

    @property
    def lan_subnet6(self) -> str | None:
        return f"2001:db8:{self.index}::/64" if self.ipv6 else None

    @property
    def lan_address6(self) -> str | None:
        return f"2001:db8:{self.index}::1" if self.ipv6 else None

    def member(self, tag: str) -> Member:
        """A new machine on the LAN, default routes via the router."""
        lab = self.natlab.lab
        host = 10 + len(self.members)
        if host > 254:
            raise ValueError(f"home {self.tag} is full")
        address = f"10.{self.index}.0.{host}"
        address6 = f"2001:db8:{self.index}::{host}" if self.ipv6 else None
        ns = self.natlab._namespace(f"{self.tag}-{tag}")
        addrs = [f"{address}/24"] + ([f"{address6}/64"] if address6 else [])
        veth = lab.veth(ns, self.ns, addrs)
        self.ns.ip("link", "set", veth.b_ifname, "master", self.lan_ifname)
        ns.ip("route", "add", "default", "via", self.lan_address)
        if self.lan_address6:
            ns.ip("-6", "route", "add", "default", "via", self.lan_address6)
        member = Member(self, tag, ns, veth.a_ifname, address, address6)
        self.members.append(member)
        return member

    def _sysctl(self, *settings: str) -> None:
        self.ns.run("sysctl", "-q", "-w", *settings)

    def sysctl(self, key: str) -> str:
        """A sysctl's value as seen inside the router namespace."""
        return self.ns.run("sysctl", "-n", key).stdout.decode().strip()

    def _filter_rules(self, v6: bool) -> str:
        wan, lan = self.wan_ifname, self.lan_ifname

        def c(name: str) -> str:
            return f"-m comment --comment natlab:{name}"

        est = "-m conntrack --ctstate ESTABLISHED,RELATED"
        nd = [
            f"-A INPUT -i {wan} -p ipv6-icmp --icmpv6-type {t} {c('input_nd')} -j ACCEPT"
            for t in ("neighbour-solicitation", "neighbour-advertisement")
        ]
        rules = [
            "*filter",
            ":INPUT ACCEPT [0:0]",
            ":FORWARD ACCEPT [0:0]",
            ":OUTPUT ACCEPT [0:0]",
            f"-A INPUT -i {wan} {est} {c('input_accepted')} -j ACCEPT",
            *(nd if v6 else []),
            f"-A INPUT -i {wan} {c('input_dropped')} -j DROP",
            f"-A FORWARD -i {wan} {est} {c('forward_in')} -j ACCEPT",
            f"-A FORWARD -i {wan} {c('forward_dropped')} -j DROP",
            f"-A FORWARD -i {lan} -o {wan} {c('forward_out')} -j ACCEPT",
            "COMMIT",
        ]
        return "\n".join(rules) + "\n"

    def _nat_rules(self, kind: NatKind) -> str:
        if kind not in NAT_KINDS:
            raise ValueError(f"nat must be one of {NAT_KINDS}, not {kind!r}")
        random = " --random-fully" if kind == "hard" else ""
        rules = [
            "*nat",
            ":PREROUTING ACCEPT [0:0]",
            ":INPUT ACCEPT [0:0]",
            ":OUTPUT ACCEPT [0:0]",
            ":POSTROUTING ACCEPT [0:0]",
            f"-A POSTROUTING -o {self.wan_ifname} -m comment --comment natlab:masqueraded"
            f" -j MASQUERADE{random}",
            "COMMIT",
        ]
        return "\n".join(rules) + "\n"

    def _install_firewall(self) -> None:
        self.ns.run("iptables-restore", input=self._filter_rules(v6=False).encode())
        self.ns.run("iptables-restore", input=self._nat_rules(self.nat).encode())
        if self.ipv6:
            self.ns.run("ip6tables-restore", input=self._filter_rules(v6=True).encode())

    def set_nat(self, kind: NatKind, flush: bool = True) -> None:
        """Replace the NAT rule (the nat table only; the firewall stays). With
        flush (the default) the conntrack table is emptied too, so existing
        mappings don't outlive the change (as when a router reboots); without,
        flows already mapped keep their mapping."""
        self.ns.run("iptables-restore", input=self._nat_rules(kind).encode())
        self.nat = kind
        if flush:
            self.flush_conntrack()

    def flush_conntrack(self) -> None:
        """`conntrack -F` in the router: every mapping and firewall pinhole is
        forgotten (both families)."""
        self.ns.run("conntrack", "-F")

    def conntrack(self, *args: str) -> list[str]:
        """`conntrack -L ARGS` in the router, one line per entry."""
        out = self.ns.run("conntrack", "-L", *args).stdout.decode()
        return [line for line in out.splitlines() if line.strip()]

    def set_udp_timeout(self, seconds: int, stream: int | None = None) -> None:
        """Conntrack's UDP timeouts in this router (per network namespace):
        net.netfilter.nf_conntrack_udp_timeout = seconds and
        nf_conntrack_udp_timeout_stream = stream (default: seconds too)."""
        stream = seconds if stream is None else stream
        self._sysctl(
            f"net.netfilter.nf_conntrack_udp_timeout={seconds}",
            f"net.netfilter.nf_conntrack_udp_timeout_stream={stream}",
        )

    def udp_timeout(self) -> tuple[int, int]:
        """(nf_conntrack_udp_timeout, nf_conntrack_udp_timeout_stream) here."""
        return (
            int(self.sysctl("net.netfilter.nf_conntrack_udp_timeout")),
            int(self.sysctl("net.netfilter.nf_conntrack_udp_timeout_stream")),
        )

    def change_wan_address(self, address: str | None = None) -> str:
        """A new public IPv4 address (a new lease after a router reboot): the
        old one removed, the default route restored, conntrack flushed.
        Returns the new address. The WAN IPv6 address stays."""
        old = self.wan_address
        new = address or self.natlab._wan_v4()
        plen = INTERNET_PREFIXLEN
        self.ns.ip("addr", "del", f"{old}/{plen}", "dev", self.wan_ifname)
        self.ns.ip("addr", "add", f"{new}/{plen}", "dev", self.wan_ifname)
        self.ns.ip("route", "replace", "default", "via", INTERNET_GATEWAY)
        self.wan_address = new
        self.flush_conntrack()
        return new

    def counters(self, v6: bool = False) -> dict[str, int]:
        """Packet counters of the router's rules, by name: input_accepted,
        input_dropped, forward_in, forward_dropped, forward_out (filter
        table), masqueraded (IPv4 only: new connections NATed), input_nd
        (IPv6 only: neighbour discovery to the router)."""
        tool = "ip6tables" if v6 else "iptables"
        tables = ["filter"] if v6 else ["filter", "nat"]
        found: dict[str, int] = {}
        for table in tables:
            out = self.ns.run(tool, "-t", table, "-L", "-n", "-v", "-x").stdout.decode()
            for line in out.splitlines():
                match = re.search(r"/\* natlab:(\w+) \*/", line)
                if match:
                    found[match.group(1)] = found.get(match.group(1), 0) + int(line.split()[0])
        return found


class NatLab:
    """The internet, public hosts and homes, built in a netns.Lab."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.hosts: list[PublicHost] = []
        self.homes: list[Home] = []
        self._next_public = 10  # 198.18.0.N
        self._next_wan = 1  # 198.18.1.N
        self.internet: Namespace = self._namespace("inet")
        self.bridge: str = lab.ifname("br")
        self.gateway, self.gateway6 = INTERNET_GATEWAY, INTERNET_GATEWAY6
        inet = self.internet
        inet.ip("link", "add", self.bridge, "type", "bridge")
        _no_bridge_netfilter(inet)
        inet.ip("addr", "add", f"{INTERNET_GATEWAY}/{INTERNET_PREFIXLEN}", "dev", self.bridge)
        inet.ip("addr", "add", f"{INTERNET_GATEWAY6}/{INTERNET_PREFIXLEN6}", "dev", self.bridge,
                "nodad")  # fmt: skip
        inet.ip("link", "set", self.bridge, "up")
        inet.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")

    def _namespace(self, tag: str) -> Namespace:
        """A Lab namespace without IPv6 duplicate address detection, so that
        link-local addresses work at once: while they are tentative a router
        can't send neighbour solicitations for packets it forwards."""
        ns = self.lab.namespace(tag)
        dad = [f"net.ipv6.conf.{c}.accept_dad=0" for c in ("all", "default")]
        ns.run("sysctl", "-q", "-w", *dad)
        return ns

    def _public_v4(self) -> str:
        n, self._next_public = self._next_public, self._next_public + 1
        if n > 254:
            raise ValueError("out of public host addresses")
        return f"198.18.0.{n}"

    def _wan_v4(self) -> str:
        n, self._next_wan = self._next_wan, self._next_wan + 1
        if n > 254:
            raise ValueError("out of WAN addresses")
        return f"198.18.1.{n}"

    def _attach(self, ns: Namespace, addrs: list[str]) -> str:
        """A veth from ns to the internet bridge, with addresses and default
        routes via the core; returns the interface name in ns."""
        veth = self.lab.veth(ns, self.internet, addrs)
        self.internet.ip("link", "set", veth.b_ifname, "master", self.bridge)
        ns.ip("route", "add", "default", "via", INTERNET_GATEWAY)
        if any(":" in a for a in addrs):
            ns.ip("-6", "route", "add", "default", "via", INTERNET_GATEWAY6)
        return veth.a_ifname

    def public_host(self, tag: str) -> PublicHost:
        """A namespace on the internet: one IPv4 (198.18.0.N) and one IPv6
        (2001:db8::N) address; more with add_address."""
        address = self._public_v4()
        address6 = f"2001:db8::{address.rsplit('.', 1)[1]}"
        ns = self._namespace(f"pub-{tag}")
        ifname = self._attach(ns, [f"{address}/{INTERNET_PREFIXLEN}", f"{address6}/64"])
        host = PublicHost(self, tag, ns, ifname, [address], [address6])
        self.hosts.append(host)
        return host

    def home(self, tag: str, nat: NatKind = "easy", ipv6: bool = True) -> Home:
        """A home router: WAN 198.18.1.N (and 2001:db8::1:N), LAN bridge with
        10.X.0.1/24 (and 2001:db8:X::1/64, routed, firewalled, no NAT)."""
        if nat not in NAT_KINDS:
            raise ValueError(f"nat must be one of {NAT_KINDS}, not {nat!r}")
        index = len(self.homes) + 1
        if index > 255:
            raise ValueError("out of home subnets")
        ns = self._namespace(f"home-{tag}")
        wan = self._wan_v4()
        wan6 = f"2001:db8::1:{wan.rsplit('.', 1)[1]}" if ipv6 else None
        addrs = [f"{wan}/{INTERNET_PREFIXLEN}"] + ([f"{wan6}/64"] if wan6 else [])
        wan_ifname = self._attach(ns, addrs)
        lan = self.lab.ifname("br")
        ns.ip("link", "add", lan, "type", "bridge")
        _no_bridge_netfilter(ns)
        ns.ip("addr", "add", f"10.{index}.0.1/24", "dev", lan)
        if wan6:
            ns.ip("addr", "add", f"2001:db8:{index}::1/64", "dev", lan, "nodad")
            self.internet.ip("-6", "route", "add", f"2001:db8:{index}::/64", "via", wan6)
        ns.ip("link", "set", lan, "up")
        home = Home(self, tag, index, ns, nat, wan_ifname, lan, wan, wan6)
        sysctls = ["net.ipv4.ip_forward=1"] + (["net.ipv6.conf.all.forwarding=1"] if wan6 else [])
        ns.run("sysctl", "-q", "-w", *sysctls)
        home._install_firewall()
        self.homes.append(home)
        return home

    def agent(self, ns: Namespace, host: str = "0.0.0.0", port: int = 0) -> UdpAgent:
        """A UDP socket bound to host:port in ns (port 0: any), driven from the
        test (send, recv, stun). Its process belongs to the Lab."""
        return UdpAgent(self.lab, ns, host, port)

    def reflector(self, ns: Namespace, hosts: list[str] | str, port: int = 3478) -> Process:
        """A STUN-like UDP echo on port at each of hosts (addresses in ns): it
        answers every datagram with {"addr", "port"} of its source as seen
        there and "to": [local address, port]."""
        hosts = [hosts] if isinstance(hosts, str) else list(hosts)
        process = ns.spawn(sys.executable, "-c", REFLECTOR_SCRIPT, str(port), *hosts)

        def ready() -> bool:
            if not process.running():
                raise RuntimeError(f"reflector in {ns.name} exited:\n{process.log()}")
            return process.log().startswith("ready")

        wait_for(ready, 10, f"the reflector in {ns.name}")
        return process


def _no_bridge_netfilter(ns: Namespace) -> None:
    """br_netfilter (if loaded) would pass bridged frames through this
    namespace's iptables and conntrack; bridges here are plain switches. The
    switches are per network namespace (default 1) on kernels >= 5.3."""
    keys = [f"net.bridge.bridge-nf-call-{t}=0" for t in ("iptables", "ip6tables", "arptables")]
    ns.run("sysctl", "-q", "-w", *keys, check=False)
