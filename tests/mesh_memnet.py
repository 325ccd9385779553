"""An in-memory mesh: MeshAgents (and Joiners) wired together with a fake clock.

No WireGuard runs here. Each node has a model of its device: the peers the
agent configured (and their endpoints), sessions, and packets waiting for a
handshake. A message from A to B is carried when A has B as a peer and
either a session exists or a handshake succeeds: A's endpoint for B is one
of B's addresses, B is online and has A as a peer. The handshake then gives
both sides HandshakeCompleted (and B an EndpointChanged if A roamed);
otherwise it is retried every 5 s (plus up to 1/3 s of jitter) with whatever
endpoint A's agent set by then, and after 90 s A gets HandshakeGaveUp, as WireGuard does.

`lite=True` keeps only peer keys (not whole configurations) for runs with a
thousand nodes.

`traversal=True` (opt-in; the default model above is unchanged) models NAT
traversal:

- every node gets an X25519 private key (its public key derived with
  `meshnode.wireguard.keys.public_key`) and its agent `private_key=`, so it
  probes; the probes it drains (`datagrams_to_send`) are carried to the
  destination's `handle_datagram` with the source address the destination
  sees;
- nodes sit on a modelled network: a node without a NAT has a public address
  (198.18.n.1); `net.nat("easy" | "hard")` makes a NAT (public address
  198.19.n.1, LAN 192.168.n.0/24) to put nodes behind (`found(nat=)`,
  `join(admin, name, nat=)`). "easy" maps endpoint-independently (one public
  port per node socket), "hard" takes a new random public port per
  destination; both filter statefully (inbound only from a remote
  address:port the node sent to through that mapping); nodes behind one NAT
  reach each other by their LAN addresses (no hairpinning);
- WireGuard packets (handshakes, coordination messages, keepalives) obey
  the same rules: a handshake to an address succeeds only if the initiation
  reaches the peer and the response comes back; session packets go to the
  device's current endpoint and make the receiver roam (EndpointChanged); a
  session whose packets stop arriving is re-handshaken after 15 s; a session
  is re-keyed when used after 120 s, unusable after 180 s, and its keys
  zeroed (KeysZeroed) 540 s after its last handshake; persistent keepalives
  are sent;
- a `Relay(R)` endpoint carries a packet when R is online with a relay role
  (rendezvous or relay, policy not never), has both as peers, the sender's
  endpoint for R reaches R and R's endpoint for the destination reaches it;
  the destination sees it from `Endpoint.relayed(R, sender)`;
- each member runs a netcheck (a STUN request to `net.stun_server`, the
  first public node, when it comes up and every 20-26 s after): its NAT's
  mapping becomes a reflexive candidate, and its NAT kind goes to
  `agent.reach.set_nat` (unless `report_nat=False`);
- `net.flush(nat)` forgets a NAT's mappings (conntrack -F: new public ports
  after), `net.renumber(nat, ip)` gives it a new public address.
"""

from __future__ import annotations

import heapq
import itertools
import os
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from meshnode.mesh.agent import AgentParams, MeshAgent
from meshnode.mesh.authority import Authority
from meshnode.mesh.events import MeshEvent
from meshnode.mesh.invite import Invite, parse_invite
from meshnode.mesh.join import Joiner, JoinState
from meshnode.mesh.messages import HelloKind
from meshnode.mesh.paths import Relay
from meshnode.mesh.peerconfig import ConfigurePeer, RemovePeer
from meshnode.mesh.state import MeshState, found_mesh
from meshnode.mesh.status import MemberStatus
from meshnode.wireguard import keys as wgkeys
from meshnode.wireguard.endpoint import Endpoint
from meshnode.wireguard.events import (
    EndpointChanged,
    HandshakeCompleted,
    HandshakeGaveUp,
    KeysZeroed,
    PeerEvent,
)

EPOCH = 1_700_000_000.0
MESH_ID = bytes(range(16))
PORT = 51820
REKEY_TIMEOUT = 5.0
REKEY_ATTEMPT_TIME = 90.0
# traversal=True only: WireGuard's session timers
REKEY_AFTER_TIME = 120.0
REJECT_AFTER_TIME = 180.0
ZERO_AFTER = 3 * REJECT_AFTER_TIME
STALE_AFTER = 15.0  # KEEPALIVE_TIMEOUT + REKEY_TIMEOUT: data sent, nothing back
RELAY_ROLES = frozenset({"rendezvous", "relay"})

