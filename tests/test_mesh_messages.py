"""Coordination messages: round trips, size limits, chunking, strict decoding."""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import replace
from ipaddress import IPv4Network, IPv6Network
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode.mesh.addressing import AddressPool
from meshnode.mesh.antientropy import NUM_BUCKETS, bucket_of
from meshnode.mesh.authority import Authority
from meshnode.mesh.drops import MeshDrop
from meshnode.mesh.messages import (
    COORDINATION_PORT,
    MAX_MESSAGE,
    Buckets,
    Hello,
    HelloKind,
    JoinAccept,
    JoinReject,
    JoinRequest,
    Leave,
    Message,
    MessageError,
    PeerEntry,
    Peers,
    PeersRequest,
    Punch,
    Push,
    Records,
    RejectReason,
    Summary,
    Want,
    chunk_blobs,
    chunk_keys,
    chunk_peers,
    chunk_summary,
    decode,
    encode,
    fit_candidates,
)
from meshnode.mesh.records import MemberRecord, Signed, Tombstone

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MESH = bytes(range(16))
AUTHORITY = Authority.from_private_bytes(bytes(range(32)))
POOL = AddressPool.for_mesh(MESH)
T = 1_700_000_000
K = b"\x07" * 32


def key(n: int) -> bytes:
    return n.to_bytes(2, "big") * 16


def record(n: int, name: str | None = None) -> Signed:
    v4, v6 = POOL.pair(n + 1)
    item = MemberRecord(MESH, name or f"m{n}", key(n), v4, v6, frozenset({"relay"}), T, 3)
    return Signed.issue(AUTHORITY, item)


def long_tombstone() -> Signed:
    return Signed.issue(AUTHORITY, Tombstone(MESH, key(9), T, "admin", "é" * 200))


