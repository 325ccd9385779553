"""One-time invites: text form, error classes, secret derivations, pending state."""

from __future__ import annotations

import base64
import contextlib
import hashlib
from dataclasses import replace
from ipaddress import IPv6Address

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode.mesh.authority import Authority
from meshnode.mesh.bootstrap import BootstrapError, BootstrapPeer
from meshnode.mesh.invite import (
    Invite,
    InviteError,
    InviteExpired,
    InviteForged,
    InviteMalformed,
    InviteMistyped,
    InviteUsed,
    parse_invite,
)
from meshnode.mesh.joinkeys import JoinKeyError, invite_id, invite_keys
from meshnode.mesh.pending import PendingInvite
from meshnode.wireguard import keys

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = 1_700_000_000
AUTHORITY = Authority.from_private_bytes(bytes(range(32)))
PEER = BootstrapPeer(
    b"\x33" * 32,
    IPv6Address("fd00::1"),
    (("203.0.113.7", 51820), ("2001:db8::7", 51820), ("hub.example.net", 4500)),
)
INVITE = Invite.create(
    AUTHORITY,
    mesh_id=bytes(range(16)),
    mesh_name="home",
    bootstrap=(PEER,),
    now=NOW,
    lifetime=3600,
    member_name="laptop",
    secret=b"\x44" * 32,
)
TEXT = INVITE.to_text()
BASE32 = "abcdefghijklmnopqrstuvwxyz234567"


def token(payload: bytes) -> str:
    """The text form of any payload, with a correct checksum."""
    checksum = hashlib.blake2s(payload, digest_size=4).digest()
    return "mn1" + base64.b32encode(payload + checksum).decode().rstrip("=").lower()


def test_the_text_form_round_trips_and_tolerates_copying() -> None:
    assert TEXT.startswith("mn1") and TEXT.strip().lower() == TEXT
    assert parse_invite(TEXT, NOW) == INVITE
    wrapped = "\n".join(TEXT[i : i + 60] for i in range(0, len(TEXT), 60))
    assert parse_invite(f"  \t{wrapped.upper()}\r\n ", NOW) == INVITE
    assert parse_invite(" ".join(TEXT), NOW) == INVITE
    assert INVITE.verify() and INVITE.expires == NOW + 3600


