"""The joiner's side of an invite, as an explicit state machine.

    START --start()--> CONTACTING --handshake--> WAITING_ACCEPT --JOIN_ACCEPT--> JOINED
                           |                           |
                           +--------- FAILED <---------+  (JOIN_REJECT, timeout,
                                                           an answer that does not verify)

`temp_interface()` is what the glue brings up first: a WireGuard interface
with the invite's derived private key, the temporary overlay /128 as the
source address, and one coordination-only peer per bootstrap member (its key,
the invite's PSK, its first endpoint, AllowedIPs its overlay /128). The
joiner sends JOIN_REQUEST to the current bootstrap member every second;
WireGuard handshakes on the first. Without a handshake within `try_timeout`
the next endpoint is tried (`config_changes()` says so). A JOIN_ACCEPT is
checked against the invite's authority key and turned into `result`, the
state a MeshAgent starts from; anything else ends in `failure`, which names
the step that failed and what to check. Like the agent it is sans-IO: `now`
is an argument, the glue moves the bytes.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv6Address

from meshnode.wireguard.events import HandshakeCompleted, HandshakeGaveUp, PeerEvent

from .addressing import invite_address, ula_prefix
from .bootstrap import BootstrapPeer
from .directory import PeerInfo
from .invite import Invite
from .messages import (
    COORDINATION_PORT,
    Candidate,
    JoinAccept,
    JoinReject,
    JoinRequest,
    MessageError,
    RejectReason,
    decode,
    encode,
)
from .peerconfig import ConfigurePeer, host_route
from .records import MemberRecord, RecordError
from .roster import Roster, RosterError
from .state import MeshState, StateError

TRY_TIMEOUT = 5.0
RESEND = 1.0
DEFAULT_TIMEOUT = 60.0


class JoinState(enum.Enum):
    START = "start"
    CONTACTING = "contacting"  # no WireGuard handshake with the bootstrap member yet
    WAITING_ACCEPT = "waiting_accept"  # handshake done, join request sent, no answer yet
    JOINED = "joined"
    FAILED = "failed"


class JoinStep(enum.StrEnum):
    INVITE = "invite"
    HANDSHAKE = "handshake"
    REQUEST = "join request"
    ANSWER = "answer"


class JoinError(ValueError):
    """The join cannot even start (a missing name)."""


@dataclass(frozen=True)
class JoinFailure:
    step: JoinStep
    reason: str  # a RejectReason value, "timeout", "expired" or "bad_answer"
    message: str  # for the user: what failed and what to check

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class JoinProgress:
    at: float
    text: str


@dataclass(frozen=True)
class TempInterface:
    private_key: bytes = field(repr=False)
    public_key: bytes
    address: IPv6Address  # the joiner's temporary /128: the source of its requests
    peers: tuple[ConfigurePeer, ...]


@dataclass(frozen=True)
class JoinResult:
    state: MeshState  # start the mesh's MeshAgent from this
    record: MemberRecord
    sponsor: MemberRecord  # the admin that accepted the join


_REJECTED = {
    RejectReason.USED: "the invite was already used: ask the mesh's admin for a new one",
    RejectReason.REVOKED: "the invite was revoked by the mesh's admin",
    RejectReason.EXPIRED: (
        "the invite has expired by the admin's clock: ask for a new one "
        "(and check both clocks if it should still be valid)"
    ),
    RejectReason.UNKNOWN: "the admin does not know this invite: it was made for another mesh",
    RejectReason.FOREIGN_MESH: "the bootstrap member belongs to another mesh than the invite",
    RejectReason.NAME_TAKEN: "the name {name} is taken in mesh {mesh}: choose another with --name",
    RejectReason.NAME_MISMATCH: (
        "the invite is for member {invite_name}: join without --name or with that name"
    ),
    RejectReason.NO_NAME: "the invite names no member: give one with --name",
    RejectReason.FULL: "mesh {mesh} has no free overlay address left: ask its admin",
    RejectReason.KEY_REVOKED: (
        "this node's key was revoked from mesh {mesh}: it can only rejoin with a new key"
    ),
    RejectReason.KEY_IN_USE: "this node's key is already a member of mesh {mesh}",
    RejectReason.NOT_ADMIN: (
        "the bootstrap member is not an admin of mesh {mesh}: invites must come from an admin"
    ),
}


def _where(endpoint: Candidate) -> str:
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Joiner:
    def __init__(
        self,
        invite: Invite,
        public_key: bytes,
        *,
        name: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        candidates: Sequence[Candidate] = (),
    ) -> None:
        """`public_key` is the joiner's real WireGuard key for this mesh (a new one)."""
        if invite.member_name is None and name is None:
            raise JoinError("the invite names no member: give this node a name with --name")
        self.invite = invite
        self.public_key = public_key
        self.name = name
        self.timeout = timeout
        self.candidates = tuple(candidates)
        self.state = JoinState.START
        self.result: JoinResult | None = None
        self.failure: JoinFailure | None = None
        self._keys = invite.keys()
        self._targets = [(peer, ep) for peer in invite.bootstrap for ep in peer.endpoints]
        self._index = 0
        self._deadline = self._switch_at = self._resend_at = 0.0
        self._tried: list[Candidate] = []
        self._out: list[tuple[bytes, bytes]] = []
        self._config: list[ConfigurePeer] = []
        self._events: deque[JoinProgress] = deque()

    # ------------------------------------------------------------ what the glue sets up

    def temp_interface(self) -> TempInterface:
        first: dict[bytes, Candidate] = {}
        for peer, endpoint in self._targets:
            first.setdefault(peer.public_key, endpoint)
        return TempInterface(
            self._keys.private_key,
            self._keys.public_key,
            self._address,
            tuple(self._peer_config(p, first[p.public_key]) for p in self.invite.bootstrap),
        )

    @property
    def _address(self) -> IPv6Address:
        return invite_address(ula_prefix(self.invite.mesh_id), self.invite.id)

    def _peer_config(self, peer: BootstrapPeer, endpoint: Candidate) -> ConfigurePeer:
        return ConfigurePeer(
            peer.public_key,
            host_route(peer.overlay),
            endpoint,
            preshared_key=self._keys.preshared_key,
            coordination_only=True,
        )

    def overlay_address(self, key: bytes) -> IPv6Address | None:
        """Where a message for `key` goes (to COORDINATION_PORT): a bootstrap member's
        overlay address."""
        return next((p.overlay for p in self.invite.bootstrap if p.public_key == key), None)

    @property
    def target(self) -> tuple[BootstrapPeer, Candidate]:
        return self._targets[self._index]

    # ------------------------------------------------------------ drained by the glue

    def messages_to_send(self) -> list[tuple[bytes, bytes]]:
        out, self._out = self._out, []
        return out

    def config_changes(self) -> list[ConfigurePeer]:
        out, self._config = self._config, []
        return out

    def next_event(self) -> JoinProgress | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        if self.state is JoinState.CONTACTING:
            return min(self._deadline, self._switch_at, self._resend_at)
        if self.state is JoinState.WAITING_ACCEPT:
            return min(self._deadline, self._resend_at)
        return None

    # ------------------------------------------------------------ fed by the glue

    def start(self, now: float) -> None:
        if self.state is not JoinState.START:
            return
        if self.invite.expired(now):
            self._fail(now, JoinStep.INVITE, "expired", "the invite has expired: ask for a new one")
            return
        self.state = JoinState.CONTACTING
        self._deadline = now + self.timeout
        self._try(0, now)

    def _try(self, index: int, now: float) -> None:
        self._index = index
        peer, endpoint = self.target
        if endpoint not in self._tried:
            self._tried.append(endpoint)
        self._config.append(self._peer_config(peer, endpoint))
        self._switch_at = now + TRY_TIMEOUT
        self._progress(now, f"contacting the bootstrap member at {_where(endpoint)}")
        self._request(now)

    def _request(self, now: float) -> None:
        peer, _ = self.target
        request = JoinRequest(
            self.invite.mesh_id, self.invite.id, self.public_key, self.name, self.candidates
        )
        self._out.append((peer.public_key, encode(request)))
        self._resend_at = now + RESEND

    def handle_timer(self, now: float) -> None:
        if self.state not in (JoinState.CONTACTING, JoinState.WAITING_ACCEPT):
            return
        if now >= self._deadline:
            self._timed_out(now)
            return
        if self.state is JoinState.CONTACTING and now >= self._switch_at:
            self._try((self._index + 1) % len(self._targets), now)
        elif now >= self._resend_at:
            self._request(now)

    def _timed_out(self, now: float) -> None:
        _, endpoint = self.target
        seconds = f"{self.timeout:g} s"
        if self.state is JoinState.CONTACTING:
            where = ", ".join(_where(e) for e in self._tried)
            ports = sorted({str(port) for _, port in self._tried})
            self._fail(
                now,
                JoinStep.HANDSHAKE,
                "timeout",
                f"the bootstrap member at {where} did not answer the WireGuard handshake "
                f"within {seconds}: check that its node runs and that UDP port "
                f"{', '.join(ports)} is reachable from here (an invite that was used up "
                "or revoked a while ago is no longer answered either)",
            )
        else:
            self._fail(
                now,
                JoinStep.REQUEST,
                "timeout",
                f"the bootstrap member at {_where(endpoint)} completed the WireGuard handshake "
                f"but did not answer the join request within {seconds}: check that its node "
                f"runs mesh {self.invite.mesh_name} (coordination port {COORDINATION_PORT})",
            )

    def handle_device_event(self, event: PeerEvent, now: float) -> None:
        peer, endpoint = self.target if self._targets else (None, None)
        if peer is None or event.public_key != peer.public_key:
            return
        if isinstance(event, HandshakeCompleted) and self.state is JoinState.CONTACTING:
            self.state = JoinState.WAITING_ACCEPT
            self._progress(
                now, f"WireGuard handshake with {_where(endpoint)} done; waiting for the answer"
            )
        elif isinstance(event, HandshakeGaveUp) and self.state is JoinState.CONTACTING:
            self._try((self._index + 1) % len(self._targets), now)

    def handle_message(self, sender: bytes, payload: bytes, now: float) -> None:
        if self.state not in (JoinState.CONTACTING, JoinState.WAITING_ACCEPT):
            return
        peer, _ = self.target
        if sender != peer.public_key:
            return
        try:
            message = decode(payload)
        except MessageError:
            return  # not an answer we can read; keep asking until the deadline
        if isinstance(message, JoinReject):
            text = _REJECTED[message.reason].format(
                name=self.name, invite_name=self.invite.member_name, mesh=self.invite.mesh_name
            )
            self._fail(now, JoinStep.ANSWER, message.reason.value, text)
        elif isinstance(message, JoinAccept):
            try:
                self._accepted(peer, message, now)
            except (RecordError, RosterError, StateError, ValueError) as exc:
                self._fail(
                    now,
                    JoinStep.ANSWER,
                    "bad_answer",
                    f"the answer from the bootstrap member does not check out against the "
                    f"invite ({exc}): the member is not part of mesh {self.invite.mesh_name} "
                    "or the invite was altered",
                )

    # ------------------------------------------------------------ the outcome

    def _accepted(self, peer: BootstrapPeer, accept: JoinAccept, now: float) -> None:
        invite = self.invite
        if accept.mesh_id != invite.mesh_id or accept.authority != invite.authority:
            raise ValueError("it names another mesh or authority")
        record = accept.record.verify(invite.authority, invite.mesh_id)
        sponsor = accept.sponsor.verify(invite.authority, invite.mesh_id)
        if not isinstance(record, MemberRecord) or not isinstance(sponsor, MemberRecord):
            raise ValueError("it holds a tombstone where a record belongs")
        if record.public_key != self.public_key or record.invite_id != invite.id:
            raise ValueError("the record is not for this node's key and invite")
        if record.name != (invite.member_name or self.name):
            raise ValueError(f"the record names member {record.name}")
        if sponsor.public_key != peer.public_key or sponsor.ipv6 != peer.overlay:
            raise ValueError("the sponsor record is not the bootstrap member's")
        if record.ipv4 not in accept.ipv4_cidr or record.ipv6 not in accept.ipv6_prefix:
            raise ValueError("the addresses lie outside the mesh's ranges")
        roster = Roster(invite.mesh_id, invite.authority)
        roster.apply(accept.sponsor, int(now))
        roster.apply(accept.record, int(now))
        directory: dict[bytes, PeerInfo] = {}
        for entry in accept.peers:
            if entry.public_key != self.public_key:
                heard = None if entry.age is None else now - entry.age
                directory[entry.public_key] = PeerInfo(entry.seq, entry.candidates, heard)
        # the endpoint that worked goes first for the sponsor
        _, endpoint = self.target
        known = directory.get(sponsor.public_key)
        cands = (endpoint, *(c for c in (known.candidates if known else ()) if c != endpoint))
        directory[sponsor.public_key] = PeerInfo(known.seq if known else 0, cands[:8], now)
        state = MeshState(
            invite.mesh_id,
            invite.mesh_name,
            invite.authority,
            self.public_key,
            roster,
            accept.ipv4_cidr,
            accept.ipv6_prefix,
            directory=directory,
        )
        state.check()
        self.result = JoinResult(state, record, sponsor)
        self.state = JoinState.JOINED
        self._progress(
            now,
            f"joined mesh {invite.mesh_name} as {record.name} ({record.ipv4}, {record.ipv6})",
        )

    def _fail(self, now: float, step: JoinStep, reason: str, message: str) -> None:
        self.failure = JoinFailure(step, reason, message)
        self.state = JoinState.FAILED
        self._progress(now, f"join failed at the {step.value} step: {message}")

    def _progress(self, now: float, text: str) -> None:
        self._events.append(JoinProgress(now, text))