CANDS = (("192.0.2.1", 51820), ("2001:db8::1", 51820), ("hub.example.net", 4500))
ENTRY = PeerEntry(key(1), 5, CANDS, 12)
EXAMPLES: list[Message] = [
    Hello(bytes(16), 3, 7, CANDS, 51820, HelloKind.CALL),
    Hello(b"\x01" * 16, 0, 0, (), 0),
    Buckets.of(2, [bytes([i]) * 8 for i in range(NUM_BUCKETS)]),
    Summary(bucket_of(K), None, None, ((K, "member", 2, bytes(8)),)),
    Summary(bucket_of(K), K, None, ((K, "revoke", 0, bytes(8)),)),
    Want((key(1), key(2))),
    Records((record(1), record(2))),
    Push((record(3),)),
    Push((long_tombstone(),)),
    PeersRequest((key(4),)),
    Peers(True, (ENTRY, PeerEntry(key(2), 0, (), None))),
    JoinRequest(MESH, b"\x05" * 8, key(5), "laptop", CANDS),
    JoinRequest(MESH, b"\x05" * 8, key(5), None, ()),
    JoinAccept(
        MESH,
        "home",
        AUTHORITY.key,
        POOL.ipv4,
        POOL.ipv6,
        record(1),
        record(2),
        (ENTRY,),
    ),
    JoinReject(b"\x05" * 8, RejectReason.NAME_TAKEN, "the name laptop is taken"),
    Leave("bye"),
    Leave(),
    Punch((("198.18.0.7", 41641), ("2001:db8::7", 51820)), "endpoint-dependent"),
    Punch(()),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips_within_the_size_limit(message: Message) -> None:
    data = encode(message)
    assert len(data) <= MAX_MESSAGE
    assert decode(data) == message
    assert message.encode() == data
    assert msgpack.unpackb(data)[:2] == [1, int(message.TYPE)]


def test_the_port_and_limits_are_what_the_docs_say() -> None:
    assert COORDINATION_PORT == 51900 and MAX_MESSAGE == 1200
    assert Hello(bytes(16), 0, 0, (), 0).reply_wanted is False
    assert EXAMPLES[0].reply_wanted is True  # type: ignore[attr-defined]
    assert Push((record(1),)) != Records((record(1),))  # same fields, other meaning


def reason(data: object) -> MeshDrop:
    with pytest.raises(MessageError) as info:
        decode(data)
    return info.value.reason


def test_envelope_problems_have_their_own_reasons() -> None:
    assert reason(msgpack.packb([2, 1, "x"])) is MeshDrop.BAD_VERSION
    assert reason(msgpack.packb([0, 1])) is MeshDrop.BAD_VERSION
    assert reason(msgpack.packb([1, 99])) is MeshDrop.UNKNOWN_TYPE
    assert reason(msgpack.packb([1, True])) is MeshDrop.UNKNOWN_TYPE
    assert reason(msgpack.packb([1, "hello"])) is MeshDrop.UNKNOWN_TYPE
    assert reason(b"\x00" * (MAX_MESSAGE + 1)) is MeshDrop.OVERSIZED
    for bad in (b"", b"\xc1", b"\x92\x01", msgpack.packb({"a": 1}), msgpack.packb([True, 1])):
        assert reason(bad) is MeshDrop.MALFORMED
    assert reason("text") is MeshDrop.MALFORMED
    hello = msgpack.unpackb(encode(EXAMPLES[0]))
    assert reason(msgpack.packb([*hello, 0])) is MeshDrop.MALFORMED  # one field too many
    assert reason(msgpack.packb(hello[:-1])) is MeshDrop.MALFORMED


def test_encoding_refuses_oversized_messages() -> None:
    with pytest.raises(MessageError) as info:
        encode(Records(tuple(record(n, "x" * 60) for n in range(8))))
    assert info.value.reason is MeshDrop.OVERSIZED


def accept(**change: Any) -> JoinAccept:
    return replace(EXAMPLES[13], **change)  # type: ignore[type-var]


@pytest.mark.parametrize(
    "build",
    [
        lambda: Hello(bytes(15), 0, 0, (), 0),
        lambda: Hello(bytes(16), -1, 0, (), 0),
        lambda: Hello(bytes(16), 0, 0, (("192.0.2.1", 0),), 0),
        lambda: Hello(bytes(16), 0, 0, (("192.0.2.1", 1),) * 2, 0),
        lambda: Hello(bytes(16), 0, 0, (("fe80::1%eth0", 1),), 0),
        lambda: Hello(bytes(16), 0, 0, (("1.2.3.456", 1),), 0),
        lambda: Hello(bytes(16), 0, 0, (("a b", 1),), 0),
        lambda: Hello(bytes(16), 0, 0, tuple((f"10.0.0.{i}", 1) for i in range(9)), 0),
        lambda: Hello(bytes(16), 0, 0, (), 70000),
        lambda: Hello(bytes(16), 0, 0, (), 0, 1),  # type: ignore[arg-type]
        lambda: Buckets(0, bytes(511)),
        lambda: Summary(64, None, None, ()),
        lambda: Summary(0, K, K, ()),
        lambda: Summary(bucket_of(K), None, K, ((K, "member", 1, bytes(8)),)),
        lambda: Want((K, K)),
        lambda: Want(tuple(key(n) for n in range(33))),
        lambda: Records((b"blob",)),  # type: ignore[arg-type]
        lambda: Peers(1, ()),  # type: ignore[arg-type]
        lambda: Peers(False, (ENTRY, ENTRY)),
        lambda: PeerEntry(K, 0, (), -1),
        lambda: JoinRequest(MESH, bytes(7), K, None, ()),
        lambda: JoinRequest(MESH, bytes(8), K, "Bad Name", ()),
        lambda: JoinReject(bytes(8), "used", ""),  # type: ignore[arg-type]
        lambda: JoinReject(bytes(8), RejectReason.USED, "\x1b[31m"),
        lambda: Leave("x" * 201),
        lambda: Punch((), "symmetric"),
        lambda: Punch((("fe80::1%eth0", 1),)),
        lambda: accept(ipv4_cidr=IPv4Network("10.0.0.0/31")),
        lambda: accept(ipv6_prefix=IPv6Network("fd00::/48")),
        lambda: accept(mesh_name="Home"),
        lambda: accept(peers=(ENTRY,) * 5),
    ],
)
def test_messages_check_their_fields_when_built(build: Any) -> None:
    with pytest.raises(MessageError):
        build()


def test_summary_chunks_cover_the_bucket_in_adjacent_ranges() -> None:
    index = 5
    keys = sorted(bytes([index << 2, n]) + bytes(30) for n in range(150))
    entries = [(k, "member", 1, bytes(8)) for k in keys]
    chunks = chunk_summary(index, entries)
    assert len(chunks) > 2 and all(len(encode(c)) <= MAX_MESSAGE for c in chunks)
    assert chunks[0].start is None and chunks[-1].end is None
    for a, b in itertools.pairwise(chunks):
        assert a.end == b.start == b.entries[0][0]
    assert [e for c in chunks for e in c.entries] == entries
    assert all(sum(c.covers(k) for c in chunks) == 1 for k in keys)
    (empty,) = chunk_summary(index, [])
    assert empty.entries == () and empty.covers(keys[0])


def test_blob_key_and_peer_chunks_fit() -> None:
    blobs = [record(n, "n" * 60) for n in range(40)] + [long_tombstone()]
    for cls in (Records, Push):
        chunks = chunk_blobs(cls, blobs)
        assert all(type(c) is cls and len(encode(c)) <= MAX_MESSAGE for c in chunks)
        assert [b for c in chunks for b in c.blobs] == blobs
    keys = [key(n) for n in range(100)]
    for cls2 in (Want, PeersRequest):
        chunks2 = chunk_keys(cls2, keys)
        assert [len(c.keys) for c in chunks2] == [32, 32, 32, 4]
        assert all(len(encode(c)) <= MAX_MESSAGE for c in chunks2)
    long = tuple((f"host{i}." + "x" * 60 + ".example", 1) for i in range(8))
    entries = [PeerEntry(key(n), n, long, n) for n in range(20)]
    chunks3 = chunk_peers(entries, spread=True)
    assert all(len(encode(c)) <= MAX_MESSAGE and c.spread for c in chunks3)
    assert [e for c in chunks3 for e in c.entries] == entries
    assert chunk_blobs(Records, []) == [] and chunk_keys(Want, []) == []


def test_fit_candidates_keeps_what_can_be_published() -> None:
    given_ = [("192.0.2.1", 1), ("192.0.2.1", 1), ("bad host", 2), ("10.0.0.1", 0)]
    given_ += [(f"10.0.1.{i}", 51820) for i in range(12)]
    fitted = fit_candidates(given_)  # type: ignore[arg-type]
    assert fitted[0] == ("192.0.2.1", 1) and len(fitted) == 8
    long = [(f"{'y' * 60}{i}.example", 1) for i in range(8)]
    assert len(fit_candidates(long, budget=200)) == 2


# ------------------------------------------------------------ fuzzing


@SETTINGS
@given(st.binary(max_size=1300))
def test_random_bytes_raise_only_message_errors(data: bytes) -> None:
    with contextlib.suppress(MessageError):
        decode(data)


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.binary(max_size=40)
    | st.sampled_from([b"\x07" * 32, bytes(16), bytes(8), "member", "revoke", "used"]),
    lambda inner: st.lists(inner, max_size=5),
    max_leaves=20,
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid message with one field (or a nested item of one) replaced."""
    items = msgpack.unpackb(encode(draw(st.sampled_from(EXAMPLES))))
    at = draw(st.integers(0, len(items) - 1))
    target = items
    while isinstance(target[at], list) and target[at] and draw(st.booleans()):
        target = target[at]
        at = draw(st.integers(0, len(target) - 1))
    target[at] = draw(values)
    return msgpack.packb(items, use_bin_type=True)


@st.composite
def flipped(draw: st.DrawFn) -> bytes:
    data = bytearray(encode(draw(st.sampled_from(EXAMPLES))))
    for _ in range(draw(st.integers(1, 3))):
        data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


@SETTINGS
@given(mutated() | flipped() | values.map(lambda v: msgpack.packb(v, use_bin_type=True)))
def test_mutated_messages_raise_only_message_errors(data: bytes) -> None:
    try:
        message = decode(data)
    except MessageError as exc:
        assert isinstance(exc.reason, MeshDrop)
        return
    assert decode(encode(message)) == message  # whatever decodes, re-encodes


def test_a_resigned_body_is_still_just_a_blob() -> None:
    # RECORDS carries any well-formed Signed; verifying it is the roster's job
    forged = replace(record(1), signature=bytes(64))
    assert decode(encode(Records((forged,)))) == Records((forged,))
