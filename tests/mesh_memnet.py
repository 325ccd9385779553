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
from meshnode.mesh.peerconfig import ConfigurePeer, RemovePeer
from meshnode.mesh.state import MeshState, found_mesh
from meshnode.wireguard.endpoint import Endpoint
from meshnode.wireguard.events import (
    EndpointChanged,
    HandshakeCompleted,
    HandshakeGaveUp,
    PeerEvent,
)

EPOCH = 1_700_000_000.0
MESH_ID = bytes(range(16))
PORT = 51820
REKEY_TIMEOUT = 5.0
REKEY_ATTEMPT_TIME = 90.0

HostPort = tuple[str, int]


def endpoint(hp: HostPort) -> Endpoint:
    host, port = hp
    return Endpoint((host, port, 0, 0) if ":" in host else (host, port))


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

    def __repr__(self) -> str:
        return f"SimNode({self.name})"


class MemNet:
    def __init__(
        self,
        seed: int | None = None,
        latency: float = 0.01,
        lite: bool = False,
        params: AgentParams | None = None,
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
        self.authority: Authority | None = None

    # ------------------------------------------------------------ building the mesh

    def _new_key(self) -> bytes:
        return self.rng.randbytes(32)

    def _address(self, index: int | None = None) -> HostPort:
        n = len(self.nodes) + 1 if index is None else index
        return (f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}", PORT)

    def _agent(self, state: MeshState, candidates: list[HostPort] | None = None) -> MeshAgent:
        rng = random.Random(self.rng.random())
        return MeshAgent(state, self.now, rng=rng, params=self.params, candidates=candidates)

    def _add(self, node: SimNode) -> SimNode:
        self.nodes[node.key] = node
        self.by_name[node.name] = node
        return node

    def found(self, name: str = "admin", roles: frozenset[str] = frozenset({"admin"})) -> SimNode:
        self.authority = Authority.from_private_bytes(self.rng.randbytes(32))
        node = SimNode(name, self._new_key(), [self._address()])
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
    ) -> SimNode:
        """A joiner node running the invite's temporary interface."""
        parsed = parse_invite(invite.to_text(), int(self.now))
        real_key = key or self._new_key()
        joiner = Joiner(parsed, real_key, name=request_name)
        temp = joiner.temp_interface()
        node = SimNode(f"{name}~join", temp.public_key, [address or self._address()])
        node.joiner = joiner
        for peer in temp.peers:
            self._configure(node, peer)
        self.nodes[node.key] = node
        joiner.start(self.now)
        self.pump(node)
        return node

    def finish_join(self, temp: SimNode, name: str) -> SimNode:
        """The member node a joined joiner becomes (its temp interface goes away)."""
        joiner = temp.joiner
        assert joiner is not None and joiner.state is JoinState.JOINED and joiner.result
        self.drop_node(temp)
        node = SimNode(name, joiner.public_key, temp.addresses)
        node.agent = self._agent(joiner.result.state, node.addresses)
        self._add(node)
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
        node.timer_at = None
        node.timer_token += 1
        for other in self.nodes.values():
            other.sessions.discard(node.key)

    def online(self, node: SimNode) -> None:
        assert node.saved is not None and not node.online
        node.online = True
        node.agent = self._agent(MeshState.decode(node.saved, self.now), node.addresses)
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
        driver.handle_device_event(event, self.now)
        self.pump(node)

    # ------------------------------------------------------------ the device model

    def _send(self, src: SimNode, key: bytes, payload: bytes) -> None:
        if key not in src.peers:
            self.lost["no_peer"] += 1
            return
        if key in src.sessions:
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
        if (
            dst is not None
            and dst.online
            and target in dst.addresses
            and src.key in dst.peers
            and key in src.peers
        ):
            self.at(self.now + 2 * self.latency, self._established, src, dst, target)
        elif self.now - src.attempt_since[key] >= REKEY_ATTEMPT_TIME:
            del src.attempt_since[key]
            self.lost["gave_up"] += len(src.waiting.pop(key, []))
            self.at(self.now, self._event, src, HandshakeGaveUp(key))
        else:
            jitter = self.rng.uniform(0, 1 / 3)  # as WireGuard's REKEY_TIMEOUT_JITTER_MAX
            self.at(self.now + REKEY_TIMEOUT + jitter, self._handshake, src, key)

    def _established(self, src: SimNode, dst: SimNode, target: HostPort) -> None:
        src.attempt_since.pop(dst.key, None)
        if not (src.online and dst.online and dst.key in src.peers and src.key in dst.peers):
            return
        src.sessions.add(dst.key)
        dst.sessions.add(src.key)
        source = src.addresses[0]
        old = dst.endpoints.get(src.key)
        dst.endpoints[src.key] = source
        self._event(src, HandshakeCompleted(dst.key, endpoint(target), True))
        if old is not None and old != source:
            self._event(dst, EndpointChanged(src.key, endpoint(old), endpoint(source)))
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

    # ------------------------------------------------------------ test helpers

    def members(self) -> list[SimNode]:
        """Member nodes, online or not (not joiners' temporary nodes)."""
        return [n for n in self.nodes.values() if n.joiner is None]

    def inject(self, dst: SimNode, src_key: bytes, payload: bytes) -> None:
        """A coordination message as if `src_key` had sent it through WireGuard."""
        assert dst.agent is not None
        dst.agent.handle_message(src_key, payload, self.now)
        self.pump(dst)
