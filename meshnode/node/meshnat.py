"""STUN on a mesh interface's own WireGuard socket (so the NAT mapping found
is WireGuard's): answers other members' binding requests, runs a netcheck
(nat/netcheck.py, sans-IO) every 20-26 s and at once when a local address
or link changes, and gives the mesh host the public addresses it found and
the NAT's mapping behaviour.

Servers are the `stun` entries of the mesh's configuration and the public
candidates of the rendezvous members, which answer STUN on their WireGuard
port like every member: a mesh needs no outside server.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence

import trio

from ..config.validate import parse_host_port
from ..interface import Interface
from ..log import Logger
from ..mesh.agent import MeshAgent
from ..mesh.paths import LocalNetworks, PathState
from ..nat.netcheck import NetCheck, NetReport
from ..nat.stun import METHOD_BINDING, StunClass, StunError, StunMessage, binding_response, is_stun
from ..net import link
from ..wireguard.endpoint import Endpoint

HostPort = tuple[str, int]

INTERVAL = (20.0, 26.0)  # seconds between netchecks, randomised
SETTLE = 0.5  # after an address change, wait for the rest of the burst
MAX_MEMBER_SERVERS = 3
_ANSWERS_PER_SECOND = 200  # binding requests answered per second, at most


class NatWatch:
    def __init__(self, agent: MeshAgent, servers: Sequence[str], log: Logger,
                 changed: Callable[[NetReport], None]) -> None:  # fmt: skip
        self.agent = agent
        self.configured = list(servers)
        self.log = log
        self.changed = changed  # told each new report
        self.interface: Interface | None = None
        self.report: NetReport | None = None
        self.report_at: float | None = None
        self.stats: Counter[str] = Counter()
        self.rng = random.SystemRandom()
        self._check: NetCheck | None = None
        self._answered = self._answered_at = 0
        self._wake = trio.Event()
        self._resolved: dict[str, HostPort] = {}

    def attach(self, interface: Interface) -> None:
        self.interface = interface
        interface.datagram_handlers.append((is_stun, self.on_datagram))

    def recheck(self) -> None:
        """Run a netcheck soon (an address changed, or a command asked)."""
        self._wake.set()

    async def fresh_report(self, timeout: float = 15.0) -> NetReport | None:
        """A report from a netcheck started after this call (`meshnode netcheck`)."""
        count = self.stats["netchecks"]
        self.recheck()
        with trio.move_on_after(timeout):
            while self.stats["netchecks"] <= count:
                await trio.sleep(0.1)
        return self.report

    # ------------------------------------------------------------ from the data path

    def on_datagram(self, datagram: bytes, source: Endpoint) -> None:
        try:
            message = StunMessage.parse(datagram)
        except StunError:
            self.stats["malformed"] += 1
            return
        if message.method != METHOD_BINDING:
            self.stats["not_binding"] += 1
            return
        address = (source.sockaddr[0], source.sockaddr[1])
        if message.msg_class is StunClass.REQUEST:
            self._answer(message.transaction_id, address, source)
        elif self._check is not None and self._check.handle_response(address, datagram, _now()):
            self.stats["responses"] += 1
            self._wake.set()
        else:
            self.stats["unmatched"] += 1

    def _answer(self, txid: bytes, address: HostPort, source: Endpoint) -> None:
        second = int(time.monotonic())
        if second != self._answered_at:
            self._answered_at, self._answered = second, 0
        if self._answered >= _ANSWERS_PER_SECOND:
            self.stats["rate_limited"] += 1
            return
        self._answered += 1
        self.stats["answered"] += 1
        assert self.interface is not None
        self.interface.send_datagram(binding_response(txid, address), source)

    # ------------------------------------------------------------ the netcheck task

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_addresses)
            while True:
                servers = await self._servers()
                if servers:
                    await self._netcheck(servers)
                with trio.move_on_after(self.rng.uniform(*INTERVAL)):
                    await self._wake.wait()
                    await trio.sleep(SETTLE)
                self._wake = trio.Event()

    async def _netcheck(self, servers: list[HostPort]) -> None:
        check = self._check = NetCheck(servers, self.rng)
        check.start(_now())
        try:
            while not check.done:
                self._send(check.datagrams_to_send(_now()))
                deadline = check.get_timer()
                wait = 3.0 if deadline is None else max(0.0, deadline - _now())
                with trio.move_on_after(wait):
                    await self._wake.wait()
                self._wake = trio.Event()
        finally:
            self._check = None
        report = check.report()
        self.report, self.report_at = report, time.time()
        self.stats["netchecks"] += 1
        self.changed(report)

    def _send(self, datagrams: list[tuple[HostPort, bytes]]) -> None:
        if self.interface is None:
            return
        for (host, port), datagram in datagrams:
            endpoint = Endpoint.literal(host, port)  # servers are IP literals by now
            if endpoint is not None:
                self.interface.send_datagram(datagram, endpoint)

    async def _servers(self) -> list[HostPort]:
        """The configured servers (names resolved off the event loop), then the
        rendezvous members' public candidates."""
        out: list[HostPort] = []
        for text in self.configured:
            parsed = parse_host_port(text)
            if parsed is None:
                continue
            host, port = parsed
            try:
                ipaddress.ip_address(host)
            except ValueError:
                resolved = await _resolve(host, port)
                if resolved is None:
                    self.log.error(f"Cannot resolve the STUN server {text}")
                    continue
                host, port = resolved
            out.append((host, port))
        public = LocalNetworks()
        members = 0
        agent = self.agent
        for key in agent.members.rendezvous():
            info = agent.reach.directory.get(key)
            for host, port in info.candidates if info else ():
                try:
                    ipaddress.ip_address(host)
                except ValueError:
                    continue
                if public.classify(host) is PathState.DIRECT and (host, port) not in out:
                    out.append((host, port))
                    members += 1
                    break  # one address of each member: two members prove more than one
            if members >= MAX_MEMBER_SERVERS:
                break
        return out

    async def _watch_addresses(self) -> None:
        """Recheck at once when a local address, link or route changes (a new
        lease, Wi-Fi to cable, a new default route): the public address may have
        changed with it."""
        while True:
            try:
                events = link.link_events_socket(routes=True)
            except OSError as exc:
                self.log.error(f"Cannot watch the local addresses: {exc}")
                await trio.sleep(30)
                continue
            with events:
                while True:
                    await trio.lowlevel.wait_readable(events)
                    link.drain(events)
                    self.recheck()


async def _resolve(host: str, port: int) -> HostPort | None:
    try:
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError:
        return None
    for _family, _type, _proto, _name, sockaddr in infos:
        return (sockaddr[0], sockaddr[1])
    return None


def _now() -> float:
    return time.monotonic()
