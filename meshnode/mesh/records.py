"""Signed membership: member records and tombstones.

A mesh's authority (an Ed25519 key held by its admins, see `authority`) signs
every member record and every revocation. Nodes accept a peer only after
checking that signature, so one member can never forge another. A `Signed`
keeps the exact body bytes it was signed over, so records travel member to
member verbatim and every node hashes the same bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from ipaddress import IPv4Address, IPv6Address

from .addressing import INVITE_ID_LEN, MESH_ID_LEN
from .authority import KEY_LEN, SIGNATURE_LEN, Authority, AuthorityKey
from .codec import MAX_COUNT, Checker, pack, show

__all__ = [  # the authority's classes are re-exported: records are used with them
    "KIND_MEMBER",
    "KIND_REVOKE",
    "ROLES",
    "Authority",
    "AuthorityKey",
    "BadSignature",
    "ForeignMesh",
    "MemberRecord",
    "RecordError",
    "Signed",
    "Tombstone",
]

KIND_MEMBER = "member"
KIND_REVOKE = "revoke"
ROLES = frozenset({"admin", "rendezvous", "relay"})
ASSIGNABLE_ROLES = frozenset({"rendezvous", "relay"})  # by `meshnode roles`

FORMAT = 1  # the first field of every record body
MAX_REASON = 200
MAX_BODY = 1024  # a tombstone with a 200-character UTF-8 reason stays under it
MAX_SIGNED = MAX_BODY + 128


class RecordError(ValueError):
    """A record, tombstone or signed blob is invalid."""


class BadSignature(RecordError):
    """The authority's signature does not verify over the body."""


class ForeignMesh(RecordError):
    """The record is validly signed but belongs to another mesh."""


@dataclass(frozen=True)
class MemberRecord:
    """One member as the authority issued it.

    `version` starts at 1 and is bumped whenever the admin re-issues the
    record (new roles, new addresses); the highest version wins everywhere.
    `invite_id` names the invite it joined with (None for the founder).
    """

    mesh_id: bytes
    name: str
    public_key: bytes
    ipv4: IPv4Address
    ipv6: IPv6Address
    roles: frozenset[str]
    issued: int
    version: int = 1
    invite_id: bytes | None = None

    def __post_init__(self) -> None:
        c = Checker(RecordError, "member record")
        c.blob(self.mesh_id, "mesh id", MESH_ID_LEN)
        c.name(self.name, "name")
        c.blob(self.public_key, "public key", KEY_LEN)
        c.instance(self.ipv4, "IPv4 address", IPv4Address)
        c.instance(self.ipv6, "IPv6 address", IPv6Address)
        c.instance(self.roles, "roles", frozenset)
        for role in self.roles:
            if role not in ROLES:
                c.fail(f"unknown role {show(role)}")
        c.time(self.issued, "issue time")
        c.integer(self.version, "version", 1, MAX_COUNT)
        if self.invite_id is not None:
            c.blob(self.invite_id, "invite id", INVITE_ID_LEN)

    def encode(self) -> bytes:
        return pack(
            [
                FORMAT,
                self.mesh_id,
                self.name,
                self.public_key,
                self.ipv4.packed,
                self.ipv6.packed,
                sorted(self.roles),
                self.issued,
                self.version,
                self.invite_id,
            ]
        )

    @classmethod
    def decode(cls, data: bytes) -> MemberRecord:
        c = Checker(RecordError, "member record")
        mesh_id, name, key, v4, v6, roles, issued, version, invite_id = c.fields(
            c.unpack(data, MAX_BODY), FORMAT, 9
        )
        roles = c.seq(roles, "roles", (0, len(ROLES)))
        if not all(isinstance(role, str) for role in roles):
            c.fail("roles must be text")
        record = cls(
            mesh_id,
            name,
            key,
            IPv4Address(c.blob(v4, "IPv4 address", 4)),
            IPv6Address(c.blob(v6, "IPv6 address", 16)),
            frozenset(roles),
            issued,
            version,
            invite_id,
        )
        c.canonical(data, record.encode())
        return record


@dataclass(frozen=True)
class Tombstone:
    """The revocation of one WireGuard public key: it is refused forever after."""

    mesh_id: bytes
    public_key: bytes
    revoked_at: int
    by: str  # the revoking admin's member name
    reason: str = ""

    def __post_init__(self) -> None:
        c = Checker(RecordError, "tombstone")
        c.blob(self.mesh_id, "mesh id", MESH_ID_LEN)
        c.blob(self.public_key, "public key", KEY_LEN)
        c.time(self.revoked_at, "revocation time")
        c.name(self.by, "admin name")
        c.text(self.reason, "reason", MAX_REASON)

    def encode(self) -> bytes:
        return pack([FORMAT, self.mesh_id, self.public_key, self.revoked_at, self.by, self.reason])

    @classmethod
    def decode(cls, data: bytes) -> Tombstone:
        c = Checker(RecordError, "tombstone")
        items = c.fields(c.unpack(data, MAX_BODY), FORMAT, 5)
        tombstone = cls(*items)
        c.canonical(data, tombstone.encode())
        return tombstone


_DECODERS: dict[str, type[MemberRecord] | type[Tombstone]] = {
    KIND_MEMBER: MemberRecord,
    KIND_REVOKE: Tombstone,
}


@dataclass(frozen=True)
class Signed:
    """An encoded record or tombstone with the authority's signature over it.

    `body` is kept byte for byte as signed: it is what gets forwarded, hashed
    for anti-entropy and verified, never a re-encoding.
    """

    kind: str
    body: bytes
    signature: bytes

    def __post_init__(self) -> None:
        c = Checker(RecordError, "signed record")
        if not isinstance(self.kind, str) or self.kind not in _DECODERS:
            c.fail(f"unknown kind {show(self.kind)}")
        c.instance(self.body, "body", bytes)
        if len(self.body) > MAX_BODY:
            c.fail(f"body of {len(self.body)} bytes is over the limit of {MAX_BODY}")
        c.blob(self.signature, "signature", SIGNATURE_LEN)

    @classmethod
    def issue(cls, authority: Authority, item: MemberRecord | Tombstone) -> Signed:
        """Sign a record or tombstone (admin side)."""
        kind = KIND_MEMBER if isinstance(item, MemberRecord) else KIND_REVOKE
        body = item.encode()
        return cls(kind, body, authority.sign(kind, body))

    @cached_property
    def body_hash(self) -> bytes:
        """BLAKE2s-256 of the body: the tie-break and the anti-entropy identity."""
        return hashlib.blake2s(self.body).digest()

    def encode(self) -> bytes:
        return pack([self.kind, self.body, self.signature])

    @classmethod
    def decode(cls, data: bytes) -> Signed:
        c = Checker(RecordError, "signed record")
        kind, body, signature = c.seq(c.unpack(data, MAX_SIGNED), "encoding", (3, 3))
        return cls(kind, body, signature)

    def verify(self, authority: AuthorityKey, mesh_id: bytes) -> MemberRecord | Tombstone:
        """The record, once the signature over the exact body bytes and the mesh id check out.

        The signature is checked before the body is even decoded, so only
        bytes the authority vouched for reach the body decoder.
        """
        if not authority.verify(self.kind, self.body, self.signature):
            raise BadSignature(f"{self.kind} record: the authority's signature does not verify")
        item = _DECODERS[self.kind].decode(self.body)
        if item.mesh_id != mesh_id:
            raise ForeignMesh(f"{self.kind} record: belongs to mesh {item.mesh_id.hex()}")
        return item
