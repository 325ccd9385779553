"""A mesh's authority: the Ed25519 key that signs records, tombstones and invites.

Signatures are domain-separated by kind: the message signed for `body` is

    b"meshnode/" + kind + b"/v1\\x00" + body

Kinds are lowercase letters only (no '/', no NUL), so the prefix is never
ambiguous and a member record's signature can never pass as a tombstone's or
an invite's, whatever bytes the bodies hold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from .codec import Checker

KEY_LEN = 32
SIGNATURE_LEN = 64

_KIND = re.compile(r"[a-z]{1,16}")


class AuthorityError(ValueError):
    """An authority key or signature input is malformed."""


def signed_message(kind: str, body: bytes) -> bytes:
    """The exact bytes an authority signs for `body` of `kind`."""
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise AuthorityError(f"signature kind {kind!r} must be 1-16 letters a-z")
    if not isinstance(body, bytes | bytearray | memoryview):  # bytes(5) would be 5 zeros
        raise AuthorityError(f"a signed body must be bytes, not {type(body).__name__}")
    return b"meshnode/" + kind.encode("ascii") + b"/v1\x00" + bytes(body)


@dataclass(frozen=True)
class AuthorityKey:
    """The public half of a mesh's authority: what every member verifies with."""

    raw: bytes

    def __post_init__(self) -> None:
        Checker(AuthorityError, "authority key").blob(self.raw, "key", KEY_LEN)

    def verify(self, kind: str, body: bytes, signature: bytes) -> bool:
        """Whether `signature` is the authority's over `body` as `kind`.

        A bool rather than an exception: each caller has its own error to
        raise (a forged invite, a refused record).
        """
        if not isinstance(signature, bytes) or len(signature) != SIGNATURE_LEN:
            return False
        try:
            public = Ed25519PublicKey.from_public_bytes(self.raw)
            public.verify(signature, signed_message(kind, body))
        except (InvalidSignature, ValueError):
            return False
        return True


class Authority:
    """A mesh's signing key, kept by its admin node(s)."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.key = AuthorityKey(private.public_key().public_bytes_raw())

    @classmethod
    def generate(cls) -> Authority:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> Authority:
        """Load the 32-byte seed that `private_bytes` returned."""
        Checker(AuthorityError, "authority private key").blob(raw, "key", KEY_LEN)
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    def private_bytes(self) -> bytes:
        """The 32-byte Ed25519 seed, for the admin's state file only."""
        return self._private.private_bytes_raw()

    def sign(self, kind: str, body: bytes) -> bytes:
        return self._private.sign(signed_message(kind, body))

    def __repr__(self) -> str:  # never print the private key by accident
        return f"Authority({self.key.raw.hex()})"
