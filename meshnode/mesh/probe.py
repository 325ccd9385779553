"""NAT-traversal path probes ("disco" pings, after Tailscale's magicsock): a sans-IO codec.

Two members test a candidate path by sending a PING on their WireGuard
interface's own UDP socket (so the probe punches the same NAT mapping the
tunnel will use) and answering with a PONG that reports the source address
the ping arrived from (the sender's reflexive address as this side saw it).

Every datagram starts with `MAGIC`, whose first byte 0xff is neither a
WireGuard message type (1..4) nor a STUN first byte (0x00/0x01), so the node
can sort the three kinds of traffic sharing the socket by a prefix check
(`is_probe`) before doing any cryptography.

    MAGIC   4 bytes   b"\\xffMNp"
    kind    1 byte    PING = 1, PONG = 2
    sender  32 bytes  the sender's WireGuard (X25519) public key
    nonce   12 bytes  random
    box     ChaCha20-Poly1305(pair key), aad = MAGIC + kind + sender
              PING: txid (12 bytes)
              PONG: txid (12 bytes) + observed address: family (4 or 6),
                    4 or 16 address bytes, port (2 bytes big-endian)

The pair key is BLAKE2s(b"meshnode probe v1" + X25519(own private, peer
public)): both sides derive the same key from their static WireGuard keys, so
probes need no handshake of their own and work before the tunnel is up.

`ProbeCodec.open` authenticates the *key* in `Probe.sender` (whoever sealed the
box holds that key's private half), not membership: anyone can make a key pair
and send us valid probes. The caller must check `probe.sender` against the
mesh's members before acting on a probe.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

# The same alias as `meshnode.mesh.paths.HostPort`; repeated so this codec stands alone.
HostPort = tuple[str, int]  # IPv6 hosts without brackets, no zone

MAGIC = b"\xffMNp"
PING, PONG = 1, 2
KINDS = frozenset({PING, PONG})

KEY_SIZE = 32
TXID_SIZE = 12
NONCE_SIZE = 12
TAG_SIZE = 16
KEY_LABEL = b"meshnode probe v1"

_KIND_AT = len(MAGIC)
_SENDER_AT = _KIND_AT + 1
_NONCE_AT = _SENDER_AT + KEY_SIZE
_BOX_AT = _NONCE_AT + NONCE_SIZE
# The smallest well-formed datagram is a PING: header, nonce, txid, tag.
MIN_SIZE = _BOX_AT + TXID_SIZE + TAG_SIZE

_FAMILY_SIZES = {4: 4, 6: 16}


class ProbeError(ValueError):
    """A datagram that is not a valid probe; `args[0]` is a short reason.

    One of "short", "magic", "kind", "auth", "low-order key", "address".
    Raised for anything a peer (or an attacker) can send, so the receive path
    can count and drop it with a single `except ProbeError`.
    """


@dataclass(frozen=True)
class Probe:
    kind: int  # PING or PONG
    sender: bytes  # the sender's 32-byte public key: authenticated, but check membership
    txid: bytes  # 12 bytes, chosen by the pinger, echoed by the pong
    observed: HostPort | None  # PONG only: where the ping came from, as the ponger saw it


def is_probe(datagram: bytes) -> bool:
    """Whether `datagram` looks like a probe (cheap: no cryptography)."""
    return len(datagram) >= MIN_SIZE and datagram.startswith(MAGIC)


def _encode_address(observed: HostPort) -> bytes:
    host, port = observed
    try:
        address = ip_address(host)
    except ValueError:
        raise ProbeError("address") from None
    # A zone names an interface on *our* host: meaningless to the peer, and the
    # wire format has no room for it.
    if isinstance(address, IPv6Address) and address.scope_id is not None:
        raise ProbeError("address")
    # bool is an int; a port of True is a bug, not port 1.
    if type(port) is not int or not 0 < port < 0x10000:
        raise ProbeError("address")
    return bytes([address.version]) + address.packed + port.to_bytes(2, "big")


def _decode_address(data: bytes) -> HostPort:
    if not data:
        raise ProbeError("address")
    size = _FAMILY_SIZES.get(data[0])
    # Exact length: trailing bytes inside an authenticated box are a peer bug
    # we would rather see than silently ignore.
    if size is None or len(data) != 1 + size + 2:
        raise ProbeError("address")
    packed = data[1 : 1 + size]
    host = IPv4Address(packed) if size == 4 else IPv6Address(packed)
    port = int.from_bytes(data[1 + size :], "big")
    if port == 0:  # no datagram comes from port 0: a ponger bug
        raise ProbeError("address")
    return (str(host), port)


class ProbeCodec:
    """Seals and opens probes for one node, caching a pair key per peer."""

    def __init__(self, private_key: bytes, rng: random.Random, cache_size: int = 4096) -> None:
        if cache_size < 1:
            raise ValueError("cache_size must be at least 1")
        self._private = X25519PrivateKey.from_private_bytes(private_key)
        self.public_key: bytes = self._private.public_key().public_bytes(
            Encoding.Raw, PublicFormat.Raw
        )
        # random.Random in tests for reproducible datagrams; SystemRandom in
        # production, whose randbytes is os.urandom. Random 96-bit nonces only
        # collide after ~2**48 probes under one pair key, far beyond any
        # probing rate.
        self._rng = rng
        self._cache_size = cache_size
        self._aeads: dict[bytes, ChaCha20Poly1305] = {}

    def _derive(self, peer: bytes) -> ChaCha20Poly1305:
        aead = self._aeads.get(peer)
        if aead is not None:
            return aead
        try:
            shared = self._private.exchange(X25519PublicKey.from_public_bytes(peer))
        except ValueError:
            # cryptography refuses the all-zero shared secret a low-order peer
            # key yields: such a "pair key" would be known to everyone.
            raise ProbeError("low-order key") from None
        return ChaCha20Poly1305(hashlib.blake2s(KEY_LABEL + shared).digest())

    def _remember(self, peer: bytes, aead: ChaCha20Poly1305) -> None:
        if peer in self._aeads:
            return
        # Bounded without LRU bookkeeping: members are far fewer than
        # cache_size, so a full cache means churn (or an attacker minting
        # keys) and starting over costs one X25519 per live peer.
        if len(self._aeads) >= self._cache_size:
            self._aeads.clear()
        self._aeads[peer] = aead

    def _seal(self, kind: int, peer: bytes, plaintext: bytes) -> bytes:
        if len(peer) != KEY_SIZE:
            raise ValueError(f"peer key must be {KEY_SIZE} bytes")
        aead = self._derive(peer)
        self._remember(peer, aead)
        header = MAGIC + bytes([kind]) + self.public_key
        nonce = self._rng.randbytes(NONCE_SIZE)
        return header + nonce + aead.encrypt(nonce, plaintext, header)

    @staticmethod
    def _check_txid(txid: bytes) -> None:
        if len(txid) != TXID_SIZE:
            raise ValueError(f"txid must be {TXID_SIZE} bytes")

    def ping(self, peer: bytes, txid: bytes) -> bytes:
        """A PING to `peer` (its 32-byte public key) carrying `txid`."""
        self._check_txid(txid)
        return self._seal(PING, peer, bytes(txid))

    def pong(self, peer: bytes, txid: bytes, observed: HostPort) -> bytes:
        """A PONG to `peer` echoing its ping's `txid` and the ping's source address."""
        self._check_txid(txid)
        return self._seal(PONG, peer, bytes(txid) + _encode_address(observed))

    def open(self, datagram: bytes) -> Probe:
        """Parse and authenticate a probe; raises ProbeError and nothing else for bad input.

        Authenticates that the sender holds the private half of `Probe.sender`;
        whether that key belongs to a member is the caller's to check.
        """
        datagram = bytes(datagram)
        if len(datagram) < MIN_SIZE:
            raise ProbeError("short")
        if not datagram.startswith(MAGIC):
            raise ProbeError("magic")
        kind = datagram[_KIND_AT]
        if kind not in KINDS:
            raise ProbeError("kind")
        sender = datagram[_SENDER_AT:_NONCE_AT]
        aead = self._derive(sender)
        try:
            plaintext = aead.decrypt(
                datagram[_NONCE_AT:_BOX_AT], datagram[_BOX_AT:], datagram[:_NONCE_AT]
            )
        except InvalidTag:
            raise ProbeError("auth") from None
        # Cache only keys that authenticated something, so random garbage
        # with made-up sender keys cannot flush the members' keys.
        self._remember(sender, aead)
        txid, rest = plaintext[:TXID_SIZE], plaintext[TXID_SIZE:]
        if kind == PING:
            # A PING box holds exactly a txid; anything more means the sender
            # disagrees with us about the layout of this kind.
            if rest:
                raise ProbeError("kind")
            return Probe(PING, sender, txid, None)
        return Probe(PONG, sender, txid, _decode_address(rest))

    def forget(self, peer: bytes) -> None:
        """Drop `peer`'s cached pair key (its membership was revoked)."""
        self._aeads.pop(peer, None)
