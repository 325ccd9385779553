"""The Noise_IKpsk2 handshake with WireGuard's construction and identifier.

Each step follows the WireGuard paper (section 5.4) line by line. These
functions only transform bytes; who the peer is, which index a message uses
and what happens next is the device's business.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from . import messages as m
from .crypto import KEY_LEN, CryptoFailure, aead_decrypt, aead_encrypt, dh, hash_, kdf1, kdf2, kdf3
from .drops import Drop
from .tai64n import TIMESTAMP_LEN, is_after, stamp

CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
INITIAL_CHAINING_KEY = hash_(CONSTRUCTION)
INITIAL_HASH = hash_(INITIAL_CHAINING_KEY, IDENTIFIER)
ZERO_KEY = bytes(KEY_LEN)

# An initiation arriving sooner than this after the last accepted one from the
# same peer is a flood, even with a fresh timestamp.
HANDSHAKE_INITIATION_RATE = 0.020


class HandshakeError(Exception):
    """A handshake message failed to decrypt, authenticate or pass a freshness check.

    `reason` is the Drop the device counts it under.
    """

    def __init__(self, reason: Drop, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class State(enum.Enum):
    ZEROED = 0
    INITIATION_CREATED = 1
    INITIATION_CONSUMED = 2
    RESPONSE_CREATED = 3
    RESPONSE_CONSUMED = 4


@dataclass(slots=True)
class StaticIdentity:
    """The device's own key pair, with the pieces every handshake reuses."""

    private_key: X25519PrivateKey
    public_key: bytes
    initial_hash: bytes  # INITIAL_HASH mixed with our public key: the responder's start

    @classmethod
    def from_private_bytes(cls, private: bytes) -> StaticIdentity:
        key = X25519PrivateKey.from_private_bytes(private)
        public = key.public_key().public_bytes_raw()
        return cls(key, public, hash_(INITIAL_HASH, public))


@dataclass(slots=True)
class Handshake:
    """Per-peer handshake state (one in flight at a time)."""

    remote_static: bytes
    precomputed_static_static: bytes  # DH(our static, their static); zeros if unusable
    preshared_key: bytes = ZERO_KEY
    state: State = State.ZEROED
    hash: bytes = b""
    chaining_key: bytes = b""
    local_ephemeral: X25519PrivateKey | None = None
    remote_ephemeral: bytes = b""
    local_index: int = 0
    remote_index: int = 0
    # Replay and flood protection for initiations we receive.
    last_timestamp: bytes = field(default=bytes(TIMESTAMP_LEN))
    last_initiation_consumption: float | None = None

    def clear(self) -> None:
        self.state = State.ZEROED
        self.hash = b""
        self.chaining_key = b""
        self.local_ephemeral = None
        self.remote_ephemeral = b""
        self.local_index = 0
        self.remote_index = 0


def precompute_static_static(identity: StaticIdentity | None, remote_static: bytes) -> bytes:
    if identity is None:
        return ZERO_KEY
    try:
        return dh(identity.private_key, remote_static)
    except CryptoFailure:
        return ZERO_KEY


def create_initiation(
    identity: StaticIdentity, hs: Handshake, local_index: int, unix_time: float
) -> bytearray:
    """Build an initiation (mac1 and mac2 left zero for the cookie generator)."""
    if hs.precomputed_static_static == ZERO_KEY:
        raise HandshakeError(Drop.BAD_PEER_KEY, "no usable static-static secret with this peer")
    h = hash_(INITIAL_HASH, hs.remote_static)
    ephemeral = X25519PrivateKey.generate()
    e_pub = ephemeral.public_key().public_bytes_raw()
    c = kdf1(INITIAL_CHAINING_KEY, e_pub)
    h = hash_(h, e_pub)
    c, k = kdf2(c, dh(ephemeral, hs.remote_static))
    encrypted_static = aead_encrypt(k, 0, identity.public_key, h)
    h = hash_(h, encrypted_static)
    c, k = kdf2(c, hs.precomputed_static_static)
    encrypted_timestamp = aead_encrypt(k, 0, stamp(unix_time), h)
    h = hash_(h, encrypted_timestamp)

    hs.state = State.INITIATION_CREATED
    hs.hash, hs.chaining_key = h, c
    hs.local_ephemeral = ephemeral
    hs.local_index = local_index
    hs.remote_index = 0
    message = bytearray(m.INITIATION_SIZE)
    m.INITIATION.pack_into(
        message, 0, m.HEADER_INITIATION, local_index, e_pub, encrypted_static,
        encrypted_timestamp, bytes(16), bytes(16),
    )  # fmt: skip
    return message


