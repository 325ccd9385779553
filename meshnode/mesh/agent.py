"""The mesh agent: one mesh on one node, sans-IO, on top of a WireGuard device.

As aioquic's H3Connection sits on its QuicConnection, the agent sits on the
device without touching it. The glue feeds it

    handle_message(sender_key, payload, now)   coordination datagrams that
                                               arrived through WireGuard
    handle_device_event(event, now)            the device's events
    set_local_candidates(candidates, now)      this node's own endpoints
    handle_datagram(source, data, now)         probes and STUN that arrived on
                                               the WireGuard socket itself
    handle_timer(now)                          when get_timer() is due

and drains it, in this order, with config_changes() (ConfigurePeer /
RemovePeer: apply them first, so messages to a new peer can go),
messages_to_send() ((recipient key, payload): a datagram to
COORDINATION_PORT on the recipient's overlay address), datagrams_to_send()
((host, port), bytes): sent from the WireGuard socket, outside the tunnel)
and next_event() (what to log). `now` is Unix time in seconds; there are no sockets, clocks,
logging or randomness here except the injected `random.Random` (pass a
`random.SystemRandom()` in production: it also makes invite secrets).

Every peer comes from a verified roster record. The parts: `gossip` spreads
records and tombstones, `reach` tracks how to reach each member (candidates
and paths), `admin` (on nodes holding the authority key) issues invites,
redeems joins and revokes members.
"""

from __future__ import annotations

import contextlib
import random
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv6Address

from meshnode.wireguard.events import HandshakeCompleted, PeerEvent

from . import events as ev
from .admin import LINGER, Admin, InviteDesk, InviteInfo, reject_text
from .authority import Authority
from .changes import MemberRevoked, MemberUpdated, RosterChange, RosterError
from .directory import Directory
from .drops import MeshDrop
from .errors import AgentError, NotAdmin
from .gossip import Gossip, GossipParams, Membership
from .invite import Invite
from .messages import (
    Buckets,
    Candidate,
    Hello,
    HelloKind,
    JoinReject,
    JoinRequest,
    Leave,
    Message,
    MessageError,
    Peers,
    PeersRequest,
    Punch,
    Push,
    Records,
    RejectReason,
    Summary,
    Want,
    chunk_peers,
    decode,
    encode,
)
from .peerconfig import PeerChange, RemovePeer
from .probe import ProbeCodec, is_probe
from .reach import Reach
from .records import MemberRecord, RecordError, Signed, Tombstone
from .state import MeshState
from .status import MemberStatus, MeshStatus, mesh_status

__all__ = ["AgentError", "AgentParams", "MemberStatus", "MeshAgent", "MeshStatus", "NotAdmin"]

LEFT_REASON = "left the mesh"  # a tombstone with this reason is a member that left

_RECORD_DROPS = {
    RosterError.MALFORMED: MeshDrop.RECORD_MALFORMED,
    RosterError.BAD_SIGNATURE: MeshDrop.RECORD_BAD_SIGNATURE,
    RosterError.FOREIGN_MESH: MeshDrop.RECORD_FOREIGN_MESH,
    RosterError.REVOKED: MeshDrop.RECORD_REVOKED,
    RosterError.STALE: MeshDrop.RECORD_STALE,
    RosterError.ADDRESS_CONFLICT: MeshDrop.RECORD_ADDRESS_CONFLICT,
}


@dataclass(frozen=True)
class AgentParams:
    gossip: GossipParams = field(default_factory=GossipParams)
    rendezvous_keepalive: int = 25
    away_after: float = 180.0  # a handshake after none for this long: catch up at once
    invite_linger: float = LINGER
    directory_retry: float = 60.0  # ask again for a member's candidates after this long
    relay: str = "auto"  # auto; never: no relaying, for others or itself; only: always relayed


