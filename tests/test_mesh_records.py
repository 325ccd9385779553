"""Signed membership records: encoding, signatures, strict decoding."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode.mesh.authority import Authority, AuthorityError, AuthorityKey, signed_message
from meshnode.mesh.records import (
    MAX_SIGNED,
    BadSignature,
    ForeignMesh,
    MemberRecord,
    RecordError,
    Signed,
    Tombstone,
)

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MESH = bytes(range(16))
AUTHORITY = Authority.from_private_bytes(bytes(range(32)))
RECORD = MemberRecord(
    MESH,
    "alpha-1",
    b"\x11" * 32,
    IPv4Address("100.64.0.1"),
    IPv6Address("fd00::1"),
    frozenset({"admin", "relay"}),
    issued=1_700_000_000,
    version=3,
    invite_id=b"\x22" * 8,
)
TOMBSTONE = Tombstone(MESH, b"\x11" * 32, 1_700_000_100, "alpha-1", "lost laptop")

# anything msgpack can carry, to replace fields of valid encodings with
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=80)
    | st.binary(max_size=80),
    lambda inner: st.lists(inner, max_size=6),
    max_leaves=12,
)


@st.composite
def byte_mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """A valid encoding with a few bytes flipped, inserted, deleted or cut off."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if op == "flip" and out:
            out[at] ^= draw(st.integers(1, 255))
        elif op == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del out[at : at + draw(st.integers(1, 4))]
        else:
            del out[at:]
    return bytes(out)


# values near the valid ones, so mutations get past the type checks to the
# range checks and the canonical-form check
plausible = (
    st.none()
    | st.booleans()
    | st.integers(-2, 2**34)
    | st.sampled_from(["", "a", "-a", "b-2", "A", "admin", "root", "x\x00", "a" * 64])
    | st.sampled_from([0, 4, 8, 15, 16, 32]).flatmap(lambda n: st.binary(min_size=n, max_size=n))
    | st.lists(st.sampled_from(["admin", "relay", "rendezvous", "root", 1]), max_size=4)
)


@st.composite
def field_mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """A valid list encoding with one field replaced by a near-valid or any msgpack value."""
    items = msgpack.unpackb(data)
    items[draw(st.integers(0, len(items) - 1))] = draw(plausible | values)
    return msgpack.packb(items, use_bin_type=True)


def test_records_round_trip_and_encode_deterministically() -> None:
    assert MemberRecord.decode(RECORD.encode()) == RECORD
    assert Tombstone.decode(TOMBSTONE.encode()) == TOMBSTONE
    founder = replace(RECORD, invite_id=None, roles=frozenset())
    assert MemberRecord.decode(founder.encode()) == founder
    # a set has no order, the encoding does: it must not depend on iteration order
    other = replace(RECORD, roles=frozenset(["relay", "admin"]))
    assert other.encode() == RECORD.encode()


def test_signed_blobs_keep_their_bytes_and_verify() -> None:
    for item in (RECORD, TOMBSTONE):
        signed = Signed.issue(AUTHORITY, item)
        again = Signed.decode(signed.encode())
        assert again == signed and again.body == item.encode()
        assert again.verify(AUTHORITY.key, MESH) == item
        assert len(again.body_hash) == 32


def test_a_record_signed_by_another_authority_is_refused() -> None:
    signed = Signed.issue(Authority.generate(), RECORD)
    with pytest.raises(BadSignature, match="signature"):
        signed.verify(AUTHORITY.key, MESH)
    with pytest.raises(ForeignMesh):
        Signed.issue(AUTHORITY, RECORD).verify(AUTHORITY.key, bytes(16))


def test_signatures_are_domain_separated_by_kind() -> None:
    member = Signed.issue(AUTHORITY, RECORD)
    body = TOMBSTONE.encode()
    # the authority's signature over a tombstone body, but made as a "member" signature
    wrong = Signed("revoke", body, AUTHORITY.sign("member", body))
    with pytest.raises(BadSignature):
        wrong.verify(AUTHORITY.key, MESH)
    assert not AUTHORITY.key.verify("invite", member.body, member.signature)
    assert AUTHORITY.key.verify("member", member.body, member.signature)
    assert signed_message("member", b"x") == b"meshnode/member/v1\x00x"
    for kind in ("", "Member", "a/b", "x\x00", 5):
        with pytest.raises(AuthorityError):
            signed_message(kind, b"")  # type: ignore[arg-type]
    with pytest.raises(AuthorityError):
        signed_message("member", 5)  # type: ignore[arg-type]


def test_authority_keys_round_trip_through_storage() -> None:
    authority = Authority.generate()
    loaded = Authority.from_private_bytes(authority.private_bytes())
    assert loaded.key == authority.key
    assert loaded.sign("member", b"x") == authority.sign("member", b"x")
    assert authority.private_bytes().hex() not in repr(authority)
    for bad in (b"", bytes(31), "k" * 32):
        with pytest.raises(AuthorityError):
            AuthorityKey(bad)  # type: ignore[arg-type]
        with pytest.raises(AuthorityError):
            Authority.from_private_bytes(bad)  # type: ignore[arg-type]
    assert not AUTHORITY.key.verify("member", b"x", b"short")


