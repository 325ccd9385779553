"""The roster: order-independent membership rules and anti-entropy."""

from __future__ import annotations

import contextlib
import random
from dataclasses import replace
from functools import cache

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode.mesh.addressing import AddressPool
from meshnode.mesh.antientropy import NUM_BUCKETS, bucket_of
from meshnode.mesh.authority import Authority
from meshnode.mesh.records import MemberRecord, Signed, Tombstone
from meshnode.mesh.roster import (
    MemberAdded,
    MemberRevoked,
    MemberUpdated,
    Roster,
    RosterError,
)

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MESH = bytes(range(16))
AUTHORITY = Authority.from_private_bytes(bytes(range(32)))
POOL = AddressPool.for_mesh(MESH)
T = 1_700_000_000


@cache
def key(n: int) -> bytes:
    return random.Random(n).randbytes(32)


@cache
def record(n: int, version: int = 1, offset: int | None = None, **change: object) -> Signed:
    v4, v6 = POOL.pair(offset or n + 1)
    item = MemberRecord(MESH, f"m{n}", key(n), v4, v6, frozenset(), T, version)
    return Signed.issue(AUTHORITY, replace(item, **change))


@cache
def tombstone(n: int, reason: str = "") -> Signed:
    return Signed.issue(AUTHORITY, Tombstone(MESH, key(n), T + 1, "admin", reason))


def roster(*blobs: Signed) -> Roster:
    r = Roster(MESH, AUTHORITY.key)
    for blob in blobs:
        r.apply(blob, T)
    return r


def refused(r: Roster, blob: Signed) -> str:
    with pytest.raises(RosterError) as info:
        r.apply(blob, T)
    return info.value.reason


def test_members_are_added_once_and_queried() -> None:
    r = Roster(MESH, AUTHORITY.key)
    change = r.apply(record(1), T + 5)
    assert isinstance(change, MemberAdded) and change.at == T + 5
    assert change.record.name == "m1" and change.signed == record(1)
    assert r.apply(record(1), T) is None  # already known
    assert r.member(key(1)) == change.record and r.members() == [change.record]
    assert r.member_at(change.record.ipv6) == change.record == r.member_at(change.record.ipv4)
    assert r.addresses_in_use() == {change.record.ipv4, change.record.ipv6}
    assert r.signed_for(key(1)) == record(1) and r.signed_for(key(2)) is None
    assert not r.is_revoked(key(1)) and len(r) == 1


def test_foreign_and_forged_blobs_are_refused() -> None:
    other = Authority.generate()
    item = Signed.decode(record(1).encode()).verify(AUTHORITY.key, MESH)
    r = roster()
    assert refused(r, Signed.issue(other, item)) == RosterError.BAD_SIGNATURE
    assert refused(r, Signed.issue(AUTHORITY, replace(item, mesh_id=bytes(16)))) == (
        RosterError.FOREIGN_MESH
    )
    garbage = b"\x91\x01"  # a validly signed body that is no record
    assert refused(r, Signed("member", garbage, AUTHORITY.sign("member", garbage))) == (
        RosterError.MALFORMED
    )
    assert len(r) == 0
    with pytest.raises(RosterError):
        r.apply(b"not a blob", T)  # type: ignore[arg-type]


def test_a_tombstone_beats_a_record_in_either_order() -> None:
    first = roster(record(1))
    change = first.apply(tombstone(1), T)
    assert isinstance(change, MemberRevoked) and change.old is not None
    assert change.old.name == "m1" and change.public_key == key(1)
    second = roster(tombstone(1))
    assert refused(second, record(1)) == RosterError.REVOKED
    assert refused(second, record(1, version=9)) == RosterError.REVOKED
    for r in (first, second):
        assert r.is_revoked(key(1)) and r.members() == [] and r.addresses_in_use() == set()
        assert r.signed_for(key(1)) == tombstone(1)
    assert first.digest() == second.digest()
    assert first.apply(tombstone(1), T) is None


def test_of_two_tombstones_the_same_one_wins_everywhere() -> None:
    a, b = roster(tombstone(1, "one"), tombstone(1, "two")), roster(tombstone(1, "two"))
    assert b.apply(tombstone(1, "one"), T) is None
    assert a.digest() == b.digest() and a.tombstones() == b.tombstones()


def test_higher_versions_replace_lower_ones() -> None:
    r = roster(record(1))
    change = r.apply(record(1, version=2, roles=frozenset({"relay"})), T)
    assert isinstance(change, MemberUpdated) and change.old.version == 1
    assert change.record.roles == {"relay"}
    assert refused(r, record(1)) == RosterError.STALE
    assert r.member(key(1)).version == 2  # type: ignore[union-attr]


