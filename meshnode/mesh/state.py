"""What a node keeps of one mesh between runs: `MeshAgent(state)` and `agent.to_state()`.

The state file is msgpack like every other mesh object, and `decode` checks
it as strictly as a message from a peer (the file may have been edited or
cut short): every roster blob is verified again against the authority.
Writing it atomically with mode 0600 is the glue's job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from .addressing import MESH_ID_LEN, AddressPool, default_ipv4_cidr, ula_prefix
from .authority import KEY_LEN, Authority, AuthorityKey
from .codec import MAX_COUNT, Checker, pack
from .directory import PeerInfo
from .invite import InviteError
from .messages import Candidate, MessageError, check_candidates
from .pending import PendingInvite
from .records import MemberRecord, Signed
from .roster import Roster, RosterError

FORMAT = 1
MAX_STATE = 64 << 20
MAX_ITEMS = 1 << 16


class StateError(ValueError):
    """A mesh state file (or a state handed to the agent) is invalid."""


@dataclass
class MeshState:
    """One mesh as one node holds it. `roster` must hold this node's own record."""

    mesh_id: bytes
    mesh_name: str
    authority: AuthorityKey
    public_key: bytes  # this node's WireGuard public key in this mesh
    roster: Roster
    ipv4_cidr: IPv4Network
    ipv6_prefix: IPv6Network
    authority_private: bytes | None = field(default=None, repr=False)  # admins only
    pending: tuple[PendingInvite, ...] = ()
    directory: dict[bytes, PeerInfo] = field(default_factory=dict)
    left: dict[bytes, int] = field(default_factory=dict)  # key -> record version it left at
    candidates: tuple[Candidate, ...] = ()  # what this node last published about itself
    candidates_seq: int = 0

    def check(self) -> None:
        c = Checker(StateError, "mesh state")
        c.blob(self.mesh_id, "mesh id", MESH_ID_LEN)
        c.name(self.mesh_name, "mesh name")
        c.instance(self.authority, "authority key", AuthorityKey)
        c.blob(self.public_key, "public key", KEY_LEN)
        c.instance(self.roster, "roster", Roster)
        if self.roster.mesh_id != self.mesh_id or self.roster.authority != self.authority:
            c.fail("the roster belongs to another mesh or authority")
        try:
            AddressPool(self.ipv4_cidr, self.ipv6_prefix)
        except ValueError as exc:
            c.fail(str(exc))
        if self.authority_private is not None:
            c.blob(self.authority_private, "authority private key", KEY_LEN)
            if Authority.from_private_bytes(self.authority_private).key != self.authority:
                c.fail("the authority private key does not match the authority key")
        if self.roster.member(self.public_key) is None:
            revoked = self.roster.is_revoked(self.public_key)
            c.fail("this node's key was revoked" if revoked else "it holds no record of this node")
        for pending in self.pending:
            c.instance(pending, "pending invite", PendingInvite)
        try:
            check_candidates(Checker(MessageError, "own candidates"), self.candidates)
        except MessageError as exc:
            c.fail(str(exc))
        c.integer(self.candidates_seq, "candidate version", 0, MAX_COUNT)

    @property
    def record(self) -> MemberRecord:
        record = self.roster.member(self.public_key)
        if record is None:
            raise StateError("mesh state: it holds no record of this node")
        return record

    @property
    def pool(self) -> AddressPool:
        return AddressPool(self.ipv4_cidr, self.ipv6_prefix)

    # ------------------------------------------------------------ file form

    def encode(self) -> bytes:
        return pack(
            [
                FORMAT,
                self.mesh_id,
                self.mesh_name,
                self.authority.raw,
                self.authority_private,
                self.public_key,
                self.roster.encode(),
                [self.ipv4_cidr.network_address.packed, self.ipv4_cidr.prefixlen],
                [self.ipv6_prefix.network_address.packed, self.ipv6_prefix.prefixlen],
                [p.encode() for p in self.pending],
                [
                    [key, info.seq, [list(x) for x in info.candidates], info.heard]
                    for key, info in sorted(self.directory.items())
                ],
                [[key, version] for key, version in sorted(self.left.items())],
                [[list(x) for x in self.candidates], self.candidates_seq],
            ]
        )

    @classmethod
    def decode(cls, data: bytes, now: float) -> MeshState:
        c = Checker(StateError, "mesh state")
        (
            mesh_id,
            name,
            authority,
            private,
            own,
            roster,
            v4,
            v6,
            pending,
            directory,
            left,
            candidates,
        ) = c.fields(c.unpack(data, MAX_STATE), FORMAT, 12)
        mesh_id = c.blob(mesh_id, "mesh id", MESH_ID_LEN)
        authority = AuthorityKey(c.blob(authority, "authority key", KEY_LEN))
        if not isinstance(roster, bytes):
            c.fail("the roster must be bytes")
        try:
            held = Roster.decode(roster, mesh_id, authority, int(now))
        except RosterError as exc:
            c.fail(str(exc))
        cands, seq = c.seq(candidates, "own candidates", (2, 2))
        state = cls(
            mesh_id,
            name,
            authority,
            own,
            held,
            _v4(c, v4),
            _v6(c, v6),
            private,
            tuple(_pending(c, p) for p in c.seq(pending, "pending invites", (0, MAX_ITEMS))),
            _directory(c, directory),
            _left(c, left),
            _candidates(c, cands),
            seq,
        )
        state.check()
        return state


