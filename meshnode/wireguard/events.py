"""What happened to peers, for the layers above the core (the mesh agent).

As aioquic's connection events: the device queues them as they happen and
the runtime drains them (`Device.next_event()`) after each flush and after
timers. They carry the peer's public key rather than the Peer object, so a
consumer holds no reference into the core's state.
"""

from __future__ import annotations

from dataclasses import dataclass

from .endpoint import Endpoint


@dataclass(frozen=True, slots=True)
class PeerEvent:
    public_key: bytes


@dataclass(frozen=True, slots=True)
class HandshakeCompleted(PeerEvent):
    """A session was derived with the peer (we sent or received the response)."""

    endpoint: Endpoint | None
    initiator: bool


@dataclass(frozen=True, slots=True)
class HandshakeGaveUp(PeerEvent):
    """No answer to our initiations after the last retry: what waited is dropped."""


@dataclass(frozen=True, slots=True)
class KeysZeroed(PeerEvent):
    """Every session key of the peer was erased (no new handshake for 9 minutes)."""


@dataclass(frozen=True, slots=True)
class EndpointChanged(PeerEvent):
    """The peer roamed: an authenticated datagram came from another address.
    A new local address alone (same remote) is not a change."""

    old: Endpoint | None
    new: Endpoint
