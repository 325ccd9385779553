"""The coordination protocol: versioned msgpack messages between mesh members.

Every message is one UDP datagram to COORDINATION_PORT on a member's overlay
address, carried inside WireGuard, so the runtime knows which peer's key sent
it. The payload is a msgpack list

    [VERSION, type, field, ...]

and every encoded message is at most MAX_MESSAGE bytes, whatever the size of
the mesh: lists that could grow with it (summaries, keys, blobs, peers) are
cut into several messages by the `chunk_*` helpers. Each message is a small
frozen dataclass that checks its own fields when built, so a message built
locally and a message decoded from a peer pass the same checks. `decode`
turns *any* bytes into a message or a `MessageError` whose `reason` (a
`MeshDrop`) the agent counts; nothing else escapes it. docs/coordination.md
describes every message.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Any, ClassVar

from .addressing import INVITE_ID_LEN, MESH_ID_LEN, ULA_PREFIXLEN
from .antientropy import DIGEST_LEN, HASH8_LEN, NUM_BUCKETS, SummaryEntry, parse_summary
from .authority import KEY_LEN, AuthorityKey
from .codec import MAX_COUNT, MAX_TIME, Checker, pack
from .drops import MeshDrop
from .records import RecordError, Signed

COORDINATION_PORT = 51900
VERSION = 1
MAX_MESSAGE = 1200  # fits any path MTU a WireGuard tunnel has (1280 - 40 - 8 and then some)

MAX_CANDIDATES = 8
MAX_HOST = 253
MAX_KEYS = 32  # WANT, PEERS_REQUEST
MAX_BLOBS = 16  # RECORDS, PUSH (the byte limit usually binds first)
MAX_SUMMARY_ENTRIES = 32
MAX_PEER_ENTRIES = 16
MAX_ACCEPT_PEERS = 4
MAX_TEXT = 200

# what chunking leaves for the list being chunked: the envelope, the other
# fields and the list's own header always fit in the rest
_SLACK = 112

Candidate = tuple[str, int]  # (host, port): an IP literal or a DNS name
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", re.IGNORECASE)


class MessageError(ValueError):
    """A coordination message could not be decoded or encoded; `reason` says why."""

    def __init__(self, message: str, reason: MeshDrop = MeshDrop.MALFORMED) -> None:
        super().__init__(message)
        self.reason = reason


class MessageType(enum.IntEnum):
    HELLO = 1
    BUCKETS = 2
    SUMMARY = 3
    WANT = 4
    RECORDS = 5
    PUSH = 6
    PEERS_REQUEST = 7
    PEERS = 8
    JOIN_REQUEST = 9
    JOIN_ACCEPT = 10
    JOIN_REJECT = 11
    LEAVE = 12
    PUNCH = 13


class HelloKind(enum.IntEnum):
    """Why a HELLO was sent, which says what the receiver does with it."""

    ROUND = 0  # a periodic round: sync if the digests differ, no reply otherwise
    CALL = 1  # reply wanted (start, wake-up, reconnect): sync if they differ, and answer
    ANSWER = 2  # the answer to a CALL: the answerer already started any sync needed


class RejectReason(enum.StrEnum):
    """Why an admin refused a join request (JOIN_REJECT)."""

    USED = "used"  # the invite has no uses left
    REVOKED = "revoked"  # the admin revoked the invite
    EXPIRED = "expired"
    UNKNOWN = "unknown"  # the request names an invite id this temporary key is not for
    FOREIGN_MESH = "foreign_mesh"  # the request is for another mesh
    NAME_TAKEN = "name_taken"
    NAME_MISMATCH = "name_mismatch"  # the invite is for another member name
    NO_NAME = "no_name"  # neither the invite nor the request names the member
    FULL = "full"  # no free overlay address left
    KEY_REVOKED = "key_revoked"  # the joiner's WireGuard key was revoked
    KEY_IN_USE = "key_in_use"  # the joiner's key already belongs to a member
    NOT_ADMIN = "not_admin"  # the member asked holds no authority key


# ------------------------------------------------------------------ field checks


def _checker(what: str) -> Checker:
    return Checker(MessageError, what)


def _host(c: Checker, value: object) -> str:
    host = c.text(value, "candidate host", MAX_HOST)
    try:
        ip_address(host)
    except ValueError:
        labels = host.split(".")
        if not all(_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
            c.fail(f"candidate host {host[:60]!r} is neither an IP address nor a DNS name")
        return host
    if "%" in host:  # a scope names an interface of the sender's machine only
        c.fail(f"candidate host {host[:60]!r} has a scope")
    return host


def check_candidates(c: Checker, value: object) -> tuple[Candidate, ...]:
    """(host, port) pairs: at most MAX_CANDIDATES, no repeats."""
    pairs = c.seq(value, "candidates", (0, MAX_CANDIDATES))
    out: list[Candidate] = []
    for pair in pairs:
        host, port = c.seq(pair, "candidate", (2, 2))
        candidate = (_host(c, host), c.integer(port, "candidate port", 1, 65535))
        if candidate in out:
            c.fail(f"candidate {candidate} is repeated")
        out.append(candidate)
    return tuple(out)


def _keys(c: Checker, value: object, field: str, most: int) -> tuple[bytes, ...]:
    keys = tuple(c.blob(key, field, KEY_LEN) for key in c.seq(value, field + "s", (0, most)))
    if len(set(keys)) != len(keys):
        c.fail(f"a {field} is repeated")
    return keys


def _blobs(c: Checker, value: object) -> tuple[Signed, ...]:
    """Signed blobs, each carried as its own encoding (a msgpack bin)."""
    out = []
    for blob in c.seq(value, "blobs", (0, MAX_BLOBS)):
        out.append(_signed(c, blob, "blob"))
    return tuple(out)


def _signed(c: Checker, value: object, field: str) -> Signed:
    if not isinstance(value, bytes):
        c.fail(f"{field} must be bytes, got {type(value).__name__}")
    try:
        return Signed.decode(value)
    except RecordError as exc:
        c.fail(f"{field}: {exc}")


def _flag(c: Checker, value: object, field: str) -> bool:
    if not isinstance(value, bool):
        c.fail(f"{field} must be true or false, got {type(value).__name__}")
    return value


def _optional_key(c: Checker, value: object, field: str) -> bytes | None:
    return None if value is None else c.blob(value, field, KEY_LEN)


def _network(c: Checker, value: object, field: str, v6: bool) -> IPv4Network | IPv6Network:
    packed, prefixlen = c.seq(value, field, (2, 2))
    size, bits = (16, 128) if v6 else (4, 32)
    address = c.blob(packed, field + " address", size)
    c.integer(prefixlen, field + " prefix length", 0, bits)
    try:
        if v6:
            return IPv6Network((IPv6Address(address), prefixlen))
        return IPv4Network((IPv4Address(address), prefixlen))
    except ValueError:
        c.fail(f"{field} has host bits set")


# ------------------------------------------------------------------ messages


class Message:
    """Base of every message: its type code, its fields as a list, and their checks."""

    TYPE: ClassVar[MessageType]
    FIELDS: ClassVar[int]

    def fields(self) -> list[Any]:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    @classmethod
    def from_fields(cls, c: Checker, items: Sequence[Any]) -> Message:  # pragma: no cover
        raise NotImplementedError

    def encode(self) -> bytes:
        return encode(self)


@dataclass(frozen=True)
class Hello(Message):
    """The sender's roster digest and its own endpoint candidates (anti-entropy's first step)."""

    TYPE: ClassVar = MessageType.HELLO
    FIELDS: ClassVar = 6

    digest: bytes
    count: int
    seq: int  # the version of `candidates`: the sender bumps it when they change
    candidates: tuple[Candidate, ...]
    listen_port: int  # 0 if not known
    kind: HelloKind = HelloKind.ROUND

    def __post_init__(self) -> None:
        c = _checker("HELLO")
        c.blob(self.digest, "digest", DIGEST_LEN)
        c.integer(self.count, "count", 0, MAX_COUNT)
        c.integer(self.seq, "candidate version", 0, MAX_COUNT)
        c.instance(self.candidates, "candidates", tuple)
        check_candidates(c, self.candidates)
        c.integer(self.listen_port, "listen port", 0, 65535)
        if not isinstance(self.kind, HelloKind):
            c.fail("the kind must be a HelloKind")

    @property
    def reply_wanted(self) -> bool:
        return self.kind is HelloKind.CALL

    def fields(self) -> list[Any]:
        cands = [list(x) for x in self.candidates]
        return [self.digest, self.count, self.seq, cands, self.listen_port, int(self.kind)]

    @classmethod
    def from_fields(cls, c: Checker, items: Sequence[Any]) -> Hello:
        digest, count, seq, cands, port, kind = items
        c.integer(kind, "kind", 0, max(HelloKind))
        return cls(digest, count, seq, check_candidates(c, cands), port, HelloKind(kind))


@dataclass(frozen=True)
class Buckets(Message):
    """The 64 bucket hashes (8 bytes each), in answer to a HELLO whose digest differs."""

    TYPE: ClassVar = MessageType.BUCKETS
    FIELDS: ClassVar = 2

    count: int
    hashes: bytes  # NUM_BUCKETS * HASH8_LEN bytes, bucket 0 first

    def __post_init__(self) -> None:
        c = _checker("BUCKETS")
        c.integer(self.count, "count", 0, MAX_COUNT)
        c.blob(self.hashes, "bucket hashes", NUM_BUCKETS * HASH8_LEN)

    @classmethod
    def of(cls, count: int, hashes: Sequence[bytes]) -> Buckets:
        return cls(count, b"".join(hashes))

    def bucket_hashes(self) -> list[bytes]:
        return [self.hashes[i : i + HASH8_LEN] for i in range(0, len(self.hashes), HASH8_LEN)]

    def fields(self) -> list[Any]:
        return [self.count, self.hashes]

    @classmethod
    def from_fields(cls, c: Checker, items: Sequence[Any]) -> Buckets:
        return cls(*items)


@dataclass(frozen=True)
class Summary(Message):
    """The sender's entries of one bucket whose keys lie in [start, end).

    None for `start` is the bucket's beginning, None for `end` its end, so a
    bucket too large for one message is sent as several adjacent ranges.
    """

    TYPE: ClassVar = MessageType.SUMMARY
    FIELDS: ClassVar = 4

    bucket: int
    start: bytes | None
    end: bytes | None
    entries: tuple[SummaryEntry, ...]

    def __post_init__(self) -> None:
        c = _checker("SUMMARY")
        c.integer(self.bucket, "bucket", 0, NUM_BUCKETS - 1)
        start = _optional_key(c, self.start, "range start")
        end = _optional_key(c, self.end, "range end")
        if start is not None and end is not None and not start < end:
            c.fail("the range is empty")
        c.instance(self.entries, "entries", tuple)
        c.seq(self.entries, "entries", (0, MAX_SUMMARY_ENTRIES))
        parse_summary(c, self.bucket, [list(e) for e in self.entries])
        keys = [entry[0] for entry in self.entries]
        if keys != sorted(keys):
            c.fail("entries are not in key order")
        if not all(self.covers(key) for key in keys):
            c.fail("an entry lies outside the range")

    def covers(self, key: bytes) -> bool:
        return (self.start is None or key >= self.start) and (self.end is None or key < self.end)

    def fields(self) -> list[Any]:
        return [self.bucket, self.start, self.end, [list(e) for e in self.entries]]

    @classmethod
    def from_fields(cls, c: Checker, items: Sequence[Any]) -> Summary:
        bucket, start, end, entries = items
        c.integer(bucket, "bucket", 0, NUM_BUCKETS - 1)
        parsed = parse_summary(c, bucket, c.seq(entries, "entries", (0, MAX_SUMMARY_ENTRIES)))
        return cls(bucket, start, end, tuple(parsed.values()))


@dataclass(frozen=True)
class Want(Message):
    """Keys whose blobs the sender asks for (answered with RECORDS)."""

    TYPE: ClassVar = MessageType.WANT
    FIELDS: ClassVar = 1

    keys: tuple[bytes, ...]

    def __post_init__(self) -> None:
        c = _checker("WANT")
        c.instance(self.keys, "keys", tuple)
        _keys(c, self.keys, "key", MAX_KEYS)

    def fields(self) -> list[Any]:
        return [list(self.keys)]

    @classmethod
    def from_fields(cls, c: Checker, items: Sequence[Any]) -> Want:
        return cls(_keys(c, items[0], "key", MAX_KEYS))


@dataclass(frozen=True)
class Records(Message):
    """Signed member records and tombstones, pulled by anti-entropy: applied, never forwarded."""

    TYPE: ClassVar = MessageType.RECORDS
    FIELDS: ClassVar = 1

    blobs: tuple[Signed, ...]

    def __post_init__(self) -> None:
        c = _checker(self.TYPE.name)
        c.instance(self.blobs, "blobs", tuple)
        c.seq(self.blobs, "blobs", (0, MAX_BLOBS))
        for blob in self.blobs:
            c.instance(blob, "blob", Signed)

    def fields(self) -> list[Any]:
        return [[blob.encode() for blob in self.blobs]]

    @classmethod
    def from_fields(cls, c: Checker, items: Sequence[Any]) -> Records:
        return cls(_blobs(c, items[0]))


@dataclass(frozen=True)
class Push(Records):
    """New records and tombstones spread as rumours: a receiver that learns
    something new from one forwards that part once."""

    TYPE: ClassVar = MessageType.PUSH


@dataclass(frozen=True)
class PeersRequest(Message):
    """Members whose endpoint candidates the sender wants (answered with PEERS)."""

    TYPE: ClassVar = MessageType.PEERS_REQUEST
    FIELDS: ClassVar = 1

    keys: tuple[bytes, ...]

    def __post_init__(self) -> None:
        c = _checker("PEERS_REQUEST")
        c.instance(self.keys, "keys", tuple)
        _keys(c, self.keys, "key", MAX_KEYS)

    def fields(self) -> list[Any]:
        return [list(self.keys)]

    @classmethod
    def from_fields(cls, c: Checker, items: Sequence[Any]) -> PeersRequest:
        return cls(_keys(c, items[0], "key", MAX_KEYS))


@dataclass(frozen=True)
class PeerEntry:
    """What one node knows of how to reach a member.

    `seq` is the member's own version of its candidate list (higher wins),
    `age` how many seconds ago the sender (or whoever it learned this from)
    last heard from the member directly, None if never.
    """

    public_key: bytes
    seq: int
    candidates: tuple[Candidate, ...]
    age: int | None

    def __post_init__(self) -> None:
        c = _checker("peer entry")
        c.blob(self.public_key, "public key", KEY_LEN)
        c.integer(self.seq, "candidate version", 0, MAX_COUNT)
        c.instance(self.candidates, "candidates", tuple)
        check_candidates(c, self.candidates)
        if self.age is not None:
            c.integer(self.age, "age", 0, MAX_TIME)

    def fields(self) -> list[Any]:
        return [self.public_key, self.seq, [list(x) for x in self.candidates], self.age]

    @classmethod
    def from_fields(cls, c: Checker, value: object) -> PeerEntry:
        key, seq, cands, age = c.seq(value, "peer entry", (4, 4))
        return cls(key, seq, check_candidates(c, cands), age)


def _peer_entries(c: Checker, value: object, most: int) -> tuple[PeerEntry, ...]:
    entries = tuple(PeerEntry.from_fields(c, v) for v in c.seq(value, "peers", (0, most)))
    if len({e.public_key for e in entries}) != len(entries):
        c.fail("a peer is repeated")
    return entries


@dataclass(frozen=True)
class Peers(Message):
    """Members' endpoint candidates: an answer to PEERS_REQUEST, or with `spread`
    a rumour of changed candidates that each receiver forwards once."""

    TYPE: ClassVar = MessageType.PEERS
    FIELDS: ClassVar = 2

    spread: bool
    entries: tuple[PeerEntry, ...]

    def __post_init__(self) -> None:
        c = _checker("PEERS")
        _flag(c, self.spread, "spread")
        c.instance(self.entries, "entries", tuple)
        c.seq(self.entries, "entries", (0, MAX_PEER_ENTRIES))
        for entry in self.entries:
            c.instance(entry, "entry", PeerEntry)
        if len({e.public_key for e in self.entries}) != len(self.entries):
            c.fail("a peer is repeated")

    def fields(self) -> list[Any]:
        return [self.spread, [e.fields() for e in self.entries]]

    @classmethod
    def from_fields(cls, c: Checker, items: Sequence[Any]) -> Peers:
        spread, entries = items
        return cls(_flag(c, spread, "spread"), _peer_entries(c, entries, MAX_PEER_ENTRIES))


@dataclass(frozen=True)
class JoinRequest(Message):
    """From an invite's temporary peer: the joiner's real key and the name it asks for."""

    TYPE: ClassVar = MessageType.JOIN_REQUEST
    FIELDS: ClassVar = 5

    mesh_id: bytes
    invite_id: bytes
    public_key: bytes  # the joiner's real WireGuard key
    name: str | None
    candidates: tuple[Candidate, ...]  # of the joiner's real interface, if it knows them

    def __post_init__(self) -> None:
        c = _checker("JOIN_REQUEST")
        c.blob(self.mesh_id, "mesh id", MESH_ID_LEN)
        c.blob(self.invite_id, "invite id", INVITE_ID_LEN)
        c.blob(self.public_key, "public key", KEY_LEN)
        if self.name is not None:
            c.name(self.name, "name")
        c.instance(self.candidates, "candidates", tuple)
        check_candidates(c, self.candidates)

    def fields(self) -> list[Any]:
        cands = [list(x) for x in self.candidates]
        return [self.mesh_id, self.invite_id, self.public_key, self.name, cands]

    @classmethod
    def from_fields(cls, c: Checker, items: Sequence[Any]) -> JoinRequest:
        mesh_id, invite_id, key, name, cands = items
        return cls(mesh_id, invite_id, key, name, check_candidates(c, cands))


@dataclass(frozen=True)
class JoinAccept(Message):
    """The admin's answer to a join: everything the joiner needs to become a member."""

    TYPE: ClassVar = MessageType.JOIN_ACCEPT
    FIELDS: ClassVar = 8

    mesh_id: bytes
    mesh_name: str
    authority: AuthorityKey
    ipv4_cidr: IPv4Network
    ipv6_prefix: IPv6Network
    record: Signed  # the joiner's member record
    sponsor: Signed  # the accepting member's own record
    peers: tuple[PeerEntry, ...]  # how to reach the sponsor and a few other members

    def __post_init__(self) -> None:
        c = _checker("JOIN_ACCEPT")
        c.blob(self.mesh_id, "mesh id", MESH_ID_LEN)
        c.name(self.mesh_name, "mesh name")
        c.instance(self.authority, "authority key", AuthorityKey)
        c.instance(self.ipv4_cidr, "IPv4 range", IPv4Network)
        if self.ipv4_cidr.prefixlen > 30:
            c.fail("the IPv4 range must be /30 or wider")
        c.instance(self.ipv6_prefix, "IPv6 prefix", IPv6Network)
        if self.ipv6_prefix.prefixlen != ULA_PREFIXLEN:
            c.fail(f"the IPv6 prefix must be a /{ULA_PREFIXLEN}")
        c.instance(self.record, "record", Signed)
        c.instance(self.sponsor, "sponsor record", Signed)
        c.instance(self.peers, "peers", tuple)
        c.seq(self.peers, "peers", (0, MAX_ACCEPT_PEERS))
        for entry in self.peers:
            c.instance(entry, "peer", PeerEntry)

    def fields(self) -> list[Any]:
        return [
            self.mesh_id,
            self.mesh_name,
            self.authority.raw,
            [self.ipv4_cidr.network_address.packed, self.ipv4_cidr.prefixlen],
            [self.ipv6_prefix.network_address.packed, self.ipv6_prefix.prefixlen],
            self.record.encode(),
            self.sponsor.encode(),
            [e.fields() for e in self.peers],
        ]

    @classmethod
    def from_fields(cls, c: Checker, items: Sequence[Any]) -> JoinAccept:
        mesh_id, name, authority, v4, v6, record, sponsor, peers = items
        return cls(
            mesh_id,
            name,
            AuthorityKey(c.blob(authority, "authority key", KEY_LEN)),
            _network(c, v4, "IPv4 range", v6=False),  # type: ignore[arg-type]
            _network(c, v6, "IPv6 prefix", v6=True),  # type: ignore[arg-type]
            _signed(c, record, "record"),
            _signed(c, sponsor, "sponsor record"),
            _peer_entries(c, peers, MAX_ACCEPT_PEERS),
        )


