"""What happened in a mesh, as the agent reports it (`MeshAgent.next_event()`).

The node logs these and `meshnode log` shows them; `describe()` gives the
plain words. `at` is the agent's `now` when it happened (Unix seconds).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from meshnode.wireguard.keys import to_base64


def short_key(key: bytes) -> str:
    """The first 10 characters of the base64 key, as `wg show` users recognise them."""
    return to_base64(key)[:10]


def _who(name: str | None, key: bytes) -> str:
    return f"{name} ({short_key(key)})" if name else short_key(key)


@dataclass(frozen=True)
class MeshEvent:
    at: float

    def describe(self) -> str:  # pragma: no cover - every event defines it
        raise NotImplementedError


@dataclass(frozen=True)
class MemberJoined(MeshEvent):
    """A member record this node did not hold (a join, or one learned while catching up)."""

    name: str
    public_key: bytes
    ipv4: IPv4Address
    ipv6: IPv6Address
    invite_id: bytes | None
    issued: int

    def describe(self) -> str:
        how = f" with invite {self.invite_id.hex()}" if self.invite_id else " (founder)"
        return f"{_who(self.name, self.public_key)} joined{how} as {self.ipv4} and {self.ipv6}"


@dataclass(frozen=True)
class MemberUpdated(MeshEvent):
    name: str
    public_key: bytes
    version: int
    roles: frozenset[str]

    def describe(self) -> str:
        roles = ", ".join(sorted(self.roles)) or "none"
        who = _who(self.name, self.public_key)
        return f"{who} was re-issued (version {self.version}, roles {roles})"


@dataclass(frozen=True)
class MemberRevoked(MeshEvent):
    name: str | None  # None if this node never held the member's record
    public_key: bytes
    by: str
    reason: str

    def describe(self) -> str:
        why = f": {self.reason}" if self.reason else ""
        return f"{_who(self.name, self.public_key)} was revoked by {self.by}{why}"


@dataclass(frozen=True)
class MemberLeft(MeshEvent):
    name: str | None
    public_key: bytes

    def describe(self) -> str:
        return f"{_who(self.name, self.public_key)} left the mesh"


@dataclass(frozen=True)
class SelfRevoked(MeshEvent):
    """This node's own key was revoked: the mesh no longer accepts it."""

    by: str
    reason: str

    def describe(self) -> str:
        why = f": {self.reason}" if self.reason else ""
        return f"this node was revoked from the mesh by {self.by}{why}"


@dataclass(frozen=True)
class PeerReachable(MeshEvent):
    name: str
    public_key: bytes
    endpoint: tuple[str, int] | None
    path: str

    def describe(self) -> str:
        where = f" at {self.endpoint[0]}:{self.endpoint[1]}" if self.endpoint else ""
        return f"{_who(self.name, self.public_key)} is reachable{where} ({self.path})"


@dataclass(frozen=True)
class PeerUnreachable(MeshEvent):
    name: str
    public_key: bytes

    def describe(self) -> str:
        return f"{_who(self.name, self.public_key)} stopped answering"


@dataclass(frozen=True)
class InviteCreated(MeshEvent):
    invite_id: bytes
    member_name: str | None
    expires: int
    uses: int

    def describe(self) -> str:
        named = f" for {self.member_name}" if self.member_name else ""
        return f"invite {self.invite_id.hex()} created{named} ({self.uses} use(s))"


@dataclass(frozen=True)
class InviteRevoked(MeshEvent):
    invite_id: bytes

    def describe(self) -> str:
        return f"invite {self.invite_id.hex()} was revoked"


@dataclass(frozen=True)
class InviteClosed(MeshEvent):
    """The invite's temporary peer was removed: used up, revoked or expired."""

    invite_id: bytes
    why: str

    def describe(self) -> str:
        return f"invite {self.invite_id.hex()} closed ({self.why})"


@dataclass(frozen=True)
class JoinRefused(MeshEvent):
    invite_id: bytes
    reason: str
    name: str | None
    public_key: bytes

    def describe(self) -> str:
        return (
            f"refused a join with invite {self.invite_id.hex()} by "
            f"{_who(self.name, self.public_key)}: {self.reason}"
        )
