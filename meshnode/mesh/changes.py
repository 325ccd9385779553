"""What a roster reports about a blob: the change it made, or why it was refused.

The agent turns changes into WireGuard configuration (add, update or remove
a peer) and forwards `signed` verbatim to other members. `at` is the `now`
the change was applied at, for status output; it plays no part in validity.
A refusal's `reason` lets the agent count refusals by cause.
"""

from __future__ import annotations

from dataclasses import dataclass

from .records import MemberRecord, Signed, Tombstone


class RosterError(ValueError):
    """A blob or summary was refused; `reason` is one of the constants below."""

    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad-signature"
    FOREIGN_MESH = "foreign-mesh"
    REVOKED = "revoked"
    STALE = "stale"
    ADDRESS_CONFLICT = "address-conflict"

    def __init__(self, message: str, reason: str = MALFORMED) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class MemberAdded:
    record: MemberRecord
    signed: Signed
    at: int


@dataclass(frozen=True)
class MemberUpdated:
    old: MemberRecord
    record: MemberRecord
    signed: Signed
    at: int


@dataclass(frozen=True)
class MemberRevoked:
    public_key: bytes
    tombstone: Tombstone
    old: MemberRecord | None  # None if the record never reached this node
    signed: Signed
    at: int


RosterChange = MemberAdded | MemberUpdated | MemberRevoked
