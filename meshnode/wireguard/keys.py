"""Curve25519 keys in the forms WireGuard tools use: 32 raw bytes, base64 as
wg(8) prints them, and lowercase hex as the UAPI carries them."""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .crypto import KEY_LEN, CryptoFailure, dh

BASE64_LEN = 44  # 32 bytes -> 43 characters and one '=' of padding
_B64_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_ALPHABET_INDEX = {c: i for i, c in enumerate(_B64_CHARS)}


class KeyFormatError(ValueError):
    """A key is not 32 bytes in the expected encoding."""


def clamp(secret: bytes) -> bytes:
    b = bytearray(secret)
    b[0] &= 248
    b[31] = (b[31] & 127) | 64
    return bytes(b)


def generate_private_key() -> bytes:
    return clamp(os.urandom(KEY_LEN))


def generate_preshared_key() -> bytes:
    return os.urandom(KEY_LEN)


def public_key(private: bytes) -> bytes:
    """The public key of a private key (clamped first, as X25519 always does)."""
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def is_low_order(public: bytes) -> bool:
    """True for points whose shared secret with any key is all zeros."""
    probe = X25519PrivateKey.from_private_bytes(b"\x01" * 31 + b"\x40")
    try:
        dh(probe, public)
    except CryptoFailure:
        return True
    return False


def to_base64(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def from_base64(text: str) -> bytes:
    """Decode as wg does: exactly 44 characters, '=' last, no stray bits."""
    raw = text.encode("ascii", "replace")
    if (
        len(raw) != BASE64_LEN
        or raw[-1:] != b"="
        or not all(c in _B64_ALPHABET_INDEX for c in raw[:-1])
        # the 43rd character carries 6 bits of which only the top 4 belong to the key
        or _B64_ALPHABET_INDEX[raw[42]] & 3
    ):
        raise KeyFormatError("Key is not the correct length or format")
    return base64.b64decode(raw, validate=True)


def to_hex(key: bytes) -> str:
    return key.hex()


def from_hex(text: str) -> bytes:
    if len(text) != 2 * KEY_LEN:
        raise KeyFormatError("Key is not 64 hexadecimal characters")
    try:
        return binascii.unhexlify(text)
    except (binascii.Error, ValueError) as exc:
        raise KeyFormatError("Key is not 64 hexadecimal characters") from exc