def test_the_tie_break_is_the_same_in_either_order() -> None:
    x = record(1, version=4, roles=frozenset({"admin"}))
    y = record(1, version=4, roles=frozenset({"relay"}))
    winner = x if x.body_hash < y.body_hash else y
    a, b = roster(x), roster(y)
    for r, late in ((a, y), (b, x)):
        if late == winner:
            assert isinstance(r.apply(late, T), MemberUpdated)
        else:
            assert refused(r, late) == RosterError.STALE
    assert a.signed_for(key(1)) == winner == b.signed_for(key(1))
    assert a.digest() == b.digest()


def test_overlay_addresses_belong_to_one_live_member() -> None:
    r = roster(record(1))
    assert refused(r, record(2, offset=2)) == RosterError.ADDRESS_CONFLICT
    # moving member 1 elsewhere frees its old addresses
    r.apply(record(1, version=2, offset=50), T)
    assert POOL.pair(2)[0] not in r.addresses_in_use()
    assert isinstance(r.apply(record(2, offset=2), T), MemberAdded)
    # so does revoking a member
    r.apply(tombstone(2), T)
    assert isinstance(r.apply(record(3, offset=2), T), MemberAdded)


def test_a_change_rehashes_only_its_bucket() -> None:
    r = roster(*(record(n) for n in range(20)))
    before, digest = r.bucket_hashes(), r.digest()
    assert r.digest() is digest  # cached while nothing changes
    r.apply(tombstone(5), T)
    after = r.bucket_hashes()
    changed = [i for i in range(NUM_BUCKETS) if before[i] != after[i]]
    assert changed == [bucket_of(key(5))] and r.digest() != digest


def sync(a: Roster, b: Roster) -> int:
    """One anti-entropy round from a's side; returns how many summaries crossed."""
    if a.digest() == b.digest():
        return 0
    theirs = b.bucket_hashes()
    differing = [i for i, h in enumerate(a.bucket_hashes()) if h != theirs[i]]
    for index in differing:
        to_send, to_fetch = a.compare(index, b.bucket_summary(index))
        for k in to_send:
            b.apply(a.signed_for(k), T)  # type: ignore[arg-type]
        for k in to_fetch:
            a.apply(b.signed_for(k), T)  # type: ignore[arg-type]
    return len(differing)


def test_two_rosters_converge_by_exchanging_summaries() -> None:
    rng = random.Random(7)
    blobs = [record(n) for n in range(200)]
    blobs += [record(n, version=2, roles=frozenset({"rendezvous"})) for n in range(0, 200, 7)]
    blobs += [tombstone(n) for n in range(0, 200, 11)]
    # a twin of the same version for a few keys: the tie-break must settle them
    blobs += [record(n, version=3, issued=T + 3) for n in range(1, 200, 13)]
    blobs += [record(n, version=3, issued=T + 4) for n in range(1, 200, 13)]
    a, b = Roster(MESH, AUTHORITY.key), Roster(MESH, AUTHORITY.key)
    for blob in blobs:
        for r in rng.sample([a, b], rng.choice([1, 1, 2])):
            with contextlib.suppress(RosterError):  # stale or revoked: arrival order matters
                r.apply(blob, T)
    assert a.digest() != b.digest()
    assert sync(a, b) > 0
    assert a.digest() == b.digest() and a.members() == b.members()
    assert sync(a, b) == 0 and sync(b, a) == 0
    every = Roster(MESH, AUTHORITY.key)
    for blob in sorted(blobs, key=lambda s: s.body_hash):  # yet another order
        with contextlib.suppress(RosterError):
            every.apply(blob, T)
    assert every.digest() == a.digest()
    assert len(a.members()) == 200 - len(range(0, 200, 11))


def test_state_round_trips_and_is_verified_on_load() -> None:
    r = roster(*(record(n) for n in range(30)), tombstone(3), record(4, version=2))
    loaded = Roster.decode(r.encode(), MESH, AUTHORITY.key, T)
    assert loaded.digest() == r.digest() and loaded.members() == r.members()
    with pytest.raises(RosterError) as info:
        Roster.decode(r.encode(), MESH, Authority.generate().key, T)
    assert info.value.reason == RosterError.BAD_SIGNATURE
    fmt, blobs = msgpack.unpackb(r.encode())
    blobs[0] = blobs[0][:-1] + bytes([blobs[0][-1] ^ 1])  # one signature bit
    with pytest.raises(RosterError, match="roster state"):
        Roster.decode(msgpack.packb([fmt, blobs]), MESH, AUTHORITY.key, T)


K = key(1)
OTHER_BUCKET = bytes([(K[0] + 4) % 256]) + K[1:]


