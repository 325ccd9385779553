"""What the device knows about one peer: configuration, sessions, timers, counters."""

from __future__ import annotations

import base64
from collections import deque

from .cookie import CookieGenerator
from .endpoint import Endpoint
from .keypair import Keypairs
from .noise import Handshake, StaticIdentity, precompute_static_static
from .timers import TIMER_COUNT


class Peer:
    __slots__ = (
        "cookies",
        "coordination_only",
        "deadlines",
        "endpoint",
        "handshake",
        "handshake_attempts",
        "keypairs",
        "last_handshake",
        "last_sent_handshake",
        "need_another_keepalive",
        "persistent_keepalive",
        "public_key",
        "queued",
        "removed",
        "rx_bytes",
        "sent_last_minute_handshake",
        "staged",
        "tx_bytes",
    )

    def __init__(self, public_key: bytes, identity: StaticIdentity | None) -> None:
        self.public_key = public_key
        self.handshake = Handshake(public_key, precompute_static_static(identity, public_key))
        self.cookies = CookieGenerator(public_key)
        self.keypairs = Keypairs()
        self.endpoint: Endpoint | None = None
        self.persistent_keepalive = 0  # seconds; 0 is off
        self.staged: deque[bytes] = deque()
        # timers (see timers.py)
        self.deadlines: list[float | None] = [None] * TIMER_COUNT
        self.queued: list[float | None] = [None] * TIMER_COUNT
        self.handshake_attempts = 0
        self.need_another_keepalive = False
        self.sent_last_minute_handshake = False
        self.last_sent_handshake: float | None = None
        # counters, as wg shows them
        self.rx_bytes = 0
        self.tx_bytes = 0
        self.last_handshake: float | None = None  # Unix time of the last completed handshake
        self.removed = False
        # a peer that may only speak to the mesh agent (an invite's temporary
        # key): none of its packets reach the TUN
        self.coordination_only = False

    @property
    def preshared_key(self) -> bytes:
        return self.handshake.preshared_key

    def __str__(self) -> str:
        """As wireguard-go names peers in its log: peer(abcd…wxyz)."""
        b64 = base64.b64encode(self.public_key).decode()
        return f"peer({b64[:4]}…{b64[39:43]})"

    __repr__ = __str__