@dataclass(frozen=True)
class JoinReject(Message):
    """The admin's refusal of a join, with a reason code and words for the user."""

    TYPE: ClassVar = MessageType.JOIN_REJECT
    FIELDS: ClassVar = 3

    invite_id: bytes
    reason: RejectReason
    text: str

    def __post_init__(self) -> None:
        c = _checker("JOIN_REJECT")
        c.blob(self.invite_id, "invite id", INVITE_ID_LEN)
        if not isinstance(self.reason, RejectReason):
            c.fail("the reason must be a RejectReason")
        c.text(self.text, "text", MAX_TEXT)

    def fields(self) -> list[Any]:
        return [self.invite_id, self.reason.value, self.text]

    @classmethod
    def from_fields(cls, c: Checker, items: Sequence[Any]) -> JoinReject:
        invite_id, reason, text = items
        try:
            known = RejectReason(reason)
        except ValueError:
            c.fail(f"unknown reason {str(reason)[:40]!r}")
        return cls(invite_id, known, text)


@dataclass(frozen=True)
class Leave(Message):
    """The sender leaves the mesh for good (it takes its interface down next)."""

    TYPE: ClassVar = MessageType.LEAVE
    FIELDS: ClassVar = 1

    text: str = ""

    def __post_init__(self) -> None:
        _checker("LEAVE").text(self.text, "text", MAX_TEXT)

    def fields(self) -> list[Any]:
        return [self.text]

    @classmethod
    def from_fields(cls, c: Checker, items: Sequence[Any]) -> Leave:
        return cls(items[0])