def test_a_flipped_character_is_a_mistyped_invite() -> None:
    for at in (3, 10, len(TEXT) // 2, len(TEXT) - 2, len(TEXT) - 1):
        other = next(c for c in BASE32 if c != TEXT[at])
        with pytest.raises(InviteMistyped, match="mistyped or cut short; copy it again"):
            parse_invite(TEXT[:at] + other + TEXT[at + 1 :], NOW)


@pytest.mark.parametrize("keep", [3, 4, 20, -1, -4, -8])
def test_a_cut_short_invite_is_a_mistyped_invite(keep: int) -> None:
    with pytest.raises(InviteMistyped):
        parse_invite(TEXT[:keep], NOW)


@pytest.mark.parametrize(
    "text",
    ["", "   ", "hello", "mn2" + TEXT[3:], TEXT[1:], TEXT.replace("a", "0"), TEXT + "!", 42, None],
)
def test_garbage_is_a_malformed_invite(text: object) -> None:
    with pytest.raises(InviteMalformed, match="not a meshnode invite"):
        parse_invite(text, NOW)


def test_an_altered_invite_with_a_good_checksum_is_forged() -> None:
    packed_body, signature = msgpack.unpackb(token_payload(TEXT))
    body = msgpack.unpackb(packed_body)
    body[4][0][2][0][0] = "198.51.100.66"  # the attacker's endpoint
    altered = msgpack.packb([msgpack.packb(body, use_bin_type=True), signature])
    with pytest.raises(InviteForged, match="altered or forged"):
        parse_invite(token(altered), NOW)
    # signed by another authority, but claiming to be from ours
    other = replace(INVITE, signature=Authority.generate().sign("invite", INVITE.body()))
    with pytest.raises(InviteForged):
        parse_invite(other.to_text(), NOW)


def token_payload(text: str) -> bytes:
    data = text[3:].upper()
    return base64.b32decode(data + "=" * (-len(data) % 8))[:-4]


def test_an_expired_invite_says_when_it_expired() -> None:
    assert parse_invite(TEXT, NOW + 3599) == INVITE
    with pytest.raises(InviteExpired, match="expired at 2023-11-14 23:13:20 UTC") as info:
        parse_invite(TEXT, NOW + 3600)
    assert info.value.expires == NOW + 3600


def test_errors_are_told_apart_in_order() -> None:
    forged = replace(INVITE, signature=bytes(64)).to_text()
    with pytest.raises(InviteForged):  # forged and expired: forged
        parse_invite(forged, NOW + 10**6)
    with pytest.raises(InviteMistyped):  # mistyped and expired: mistyped
        parse_invite(TEXT[:-1], NOW + 10**6)
    with pytest.raises(InviteMalformed):  # a good checksum over a payload that is no invite
        parse_invite(token(msgpack.packb([1, 2, 3])), NOW)
    for error in (InviteMalformed, InviteMistyped, InviteForged, InviteExpired, InviteUsed):
        assert issubclass(error, InviteError) and issubclass(error, ValueError)


def test_derivations_are_deterministic_and_consistent() -> None:
    secret = b"\x44" * 32
    private, public, psk = invite_keys(secret)
    assert invite_keys(secret) == (private, public, psk) == INVITE.keys()
    assert keys.public_key(private) == public
    assert keys.clamp(private) == private
    assert len(psk) == 32 and psk not in (private, public)
    assert invite_id(secret) == INVITE.id and len(INVITE.id) == 8
    # the secret and what it unlocks stay out of logs and tracebacks
    shown = repr(INVITE) + repr(INVITE.keys()) + repr(PendingInvite.from_invite(INVITE, NOW))
    for value in (secret, private, psk):
        assert str(value) not in shown and value.hex() not in shown
    assert invite_id(b"\x45" * 32) != INVITE.id
    assert invite_keys(b"\x45" * 32).public_key != public
    for bad in (b"", b"\x44" * 31, "x" * 32):
        with pytest.raises(JoinKeyError):
            invite_id(bad)  # type: ignore[arg-type]


def test_invites_are_random_unless_given_a_secret() -> None:
    first, second = (
        Invite.create(
            AUTHORITY, mesh_id=bytes(16), mesh_name="m", bootstrap=(PEER,), now=NOW, lifetime=60
        )
        for _ in range(2)
    )
    assert first.secret != second.secret and first.member_name is None
    with pytest.raises(InviteMalformed):
        Invite.create(
            AUTHORITY, mesh_id=bytes(16), mesh_name="m", bootstrap=(PEER,), now=NOW, lifetime=0
        )


@pytest.mark.parametrize(
    "endpoint",
    [
        ("1.2.3.456", 1),
        ("exa mple.com", 1),
        ("-bad.example", 1),
        ("bad-.example", 1),
        ("fe80::1%eth0", 1),
        ("", 1),
        ("a" * 64 + ".example", 1),
        ("example.com", 0),
        ("example.com", 65536),
        ("example.com", True),
        ("example.com",),
    ],
)
def test_bad_bootstrap_endpoints_are_refused(endpoint: tuple[object, ...]) -> None:
    with pytest.raises(BootstrapError):
        BootstrapPeer(b"\x33" * 32, IPv6Address("fd00::1"), (endpoint,))  # type: ignore[arg-type]


def test_bootstrap_peers_need_one_to_eight_endpoints() -> None:
    with pytest.raises(BootstrapError):
        BootstrapPeer(b"\x33" * 32, IPv6Address("fd00::1"), ())
    with pytest.raises(BootstrapError):
        BootstrapPeer(b"\x33" * 32, IPv6Address("fd00::1"), (("a.example", 1),) * 9)


def test_pending_invites_keep_the_keys_not_the_secret() -> None:
    pending = PendingInvite.from_invite(INVITE, NOW)
    private, public, psk = INVITE.keys()
    assert (pending.public_key, pending.preshared_key) == (public, psk)
    encoded = pending.encode()
    assert INVITE.secret not in encoded and private not in encoded
    assert PendingInvite.decode(encoded) == pending
    assert pending.usable(NOW) and not pending.usable(INVITE.expires)
    used = pending.redeem(NOW + 1)
    assert used.uses_left == 0 and not used.usable(NOW)
    with pytest.raises(InviteUsed):
        used.redeem(NOW + 2)
    with pytest.raises(InviteExpired):
        pending.redeem(INVITE.expires)


@SETTINGS
@given(st.text(max_size=400) | st.text(alphabet=BASE32, max_size=600).map("mn1".__add__))
def test_parsing_any_text_raises_only_invite_errors(text: str) -> None:
    with pytest.raises(InviteError):
        parse_invite(text, NOW)


# values near the valid ones, so mutations get past the type checks to the
# range checks, the canonical-form check and the signature
plausible = (
    st.none()
    | st.booleans()
    | st.integers(-2, 2**34)
    | st.integers(-(2**63), 2**64 - 1)
    | st.sampled_from(["", "a", "-a", "b-2", "A", "1.2.3.4", "::1", "x.example", "a" * 64])
    | st.sampled_from([0, 1, 4, 8, 16, 32, 64]).flatmap(lambda n: st.binary(min_size=n, max_size=n))
    | st.lists(st.integers(-9, 9), max_size=3)
)


@st.composite
def mutated_payloads(draw: st.DrawFn) -> bytes:
    """The real payload with one field of the body (or the wrapper) replaced."""
    body, signature = msgpack.unpackb(token_payload(TEXT))
    items = msgpack.unpackb(body)
    path = draw(st.sampled_from([(), (4,), (4, 0), (4, 0, 2), (4, 0, 2, 0)]))
    target = items
    for index in path:
        target = target[index]
    target[draw(st.integers(0, len(target) - 1))] = draw(plausible)
    body = msgpack.packb(items, use_bin_type=True)
    wrapper = [body, signature]
    if draw(st.integers(0, 5)) == 0:
        wrapper = draw(st.sampled_from([[body], [body, signature, 1], body, [signature, body]]))
    return msgpack.packb(wrapper, use_bin_type=True)


@SETTINGS
@given(mutated_payloads() | st.binary(max_size=300))
def test_payloads_with_good_checksums_raise_only_invite_errors(payload: bytes) -> None:
    with contextlib.suppress(InviteError):
        parse_invite(token(payload), NOW)


@st.composite
def mutated_pending(draw: st.DrawFn) -> bytes:
    items = msgpack.unpackb(PendingInvite.from_invite(INVITE, NOW).encode())
    items[draw(st.integers(0, len(items) - 1))] = draw(plausible)
    data = msgpack.packb(items, use_bin_type=True)
    return data[: draw(st.sampled_from([len(data), draw(st.integers(0, len(data)))]))]


@SETTINGS
@given(st.binary(max_size=200) | mutated_pending())
def test_pending_invite_decoding_raises_only_invite_errors(data: bytes) -> None:
    try:
        pending = PendingInvite.decode(data)
    except InviteError:
        return
    assert pending.encode() == data
