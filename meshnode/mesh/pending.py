"""What an admin node keeps about an invite it issued and nobody redeemed yet.

Only what the join needs is kept: the invite id, the temporary WireGuard
public key and PSK derived from the secret (the admin configures them as a
temporary peer), the suggested member name and the limits. The secret itself
is never stored, so a leaked state file cannot be turned back into invites.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .addressing import INVITE_ID_LEN
from .authority import KEY_LEN
from .codec import MAX_COUNT, Checker, pack
from .invite import Invite, InviteExpired, InviteMalformed, InviteUsed

FORMAT = 1
MAX_ENCODED = 512


@dataclass(frozen=True)
class PendingInvite:
    """An issued invite, as the admin's state file holds it."""

    invite_id: bytes
    public_key: bytes
    preshared_key: bytes = field(repr=False)
    member_name: str | None
    expires: int
    uses_left: int
    created: int

    def __post_init__(self) -> None:
        c = Checker(InviteMalformed, "pending invite")
        c.blob(self.invite_id, "invite id", INVITE_ID_LEN)
        c.blob(self.public_key, "public key", KEY_LEN)
        c.blob(self.preshared_key, "preshared key", KEY_LEN)
        if self.member_name is not None:
            c.name(self.member_name, "member name")
        c.time(self.expires, "expiry")
        c.integer(self.uses_left, "uses left", 0, MAX_COUNT)
        c.time(self.created, "creation time")

    @classmethod
    def from_invite(cls, invite: Invite, now: int, uses: int = 1) -> PendingInvite:
        keys = invite.keys()
        return cls(
            invite.id,
            keys.public_key,
            keys.preshared_key,
            invite.member_name,
            invite.expires,
            uses,
            now,
        )

    def usable(self, now: int) -> bool:
        return self.uses_left > 0 and now < self.expires

    def redeem(self, now: int) -> PendingInvite:
        """The invite after one more use; raises if it is expired or used up.

        The caller removes the temporary peer once `uses_left` reaches 0.
        """
        if now >= self.expires:
            raise InviteExpired(self.expires)
        if self.uses_left == 0:
            raise InviteUsed(f"invite {self.invite_id.hex()} was already used")
        return replace(self, uses_left=self.uses_left - 1)

    def encode(self) -> bytes:
        return pack(
            [
                FORMAT,
                self.invite_id,
                self.public_key,
                self.preshared_key,
                self.member_name,
                self.expires,
                self.uses_left,
                self.created,
            ]
        )

    @classmethod
    def decode(cls, data: bytes) -> PendingInvite:
        c = Checker(InviteMalformed, "pending invite")
        pending = cls(*c.fields(c.unpack(data, MAX_ENCODED), FORMAT, 7))
        c.canonical(data, pending.encode())
        return pending