NAT_KINDS = ("unknown", "endpoint-independent", "endpoint-dependent")


@dataclass(frozen=True)
class Punch(Message):
    """A "probe me now": the sender is probing the receiver's candidates and asks it
    to probe these (its current candidates, reflexive ones included) at the same
    moment, so both NATs open towards each other. `nat` is the sender's mapping
    behaviour as its netcheck found it (for `status` to say why a path is relayed)."""

    TYPE: ClassVar = MessageType.PUNCH
    FIELDS: ClassVar = 2

    candidates: tuple[Candidate, ...]
    nat: str = "unknown"

    def __post_init__(self) -> None:
        c = _checker("PUNCH")
        c.instance(self.candidates, "candidates", tuple)
        check_candidates(c, self.candidates)
        if self.nat not in NAT_KINDS:
            c.fail(f"unknown NAT kind {str(self.nat)[:40]!r}")

    def fields(self) -> list[Any]:
        return [[list(x) for x in self.candidates], self.nat]

    @classmethod
    def from_fields(cls, c: Checker, items: Sequence[Any]) -> Punch:
        cands, nat = items
        return cls(check_candidates(c, cands), c.text(nat, "nat", 40))


_TYPES: dict[int, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        Buckets,
        Summary,
        Want,
        Records,
        Push,
        PeersRequest,
        Peers,
        JoinRequest,
        JoinAccept,
        JoinReject,
        Leave,
        Punch,
    )
}


