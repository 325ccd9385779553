"""A transport session: the two keys of one finished handshake and their counters."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .replay import ReplayWindow

if TYPE_CHECKING:
    from .peer import Peer


class Keypair:
    __slots__ = (
        "created",
        "initiator",
        "local_index",
        "peer",
        "receive_aead",
        "remote_index",
        "replay",
        "send_aead",
        "send_counter",
    )

    def __init__(
        self,
        peer: Peer,
        send_key: bytes,
        receive_key: bytes,
        initiator: bool,
        local_index: int,
        remote_index: int,
        created: float,
    ) -> None:
        self.peer = peer
        # One AEAD object per direction for the whole session: building one costs
        # as much as sealing a small packet.
        self.send_aead = ChaCha20Poly1305(send_key)
        self.receive_aead = ChaCha20Poly1305(receive_key)
        self.send_counter = 0
        self.replay = ReplayWindow()
        self.initiator = initiator
        self.local_index = local_index
        self.remote_index = remote_index
        self.created = created


class Keypairs:
    """The previous, current and next sessions of one peer.

    A responder's new session waits in `next` until the initiator proves it has
    the keys too (its first transport packet): only then does it become current.
    """

    __slots__ = ("current", "next", "previous")

    def __init__(self) -> None:
        self.previous: Keypair | None = None
        self.current: Keypair | None = None
        self.next: Keypair | None = None

    def all(self) -> list[Keypair]:
        return [kp for kp in (self.previous, self.current, self.next) if kp is not None]