def _v4(c: Checker, value: object) -> IPv4Network:
    packed, prefixlen = c.seq(value, "IPv4 range", (2, 2))
    address = IPv4Address(c.blob(packed, "IPv4 range", 4))
    try:
        return IPv4Network((address, c.integer(prefixlen, "IPv4 prefix length", 0, 32)))
    except ValueError as exc:
        c.fail(str(exc))


def _v6(c: Checker, value: object) -> IPv6Network:
    packed, prefixlen = c.seq(value, "IPv6 prefix", (2, 2))
    address = IPv6Address(c.blob(packed, "IPv6 prefix", 16))
    try:
        return IPv6Network((address, c.integer(prefixlen, "IPv6 prefix length", 0, 128)))
    except ValueError as exc:
        c.fail(str(exc))


def _pending(c: Checker, value: object) -> PendingInvite:
    if not isinstance(value, bytes):
        c.fail("a pending invite must be bytes")
    try:
        return PendingInvite.decode(value)
    except InviteError as exc:
        c.fail(str(exc))


def _candidates(c: Checker, value: object) -> tuple[Candidate, ...]:
    try:
        return check_candidates(Checker(MessageError, "candidates"), value)
    except MessageError as exc:
        c.fail(str(exc))


def _time(c: Checker, value: object, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        c.fail(f"{field} must be a finite number")
    return float(value)


def _directory(c: Checker, value: object) -> dict[bytes, PeerInfo]:
    out: dict[bytes, PeerInfo] = {}
    for item in c.seq(value, "directory", (0, MAX_ITEMS)):
        key, seq, cands, heard = c.seq(item, "directory entry", (4, 4))
        out[c.blob(key, "key", KEY_LEN)] = PeerInfo(
            c.integer(seq, "candidate version", 0, MAX_COUNT),
            _candidates(c, cands),
            _time(c, heard, "heard"),
        )
    return out


def _left(c: Checker, value: object) -> dict[bytes, int]:
    out: dict[bytes, int] = {}
    for item in c.seq(value, "left members", (0, MAX_ITEMS)):
        key, version = c.seq(item, "left member", (2, 2))
        out[c.blob(key, "key", KEY_LEN)] = c.integer(version, "version", 1, MAX_COUNT)
    return out


def found_mesh(
    *,
    mesh_id: bytes,
    mesh_name: str,
    member_name: str,
    public_key: bytes,
    authority: Authority,
    now: float,
    ipv4_cidr: IPv4Network | None = None,
    roles: frozenset[str] = frozenset({"admin"}),
) -> MeshState:
    """A new mesh whose first member (at host offset 1) is this node, its admin."""
    pool = AddressPool(ipv4_cidr or default_ipv4_cidr(mesh_id), ula_prefix(mesh_id))
    v4, v6 = pool.pair(1)
    record = MemberRecord(mesh_id, member_name, public_key, v4, v6, roles, int(now))
    roster = Roster(mesh_id, authority.key)
    roster.apply(Signed.issue(authority, record), int(now))
    state = MeshState(
        mesh_id,
        mesh_name,
        authority.key,
        public_key,
        roster,
        pool.ipv4,
        pool.ipv6,
        authority.private_bytes(),
    )
    state.check()
    return state