@pytest.mark.parametrize(
    "summary",
    [
        None,
        "entries",
        [[K]],
        [[OTHER_BUCKET, "member", 1, bytes(8)]],
        [["member", K, 1, bytes(8)]],
        [[K, "member", 1, bytes(8)], [K, "member", 2, bytes(8)]],
        [[K, "revoke", 1, bytes(8)]],
        [[K, "member", 0, bytes(8)]],
        [[K, "member", True, bytes(8)]],
        [[K, "member", 1, bytes(9)]],
        [[K, "ghost", 1, bytes(8)]],
        [[K, "member", 1, bytes(8)]] * 4097,
    ],
)
def test_bad_summaries_are_refused(summary: object) -> None:
    r = roster(record(1))
    with pytest.raises(RosterError, match="bucket summary"):
        r.compare(bucket_of(K), summary)  # type: ignore[arg-type]


def test_bucket_indexes_are_checked() -> None:
    for index in (-1, NUM_BUCKETS, True, "1"):
        with pytest.raises(RosterError):
            roster().bucket_summary(index)  # type: ignore[arg-type]
        with pytest.raises(RosterError):
            roster().compare(index, [])  # type: ignore[arg-type]


summaries = st.lists(
    st.tuples(
        st.binary(min_size=32, max_size=32) | st.binary(max_size=33) | st.integers(),
        st.sampled_from(["member", "revoke", "x"]) | st.none(),
        st.integers(-1, 2**33) | st.booleans(),
        st.binary(min_size=8, max_size=8) | st.text(max_size=8),
    ).map(list)
    | st.none()
    | st.integers(),
    max_size=6,
)


@SETTINGS
@given(st.integers(0, NUM_BUCKETS - 1), summaries)
def test_compare_raises_only_roster_errors(index: int, summary: list[object]) -> None:
    r = roster(record(1), tombstone(2))
    with contextlib.suppress(RosterError):
        to_send, to_fetch = r.compare(index, summary)  # type: ignore[arg-type]
        assert all(bucket_of(k) == index for k in to_send + to_fetch)


STATE = roster(record(1), record(2), tombstone(3)).encode()


@st.composite
def mutated_state(draw: st.DrawFn) -> bytes:
    fmt, blobs = msgpack.unpackb(STATE)
    at = draw(st.integers(0, len(blobs) - 1))
    blob = bytearray(blobs[at])
    spot = draw(st.integers(0, len(blob) - 1))
    blob[spot] ^= draw(st.integers(1, 255))
    blobs[at] = draw(st.just(bytes(blob)) | st.binary(max_size=40) | st.integers(0, 9))
    return msgpack.packb(draw(st.sampled_from([[fmt, blobs], [fmt], blobs, [2, blobs]])))


@SETTINGS
@given(st.binary(max_size=300) | mutated_state())
def test_state_decoding_raises_only_roster_errors(data: bytes) -> None:
    with contextlib.suppress(RosterError):
        Roster.decode(data, MESH, AUTHORITY.key, T)


near_valid = (
    st.none()
    | st.booleans()
    | st.integers(-2, 2**33)
    | st.sampled_from(["", "m1", "m2", "-x", "admin", "root", "member", "revoke"])
    | st.sampled_from([0, 4, 8, 16, 32]).flatmap(lambda n: st.binary(min_size=n, max_size=n))
    | st.lists(st.sampled_from(["admin", "relay", "rendezvous", 1]), max_size=3)
)


@st.composite
def resigned_mutations(draw: st.DrawFn) -> Signed:
    """A member or tombstone body with one field replaced, signed by the real authority."""
    blob = draw(st.sampled_from([record(1), record(2), tombstone(1), tombstone(3)]))
    items = msgpack.unpackb(blob.body)
    items[draw(st.integers(0, len(items) - 1))] = draw(near_valid)
    if blob.kind == "member" and draw(st.booleans()):  # take a live member's addresses
        items[4:6] = msgpack.unpackb(record(2).body)[4:6]
    body = msgpack.packb(items, use_bin_type=True)
    kind = draw(st.sampled_from([blob.kind, "member", "revoke"]))
    return Signed(kind, body, AUTHORITY.sign(kind, body))


@settings(SETTINGS, max_examples=50)  # each example signs and verifies a dozen times
@given(st.lists(resigned_mutations(), min_size=1, max_size=4))
def test_apply_raises_only_roster_errors(blobs: list[Signed]) -> None:
    r = roster(record(1), record(2), tombstone(3))
    for blob in blobs:
        with contextlib.suppress(RosterError):
            change = r.apply(blob, T)
            assert change is None or isinstance(change, MemberAdded | MemberUpdated | MemberRevoked)
    assert Roster.decode(r.encode(), MESH, AUTHORITY.key, T).digest() == r.digest()