def consume_initiation(
    identity: StaticIdentity,
    message: bytes,
    find: Callable[[bytes], Handshake | None],
    now: float,
) -> Handshake:
    """Authenticate an initiation and load it into the sending peer's handshake.

    `find` maps the decrypted static key to that peer's handshake (None if the
    key is not a peer of ours). Raises HandshakeError if anything fails, in
    which case no state has changed.
    """
    _, sender, e_pub, encrypted_static, encrypted_timestamp, _, _ = m.INITIATION.unpack(message)
    h = hash_(identity.initial_hash, e_pub)
    c = kdf1(INITIAL_CHAINING_KEY, e_pub)
    try:
        c, k = kdf2(c, dh(identity.private_key, e_pub))
        remote_static = aead_decrypt(k, 0, encrypted_static, h)
    except CryptoFailure as exc:
        raise HandshakeError(Drop.HANDSHAKE_DECRYPT, "initiation does not decrypt") from exc
    h = hash_(h, encrypted_static)
    hs = find(remote_static)
    if hs is None:
        raise HandshakeError(Drop.UNKNOWN_PEER, "initiation from an unknown public key")
    if hs.precomputed_static_static == ZERO_KEY:
        raise HandshakeError(Drop.BAD_PEER_KEY, "initiation from a peer with an unusable key")
    c, k = kdf2(c, hs.precomputed_static_static)
    try:
        timestamp = aead_decrypt(k, 0, encrypted_timestamp, h)
    except CryptoFailure as exc:
        raise HandshakeError(Drop.HANDSHAKE_DECRYPT, "initiation timestamp undecryptable") from exc
    h = hash_(h, encrypted_timestamp)
    if not is_after(timestamp, hs.last_timestamp):
        raise HandshakeError(Drop.REPLAYED_INITIATION, "initiation replayed (timestamp not newer)")
    last = hs.last_initiation_consumption
    if last is not None and now - last <= HANDSHAKE_INITIATION_RATE:
        raise HandshakeError(Drop.INITIATION_FLOOD, "initiations arriving too fast")

    hs.state = State.INITIATION_CONSUMED
    hs.hash, hs.chaining_key = h, c
    hs.remote_ephemeral = e_pub
    hs.remote_index = sender
    hs.last_timestamp = timestamp
    hs.last_initiation_consumption = now
    return hs


def create_response(hs: Handshake, local_index: int) -> bytearray:
    """Answer a consumed initiation (mac1 and mac2 left zero)."""
    if hs.state is not State.INITIATION_CONSUMED:
        raise HandshakeError(Drop.NO_HANDSHAKE, "no consumed initiation to answer")
    ephemeral = X25519PrivateKey.generate()
    e_pub = ephemeral.public_key().public_bytes_raw()
    c = kdf1(hs.chaining_key, e_pub)
    h = hash_(hs.hash, e_pub)
    try:
        c = kdf1(c, dh(ephemeral, hs.remote_ephemeral))
        c = kdf1(c, dh(ephemeral, hs.remote_static))
    except CryptoFailure as exc:
        raise HandshakeError(Drop.BAD_PEER_KEY, "low-order key in the initiation") from exc
    c, tau, k = kdf3(c, hs.preshared_key)
    h = hash_(h, tau)
    encrypted_nothing = aead_encrypt(k, 0, b"", h)
    h = hash_(h, encrypted_nothing)

    hs.state = State.RESPONSE_CREATED
    hs.hash, hs.chaining_key = h, c
    hs.local_ephemeral = ephemeral
    hs.local_index = local_index
    message = bytearray(m.RESPONSE_SIZE)
    m.RESPONSE.pack_into(
        message, 0, m.HEADER_RESPONSE, local_index, hs.remote_index, e_pub, encrypted_nothing,
        bytes(16), bytes(16),
    )  # fmt: skip
    return message


def consume_response(identity: StaticIdentity, hs: Handshake, message: bytes) -> None:
    """Authenticate a response to the initiation in hs; raises HandshakeError."""
    _, sender, receiver, e_pub, encrypted_nothing, _, _ = m.RESPONSE.unpack(message)
    if hs.state is not State.INITIATION_CREATED or receiver != hs.local_index:
        raise HandshakeError(Drop.NO_HANDSHAKE, "response to no initiation of ours")
    assert hs.local_ephemeral is not None
    h = hash_(hs.hash, e_pub)
    c = kdf1(hs.chaining_key, e_pub)
    try:
        c = kdf1(c, dh(hs.local_ephemeral, e_pub))
        c = kdf1(c, dh(identity.private_key, e_pub))
        c, tau, k = kdf3(c, hs.preshared_key)
        h = hash_(h, tau)
        aead_decrypt(k, 0, encrypted_nothing, h)
    except CryptoFailure as exc:
        raise HandshakeError(Drop.HANDSHAKE_DECRYPT, "response does not authenticate") from exc
    h = hash_(h, encrypted_nothing)

    hs.state = State.RESPONSE_CONSUMED
    hs.hash, hs.chaining_key = h, c
    hs.remote_index = sender


class SessionKeys(NamedTuple):
    send: bytes
    receive: bytes
    initiator: bool
    local_index: int
    remote_index: int


def derive_transport_keys(hs: Handshake) -> SessionKeys:
    """Split the finished handshake into the two transport keys.

    The handshake is cleared: its ephemeral secrets must not outlive this step.
    """
    if hs.state is State.RESPONSE_CONSUMED:
        initiator = True
    elif hs.state is State.RESPONSE_CREATED:
        initiator = False
    else:
        raise HandshakeError(Drop.NO_HANDSHAKE, "handshake is not finished")
    first, second = kdf2(hs.chaining_key, b"")
    send, receive = (first, second) if initiator else (second, first)
    keys = SessionKeys(send, receive, initiator, hs.local_index, hs.remote_index)
    hs.clear()
    return keys
