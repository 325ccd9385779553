"""The keys derived from an invite's one-time secret.

Both sides run the same derivation: the admin when it issues the invite (it
pre-authorises the public key and PSK as a temporary WireGuard peer, and
stores only those, never the secret), the joiner when it redeems it. Each
value is a keyed BLAKE2s of the empty message, with the 32-byte secret as key
and an 8-byte personalisation string naming the value:

    invite id      = BLAKE2s(key=secret, person=b"mninv-id", digest_size=8)
    private key    = clamp(BLAKE2s(key=secret, person=b"mninv-sk", digest_size=32))
    public key     = X25519(private key, 9)
    preshared key  = BLAKE2s(key=secret, person=b"mninv-ps", digest_size=32)

Keyed BLAKE2s is a PRF, and distinct personalisations (and, for the id, a
distinct digest size, which BLAKE2s mixes into its parameter block) make the
outputs independent: the id can be shown and logged without revealing the
key or the PSK.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from meshnode.wireguard.keys import clamp, public_key

from .addressing import INVITE_ID_LEN

SECRET_LEN = 32


class JoinKeyError(ValueError):
    """The secret is not 32 bytes."""


class InviteKeys(NamedTuple):
    private_key: bytes
    public_key: bytes
    preshared_key: bytes

    def __repr__(self) -> str:  # keep the private key and PSK out of logs
        return f"InviteKeys(public_key={self.public_key.hex()})"


def _prf(secret: bytes, person: bytes, size: int) -> bytes:
    if not isinstance(secret, bytes) or len(secret) != SECRET_LEN:
        raise JoinKeyError(f"an invite secret is {SECRET_LEN} bytes")
    return hashlib.blake2s(b"", digest_size=size, key=secret, person=person).digest()


def invite_id(secret: bytes) -> bytes:
    """The invite's public name (8 bytes; shown as hex by the admin)."""
    return _prf(secret, b"mninv-id", INVITE_ID_LEN)


def invite_keys(secret: bytes) -> InviteKeys:
    """The throwaway WireGuard key pair and PSK the join runs under."""
    private = clamp(_prf(secret, b"mninv-sk", 32))
    return InviteKeys(private, public_key(private), _prf(secret, b"mninv-ps", 32))
