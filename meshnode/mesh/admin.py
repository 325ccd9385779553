"""The admin's desk: invites it issued, their temporary peers, and join decisions.

Each pending invite is a slot keyed by the temporary WireGuard key derived
from its secret. The agent configures that key as a coordination-only peer
when the invite is created (or the node restarts) and removes it when the
slot closes: `linger` seconds after the invite was used up, revoked or
expired, so that a joiner whose JOIN_ACCEPT was lost gets the same accept
again, and a late joiner gets a JOIN_REJECT that says why rather than a
handshake that never completes.

`refusal` holds every rule a join must pass; the agent issues the record.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from . import events as ev
from .addressing import PoolExhausted
from .authority import Authority
from .bootstrap import BootstrapPeer
from .codec import show
from .drops import MeshDrop
from .errors import AgentError
from .invite import Invite
from .messages import (
    Candidate,
    JoinAccept,
    JoinReject,
    JoinRequest,
    MessageError,
    RejectReason,
    encode,
)
from .peerconfig import ConfigurePeer, RemovePeer, host_route
from .pending import PendingInvite
from .records import ASSIGNABLE_ROLES, MemberRecord, Signed, Tombstone
from .roster import Roster

if TYPE_CHECKING:
    from .agent import MeshAgent

LINGER = 60.0

REJECT_TEXT = {
    RejectReason.USED: "the invite was already used",
    RejectReason.REVOKED: "the invite was revoked by the mesh's admin",
    RejectReason.EXPIRED: "the invite has expired",
    RejectReason.UNKNOWN: "the admin does not know this invite",
    RejectReason.FOREIGN_MESH: "this member belongs to another mesh than the invite names",
    RejectReason.NAME_TAKEN: "the name {name} is taken by another member",
    RejectReason.NAME_MISMATCH: "the invite is for member {invite_name}, not {name}",
    RejectReason.NO_NAME: "neither the invite nor the join request names the new member",
    RejectReason.FULL: "the mesh has no free overlay address left",
    RejectReason.KEY_REVOKED: "this WireGuard key was revoked from the mesh",
    RejectReason.KEY_IN_USE: "this WireGuard key already belongs to a member",
    RejectReason.NOT_ADMIN: "this member holds no authority key and cannot admit members",
}


@dataclass
class InviteSlot:
    pending: PendingInvite
    closes_at: float  # when the temporary peer is removed
    revoked: bool = False
    accepts: dict[bytes, bytes] = field(default_factory=dict)  # joiner key -> JOIN_ACCEPT

    def status(self, now: float) -> str:
        if self.revoked:
            return "revoked"
        if self.pending.uses_left == 0:
            return "used"
        if now >= self.pending.expires:
            return "expired"
        return "open"


@dataclass(frozen=True)
class InviteInfo:
    """One line of `meshnode invites`."""

    invite_id: bytes
    member_name: str | None
    expires: int
    uses_left: int
    created: int
    status: str


class InviteDesk:
    def __init__(self, pending: Iterable[PendingInvite], now: float, linger: float = LINGER):
        self.linger = linger
        self._slots: dict[bytes, InviteSlot] = {}
        for invite in pending:
            if invite.usable(now):
                self.add(invite)

    def add(self, pending: PendingInvite) -> InviteSlot:
        slot = InviteSlot(pending, pending.expires + self.linger)
        self._slots[pending.public_key] = slot
        return slot

    def slot_for(self, temp_key: bytes) -> InviteSlot | None:
        return self._slots.get(temp_key)

    def by_id(self, invite_id: bytes) -> InviteSlot | None:
        for slot in self._slots.values():
            if slot.pending.invite_id == invite_id:
                return slot
        return None

    def slots(self) -> list[InviteSlot]:
        return list(self._slots.values())

    def revoke(self, slot: InviteSlot, now: float) -> None:
        slot.revoked = True
        slot.closes_at = min(slot.closes_at, now + self.linger)

    def redeem(self, slot: InviteSlot, now: float) -> None:
        slot.pending = slot.pending.redeem(int(now))
        if slot.pending.uses_left == 0:
            slot.closes_at = min(slot.closes_at, now + self.linger)

    def refusal(
        self, slot: InviteSlot, request: JoinRequest, mesh_id: bytes, roster: Roster, now: float
    ) -> tuple[RejectReason | None, str | None]:
        """(why the join is refused or None, the member name it gets)."""
        pending = slot.pending
        if request.invite_id != pending.invite_id:
            return RejectReason.UNKNOWN, None
        if request.mesh_id != mesh_id:
            return RejectReason.FOREIGN_MESH, None
        if slot.revoked:
            return RejectReason.REVOKED, None
        if now >= pending.expires:
            return RejectReason.EXPIRED, None
        if pending.uses_left == 0:
            return RejectReason.USED, None
        name = pending.member_name or request.name
        if pending.member_name and request.name and request.name != pending.member_name:
            return RejectReason.NAME_MISMATCH, request.name
        if name is None:
            return RejectReason.NO_NAME, None
        if roster.is_revoked(request.public_key):
            return RejectReason.KEY_REVOKED, name
        if roster.member(request.public_key) is not None or request.public_key in self._slots:
            return RejectReason.KEY_IN_USE, name
        if any(member.name == name for member in roster.members()):
            return RejectReason.NAME_TAKEN, name
        return None, name

    def deadline(self) -> float | None:
        return min((slot.closes_at for slot in self._slots.values()), default=None)

    def close_due(self, now: float) -> list[InviteSlot]:
        due = [key for key, slot in self._slots.items() if slot.closes_at <= now]
        return [self._slots.pop(key) for key in due]

    def persistent(self, now: float) -> tuple[PendingInvite, ...]:
        """The invites a restart must bring back: open ones only."""
        return tuple(s.pending for s in self._slots.values() if s.status(now) == "open")

    def listing(self, now: float) -> list[InviteInfo]:
        return [
            InviteInfo(
                s.pending.invite_id,
                s.pending.member_name,
                s.pending.expires,
                s.pending.uses_left,
                s.pending.created,
                s.status(now),
            )
            for s in self._slots.values()
        ]


def reject_text(reason: RejectReason, name: str | None, invite_name: str | None) -> str:
    return REJECT_TEXT[reason].format(name=name, invite_name=invite_name)[:200]


class Admin:
    """What only a node holding the authority key does: invites, joins, revocations."""

    def __init__(self, agent: MeshAgent, authority: Authority, desk: InviteDesk) -> None:
        self.agent = agent
        self.authority = authority
        self.desk = desk

    def temp_peer(self, pending: PendingInvite) -> ConfigurePeer:
        """The invite's temporary peer: reaches this node's coordination port only."""
        address = self.agent.pool.invite_address(pending.invite_id)
        return ConfigurePeer(
            pending.public_key,
            host_route(address),
            preshared_key=pending.preshared_key,
            coordination_only=True,
        )

    def create_invite(
        self,
        now: float,
        lifetime: int,
        member_name: str | None,
        uses: int,
        bootstrap: Sequence[Candidate] | None,
        secret: bytes | None,
    ) -> Invite:
        agent = self.agent
        if member_name is not None and any(m.name == member_name for m in agent.roster.members()):
            raise AgentError(f"mesh {agent.mesh_name} already has a member called {member_name}")
        endpoints = tuple(bootstrap if bootstrap is not None else agent.reach.candidates)
        if not endpoints:
            raise AgentError("no endpoint is known for this node: give the invite one (--endpoint)")
        try:
            peer = BootstrapPeer(agent.public_key, agent.record.ipv6, endpoints[:8])
            invite = Invite.create(
                self.authority,
                mesh_id=agent.mesh_id,
                mesh_name=agent.mesh_name,
                bootstrap=(peer,),
                now=int(now),
                lifetime=lifetime,
                member_name=member_name,
                secret=secret if secret is not None else agent.rng.randbytes(32),
            )
            pending = PendingInvite.from_invite(invite, int(now), uses)
        except ValueError as exc:
            raise AgentError(str(exc)) from None
        self.desk.add(pending)
        agent.configure(self.temp_peer(pending))
        agent.emit(ev.InviteCreated(now, invite.id, member_name, invite.expires, uses))
        return invite

    def revoke_invite(self, invite_id: bytes, now: float) -> None:
        slot = self.desk.by_id(invite_id)
        if slot is None or slot.revoked:
            raise AgentError(f"no pending invite {invite_id.hex()}")
        self.desk.revoke(slot, now)
        self.agent.emit(ev.InviteRevoked(now, invite_id))

    def revoke_member(self, who: str | bytes, now: float, reason: str) -> Tombstone:
        agent = self.agent
        record = next((m for m in agent.roster.members() if who in (m.name, m.public_key)), None)
        if record is None:
            raise AgentError(f"mesh {agent.mesh_name} has no member {show(who)}")
        if record.public_key == agent.public_key:
            raise AgentError("a node cannot revoke itself: use leave")
        return self.tombstone(record.public_key, now, reason)

    def set_roles(self, who: str | bytes, roles: frozenset[str], now: float) -> MemberRecord:
        """Re-issue a member's record with `roles` (a version up) and push it: a
        rendezvous member introduces members to each other and relays for them,
        as the admin does. The admin's own roles stay as `init` made them."""
        agent = self.agent
        unknown = roles - ASSIGNABLE_ROLES
        if unknown:
            raise AgentError(f"roles {', '.join(sorted(unknown))} cannot be given: "
                             f"only {', '.join(sorted(ASSIGNABLE_ROLES))}")  # fmt: skip
        record = next((m for m in agent.roster.members() if who in (m.name, m.public_key)), None)
        if record is None:
            raise AgentError(f"mesh {agent.mesh_name} has no member {show(who)}")
        if "admin" in record.roles:
            raise AgentError(f"{record.name} is an admin: its roles stay as they are")
        if record.roles == roles:
            return record
        updated = replace(record, roles=roles, version=record.version + 1)
        signed = Signed.issue(self.authority, updated)
        if agent.apply_blob(signed, now):
            agent.gossip.spread([signed], now)
        return updated

    def tombstone(self, key: bytes, now: float, reason: str) -> Tombstone:
        """Revoke `key`: apply the tombstone here and push it at once."""
        agent = self.agent
        try:
            tombstone = Tombstone(agent.mesh_id, key, int(now), agent.record.name, reason)
        except ValueError as exc:
            raise AgentError(str(exc)) from None
        signed = Signed.issue(self.authority, tombstone)
        if agent.apply_blob(signed, now):
            agent.gossip.spread([signed], now)
        return tombstone

    def member_revoked(self, name: str, now: float) -> None:
        """A revoked member's pending invites (those made out to its name) are refused."""
        for slot in self.desk.slots():
            if slot.pending.member_name == name and slot.status(now) == "open":
                self.desk.revoke(slot, now)

    def join_request(self, temp: bytes, slot: InviteSlot, request: JoinRequest, now: float) -> None:
        agent = self.agent
        cached = slot.accepts.get(request.public_key)
        if cached is not None:  # the accept was lost: the same answer again
            agent.send_raw(temp, cached)
            return
        reason, name = self.desk.refusal(slot, request, agent.mesh_id, agent.roster, now)
        addresses = None
        if reason is None:
            try:
                addresses = agent.pool.allocate(agent.roster.addresses_in_use())
            except PoolExhausted:
                reason = RejectReason.FULL
        if reason is not None or addresses is None or name is None:
            reason = reason or RejectReason.NO_NAME
            text = reject_text(reason, name, slot.pending.member_name)
            agent.send(temp, JoinReject(slot.pending.invite_id, reason, text), now)
            agent.drop(MeshDrop.JOIN_REFUSED)
            invite_id = slot.pending.invite_id
            agent.emit(ev.JoinRefused(now, invite_id, reason.value, name, request.public_key))
            return
        record = MemberRecord(
            agent.mesh_id,
            name,
            request.public_key,
            addresses[0],
            addresses[1],
            frozenset(),
            int(now),
            invite_id=slot.pending.invite_id,
        )
        signed = Signed.issue(self.authority, record)
        if request.candidates:
            agent.reach.directory.heard_directly(request.public_key, 0, request.candidates, now)
        agent.apply_blob(signed, now)
        self.desk.redeem(slot, now)
        slot.accepts[request.public_key] = payload = self._accept(signed, now)
        agent.send_raw(temp, payload)
        agent.gossip.spread([signed], now, exclude=(request.public_key,))

    def _accept(self, signed: Signed, now: float) -> bytes:
        agent = self.agent
        peers = [agent.reach.own_entry()]
        for key in agent.members.rendezvous()[:3]:
            entry = agent.reach.directory.entry(key, now)
            if entry is not None:
                peers.append(entry)
        sponsor = agent.roster.signed_for(agent.public_key)
        assert sponsor is not None
        for count in range(len(peers), -1, -1):
            accept = JoinAccept(
                agent.mesh_id,
                agent.mesh_name,
                agent.authority_key,
                agent.pool.ipv4,
                agent.pool.ipv6,
                signed,
                sponsor,
                tuple(peers[:count]),
            )
            try:
                return encode(accept)
            except MessageError:
                continue
        raise AssertionError("a JOIN_ACCEPT without peers always fits")  # pragma: no cover

    def on_timer(self, now: float) -> None:
        for slot in self.desk.close_due(now):
            self.agent.configure(RemovePeer(slot.pending.public_key))
            self.agent.emit(ev.InviteClosed(now, slot.pending.invite_id, slot.status(now)))