class MeshAgent:
    def __init__(
        self,
        state: MeshState,
        now: float,
        *,
        rng: random.Random | None = None,
        params: AgentParams | None = None,
        candidates: Sequence[Candidate] | None = None,
        private_key: bytes | None = None,
    ) -> None:
        """Start from persisted state: configures every live member and catches up.

        `candidates` are this node's own endpoints if already known (as for
        `set_local_candidates`), so that the first HELLOs carry them.
        `private_key` (this node's WireGuard key) authenticates path probes;
        without it the agent does not probe (paths work by handshakes only).
        """
        state.check()
        self.params = params = params or AgentParams()
        self.rng = rng or random.SystemRandom()
        self.mesh_id, self.mesh_name = state.mesh_id, state.mesh_name
        self.authority_key, self.public_key = state.authority, state.public_key
        self.roster, self.pool = state.roster, state.pool
        self.state = "member"
        self._left = dict(state.left)
        self._out: list[tuple[bytes, bytes]] = []
        self._datagrams: list[tuple[tuple[str, int], bytes]] = []
        self._config: dict[bytes, PeerChange] = {}
        self._events: deque[ev.MeshEvent] = deque()
        self._drops: Counter[MeshDrop] = Counter()
        self.heard: dict[bytes, float] = {}
        self._last_handshake = self._now = now
        self.members = Membership(self.roster, self.public_key, self._left)
        self.reach = Reach(
            self,
            Directory(state.directory),
            state.candidates,
            state.candidates_seq,
            self.rng,
            keepalive=params.rendezvous_keepalive,
            retry=params.directory_retry,
            fanout=params.gossip.fanout,
            codec=None if private_key is None else ProbeCodec(private_key, self.rng),
            relay_policy=params.relay,
        )
        if candidates is not None:
            self.reach.set_local(candidates, now, active=False)
        self.gossip = Gossip(self, self.roster, self.members, self.rng, params.gossip, now)
        self.admin: Admin | None = None
        if state.authority_private is not None:
            authority = Authority.from_private_bytes(state.authority_private)
            desk = InviteDesk(state.pending, now, params.invite_linger)
            self.admin = Admin(self, authority, desk)
            for slot in desk.slots():
                self.configure(self.admin.temp_peer(slot.pending))
        for key in self.members.live():
            self.reach.configure(key, now)
        self.gossip.catch_up(now)
        if self.reach.missing():
            self.reach.want_soon(now)

    # ================================================================ drained by the glue

    def config_changes(self) -> list[PeerChange]:
        out = list(self._config.values())
        self._config.clear()
        return out

    def messages_to_send(self) -> list[tuple[bytes, bytes]]:
        out, self._out = self._out, []
        return out

    def datagrams_to_send(self) -> list[tuple[tuple[str, int], bytes]]:
        out, self._datagrams = self._datagrams, []
        return out

    def next_event(self) -> ev.MeshEvent | None:
        return self._events.popleft() if self._events else None

    def drops(self) -> dict[MeshDrop, int]:
        return dict(self._drops)

    def get_timer(self) -> float | None:
        if self.state != "member":
            return None
        times = [self.gossip.deadline()]
        for deadline in (self.reach.deadline(), self.admin and self.admin.desk.deadline()):
            if deadline is not None:
                times.append(deadline)
        return min(times)

    # ================================================================ fed by the glue

    def handle_timer(self, now: float) -> None:
        self._now = now
        if self.state != "member":
            return
        self.gossip.on_timer(now)
        self.reach.on_timer(now, self.gossip.target)
        if self.admin is not None:
            self.admin.on_timer(now)

    def handle_device_event(self, event: PeerEvent, now: float) -> None:
        self._now = now
        if self.state != "member" or not self.members.is_live(event.public_key):
            return  # invite peers' events, and peers already gone
        if isinstance(event, HandshakeCompleted):
            away = now - self._last_handshake > self.params.away_after
            self._last_handshake = now
            if away:  # nothing for a long while: this node was offline or asleep
                self.gossip.catch_up(now, first=event.public_key)
        self.reach.on_device_event(event, now)

    def set_local_candidates(self, candidates: Sequence[Candidate], now: float,
                             reflexive: Sequence[Candidate] = ()) -> None:  # fmt: skip
        """This node's own endpoints, best first: configured public endpoints, then
        every local address with the listen port; then `reflexive`, the public
        addresses STUN found (not local: they say nothing of which members share
        this node's subnet). Published to the other members."""
        self._now = now
        self.reach.set_local(candidates, now, active=self.state == "member", reflexive=reflexive)

    def handle_datagram(self, source: tuple[str, int], data: bytes, now: float) -> bool:
        """A datagram that is not WireGuard's, from `source` on the WireGuard
        socket: a path probe. False if it was not one this agent takes."""
        self._now = now
        if self.state != "member" or not is_probe(data):
            return False
        return self.reach.on_probe(source, data, now)

    def handle_message(self, sender: bytes, payload: bytes, now: float) -> None:
        self._now = now
        if self.state != "member":
            return self.drop(MeshDrop.INACTIVE)
        slot = self.admin.desk.slot_for(sender) if self.admin else None
        if slot is None and not self.members.is_live(sender):
            if self.roster.is_revoked(sender):
                return self.drop(MeshDrop.REVOKED_SENDER)
            left = sender in self._left
            return self.drop(MeshDrop.LEFT_SENDER if left else MeshDrop.UNKNOWN_SENDER)
        try:
            message = decode(payload)
        except MessageError as exc:
            return self.drop(exc.reason)
        if slot is not None:
            assert self.admin is not None
            if not isinstance(message, JoinRequest):
                return self.drop(MeshDrop.TEMP_PEER_NOT_JOIN)
            return self.admin.join_request(sender, slot, message, now)
        self.heard[sender] = now
        self._dispatch(sender, message, now)

    def _dispatch(self, sender: bytes, message: Message, now: float) -> None:
        gossip = self.gossip
        match message:
            case Hello():
                self.reach.on_hello(sender, message, now)
                gossip.on_hello(sender, message, now)
            case Buckets():
                gossip.on_buckets(sender, message, now)
            case Summary():
                gossip.on_summary(sender, message, now)
            case Want():
                gossip.on_want(sender, message, now)
            case Push():
                gossip.on_push(sender, message, now)
            case Records():
                gossip.on_records(sender, message, now)
            case PeersRequest():
                self.reach.on_peers_request(sender, message, now)
            case Peers():
                self.reach.on_peers(sender, message, now)
            case Leave():
                self._member_left(sender, now)
            case Punch():
                self.reach.on_punch(sender, message, now)
            case JoinRequest() if self.admin is None:
                self.drop(MeshDrop.NOT_ADMIN)
                text = reject_text(RejectReason.NOT_ADMIN, None, None)
                self.send(sender, JoinReject(message.invite_id, RejectReason.NOT_ADMIN, text), now)
            case _:
                self.drop(MeshDrop.UNEXPECTED)

    # ================================================================ for the agent's parts

    def send(self, key: bytes, message: Message, now: float) -> None:
        self._out.append((key, encode(message)))
        if self.members.is_live(key):
            self.reach.note_send(key, now)

    def send_datagram(self, destination: tuple[str, int], datagram: bytes) -> None:
        self._datagrams.append((destination, datagram))

    def send_raw(self, key: bytes, payload: bytes) -> None:
        self._out.append((key, payload))

    def configure(self, change: PeerChange) -> None:
        self._config[change.public_key] = change  # the last change of a peer wins

    def emit(self, event: ev.MeshEvent) -> None:
        self._events.append(event)

    def drop(self, reason: MeshDrop) -> None:
        self._drops[reason] += 1

    def hello(self, kind: HelloKind) -> Hello:
        cands = self.reach.candidates
        port = cands[0][1] if cands else 0
        return Hello(self.roster.digest(), len(self.roster), self.reach.seq, cands, port, kind)

    def apply_blob(self, signed: Signed, now: float) -> bool:
        """Verify and apply one blob; True if membership changed (news to spread)."""
        try:
            change = self.roster.apply(signed, int(now))
        except RosterError as exc:
            self.drop(_RECORD_DROPS.get(exc.reason, MeshDrop.RECORD_MALFORMED))
            return False
        if change is None:
            return False
        self._on_change(change, now)
        return True

    def can_reach(self, key: bytes) -> bool:
        return self.reach.can_reach(key)

    def synced_from(self, key: bytes, now: float) -> None:
        self.reach.synced_from(key, now)

    def rumour_company(self, blobs: Sequence[Signed], now: float) -> list[Message]:
        """PEERS entries of the new members among `blobs`, sent along with their PUSH."""
        keys = []
        for blob in blobs:
            if blob.kind == "member":
                with contextlib.suppress(RecordError):
                    keys.append(MemberRecord.decode(blob.body).public_key)
        return list(chunk_peers(self.reach.entries(keys, now), spread=False))

    def round_sent(self, key: bytes, now: float) -> None:
        self.reach.ask(key, now)

    # ================================================================ membership changes

    def _on_change(self, change: RosterChange, now: float) -> None:
        self.members.invalidate()
        if isinstance(change, MemberRevoked):
            return self._revoked(change, now)
        record = change.record
        if record.public_key == self.public_key:
            return  # this node re-issued: the glue reads `record` for new addresses
        if isinstance(change, MemberUpdated):
            if self._left.get(record.public_key, record.version) < record.version:
                del self._left[record.public_key]  # re-issued after it left: back in
            self.emit(
                ev.MemberUpdated(now, record.name, record.public_key, record.version, record.roles)
            )
        else:
            self.emit(
                ev.MemberJoined(
                    now,
                    record.name,
                    record.public_key,
                    record.ipv4,
                    record.ipv6,
                    record.invite_id,
                    record.issued,
                )
            )
        if self.members.is_live(record.public_key):
            self.reach.configure(record.public_key, now)
        if isinstance(change, MemberUpdated) and change.old.roles != record.roles:
            self.reach.roles_changed(record.public_key, now)

    def _revoked(self, change: MemberRevoked, now: float) -> None:
        key, tombstone = change.public_key, change.tombstone
        name = change.old.name if change.old else None
        if key == self.public_key:
            self.emit(ev.SelfRevoked(now, tombstone.by, tombstone.reason))
            return self._stop("revoked", remove_peers=True)
        was_left = self._left.pop(key, None) is not None
        self._forget(key)
        if tombstone.reason != LEFT_REASON:
            self.emit(ev.MemberRevoked(now, name, key, tombstone.by, tombstone.reason))
        elif not was_left:
            self.emit(ev.MemberLeft(now, name, key))
        if self.admin is not None and name is not None:
            self.admin.member_revoked(name, now)

    def _forget(self, key: bytes) -> None:
        self.configure(RemovePeer(key))
        self.members.invalidate()
        self.heard.pop(key, None)
        self.reach.forget(key)

    def _member_left(self, key: bytes, now: float) -> None:
        record = self.roster.member(key)
        assert record is not None
        if self.admin is not None:  # an admin makes it permanent, for everyone
            self.admin.tombstone(key, now, LEFT_REASON)
            return
        self._left[key] = record.version
        self._forget(key)
        self.emit(ev.MemberLeft(now, record.name, key))

    def _stop(self, state: str, remove_peers: bool) -> None:
        self.state = state
        if remove_peers:
            for key in self.members.live():
                self.configure(RemovePeer(key))
            for slot in self.admin.desk.slots() if self.admin else ():
                self.configure(RemovePeer(slot.pending.public_key))

    # ================================================================ the user's requests

    def _require_admin(self) -> Admin:
        if self.admin is None:
            raise NotAdmin(f"this node is not an admin of mesh {self.mesh_name}")
        if self.state != "member":
            raise AgentError(f"this node is no longer a member of mesh {self.mesh_name}")
        return self.admin

    def create_invite(
        self,
        now: float,
        lifetime: int,
        member_name: str | None = None,
        uses: int = 1,
        bootstrap: Sequence[Candidate] | None = None,
        secret: bytes | None = None,
    ) -> Invite:
        """A new invite through this node, reached at `bootstrap` (default: its own
        candidates). Records the pending invite and configures its temporary peer."""
        self._now = now
        return self._require_admin().create_invite(
            now, lifetime, member_name, uses, bootstrap, secret
        )

    def revoke_invite(self, invite_id: bytes | str, now: float) -> None:
        self._now = now
        wanted = bytes.fromhex(invite_id) if isinstance(invite_id, str) else invite_id
        self._require_admin().revoke_invite(wanted, now)

    def invites(self, now: float) -> list[InviteInfo]:
        return self.admin.desk.listing(now) if self.admin else []

    def revoke_member(self, who: str | bytes, now: float, reason: str = "") -> Tombstone:
        """Revoke a member by name or key: its peer goes at once here, and the
        tombstone is pushed to the mesh at once."""
        self._now = now
        return self._require_admin().revoke_member(who, now, reason)

    def set_roles(self, who: str | bytes, roles: frozenset[str], now: float) -> MemberRecord:
        """Give a member roles (or take them): its record is re-issued and pushed."""
        self._now = now
        return self._require_admin().set_roles(who, roles, now)

    def leave(self, now: float, text: str = "") -> None:
        """Tell every live member this node leaves. Then send the messages and take
        the interface down (the agent emits no config changes for it)."""
        self._now = now
        if self.state != "member":
            raise AgentError(f"this node is no longer a member of mesh {self.mesh_name}")
        message = Leave(text[:200])
        for key in self.members.live():
            self.send(key, message, now)
        self.emit(ev.MemberLeft(now, self.record.name, self.public_key))
        self._stop("left", remove_peers=False)

    # ================================================================ queries

    @property
    def record(self) -> MemberRecord:
        record = self.roster.member(self.public_key)
        if record is None:
            raise AgentError("this node's key was revoked from the mesh")
        return record

    @property
    def is_admin(self) -> bool:
        return self.admin is not None

    def overlay_address(self, key: bytes) -> IPv6Address | None:
        """Where a message for `key` goes (to COORDINATION_PORT): a live member's overlay
        IPv6 address, or an open invite's temporary address; None for anyone else."""
        record = self.roster.member(key)
        if record is not None and key != self.public_key:
            return record.ipv6
        slot = self.admin.desk.slot_for(key) if self.admin else None
        return None if slot is None else self.pool.invite_address(slot.pending.invite_id)

    def status(self, now: float) -> MeshStatus:
        """Every live member with its addresses, endpoint, path and when last heard."""
        return mesh_status(self, now)

    def to_state(self) -> MeshState:
        """What to persist (after every change: membership, invites, candidates)."""
        admin = self.admin
        return MeshState(
            self.mesh_id,
            self.mesh_name,
            self.authority_key,
            self.public_key,
            self.roster,
            self.pool.ipv4,
            self.pool.ipv6,
            None if admin is None else admin.authority.private_bytes(),
            admin.desk.persistent(self._now) if admin else (),
            dict(self.reach.directory.items()),
            dict(self._left),
            self.reach.candidates,
            self.reach.seq,
        )
