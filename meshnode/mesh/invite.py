"""One-time invites: what `meshnode invite` prints and `meshnode join` reads.

An invite holds the mesh id and name, the authority's public key, bootstrap
members (WireGuard key, overlay address, endpoints), a one-time secret and an
expiry, all signed by the authority (kind "invite"). Its text form is

    "mn1" + base32(payload + BLAKE2s(payload, digest_size=4)), lowercase, unpadded
    payload = msgpack [body, signature], body = msgpack [1, fields...]

The checksum tells a mistyped or truncated invite apart from a forged one.
The signature only shows that nothing was altered after the authority signed:
whoever hands over an invite chooses the authority too, so the invite itself
is the root of trust, as a wg-quick file is. The secret (see `joinkeys`) gives
the joiner a WireGuard key that the admin has pre-authorised for one join.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from .addressing import MESH_ID_LEN
from .authority import KEY_LEN, SIGNATURE_LEN, Authority, AuthorityKey
from .bootstrap import BootstrapError, BootstrapPeer
from .codec import MAX_TIME, Checker, pack, show
from .joinkeys import SECRET_LEN, InviteKeys, invite_id, invite_keys

__all__ = [
    "BootstrapPeer",
    "Invite",
    "InviteError",
    "InviteExpired",
    "InviteForged",
    "InviteKeys",
    "InviteMalformed",
    "InviteMistyped",
    "InviteUsed",
    "format_invite",
    "invite_id",
    "invite_keys",
    "parse_invite",
]

KIND_INVITE = "invite"
PREFIX = "mn1"
FORMAT = 1
CHECKSUM_LEN = 4
MAX_BOOTSTRAP = 8
MAX_PAYLOAD = 2048  # eight bootstrap peers with eight DNS names each still fit
MAX_TEXT = 16384  # before whitespace is removed
_BASE32 = frozenset("abcdefghijklmnopqrstuvwxyz234567")


class InviteError(ValueError):
    """An invite cannot be used; the message says why in the user's terms."""


class InviteMalformed(InviteError):
    """Not an invite at all, or one that cannot be decoded."""


class InviteMistyped(InviteError):
    """The checksum does not match: a typo or a truncated copy."""


class InviteForged(InviteError):
    """Intact, but the authority's signature does not verify: altered or forged."""


class InviteExpired(InviteError):
    """A genuine invite past its expiry."""

    def __init__(self, expires: int) -> None:
        when = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        super().__init__(f"the invite expired at {when}; ask the mesh's admin for a new one")
        self.expires = expires


class InviteUsed(InviteError):
    """The invite was already redeemed (the admin side finds this out)."""


@dataclass(frozen=True)
class Invite:
    """A signed one-time invite. `create` makes one, `parse_invite` reads one."""

    mesh_id: bytes
    mesh_name: str
    authority: AuthorityKey
    bootstrap: tuple[BootstrapPeer, ...]
    secret: bytes = field(repr=False)  # the one-time credential: never in logs
    expires: int
    member_name: str | None
    signature: bytes

    def __post_init__(self) -> None:
        c = Checker(InviteMalformed, "invite")
        c.blob(self.mesh_id, "mesh id", MESH_ID_LEN)
        c.name(self.mesh_name, "mesh name")
        c.instance(self.authority, "authority key", AuthorityKey)
        c.instance(self.bootstrap, "bootstrap peers", tuple)
        if not 1 <= len(self.bootstrap) <= MAX_BOOTSTRAP:
            c.fail(f"must have 1 to {MAX_BOOTSTRAP} bootstrap peers, has {len(self.bootstrap)}")
        for peer in self.bootstrap:
            c.instance(peer, "bootstrap peer", BootstrapPeer)
        c.blob(self.secret, "secret", SECRET_LEN)
        c.time(self.expires, "expiry")
        if self.member_name is not None:
            c.name(self.member_name, "member name")
        c.blob(self.signature, "signature", SIGNATURE_LEN)

    @classmethod
    def create(
        cls,
        authority: Authority,
        *,
        mesh_id: bytes,
        mesh_name: str,
        bootstrap: tuple[BootstrapPeer, ...],
        now: int,
        lifetime: int,
        member_name: str | None = None,
        secret: bytes | None = None,
    ) -> Invite:
        """A new invite valid for `lifetime` seconds from `now`.

        `secret` is random unless given (tests give it to be deterministic).
        """
        c = Checker(InviteMalformed, "invite")
        c.integer(lifetime, "lifetime", 1, MAX_TIME - c.time(now, "now"))
        unsigned = cls(
            mesh_id,
            mesh_name,
            authority.key,
            tuple(bootstrap),
            os.urandom(SECRET_LEN) if secret is None else secret,
            now + lifetime,
            member_name,
            bytes(SIGNATURE_LEN),
        )
        return replace(unsigned, signature=authority.sign(KIND_INVITE, unsigned.body()))

    def body(self) -> bytes:
        """The exact bytes the authority signs."""
        return pack(
            [
                FORMAT,
                self.mesh_id,
                self.mesh_name,
                self.authority.raw,
                [peer.fields() for peer in self.bootstrap],
                self.secret,
                self.expires,
                self.member_name,
            ]
        )

    @classmethod
    def from_body(cls, body: object, signature: bytes) -> Invite:
        c = Checker(InviteMalformed, "invite")
        if not isinstance(body, bytes):
            c.fail("the body must be bytes")
        mesh_id, mesh_name, authority, peers, secret, expires, member_name = c.fields(
            c.unpack(body, MAX_PAYLOAD), FORMAT, 7
        )
        invite = cls(
            mesh_id,
            mesh_name,
            AuthorityKey(c.blob(authority, "authority key", KEY_LEN)),
            _bootstrap(peers),
            secret,
            expires,
            member_name,
            signature,
        )
        c.canonical(body, invite.body())
        return invite

    @property
    def id(self) -> bytes:
        return invite_id(self.secret)

    def keys(self) -> InviteKeys:
        return invite_keys(self.secret)

    def verify(self) -> bool:
        return self.authority.verify(KIND_INVITE, self.body(), self.signature)

    def expired(self, now: int) -> bool:
        return now >= self.expires

    def to_text(self) -> str:
        return format_invite(self)