# ------------------------------------------------------------------ wire form


def encode(message: Message) -> bytes:
    """[VERSION, type, fields...]; refuses (OVERSIZED) anything over MAX_MESSAGE bytes."""
    data = pack([VERSION, int(message.TYPE), *message.fields()])
    if len(data) > MAX_MESSAGE:
        raise MessageError(
            f"{message.TYPE.name}: {len(data)} bytes is over the limit of {MAX_MESSAGE}",
            MeshDrop.OVERSIZED,
        )
    return data


def decode(data: object) -> Message:
    """One message from a peer's datagram payload; any problem is a MessageError."""
    c = _checker("coordination message")
    if isinstance(data, bytes | bytearray | memoryview) and len(data) > MAX_MESSAGE:
        raise MessageError(
            f"coordination message: {len(data)} bytes is over the limit of {MAX_MESSAGE}",
            MeshDrop.OVERSIZED,
        )
    items = c.seq(c.unpack(data, MAX_MESSAGE), "envelope", (2, 2 + 16))
    version, kind = items[0], items[1]
    if not isinstance(version, int) or isinstance(version, bool):
        c.fail("the version must be an integer")
    if version != VERSION:
        raise MessageError(
            f"coordination message: version {str(version)[:20]} is not spoken here "
            f"(this meshnode speaks {VERSION})",
            MeshDrop.BAD_VERSION,
        )
    if isinstance(kind, bool) or not isinstance(kind, int) or kind not in _TYPES:
        raise MessageError(
            f"coordination message: unknown type {str(kind)[:20]}", MeshDrop.UNKNOWN_TYPE
        )
    cls = _TYPES[kind]
    c = _checker(cls.TYPE.name)
    fields = c.seq(items[2:], "fields", (cls.FIELDS, cls.FIELDS))
    return cls.from_fields(c, fields)


