"""WireGuard's primitives: BLAKE2s hashing, HMAC-BLAKE2s HKDF, keyed MACs,
X25519 and the two AEADs.

Names follow the WireGuard paper (HASH, MAC, HMAC, KDFn, DH, AEAD, XAEAD) so the
handshake code can be read side by side with it.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)
from nacl.exceptions import CryptoError

KEY_LEN = 32
HASH_LEN = 32
MAC_LEN = 16
AEAD_TAG_LEN = 16

__all__ = [
    "AEAD_TAG_LEN",
    "HASH_LEN",
    "KEY_LEN",
    "MAC_LEN",
    "CryptoFailure",
    "aead_decrypt",
    "aead_encrypt",
    "dh",
    "hash_",
    "hmac_",
    "kdf1",
    "kdf2",
    "kdf3",
    "mac",
    "nonce_for",
    "xaead_decrypt",
    "xaead_encrypt",
]


class CryptoFailure(Exception):
    """Authentication failed or a Diffie-Hellman result was all zeros."""


def hash_(*parts: bytes) -> bytes:
    h = hashlib.blake2s()
    for part in parts:
        h.update(part)
    return h.digest()


def mac(key: bytes, data: bytes) -> bytes:
    """Keyed BLAKE2s with a 16-byte digest (mac1, mac2, cookies)."""
    return hashlib.blake2s(data, key=key, digest_size=MAC_LEN).digest()


def hmac_(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, hashlib.blake2s)


def _kdf(n: int, key: bytes, data: bytes) -> tuple[bytes, ...]:
    prk = hmac_(key, data)
    out: list[bytes] = []
    previous = b""
    for i in range(1, n + 1):
        previous = hmac_(prk, previous + bytes([i]))
        out.append(previous)
    return tuple(out)


def kdf1(key: bytes, data: bytes) -> bytes:
    return _kdf(1, key, data)[0]


def kdf2(key: bytes, data: bytes) -> tuple[bytes, bytes]:
    a, b = _kdf(2, key, data)
    return a, b


def kdf3(key: bytes, data: bytes) -> tuple[bytes, bytes, bytes]:
    a, b, c = _kdf(3, key, data)
    return a, b, c


def dh(private: X25519PrivateKey, public: bytes) -> bytes:
    """X25519; a low-order public key (all-zero shared secret) is refused."""
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as exc:  # cryptography refuses an all-zero result
        raise CryptoFailure("Diffie-Hellman with a low-order point") from exc


def nonce_for(counter: int) -> bytes:
    """ChaCha20-Poly1305 nonce: 4 zero bytes then the 64-bit counter, little-endian."""
    return b"\x00\x00\x00\x00" + counter.to_bytes(8, "little")


def aead_encrypt(key: bytes, counter: int, plaintext: bytes, ad: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(nonce_for(counter), plaintext, ad)


def aead_decrypt(key: bytes, counter: int, ciphertext: bytes, ad: bytes) -> bytes:
    try:
        return ChaCha20Poly1305(key).decrypt(nonce_for(counter), ciphertext, ad)
    except InvalidTag as exc:
        raise CryptoFailure("AEAD authentication failed") from exc


def xaead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, ad: bytes) -> bytes:
    return crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, nonce, key)


def xaead_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    try:
        return crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, ad, nonce, key)
    except CryptoError as exc:
        raise CryptoFailure("XAEAD authentication failed") from exc
