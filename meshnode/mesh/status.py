"""What `meshnode status` shows of a mesh: this node, and every live member."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING

from .admin import InviteInfo
from .drops import MeshDrop
from .messages import Candidate

if TYPE_CHECKING:
    from .agent import MeshAgent


@dataclass(frozen=True)
class MemberStatus:
    name: str
    public_key: bytes
    ipv4: IPv4Address
    ipv6: IPv6Address
    roles: frozenset[str]
    endpoint: tuple[str, int] | None
    path: str  # "lan", "direct" or "none" (relayed comes with NAT traversal)
    heard_ago: float | None  # seconds since its last coordination message
    handshake_ago: float | None  # seconds since the last handshake the agent was told of


@dataclass(frozen=True)
class MeshStatus:
    mesh_name: str
    mesh_id: bytes
    name: str
    public_key: bytes
    ipv4: IPv4Address | None
    ipv6: IPv6Address | None
    admin: bool
    state: str  # "member", "left" or "revoked"
    candidates: tuple[Candidate, ...]
    members: list[MemberStatus]
    invites: list[InviteInfo]
    drops: dict[MeshDrop, int]


def mesh_status(agent: MeshAgent, now: float) -> MeshStatus:
    members = []
    for key in agent.members.live():
        record = agent.roster.member(key)
        assert record is not None
        path = agent.reach.paths.get(key)
        info = agent.reach.directory.get(key)
        endpoint = path.endpoint if path else None
        if path is None and info is not None and info.candidates:
            endpoint = agent.reach.local.order(info.candidates)[0]
        heard = agent.heard.get(key)
        shake = path.last_handshake if path else None
        members.append(
            MemberStatus(
                record.name,
                key,
                record.ipv4,
                record.ipv6,
                record.roles,
                endpoint,
                path.label if path else "none",
                None if heard is None else now - heard,
                None if shake is None else now - shake,
            )
        )
    own = agent.roster.member(agent.public_key)
    return MeshStatus(
        agent.mesh_name,
        agent.mesh_id,
        own.name if own else "?",
        agent.public_key,
        own.ipv4 if own else None,
        own.ipv6 if own else None,
        agent.is_admin,
        agent.state,
        agent.reach.candidates,
        members,
        agent.invites(now),
        agent.drops(),
    )