# ------------------------------------------------------------------ chunking


def _chunks(items: Iterable[Any], size_of: Any, most: int, budget: int) -> list[list[Any]]:
    out: list[list[Any]] = []
    current: list[Any] = []
    used = 0
    for item in items:
        size = size_of(item)
        if current and (used + size > budget or len(current) >= most):
            out.append(current)
            current, used = [], 0
        current.append(item)
        used += size
    if current:
        out.append(current)
    return out


def chunk_blobs(cls: type[Records], blobs: Iterable[Signed]) -> list[Records]:
    """RECORDS (or PUSH) messages carrying `blobs`, each message within MAX_MESSAGE."""
    groups = _chunks(blobs, lambda b: len(b.encode()) + 3, MAX_BLOBS, MAX_MESSAGE - _SLACK)
    return [cls(tuple(group)) for group in groups]


def chunk_keys(cls: type[Want] | type[PeersRequest], keys: Iterable[bytes]) -> list[Any]:
    return [cls(tuple(g)) for g in _chunks(keys, lambda k: 34, MAX_KEYS, MAX_MESSAGE)]


def chunk_summary(bucket: int, entries: Sequence[SummaryEntry]) -> list[Summary]:
    """One bucket's summary as adjacent key ranges that together cover the whole bucket."""
    entries = sorted(entries)
    groups = _chunks(
        entries,
        lambda e: len(pack(list(e))),
        MAX_SUMMARY_ENTRIES,
        MAX_MESSAGE - _SLACK - 2 * (KEY_LEN + 2),
    ) or [[]]
    out = []
    for i, group in enumerate(groups):
        start = None if i == 0 else group[0][0]
        end = None if i == len(groups) - 1 else groups[i + 1][0][0]
        out.append(Summary(bucket, start, end, tuple(group)))
    return out


def chunk_peers(entries: Iterable[PeerEntry], spread: bool) -> list[Peers]:
    groups = _chunks(
        entries, lambda e: len(pack(e.fields())), MAX_PEER_ENTRIES, MAX_MESSAGE - _SLACK
    )
    return [Peers(spread, tuple(group)) for group in groups]


def fit_candidates(candidates: Iterable[Candidate], budget: int = 600) -> tuple[Candidate, ...]:
    """The first candidates that are valid, distinct, at most MAX_CANDIDATES and
    `budget` encoded bytes: what a node publishes about itself."""
    c = _checker("candidates")
    out: list[Candidate] = []
    used = 0
    for candidate in candidates:
        try:
            (checked,) = check_candidates(c, [candidate])
        except MessageError:
            continue
        size = len(pack(list(checked)))
        if checked in out or len(out) == MAX_CANDIDATES or used + size > budget:
            continue
        out.append(checked)
        used += size
    return tuple(out)