def _bootstrap(value: object) -> tuple[BootstrapPeer, ...]:
    peers = Checker(InviteMalformed, "invite").seq(value, "bootstrap", (1, MAX_BOOTSTRAP))
    try:
        return tuple(map(BootstrapPeer.from_fields, peers))
    except BootstrapError as exc:
        raise InviteMalformed(f"invite: {exc}") from None


def _checksum(payload: bytes) -> bytes:
    return hashlib.blake2s(payload, digest_size=CHECKSUM_LEN).digest()


def format_invite(invite: Invite) -> str:
    payload = pack([invite.body(), invite.signature])
    text = base64.b32encode(payload + _checksum(payload)).decode("ascii")
    return PREFIX + text.rstrip("=").lower()


def _payload(text: object) -> bytes:
    """The checksummed payload of an invite's text form."""
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        raise InviteMalformed("this is not a meshnode invite")
    compact = "".join(text.split()).lower()  # line breaks, spaces, any case
    if not compact.startswith(PREFIX):
        raise InviteMalformed(f"this is not a meshnode invite (those start with {PREFIX!r})")
    data = compact[len(PREFIX) :]
    bad = sorted(set(data) - _BASE32)
    if bad:
        raise InviteMalformed(f"this is not a meshnode invite: it contains {show(''.join(bad))}")
    mistyped = InviteMistyped("the invite was mistyped or cut short; copy it again")
    # base32 groups 5 bytes into 8 characters; lengths 1, 3 and 6 mod 8 never occur
    if len(data) % 8 in (1, 3, 6):
        raise mistyped
    try:
        raw = base64.b32decode(data.upper() + "=" * (-len(data) % 8))
    except (binascii.Error, ValueError):
        raise mistyped from None
    # a last character that differs only in its unused low bits is a typo too
    if base64.b32encode(raw).decode("ascii").rstrip("=").lower() != data:
        raise mistyped
    payload, checksum = raw[:-CHECKSUM_LEN], raw[-CHECKSUM_LEN:]
    if len(raw) <= CHECKSUM_LEN or _checksum(payload) != checksum:
        raise mistyped
    return payload


def parse_invite(text: object, now: int) -> Invite:
    """Read an invite, telling malformed, mistyped, forged and expired apart (in that order)."""
    c = Checker(InviteMalformed, "invite")
    body, signature = c.seq(c.unpack(_payload(text), MAX_PAYLOAD), "payload", (2, 2))
    invite = Invite.from_body(body, c.blob(signature, "signature", SIGNATURE_LEN))
    if not invite.verify():
        raise InviteForged(
            "the invite's signature does not match its contents: it was altered or forged"
        )
    if invite.expired(now):
        raise InviteExpired(invite.expires)
    return invite