@pytest.mark.parametrize(
    "change",
    [
        {"name": ""},
        {"name": "-lead"},
        {"name": "Upper"},
        {"name": "a" * 64},
        {"name": "dot.ted"},
        {"name": "ünï"},
        {"name": "tail\n"},
        {"roles": frozenset({"root"})},
        {"roles": {"admin"}},
        {"version": 0},
        {"version": True},
        {"issued": -1},
        {"issued": 1.5},
        {"public_key": b"\x11" * 31},
        {"mesh_id": bytearray(16)},
        {"ipv4": IPv6Address("::1")},
        {"ipv6": "fd00::1"},
        {"invite_id": b""},
    ],
)
def test_invalid_records_cannot_be_made(change: dict[str, object]) -> None:
    with pytest.raises(RecordError):
        replace(RECORD, **change)


@pytest.mark.parametrize(
    "change", [{"by": "Admin"}, {"reason": "x" * 201}, {"reason": "\x1b[2J"}, {"revoked_at": None}]
)
def test_invalid_tombstones_cannot_be_made(change: dict[str, object]) -> None:
    with pytest.raises(RecordError):
        replace(TOMBSTONE, **change)


def test_non_canonical_encodings_are_refused() -> None:
    items = msgpack.unpackb(RECORD.encode())
    for roles in (["relay", "admin"], ["admin", "admin", "relay"]):
        body = msgpack.packb([*items[:6], roles, *items[7:]], use_bin_type=True)
        with pytest.raises(RecordError, match="canonical"):
            MemberRecord.decode(body)
    # the version 3 as a 32-bit int instead of a fixint
    wide = RECORD.encode().replace(b"\x03\xc4\x08", b"\xce\x00\x00\x00\x03\xc4\x08")
    assert msgpack.unpackb(wide) == items
    with pytest.raises(RecordError, match="canonical"):
        MemberRecord.decode(wide)
    newer = msgpack.packb([2, *items[1:]], use_bin_type=True)
    with pytest.raises(RecordError, match="format version 2"):
        MemberRecord.decode(newer)


@SETTINGS
@given(st.binary(max_size=300) | byte_mutations(Signed.issue(AUTHORITY, RECORD).encode()))
def test_signed_decoding_raises_only_record_errors(data: bytes) -> None:
    try:
        signed = Signed.decode(data)
    except RecordError:
        return
    with contextlib.suppress(RecordError):
        signed.verify(AUTHORITY.key, MESH)


@settings(SETTINGS, max_examples=60)  # each example signs twice
@given(
    st.binary(max_size=300)
    | byte_mutations(RECORD.encode())
    | field_mutations(RECORD.encode())
    | byte_mutations(TOMBSTONE.encode())
    | field_mutations(TOMBSTONE.encode())
)
def test_body_decoding_raises_only_record_errors(body: bytes) -> None:
    for decoder in (MemberRecord.decode, Tombstone.decode):
        try:
            item = decoder(body)
        except RecordError:
            continue
        assert item.encode() == body
    # signed by the real authority, so verification reaches the body decoder
    for kind in ("member", "revoke"):
        with contextlib.suppress(RecordError):
            Signed(kind, body, AUTHORITY.sign(kind, body)).verify(AUTHORITY.key, MESH)


@settings(SETTINGS, max_examples=60)
@given(values)
def test_signed_decoding_of_any_msgpack_value(value: object) -> None:
    with pytest.raises(RecordError):
        Signed.decode(msgpack.packb(value, use_bin_type=True))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never used
        b"\xdd\xff\xff\xff\xff",  # an array claiming 4 billion items
        b"\xdb\xff\xff\xff\xff",  # a str claiming 4 GB
        b"\x91" * 5000 + b"\xc0",  # nesting deeper than any stack
        b"\xd6\xff\x00\x00\x00\x01",  # a msgpack timestamp
        b"\xc7\x00\x05",  # an ext type
        b"\x93\xa6member\xc4\x00\xc4\x40" + bytes(64) + b"\x00",  # trailing bytes
        b"\x81\xa1k\xa1v",  # a map
        b"\x81\x91\x00\xa1v",  # a map with a list key
        b"\x93\xa6member\xa2\xff\xfe\xc4\x40" + bytes(64),  # invalid UTF-8
        bytearray(b"\x93"),
        memoryview(b"\x90"),
        "\x90",
        None,
        bytes(MAX_SIGNED + 1),
    ],
)
def test_hostile_msgpack_is_refused(data: object) -> None:
    with pytest.raises(RecordError):
        Signed.decode(data)  # type: ignore[arg-type]
    with pytest.raises(RecordError):
        MemberRecord.decode(data)  # type: ignore[arg-type]