HostPort = tuple[str, int]
Target = HostPort | Relay


def endpoint(hp: HostPort) -> Endpoint:
    host, port = hp
    return Endpoint((host, port, 0, 0) if ":" in host else (host, port))


def device_endpoint(target: Target, peer: bytes) -> Endpoint:
    """A device endpoint for `peer`: an address, or `peer` through a relay member."""
    if isinstance(target, Relay):
        return Endpoint.relayed(target.key, peer)
    return endpoint(target)


@dataclass(eq=False)
class Mapping:
    """One NAT mapping: a node socket's public port, and the remotes it sent to."""

    inside: HostPort
    port: int
    remotes: dict[HostPort, float] = field(default_factory=dict)  # remote -> last packet


@dataclass(eq=False)
class Nat:
    """A modelled NAT (traversal=True): `kind` "easy" (endpoint-independent
    mapping) or "hard" (endpoint-dependent: a new random port per
    destination); both with an address-and-port-dependent stateful filter.
    `timeout` (None: never) forgets a remote's permission idle that long."""

    name: str
    kind: str
    ip: str
    lan: str  # the LAN's first three octets, e.g. "192.168.3"
    timeout: float | None = None
    inside: dict[HostPort, SimNode] = field(default_factory=dict)  # LAN address -> node
    hosts: int = 0
    _out: dict[tuple[HostPort, HostPort | None], Mapping] = field(default_factory=dict)
    _ports: dict[int, Mapping] = field(default_factory=dict)
    dropped: int = 0  # inbound packets the filter refused

    def __repr__(self) -> str:
        return f"Nat({self.name}, {self.kind}, {self.ip})"

    @property
    def mapping_kind(self) -> str:
        """What a netcheck reports of it."""
        return "endpoint-independent" if self.kind == "easy" else "endpoint-dependent"

    def assign(self) -> HostPort:
        self.hosts += 1
        return (f"{self.lan}.{self.hosts + 1}", PORT)

    def outbound(
        self, inside: HostPort, remote: HostPort, now: float, rng: random.Random
    ) -> HostPort:
        key = (inside, None if self.kind == "easy" else remote)
        mapping = self._out.get(key)
        if mapping is None:
            port = rng.randrange(1024, 65536)
            while port in self._ports:
                port = rng.randrange(1024, 65536)
            mapping = self._out[key] = self._ports[port] = Mapping(inside, port)
        mapping.remotes[remote] = now
        return (self.ip, mapping.port)

    def inbound(self, port: int, source: HostPort, now: float) -> HostPort | None:
        """The LAN address a packet to public `port` from `source` goes to, or None."""
        mapping = self._ports.get(port)
        seen = None if mapping is None else mapping.remotes.get(source)
        if seen is None or (self.timeout is not None and now - seen > self.timeout):
            self.dropped += 1
            return None
        mapping.remotes[source] = now  # type: ignore[union-attr]
        return mapping.inside  # type: ignore[union-attr]

    def mapped(self, inside: HostPort) -> list[HostPort]:
        """The public addresses this NAT holds for a node's socket now."""
        return [(self.ip, m.port) for (i, _), m in self._out.items() if i == inside]

    def flush(self) -> None:
        self._out.clear()
        self._ports.clear()


@dataclass(eq=False)
class SimNode:
    name: str
    key: bytes
    addresses: list[HostPort]
    agent: MeshAgent | None = None
    joiner: Joiner | None = None
    online: bool = True
    peers: dict[bytes, ConfigurePeer | None] = field(default_factory=dict)
    endpoints: dict[bytes, HostPort] = field(default_factory=dict)
    sessions: set[bytes] = field(default_factory=set)
    waiting: dict[bytes, list[bytes]] = field(default_factory=dict)  # key -> payloads
    attempt_since: dict[bytes, float] = field(default_factory=dict)
    log: list[Any] = field(default_factory=list)
    saved: bytes | None = None
    timer_at: float | None = None
    timer_token: int = 0
    # traversal=True only
    nat: Nat | None = None
    session_at: dict[bytes, float] = field(default_factory=dict)  # key -> last handshake
    stale: set[bytes] = field(default_factory=set)  # sessions whose packets got lost
    keepalive: dict[bytes, int] = field(default_factory=dict)  # key -> persistent keepalive
    netcheck_token: int = 0

    def __repr__(self) -> str:
        return f"SimNode({self.name})"


