"""What `meshnode status` shows of a mesh: this node, and every live member."""

from __future__ import annotations

import time
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING

from .admin import InviteInfo
from .drops import MeshDrop
from .messages import Candidate
from .paths import Path, PathState, Relay

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
    path: str  # "lan", "direct", "relayed" or "none"
    heard_ago: float | None  # seconds since its last coordination message
    handshake_ago: float | None  # seconds since the last handshake the agent was told of
    via: str | None = None  # the relay member's name, when relayed
    why: str | None = None  # why relayed or unreachable, in words
    rtt_ms: float | None = None  # the direct path's last probe round trip


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
        via = None
        if path is not None and isinstance(path.device, Relay):
            relay = agent.roster.member(path.device.key)
            via = relay.name if relay else path.device.key.hex()[:8]
        rtt = path.rtt() if path else None
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
                via,
                why(agent, key, path, now),
                None if rtt is None else round(rtt * 1000, 2),
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


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


def why(agent: MeshAgent, key: bytes, path: Path | None, now: float) -> str | None:
    """Why a member is relayed or unreachable, in words (None when direct or LAN)."""
    reach = agent.reach
    if path is not None and path.direct:
        return None
    if path is None:
        return "no traffic yet: paths are tried when something is sent"
    if reach.relay_policy == "only":
        return "relay = only in this node's configuration"
    reasons = []
    tried = len(path.probe_targets())
    if not tried:
        reasons.append("no candidates known")
    elif path.failed_since is not None:
        reasons.append(
            f"no direct answer from any of {tried} candidates since {_clock(path.failed_since)}"
        )
    elif path.state is PathState.RELAYED and not path.relay_failed:
        reasons.append("direct path not tried yet (no session)")
    if path.state is PathState.RELAYED and path.relay_failed:
        relay = agent.roster.member(path.relay) if path.relay else None
        name = relay.name if relay else "?"
        reasons.append(f"the relay {name} did not carry a handshake (it may refuse to relay)")
    own, theirs = reach.nat, reach.peer_nat.get(key, "unknown")
    hard = "endpoint-dependent"
    if own == hard and theirs == hard:
        reasons.append("both behind endpoint-dependent NATs")
    elif own == hard:
        reasons.append("this node is behind an endpoint-dependent NAT")
    elif theirs == hard:
        reasons.append("the member is behind an endpoint-dependent NAT")
    if path.state is not PathState.RELAYED:
        if reach.relay_policy == "never":
            reasons.append("relay disabled by policy")
        elif reach.relay is None:
            reasons.append("no relay member reachable")
        elif reach.relay_for(key) is None:
            reasons.append("the member is a relay itself: reached directly only")
    return "; ".join(reasons) or None
