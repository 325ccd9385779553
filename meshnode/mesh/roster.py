"""The verified membership of one mesh, and the anti-entropy that equalises it.

A roster holds the authority-signed blobs of one mesh by WireGuard public
key: at most one member record or one tombstone per key. `apply` decides
between blobs with rules that give the same result on every node whatever
order the blobs arrive in:

- a tombstone beats any record of its key, forever;
- a higher record version beats a lower one;
- of two different blobs of one version (or two tombstones), the one whose
  body hash is smaller wins.

One rule depends on arrival order: a record whose overlay address another
live member holds is refused. A single admin never issues such a pair, and
when an address moves (old holder re-issued or revoked first) a refused record
is accepted once anti-entropy offers it again. Two admins assigning the same
address concurrently would leave nodes disagreeing until one is re-issued.

Anti-entropy (see `antientropy`) compares digests, then bucket hashes, then
bucket summaries. The roster caches each bucket's hash and invalidates only
the bucket a change touches, so an idle `digest()` costs nothing per member.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address

from .addressing import MESH_ID_LEN
from .antientropy import (
    HASH8_LEN,
    NUM_BUCKETS,
    SummaryEntry,
    bucket_hash,
    bucket_of,
    diff,
    digest,
    parse_summary,
)
from .authority import AuthorityKey

# part of this module's interface: `apply` returns the changes and raises RosterError
from .changes import MemberAdded, MemberRevoked, MemberUpdated, RosterChange, RosterError
from .codec import Checker, pack
from .records import (
    KIND_MEMBER,
    KIND_REVOKE,
    BadSignature,
    ForeignMesh,
    MemberRecord,
    RecordError,
    Signed,
    Tombstone,
)

FORMAT = 1
MAX_STATE = 16 << 20
MAX_ENTRIES = 1 << 16

Address = IPv4Address | IPv6Address


class Roster:
    """The members and tombstones of one mesh, each verified against its authority."""

    def __init__(self, mesh_id: bytes, authority: AuthorityKey) -> None:
        c = Checker(RosterError, "roster")
        c.blob(mesh_id, "mesh id", MESH_ID_LEN)
        c.instance(authority, "authority key", AuthorityKey)
        self.mesh_id = mesh_id
        self.authority = authority
        self._records: dict[bytes, tuple[Signed, MemberRecord]] = {}
        self._tombstones: dict[bytes, tuple[Signed, Tombstone]] = {}
        self._owners: dict[Address, bytes] = {}  # overlay address -> live member's key
        self._buckets: list[set[bytes]] = [set() for _ in range(NUM_BUCKETS)]
        self._bucket_hashes: list[bytes | None] = [None] * NUM_BUCKETS
        self._digest: bytes | None = None

    # ------------------------------------------------------------ applying blobs

    def apply(self, signed: Signed, now: int) -> RosterChange | None:
        """Verify and take in one blob; None if membership did not change.

        (A second tombstone for a revoked key may still replace the held one
        by the tie-break, so that every node keeps the same bytes; that too
        returns None.) `now` only stamps the returned change: validity never
        depends on the local clock, because every node must reach the same
        verdict on the same blob or anti-entropy would never settle.
        """
        if not isinstance(signed, Signed):
            raise RosterError(f"expected a Signed blob, got {type(signed).__name__}")
        try:
            item = signed.verify(self.authority, self.mesh_id)
        except BadSignature as exc:
            raise RosterError(str(exc), RosterError.BAD_SIGNATURE) from None
        except ForeignMesh as exc:
            raise RosterError(str(exc), RosterError.FOREIGN_MESH) from None
        except RecordError as exc:
            raise RosterError(str(exc)) from None
        if isinstance(item, Tombstone):
            return self._revoke(signed, item, now)
        return self._admit(signed, item, now)

    def _revoke(self, signed: Signed, tombstone: Tombstone, now: int) -> MemberRevoked | None:
        key = tombstone.public_key
        known = self._tombstones.get(key)
        if known is not None:
            # already revoked; only the deterministic choice of blob may change
            if signed.body_hash < known[0].body_hash:
                self._tombstones[key] = (signed, tombstone)
                self._touch(key)
            return None
        old = self._records.pop(key, None)
        if old is not None:
            self._release(old[1])
        self._tombstones[key] = (signed, tombstone)
        self._touch(key)
        return MemberRevoked(key, tombstone, None if old is None else old[1], signed, now)

    def _admit(self, signed: Signed, record: MemberRecord, now: int) -> RosterChange | None:
        key = record.public_key
        current = self._records.get(key)
        if current is not None and current[0].body == signed.body:
            return None
        refusal = self._refusal(signed, record, current)
        if refusal is not None:
            raise RosterError(f"member {record.name}: {refusal[1]}", refusal[0])
        if current is not None:
            self._release(current[1])
        self._records[key] = (signed, record)
        self._owners[record.ipv4] = self._owners[record.ipv6] = key
        self._touch(key)
        if current is None:
            return MemberAdded(record, signed, now)
        return MemberUpdated(current[1], record, signed, now)

    def _refusal(
        self, signed: Signed, record: MemberRecord, current: tuple[Signed, MemberRecord] | None
    ) -> tuple[str, str] | None:
        """(reason, problem) if the record may not replace what is held."""
        if record.public_key in self._tombstones:
            return RosterError.REVOKED, f"its key {record.public_key.hex()[:16]} was revoked"
        if current is not None:
            held, old = current
            if record.version < old.version or (
                record.version == old.version and signed.body_hash > held.body_hash
            ):
                return RosterError.STALE, f"version {record.version} loses to {old.version}"
        for address in (record.ipv4, record.ipv6):
            owner = self._owners.get(address)
            if owner is not None and owner != record.public_key:
                return RosterError.ADDRESS_CONFLICT, (
                    f"{address} belongs to {self._records[owner][1].name}"
                )
        return None

    def _release(self, record: MemberRecord) -> None:
        for address in (record.ipv4, record.ipv6):
            if self._owners.get(address) == record.public_key:
                del self._owners[address]

    def _touch(self, key: bytes) -> None:
        index = bucket_of(key)
        self._buckets[index].add(key)
        self._bucket_hashes[index] = None
        self._digest = None

    def copy(self) -> Roster:
        """An independent roster holding the same blobs (the immutable ones are shared).

        Cheap: nothing is verified or decoded again. Simulations of large
        meshes give every node its own copy of one roster this way.
        """
        other = Roster(self.mesh_id, self.authority)
        other._records = dict(self._records)
        other._tombstones = dict(self._tombstones)
        other._owners = dict(self._owners)
        other._buckets = [set(bucket) for bucket in self._buckets]
        other._bucket_hashes = list(self._bucket_hashes)
        other._digest = self._digest
        return other

    # ------------------------------------------------------------ queries

    def members(self) -> list[MemberRecord]:
        """Live members, in public-key order."""
        return [self._records[key][1] for key in sorted(self._records)]

    def member(self, public_key: bytes) -> MemberRecord | None:
        held = self._records.get(public_key)
        return None if held is None else held[1]

    def member_at(self, address: Address) -> MemberRecord | None:
        """The live member holding an overlay address."""
        key = self._owners.get(address)
        return None if key is None else self._records[key][1]

    def is_revoked(self, public_key: bytes) -> bool:
        return public_key in self._tombstones

    def tombstones(self) -> list[Tombstone]:
        return [self._tombstones[key][1] for key in sorted(self._tombstones)]

    def addresses_in_use(self) -> set[Address]:
        return set(self._owners)

    def signed_for(self, public_key: bytes) -> Signed | None:
        """The blob to send a peer that lacks `public_key` (its tombstone if revoked)."""
        held = self._tombstones.get(public_key) or self._records.get(public_key)
        return None if held is None else held[0]

    def __len__(self) -> int:
        return len(self._records) + len(self._tombstones)

    # ------------------------------------------------------------ anti-entropy

    def _entry(self, key: bytes) -> SummaryEntry:
        if key in self._tombstones:
            return (key, KIND_REVOKE, 0, self._tombstones[key][0].body_hash[:HASH8_LEN])
        signed, record = self._records[key]
        return (key, KIND_MEMBER, record.version, signed.body_hash[:HASH8_LEN])

    def _check_bucket(self, index: object) -> int:
        return Checker(RosterError, "roster").integer(index, "bucket", 0, NUM_BUCKETS - 1)

    def bucket_summary(self, index: int) -> list[SummaryEntry]:
        return [self._entry(key) for key in sorted(self._buckets[self._check_bucket(index)])]

    def bucket_hashes(self) -> list[bytes]:
        """The 64 bucket hashes; only buckets changed since the last call are rehashed."""
        hashes = []
        for index, cached in enumerate(self._bucket_hashes):
            if cached is None:
                cached = self._bucket_hashes[index] = bucket_hash(self.bucket_summary(index))
            hashes.append(cached)
        return hashes

    def digest(self) -> bytes:
        """16 bytes that two rosters share exactly when they hold the same blobs."""
        if self._digest is None:
            self._digest = digest(len(self), self.bucket_hashes())
        return self._digest

    def compare(
        self, index: int, their_summary: Sequence[SummaryEntry]
    ) -> tuple[list[bytes], list[bytes]]:
        """(keys whose blobs to send them, keys whose blobs to ask them for), in key order.

        `their_summary` comes from a peer and is checked strictly; a bad one
        raises RosterError (reason "malformed").
        """
        index = self._check_bucket(index)
        theirs = parse_summary(Checker(RosterError, "bucket summary"), index, their_summary)
        return diff({entry[0]: entry for entry in self.bucket_summary(index)}, theirs)

    # ------------------------------------------------------------ state file

    def encode(self) -> bytes:
        """Every held blob, tombstones first, for the state file."""
        held = [self._tombstones[k][0] for k in sorted(self._tombstones)]
        held += [self._records[k][0] for k in sorted(self._records)]
        return pack([FORMAT, [signed.encode() for signed in held]])

    @classmethod
    def decode(cls, data: bytes, mesh_id: bytes, authority: AuthorityKey, now: int) -> Roster:
        """Load a state file, verifying every blob again (the file may have been edited)."""
        roster = cls(mesh_id, authority)
        c = Checker(RosterError, "roster state")
        (blobs,) = c.fields(c.unpack(data, MAX_STATE), FORMAT, 1)
        for blob in c.seq(blobs, "blobs", (0, MAX_ENTRIES)):
            try:
                signed = Signed.decode(blob)
            except RecordError as exc:
                c.fail(str(exc))
            try:
                roster.apply(signed, now)
            except RosterError as exc:
                raise RosterError(f"roster state: {exc}", exc.reason) from None
        return roster