class MemNet:
    def __init__(
        self,
        seed: int | None = None,
        latency: float = 0.01,
        lite: bool = False,
        params: AgentParams | None = None,
        traversal: bool = False,
        report_nat: bool = True,
        netcheck_every: tuple[float, float] | None = (20.0, 26.0),
    ) -> None:
        self.now = EPOCH
        # MEMNET_SEED=n runs the same scenarios with other random choices
        self.rng = random.Random(int(os.environ.get("MEMNET_SEED", "1")) if seed is None else seed)
        self.latency = latency
        self.lite = lite
        self.params = params or AgentParams()
        self.nodes: dict[bytes, SimNode] = {}
        self.by_name: dict[str, SimNode] = {}
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self.bytes_sent: Counter[bytes] = Counter()
        self.types_sent: Counter[int] = Counter()
        self.lost: Counter[str] = Counter()
        self.observers: list[Callable[[SimNode, MeshEvent], None]] = []
        # called with every device event the model gives a node (before its agent sees it)
        self.device_observers: list[Callable[[SimNode, PeerEvent], None]] = []
        self.authority: Authority | None = None
        # traversal=True: NATs, probes, relays (see the module's docstring)
        self.traversal = traversal
        self.report_nat = report_nat
        self.netcheck_every = netcheck_every
        self.private_keys: dict[bytes, bytes] = {}  # public -> private
        self.nats: list[Nat] = []
        self._nat_ips: dict[str, Nat] = {}
        self._public: dict[HostPort, SimNode] = {}
        self.stun_server: HostPort | None = None
        self.datagrams_sent: Counter[bytes] = Counter()  # probes, by sender
        self.relayed: Counter[bytes] = Counter()  # packets carried, by relay

    # ------------------------------------------------------------ building the mesh

    def _new_key(self) -> bytes:
        if not self.traversal:
            return self.rng.randbytes(32)
        private = wgkeys.clamp(self.rng.randbytes(32))
        public = wgkeys.public_key(private)
        self.private_keys[public] = private
        return public

    def _address(self, index: int | None = None, nat: Nat | None = None) -> HostPort:
        if nat is not None:
            return nat.assign()
        n = len(self.nodes) + 1 if index is None else index
        if self.traversal:  # public, one /24 each (not "the same subnet" as another's)
            return (f"198.{18 + n // 65536 % 2}.{n // 256 % 256}.{n % 256}", PORT)
        return (f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}", PORT)

    def _agent(self, state: MeshState, candidates: list[HostPort] | None = None) -> MeshAgent:
        rng = random.Random(self.rng.random())
        return MeshAgent(
            state,
            self.now,
            rng=rng,
            params=self.params,
            candidates=candidates,
            private_key=self.private_keys.get(state.public_key),
        )

    def _add(self, node: SimNode) -> SimNode:
        self.nodes[node.key] = node
        self.by_name[node.name] = node
        self._place(node)
        return node

    def _place(self, node: SimNode) -> None:
        """Put the node's socket on the modelled network."""
        if node.nat is not None:
            node.nat.inside[node.addresses[0]] = node
        else:
            for address in node.addresses:
                self._public[address] = node

    def _unplace(self, node: SimNode) -> None:
        table = node.nat.inside if node.nat is not None else self._public
        for address in node.addresses:
            if table.get(address) is node:
                del table[address]

    def nat(self, kind: str = "easy", name: str | None = None, lan: str | None = None,
            timeout: float | None = None) -> Nat:  # fmt: skip
        """A NAT (traversal=True) to put nodes behind: "easy" or "hard"."""
        assert kind in ("easy", "hard"), kind
        n = len(self.nats) + 1
        nat = Nat(name or f"nat{n}", kind, f"198.19.{n % 256}.{1 + n // 256}",
                  lan or f"192.168.{n % 256}", timeout)  # fmt: skip
        self.nats.append(nat)
        self._nat_ips[nat.ip] = nat
        return nat

    def found(self, name: str = "admin", roles: frozenset[str] = frozenset({"admin"}),
              nat: Nat | None = None) -> SimNode:  # fmt: skip
        self.authority = Authority.from_private_bytes(self.rng.randbytes(32))
        node = SimNode(name, self._new_key(), [self._address(nat=nat)], nat=nat)
        state = found_mesh(
            mesh_id=MESH_ID,
            mesh_name="testmesh",
            member_name=name,
            public_key=node.key,
            authority=self.authority,
            now=self.now,
            roles=roles,
        )
        node.agent = self._agent(state)
        node.agent.set_local_candidates(node.addresses, self.now)
        self._add(node)
        if self.traversal and nat is None and self.stun_server is None:
            self.stun_server = node.addresses[0]
        self._start_netcheck(node)
        self.pump(node)
        return node

    def invite(self, admin: SimNode, name: str | None = None, **kwargs: Any) -> Invite:
        assert admin.agent is not None
        invite = admin.agent.create_invite(
            self.now, kwargs.pop("lifetime", 3600), name, secret=self.rng.randbytes(32), **kwargs
        )
        self.pump(admin)
        return invite

    def start_join(
        self,
        invite: Invite,
        name: str,
        request_name: str | None = None,
        address: HostPort | None = None,
        key: bytes | None = None,
        nat: Nat | None = None,
    ) -> SimNode:
        """A joiner node running the invite's temporary interface (behind `nat`)."""
        parsed = parse_invite(invite.to_text(), int(self.now))
        real_key = key or self._new_key()
        joiner = Joiner(parsed, real_key, name=request_name)
        temp = joiner.temp_interface()
        node = SimNode(
            f"{name}~join", temp.public_key, [address or self._address(nat=nat)], nat=nat
        )
        node.joiner = joiner
        for peer in temp.peers:
            self._configure(node, peer)
        self.nodes[node.key] = node
        self._place(node)
        joiner.start(self.now)
        self.pump(node)
        return node

    def finish_join(self, temp: SimNode, name: str) -> SimNode:
        """The member node a joined joiner becomes (its temp interface goes away)."""
        joiner = temp.joiner
        assert joiner is not None and joiner.state is JoinState.JOINED and joiner.result
        self.drop_node(temp)
        node = SimNode(name, joiner.public_key, temp.addresses, nat=temp.nat)
        node.agent = self._agent(joiner.result.state, node.addresses)
        self._add(node)
        self._start_netcheck(node)
        self.pump(node)
        return node

    def join(self, admin: SimNode, name: str, timeout: float = 30.0, **kwargs: Any) -> SimNode:
        invite = self.invite(admin, name)
        temp = self.start_join(invite, name, **kwargs)
        self.run_until(lambda: temp.joiner.state in (JoinState.JOINED, JoinState.FAILED), timeout)
        assert temp.joiner.state is JoinState.JOINED, temp.joiner.failure
        return self.finish_join(temp, name)

    def drop_node(self, node: SimNode) -> None:
        self.nodes.pop(node.key, None)
        self._unplace(node)
        for other in self.nodes.values():
            other.sessions.discard(node.key)

    # ------------------------------------------------------------ offline and back

    def offline(self, node: SimNode) -> None:
        assert node.agent is not None
        node.saved = node.agent.to_state().encode()
        node.agent = None
        node.online = False
        node.peers.clear()
        node.endpoints.clear()
        node.sessions.clear()
        node.waiting.clear()
        node.attempt_since.clear()
        node.session_at.clear()
        node.stale.clear()
        node.keepalive.clear()
        node.netcheck_token += 1
        node.timer_at = None
        node.timer_token += 1
        for other in self.nodes.values():
            other.sessions.discard(node.key)

    def online(self, node: SimNode) -> None:
        assert node.saved is not None and not node.online
        node.online = True
        node.agent = self._agent(MeshState.decode(node.saved, self.now), node.addresses)
        self._start_netcheck(node)
        self.pump(node)

    # ------------------------------------------------------------ the event loop

    def at(self, when: float, action: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._heap, (max(when, self.now), next(self._seq), action, args))

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while self._heap and self._heap[0][0] <= end:
            when, _, action, args = heapq.heappop(self._heap)
            self.now = max(self.now, when)
            action(*args)
        self.now = end

    def run_until(self, done: Callable[[], bool], limit: float, step: float = 0.05) -> float:
        """Run until `done()` (checked every `step`); returns the simulated time it took."""
        start = self.now
        while not done():
            if self.now - start > limit:
                raise AssertionError(f"not done after {limit} simulated seconds")
            self.run(step)
        return self.now - start

    # ------------------------------------------------------------ agents' output

    def pump(self, node: SimNode) -> None:
        driver = node.agent or node.joiner
        if driver is None or not node.online:
            return
        # as the glue must: configuration first, so messages to new peers can go
        for change in driver.config_changes():
            if isinstance(change, RemovePeer):
                node.peers.pop(change.public_key, None)
                node.endpoints.pop(change.public_key, None)
                node.sessions.discard(change.public_key)
                node.waiting.pop(change.public_key, None)
            else:
                self._configure(node, change)
        for key, payload in driver.messages_to_send():
            self.bytes_sent[node.key] += len(payload)
            self.types_sent[payload[2]] += 1
            self._send(node, key, payload)
        if node.agent is not None:
            for destination, datagram in node.agent.datagrams_to_send():
                self._datagram_out(node, destination, datagram)
        while (event := driver.next_event()) is not None:
            if not self.lite:
                node.log.append(event)  # MeshEvents, and a joiner's JoinProgress
            if isinstance(event, MeshEvent):
                for observer in self.observers:
                    observer(node, event)
        deadline = driver.get_timer()
        if deadline != node.timer_at:
            node.timer_at = deadline
            node.timer_token += 1
            if deadline is not None:
                self.at(deadline, self._timer, node, node.timer_token)

    def _configure(self, node: SimNode, change: ConfigurePeer) -> None:
        node.peers[change.public_key] = None if self.lite else change
        if change.endpoint is not None:
            node.endpoints[change.public_key] = change.endpoint
        if self.traversal:
            key, interval = change.public_key, change.persistent_keepalive
            if interval and key not in node.keepalive:  # no chain running for it
                self.at(self.now + interval, self._keepalive, node, key, node.netcheck_token)
            if interval or key in node.keepalive:
                node.keepalive[key] = interval  # 0: the chain stops at its next tick

    def _timer(self, node: SimNode, token: int) -> None:
        if token != node.timer_token or not node.online:
            return
        node.timer_at = None
        driver = node.agent or node.joiner
        assert driver is not None
        driver.handle_timer(self.now)
        self.pump(node)

    def _event(self, node: SimNode, event: PeerEvent) -> None:
        driver = node.agent or node.joiner
        if driver is None or not node.online:
            return
        for observer in self.device_observers:
            observer(node, event)
        driver.handle_device_event(event, self.now)
        self.pump(node)

    # ------------------------------------------------------------ the device model

    def _send(self, src: SimNode, key: bytes, payload: bytes) -> None:
        if key not in src.peers:
            self.lost["no_peer"] += 1
            return
        if self.traversal and key in src.sessions:
            age = self.now - src.session_at.get(key, self.now)
            if age < REJECT_AFTER_TIME:
                self._transmit(src, key, payload)
                if age >= REKEY_AFTER_TIME and key not in src.attempt_since:
                    src.attempt_since[key] = self.now  # rekey; the old session still carries
                    self._handshake(src, key)
                return
        elif key in src.sessions:
            self.at(self.now + self.latency, self._deliver, src.key, key, payload)
            return
        if key not in src.endpoints:
            self.lost["no_endpoint"] += 1
            return
        queue = src.waiting.setdefault(key, [])
        queue.append(payload)
        if key not in src.attempt_since:
            src.attempt_since[key] = self.now
            self._handshake(src, key)

    def _handshake(self, src: SimNode, key: bytes) -> None:
        if key not in src.attempt_since or not src.online:
            return
        dst = self.nodes.get(key)
        target = src.endpoints.get(key)
        if self.traversal:
            seen = None
            if dst is not None and dst.online and src.key in dst.peers and key in src.peers:
                seen = self._carry(src, dst, target)  # the initiation
            if seen is not None and self._carry(dst, src, seen) is not None:  # the response
                self.at(self.now + 2 * self.latency, self._established, src, dst, target, seen)
                return
        elif (
            dst is not None
            and dst.online
            and target in dst.addresses
            and src.key in dst.peers
            and key in src.peers
        ):
            self.at(self.now + 2 * self.latency, self._established, src, dst, target)
        if self.now - src.attempt_since[key] >= REKEY_ATTEMPT_TIME:
            del src.attempt_since[key]
            self.lost["gave_up"] += len(src.waiting.pop(key, []))
            if self.traversal:
                src.sessions.discard(key)
                src.session_at.pop(key, None)
            self.at(self.now, self._event, src, HandshakeGaveUp(key))
        else:
            jitter = self.rng.uniform(0, 1 / 3)  # as WireGuard's REKEY_TIMEOUT_JITTER_MAX
            self.at(self.now + REKEY_TIMEOUT + jitter, self._handshake, src, key)

    def _established(self, src: SimNode, dst: SimNode, target: Target,
                     seen: Target | None = None) -> None:  # fmt: skip
        src.attempt_since.pop(dst.key, None)
        if not (src.online and dst.online and dst.key in src.peers and src.key in dst.peers):
            return
        if self.traversal:
            assert seen is not None
            return self._established_traversal(src, dst, target, seen)
        src.sessions.add(dst.key)
        dst.sessions.add(src.key)
        source = src.addresses[0]
        old = dst.endpoints.get(src.key)
        dst.endpoints[src.key] = source
        self._event(src, HandshakeCompleted(dst.key, endpoint(target), True))
        if old is not None and old != source:
            self._event(
                dst, EndpointChanged(src.key, device_endpoint(old, src.key), endpoint(source))
            )
        self._event(dst, HandshakeCompleted(src.key, endpoint(source), False))
        for payload in src.waiting.pop(dst.key, []):
            self.at(self.now + self.latency, self._deliver, src.key, dst.key, payload)

    def _deliver(self, src_key: bytes, dst_key: bytes, payload: bytes) -> None:
        dst = self.nodes.get(dst_key)
        if dst is None or not dst.online or src_key not in dst.peers:
            self.lost["refused"] += 1
            return
        driver = dst.agent or dst.joiner
        assert driver is not None
        driver.handle_message(src_key, payload, self.now)
        self.pump(dst)

    # ------------------------------------------------------------ traversal=True: the network

    def _route(self, src: SimNode, to: HostPort) -> tuple[SimNode, HostPort] | None:
        """Send one UDP datagram from the node's socket to `to` through the NATs:
        (the node whose socket receives it, the source address it sees), or None."""
        local = src.addresses[0]
        nat = src.nat
        if nat is not None:
            neighbour = nat.inside.get(to)
            if neighbour is not None:  # the same LAN
                return (neighbour, local) if neighbour.online else None
            if to[0] == nat.ip:
                self.lost["hairpin"] += 1
                return None
            source = nat.outbound(local, to, self.now, self.rng)
        else:
            source = local
        node = self._public.get(to)
        if node is None:
            far = self._nat_ips.get(to[0])
            inside = far.inbound(to[1], source, self.now) if far is not None else None
            node = far.inside.get(inside) if far is not None and inside is not None else None
        if node is None or not node.online:
            return None
        return node, source

    def relays(self, node: SimNode) -> bool:
        """Whether the node relays for others: a relay role, policy not never."""
        agent = node.agent
        if agent is None or not node.online or agent.params.relay == "never":
            return False
        record = agent.roster.member(node.key)
        return record is not None and bool(RELAY_ROLES & record.roles)

    def _carry(self, src: SimNode, dst: SimNode, target: Target | None,
               roam: bool = False) -> Target | None:  # fmt: skip
        """A WireGuard packet from `src` for `dst` sent to `target`: where `dst`
        sees it come from (an address, or Relay(R) for relayed(R, src)), or None.
        With `roam`, the relay's endpoint for `src` follows the frame's source."""
        if target is None or not dst.online:
            return None
        if not isinstance(target, Relay):
            hop = self._route(src, target)
            return hop[1] if hop is not None and hop[0] is dst else None
        relay = self.nodes.get(target.key)
        if relay is None or relay is src or relay is dst or not self.relays(relay):
            return None
        if src.key not in relay.peers or dst.key not in relay.peers:
            return None
        first, second = src.endpoints.get(relay.key), relay.endpoints.get(dst.key)
        if first is None or isinstance(first, Relay) or second is None or isinstance(second, Relay):
            return None
        hop = self._route(src, first)
        if hop is None or hop[0] is not relay:
            return None
        if roam and src.key in relay.sessions:
            self.at(self.now + self.latency, self._roam, relay, src.key, hop[1])
        hop = self._route(relay, second)
        if hop is None or hop[0] is not dst:
            return None
        self.relayed[relay.key] += 1
        return Relay(relay.key)

    def _roam(self, node: SimNode, key: bytes, seen: Target) -> None:
        """An authenticated packet from `key` came from `seen`: WireGuard roams."""
        if not node.online or key not in node.peers:
            return
        old = node.endpoints.get(key)
        if old == seen:
            return
        node.endpoints[key] = seen
        old_ep = None if old is None else device_endpoint(old, key)
        self._event(node, EndpointChanged(key, old_ep, device_endpoint(seen, key)))

    def _transmit(self, src: SimNode, key: bytes, payload: bytes | None) -> None:
        """A packet of an existing session (None: a keepalive)."""
        dst = self.nodes.get(key)
        seen = None if dst is None else self._carry(src, dst, src.endpoints.get(key), roam=True)
        if dst is None or seen is None:
            self.lost["unroutable"] += 1
            if key not in src.stale:
                src.stale.add(key)
                self.at(self.now + STALE_AFTER, self._stale, src, key)
            return
        delay = self.latency * (2 if isinstance(seen, Relay) else 1)
        self.at(self.now + delay, self._arrive, src.key, key, seen, payload)

    def _arrive(self, src_key: bytes, dst_key: bytes, seen: Target, payload: bytes | None) -> None:
        dst = self.nodes.get(dst_key)
        if dst is None or not dst.online or src_key not in dst.peers or src_key not in dst.sessions:
            self.lost["refused"] += 1
            return
        self._roam(dst, src_key, seen)
        if payload is None:
            return
        driver = dst.agent or dst.joiner
        assert driver is not None
        driver.handle_message(src_key, payload, self.now)
        self.pump(dst)

    def _stale(self, src: SimNode, key: bytes) -> None:
        """Data went out 15 s ago and nothing came back: a new handshake, unless
        the path works again by now (a keepalive would have come back)."""
        src.stale.discard(key)
        dst = self.nodes.get(key)
        if not src.online or key not in src.sessions or key in src.attempt_since or dst is None:
            return
        target = src.endpoints.get(key)
        seen = self._carry(src, dst, target)
        if seen is not None and self._carry(dst, src, seen) is not None:
            return
        src.attempt_since[key] = self.now
        self._handshake(src, key)

    def _established_traversal(self, src: SimNode, dst: SimNode, target: Target,
                               seen: Target) -> None:  # fmt: skip
        for a, b in ((src, dst), (dst, src)):
            a.sessions.add(b.key)
            a.session_at[b.key] = self.now
            self.at(self.now + ZERO_AFTER, self._zero, a, b.key, self.now)
        old = dst.endpoints.get(src.key)
        dst.endpoints[src.key] = seen
        self._event(src, HandshakeCompleted(dst.key, device_endpoint(target, dst.key), True))
        if old is not None and old != seen:
            old_ep = device_endpoint(old, src.key)
            self._event(dst, EndpointChanged(src.key, old_ep, device_endpoint(seen, src.key)))
        self._event(dst, HandshakeCompleted(src.key, device_endpoint(seen, src.key), False))
        for payload in src.waiting.pop(dst.key, []):
            self._transmit(src, dst.key, payload)

    def _zero(self, node: SimNode, key: bytes, stamp: float) -> None:
        if node.session_at.get(key) != stamp or key not in node.sessions:
            return
        node.sessions.discard(key)
        del node.session_at[key]
        self._event(node, KeysZeroed(key))

    def _keepalive(self, node: SimNode, key: bytes, token: int) -> None:
        if token != node.netcheck_token or not node.online:
            return
        interval = node.keepalive.get(key)
        if not interval or key not in node.peers:
            node.keepalive.pop(key, None)
            return
        if (
            key in node.sessions
            and self.now - node.session_at.get(key, self.now) < REJECT_AFTER_TIME
        ):
            self._transmit(node, key, None)
        elif key not in node.attempt_since and key in node.endpoints:
            node.attempt_since[key] = self.now
            self._handshake(node, key)
        self.at(self.now + interval, self._keepalive, node, key, token)

    def _datagram_out(self, src: SimNode, to: HostPort, datagram: bytes) -> None:
        self.datagrams_sent[src.key] += 1
        hop = self._route(src, to) if self.traversal else None
        if hop is None:
            self.lost["datagram"] += 1
            return
        self.at(self.now + self.latency, self._datagram_in, hop[0], hop[1], datagram)

    def _datagram_in(self, node: SimNode, source: HostPort, datagram: bytes) -> None:
        if not node.online or node.agent is None:
            return
        node.agent.handle_datagram(source, datagram, self.now)
        self.pump(node)

    # ------------------------------------------------------------ traversal=True: netcheck, NATs

    def _start_netcheck(self, node: SimNode) -> None:
        if not self.traversal or node.agent is None:
            return
        node.netcheck_token += 1
        for key, interval in list(node.keepalive.items()):  # restarted chains (back online)
            self.at(self.now + interval, self._keepalive, node, key, node.netcheck_token)
        self.netcheck(node)
        if self.netcheck_every is not None:
            self._netcheck_later(node, node.netcheck_token)

    def _netcheck_later(self, node: SimNode, token: int) -> None:
        assert self.netcheck_every is not None
        self.at(self.now + self.rng.uniform(*self.netcheck_every), self._netcheck_tick, node, token)

    def _netcheck_tick(self, node: SimNode, token: int) -> None:
        if token != node.netcheck_token or not node.online:
            return
        self.netcheck(node)
        self._netcheck_later(node, token)

    def netcheck(self, node: SimNode) -> HostPort | None:
        """STUN to `stun_server` through the node's NAT: its mapping becomes a
        reflexive candidate, and the NAT kind goes to `set_nat`. Returns the mapping."""
        agent = node.agent
        if agent is None or not node.online:
            return None
        local = node.addresses[0]
        mapped: HostPort | None = local
        kind = "endpoint-independent"
        if node.nat is not None:
            kind = node.nat.mapping_kind
            server = self.stun_server
            mapped = (
                None if server is None else node.nat.outbound(local, server, self.now, self.rng)
            )
        reflexive = [mapped] if mapped is not None and mapped != local else []
        agent.set_local_candidates(node.addresses, self.now, reflexive)
        if self.report_nat:
            agent.reach.set_nat(kind, self.now)
        self.pump(node)
        return mapped

    def flush(self, nat: Nat) -> None:
        """conntrack -F: every mapping and permission of the NAT is gone."""
        nat.flush()

    def renumber(self, nat: Nat, ip: str | None = None) -> str:
        """The NAT's public address changes (its mappings go with the old one)."""
        del self._nat_ips[nat.ip]
        n = len(self.nats) + len(self._nat_ips) + 100
        nat.ip = ip or f"198.19.{n % 256}.{1 + n // 256}"
        assert nat.ip not in self._nat_ips
        self._nat_ips[nat.ip] = nat
        nat.flush()
        return nat.ip

    # ------------------------------------------------------------ test helpers

    def talk(self, src: SimNode, dst: SimNode) -> None:
        """A coordination message (a HELLO call, which is answered) from src to dst."""
        assert src.agent is not None
        src.agent.send(dst.key, src.agent.hello(HelloKind.CALL), self.now)
        self.pump(src)

    def status(self, node: SimNode, of: SimNode) -> MemberStatus:
        """What `meshnode status` on `node` shows of member `of`."""
        assert node.agent is not None
        for member in node.agent.status(self.now).members:
            if member.public_key == of.key:
                return member
        raise KeyError(of.name)

    def members(self) -> list[SimNode]:
        """Member nodes, online or not (not joiners' temporary nodes)."""
        return [n for n in self.nodes.values() if n.joiner is None]

    def inject(self, dst: SimNode, src_key: bytes, payload: bytes) -> None:
        """A coordination message as if `src_key` had sent it through WireGuard."""
        assert dst.agent is not None
        dst.agent.handle_message(src_key, payload, self.now)
        self.pump(dst)
