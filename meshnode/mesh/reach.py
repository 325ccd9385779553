"""How this node reaches every other member: published candidates and per-peer paths.

The agent's part that owns `directory` (what each member published) and
`paths` (what this node tried and what worked), and speaks PEERS_REQUEST
and PEERS:

- each member publishes its own candidates in every HELLO; news of changed
  candidates (a first-hand HELLO, or a PEERS entry with a higher version) is
  spread as a rumour (PEERS with `spread`) that every receiver forwards once;
- members whose candidates this node lacks, or whose candidates all failed,
  are asked about (PEERS_REQUEST, at most MAX_KEYS per round) from the
  member it syncs with or the round's HELLO target;
- a member's device endpoint is its path's target (paths.py): a direct
  address that answered, else the relay, else the candidate being tried; a
  path object exists only for members this node talked to or heard of in
  device events, so a large mesh costs little for members it never talks to;
- paths probe candidates with authenticated pings (probe.py) on the
  WireGuard socket; a burst of probes comes with a PUNCH to the member, which
  probes back at the same moment, so both NATs open towards each other;
- the relay is the rendezvous member with the best working direct path (not
  the member itself); a member's whose relay policy is "never" uses none.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Protocol

from meshnode.wireguard.endpoint import Endpoint
from meshnode.wireguard.events import (
    EndpointChanged,
    HandshakeCompleted,
    HandshakeGaveUp,
    KeysZeroed,
    PeerEvent,
)

from . import events as ev
from .directory import Directory
from .gossip import Membership
from .messages import (
    MAX_KEYS,
    Candidate,
    Hello,
    Message,
    PeerEntry,
    Peers,
    PeersRequest,
    Punch,
    chunk_keys,
    chunk_peers,
    fit_candidates,
)
from .paths import CLEAR_GAIN, HostPort, LocalNetworks, Path, PathUpdate, Relay, Target
from .peerconfig import ConfigurePeer, PeerChange, member_networks
from .probe import PING, PONG, ProbeCodec, ProbeError
from .roster import Roster

BULK_KEYS = 1024  # asked at once after a sync (a new member asks about everyone)


class ReachHost(Protocol):
    roster: Roster
    members: Membership
    public_key: bytes

    def send(self, key: bytes, message: Message, now: float) -> None: ...
    def send_datagram(self, destination: HostPort, datagram: bytes) -> None: ...
    def configure(self, change: PeerChange) -> None: ...
    def emit(self, event: ev.MeshEvent) -> None: ...


def target(endpoint: Endpoint | None) -> Target | None:
    """A device endpoint as a path target: a relay, or (host, port)."""
    if endpoint is None:
        return None
    if endpoint.via is not None:
        return Relay(endpoint.via)
    return (endpoint.sockaddr[0], endpoint.sockaddr[1])


RELAY_ROLES = frozenset({"rendezvous", "relay"})
PROBE_TIMEOUT = 10.0  # a ping's answer later than this is not matched
MAX_OUTSTANDING = 4096
MAX_SEEN_PINGS = 4096  # ping ids answered lately: a replayed ping is not answered again


class Reach:
    def __init__(
        self,
        host: ReachHost,
        directory: Directory,
        candidates: tuple[Candidate, ...],
        seq: int,
        rng: random.Random,
        *,
        keepalive: int,
        retry: float,
        fanout: int,
        codec: ProbeCodec | None = None,
        relay_policy: str = "auto",
    ) -> None:
        self.host = host
        self.directory = directory
        self.candidates, self.seq = candidates, seq
        self.local = LocalNetworks.of(candidates)
        self.rng = rng
        self.keepalive, self.retry, self.fanout = keepalive, retry, fanout
        self.paths: dict[bytes, Path] = {}
        self._deadlines: dict[bytes, float] = {}
        self._asked: dict[bytes, float] = {}
        self._refresh: set[bytes] = set()
        self._missing: set[bytes] = set()  # live members without published candidates
        self._due: float | None = None
        self._source: bytes | None = None
        self._announce_at: float | None = None
        self._announced = False
        self.codec = codec  # None: no probes (no private key: in-memory tests of gossip)
        self.relay_policy = relay_policy  # auto, never (direct only), only (relayed only)
        self.relay: bytes | None = None  # the relay member paths fall back to
        self.nat = "unknown"  # this node's mapping behaviour, from its netcheck
        self.peer_nat: dict[bytes, str] = {}  # members' own, from their PUNCH
        self._pings: dict[bytes, tuple[bytes, HostPort, float]] = {}  # txid -> key, to, sent
        self._seen_pings: set[bytes] = set()
        self.probe_stats: Counter[str] = Counter()

    # ------------------------------------------------------------ configuration

    def configure(self, key: bytes, now: float) -> None:
        """Queue the member's whole peer configuration (after any change to it)."""
        record = self.host.roster.member(key)
        assert record is not None
        if not self._known(key):
            self._missing.add(key)
        path = self.paths.get(key)
        if path is not None:
            endpoint = path.device
        else:
            relay = self.relay_for(key)
            ordered = self._ordered(key)
            endpoint = Relay(relay) if relay else (ordered[0] if ordered else None)
        keepalive = self.keepalive if "rendezvous" in record.roles else 0
        self.host.configure(ConfigurePeer(key, member_networks(record), endpoint, keepalive))

    # ------------------------------------------------------------ relays

    def relay_for(self, key: bytes) -> bytes | None:
        """The relay a path to `key` may fall back to: none to a relay member
        itself (it is reached directly), none when this node's policy is never."""
        relay = self.relay
        if relay is None or relay == key or self.relay_policy == "never":
            return None
        record = self.host.roster.member(key)
        if record is not None and RELAY_ROLES & record.roles:
            return None
        return relay

    def _pick_relay(self) -> bytes | None:
        """The rendezvous member with the lowest round trip among direct paths;
        the current relay stays unless another is clearly faster."""
        best: tuple[float, bytes] | None = None
        current: float | None = None
        for key in self.host.members.rendezvous():
            path = self.paths.get(key)
            if path is None or not path.direct:
                continue
            rtt = path.rtt()
            score = (rtt if rtt is not None else 1.0, key)
            if key == self.relay:
                current = score[0]
            if best is None or score < best:
                best = score
        if best is None:
            return None
        if current is not None and best[0] >= current * CLEAR_GAIN:
            return self.relay
        return best[1]

    def _refresh_relay(self, now: float) -> None:
        relay = self._pick_relay()
        if relay == self.relay:
            return
        if relay is None and self.relay is not None:
            path = self.paths.get(self.relay)
            if path is not None and path.working and self.relay in self.host.members.rendezvous():
                return  # keep a relay that still answers, even if no longer the best
        self.relay = relay
        for key in self.host.members.live():
            if key in self.paths:
                self._path_op(key, now, lambda p, k=key: p.set_relay(self.relay_for(k), now))
            else:
                self.configure(key, now)

    def roles_changed(self, key: bytes, now: float) -> None:
        """A member became a rendezvous (or stopped being one): choose the relay
        again, and the path to it has a relay to fall back to, or none."""
        self._refresh_relay(now)
        if key in self.paths:
            self._path_op(key, now, lambda p: p.set_relay(self.relay_for(key), now))

    def _known(self, key: bytes) -> bool:
        info = self.directory.get(key)
        return info is not None and bool(info.candidates)

    def _ordered(self, key: bytes) -> tuple[Candidate, ...]:
        info = self.directory.get(key)
        return self.local.order(info.candidates) if info else ()

    def _path_op(self, key: bytes, now: float, op: Callable[[Path], PathUpdate | None]) -> None:
        path = self.paths.get(key)
        if path is None:
            path = self.paths[key] = Path(
                self._ordered(key),
                self.local,
                now,
                self.relay_for(key),
                self.codec is not None,
                self.relay_policy == "only",
            )
        update = op(path)
        deadline = path.deadline()
        if deadline is None:
            self._deadlines.pop(key, None)
        else:
            self._deadlines[key] = deadline
        if update is None:
            return
        if update.endpoint is not None:
            self.configure(key, now)
        if update.probe:
            self._ping(key, update.probe, now)
        if update.punch and self.relay_policy != "only":
            self.host.send(key, Punch(self.candidates, self.nat), now)
        record = self.host.roster.member(key)
        name = record.name if record else "?"
        if update.reachable is True:
            self.host.emit(ev.PeerReachable(now, name, key, path.endpoint, path.label))
        elif update.reachable is False:
            self.host.emit(ev.PeerUnreachable(now, name, key))
        if record is not None and RELAY_ROLES & record.roles:
            self._refresh_relay(now)  # a rendezvous member's path changed
        if update.exhausted:  # everything it published failed: ask for fresher news
            self._refresh.add(key)
            self._due = self._due if self._due is not None else now + 0.5

    def forget(self, key: bytes) -> None:
        for table in (self.paths, self._deadlines, self._asked, self.peer_nat):
            table.pop(key, None)
        if self.codec is not None:
            self.codec.forget(key)
        self._refresh.discard(key)
        self._missing.discard(key)
        self.directory.forget(key)

    # ------------------------------------------------------------ inputs

    def note_send(self, key: bytes, now: float) -> None:
        self._path_op(key, now, lambda p: p.note_send(now))

    def on_device_event(self, event: PeerEvent, now: float) -> None:
        key = event.public_key
        if isinstance(event, HandshakeCompleted):
            endpoint = target(event.endpoint)
            self._path_op(key, now, lambda p: p.on_handshake(endpoint, now))
        elif isinstance(event, EndpointChanged):
            new = target(event.new)
            assert new is not None
            self._path_op(key, now, lambda p: p.on_roamed(new, now))
        elif isinstance(event, HandshakeGaveUp):
            self._path_op(key, now, lambda p: p.on_gave_up(now))
        elif isinstance(event, KeysZeroed) and key in self.paths:
            self._path_op(key, now, lambda p: p.on_keys_zeroed(now))

    # ------------------------------------------------------------ probes

    def _ping(self, key: bytes, destinations: Sequence[HostPort], now: float) -> None:
        codec = self.codec
        if codec is None or self.relay_policy == "only":
            return
        if len(self._pings) >= MAX_OUTSTANDING:
            self._expire_pings(now)
        for destination in destinations:
            txid = self.rng.randbytes(12)
            self._pings[txid] = (key, destination, now)
            self.probe_stats["pings_sent"] += 1
            self.host.send_datagram(destination, codec.ping(key, txid))

    def _expire_pings(self, now: float) -> None:
        for txid, (_key, _to, sent) in list(self._pings.items()):
            if now - sent > PROBE_TIMEOUT:
                del self._pings[txid]
        if len(self._pings) >= MAX_OUTSTANDING:  # still full: forget the oldest quarter
            for txid in list(self._pings)[: MAX_OUTSTANDING // 4]:
                del self._pings[txid]

    def on_probe(self, source: HostPort, datagram: bytes, now: float) -> bool:
        """A probe datagram from `source` on the WireGuard socket; False if dropped."""
        codec = self.codec
        if codec is None:
            return False
        try:
            probe = codec.open(datagram)
        except ProbeError:
            self.probe_stats["bad"] += 1
            return False
        key = probe.sender
        if not self.host.members.is_live(key):
            self.probe_stats["not_member"] += 1
            return False
        if probe.kind == PING:
            if probe.txid in self._seen_pings:  # a replay: no reflection, no new address
                self.probe_stats["replayed"] += 1
                return False
            if len(self._seen_pings) >= MAX_SEEN_PINGS:
                self._seen_pings.clear()
            self._seen_pings.add(probe.txid)
            if self.relay_policy == "only":
                return True  # nothing of this node's addresses is confirmed to anyone
            try:
                pong = codec.pong(key, probe.txid, source)
            except ProbeError:  # not from an IP address (injected through a relay)
                self.probe_stats["bad_source"] += 1
                return False
            self.probe_stats["pings_answered"] += 1
            self.host.send_datagram(source, pong)
            self._path_op(key, now, lambda p: p.on_ping_from(source, now))
            return True
        assert probe.kind == PONG
        sent = self._pings.pop(probe.txid, None)
        if sent is None or sent[0] != key:
            self.probe_stats["pong_unmatched"] += 1
            return False
        _key, destination, at = sent
        self.probe_stats["pongs"] += 1
        rtt = max(now - at, 0.0)
        self._path_op(key, now, lambda p: p.on_pong(destination, rtt, now))
        return True

    def set_nat(self, kind: str, now: float) -> None:
        """This node's mapping behaviour, from its netcheck: members it is relayed
        to hear it (their status says why), with this node's candidates."""
        if kind == self.nat:
            return
        self.nat = kind
        for key, path in self.paths.items():
            path.hopeless = self._hopeless(key)
        self._repunch(now)

    def _hopeless(self, key: bytes) -> bool:
        """A side behind an endpoint-dependent NAT: if the first bursts failed,
        retries cannot do better (its mapping towards the other side is new and
        unknown to it; no port guessing here) until something changes, which
        brings a new PUNCH. So a relayed path is not retried."""
        hard = "endpoint-dependent"
        return hard in (self.nat, self.peer_nat.get(key))

    def _repunch(self, now: float) -> None:
        """Tell every member this node is relayed to (in a session) what changed
        here, and probe it again: new candidates may make a direct path."""
        if self.relay_policy == "only":
            return
        for key, path in list(self.paths.items()):
            if path.session and not path.direct and self.host.members.is_live(key):
                self.host.send(key, Punch(self.candidates, self.nat), now)
                self._path_op(key, now, lambda p: p.punch(now))

    def on_punch(self, sender: bytes, message: Punch, now: float) -> None:
        self.peer_nat[sender] = message.nat
        path = self.paths.get(sender)
        if path is not None:
            path.misses = 0  # news from the member: retries start over
            path.hopeless = self._hopeless(sender)
        if self.relay_policy == "only":
            return
        self._path_op(sender, now, lambda p: p.hint(message.candidates, now))

    def set_local(self, candidates: Sequence[Candidate], now: float, active: bool,
                  reflexive: Sequence[Candidate] = ()) -> None:  # fmt: skip
        fitted = fit_candidates([*candidates, *reflexive])
        if fitted == self.candidates:
            return
        self.candidates, self.seq = fitted, max(self.seq + 1, int(now))
        self.local = LocalNetworks.of(c for c in fitted if c not in reflexive)
        for path in self.paths.values():
            path.local = self.local
        if active:
            self._repunch(now)
        if active:
            self.announce(now)

    def announce(self, now: float) -> None:
        """Tell the rendezvous members this node's candidates, and start a rumour."""
        rendezvous = self.host.members.rendezvous()
        for key in rendezvous:
            self.host.send(key, Peers(True, (self.own_entry(),)), now)
        self._spread([self.own_entry()], now, exclude=rendezvous)

    def entries(self, keys: Sequence[bytes], now: float) -> list[PeerEntry]:
        """What this node knows of these members' candidates (for rumours' company)."""
        found = (self.directory.entry(key, now) for key in keys)
        return [e for e in found if e is not None and e.candidates]

    def own_entry(self) -> PeerEntry:
        return PeerEntry(self.host.public_key, self.seq, self.candidates, 0)

    def _changed(self, key: bytes, now: float) -> None:
        if self._known(key):
            self._missing.discard(key)
        if not self.host.members.is_live(key):
            return
        if key in self.paths:
            ordered = self._ordered(key)
            self._path_op(key, now, lambda p: p.set_candidates(ordered, now))
        else:
            self.configure(key, now)

    def on_hello(self, sender: bytes, hello: Hello, now: float) -> None:
        if self.directory.heard_directly(sender, hello.seq, hello.candidates, now):
            self._changed(sender, now)
            entry = self.directory.entry(sender, now)
            assert entry is not None
            self._spread([entry], now, exclude=(sender,))

    def on_peers_request(self, sender: bytes, message: PeersRequest, now: float) -> None:
        entries = []
        for key in message.keys:
            if key == self.host.public_key:
                entries.append(self.own_entry())
            elif (entry := self.directory.entry(key, now)) is not None:
                entries.append(entry)
        for peers in chunk_peers(entries, spread=False):
            self.host.send(sender, peers, now)

    def on_peers(self, sender: bytes, message: Peers, now: float) -> None:
        news = []
        for entry in message.entries:
            if not self.host.members.is_live(entry.public_key):
                continue  # this node itself, or not a member
            if self.directory.merge(entry, now):
                news.append(entry)
                self._changed(entry.public_key, now)
        if message.spread and news:  # a rumour of new candidates: forward it once
            self._spread(news, now, exclude=(sender,))

    def _spread(self, entries: list[PeerEntry], now: float, exclude: Sequence[bytes]) -> None:
        skip = [*exclude, *(e.public_key for e in entries)]
        picks = self.host.members.sample(self.rng, 3 * self.fanout, skip)
        targets = [key for key in picks if self.can_reach(key)][: self.fanout]
        for peers in chunk_peers(entries, spread=True):
            for key in targets:
                self.host.send(key, peers, now)

    # ------------------------------------------------------------ asking for candidates

    def can_reach(self, key: bytes) -> bool:
        path = self.paths.get(key)
        return (path is not None and path.endpoint is not None) or key in self.directory

    def synced_from(self, key: bytes, now: float) -> None:
        """Records arrived from `key`: ask it soon about new members without candidates,
        and after the first sync since start (a new member's first), announce this
        node's candidates to the members it now knows."""
        if self._missing:
            self._source = key
            self._due = self._due if self._due is not None else now + 0.5
        if not self._announced and self._announce_at is None:
            self._announce_at = now + 1.0

    def ask(self, target: bytes, now: float, limit: int = MAX_KEYS) -> None:
        """PEERS_REQUEST for members whose candidates this node lacks (or saw fail)."""
        members = self.host.members
        keys = [k for k in sorted(self._refresh) if k != target and members.is_live(k)]
        self._refresh.clear()
        for key in sorted(self._missing):
            if len(keys) >= limit:
                break
            if self._known(key) or not members.is_live(key):
                self._missing.discard(key)
            elif key != target and now - self._asked.get(key, -self.retry) >= self.retry:
                keys.append(key)
        for key in keys:
            self._asked[key] = now
        for request in chunk_keys(PeersRequest, keys[:limit]):
            self.host.send(target, request, now)

    def missing(self) -> bool:
        return bool(self._missing)

    def want_soon(self, now: float) -> None:
        self._due = self._due if self._due is not None else now + 1.0

    # ------------------------------------------------------------ timers

    def deadline(self) -> float | None:
        times = list(self._deadlines.values())
        for due in (self._due, self._announce_at):
            if due is not None:
                times.append(due)
        return min(times, default=None)

    def on_timer(self, now: float, fallback: Callable[[], bytes | None]) -> None:
        for key, due in list(self._deadlines.items()):
            if due <= now and key in self.paths:
                self._path_op(key, now, lambda p: p.on_timer(now))
        if self._due is not None and self._due <= now:
            self._due = None
            source, self._source = self._source, None
            if source is None or not self.host.members.is_live(source):
                source = fallback()
            if source is not None:
                self.ask(source, now, BULK_KEYS)
        if self._announce_at is not None and self._announce_at <= now:
            self._announce_at, self._announced = None, True
            self.announce(now)
