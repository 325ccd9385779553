"""mac1, mac2 and cookie replies: WireGuard's defence against handshake floods.

mac1 proves the sender knows our public key and is always checked. Under load
a responder also demands mac2, keyed with a cookie that only a sender who can
receive at its source address learns (from a cookie reply).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from . import messages as m
from .crypto import CryptoFailure, hash_, mac, xaead_decrypt, xaead_encrypt

LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"
COOKIE_REFRESH_TIME = 120.0  # the responder's secret and the initiator's cookie both last this long
ZERO_MAC = bytes(16)


class CookieChecker:
    """The responder side, keyed with our own public key."""

    __slots__ = ("_cookie_key", "_mac1_key", "_random", "_secret", "_secret_set")

    def __init__(self, public_key: bytes, random: Callable[[int], bytes] = os.urandom) -> None:
        self._mac1_key = hash_(LABEL_MAC1, public_key)
        self._cookie_key = hash_(LABEL_COOKIE, public_key)
        self._random = random
        self._secret = b""
        self._secret_set: float | None = None

    def check_mac1(self, message: bytes) -> bool:
        off = m.mac1_offset(len(message))
        return mac(self._mac1_key, message[:off]) == message[off : off + 16]

    def _current_cookie(self, source: bytes, now: float, refresh: bool) -> bytes | None:
        if self._secret_set is None or now - self._secret_set > COOKIE_REFRESH_TIME:
            if not refresh:
                return None
            self._secret = self._random(32)
            self._secret_set = now
        return mac(self._secret, source)

    def check_mac2(self, message: bytes, source: bytes, now: float) -> bool:
        cookie = self._current_cookie(source, now, refresh=False)
        if cookie is None:
            return False
        off = m.mac1_offset(len(message)) + 16
        return mac(cookie, message[:off]) == message[off : off + 16]

    def create_reply(self, message: bytes, receiver: int, source: bytes, now: float) -> bytes:
        """A cookie reply to a handshake message that came from source."""
        cookie = self._current_cookie(source, now, refresh=True)
        assert cookie is not None
        off = m.mac1_offset(len(message))
        nonce = self._random(m.COOKIE_NONCE_LEN)
        sealed = xaead_encrypt(self._cookie_key, nonce, cookie, message[off : off + 16])
        return m.COOKIE_REPLY.pack(m.HEADER_COOKIE_REPLY, receiver, nonce, sealed)


class CookieGenerator:
    """The initiator side for one peer, keyed with that peer's public key."""

    __slots__ = ("_cookie", "_cookie_key", "_cookie_set", "_last_mac1", "_mac1_key")

    def __init__(self, peer_public_key: bytes) -> None:
        self._mac1_key = hash_(LABEL_MAC1, peer_public_key)
        self._cookie_key = hash_(LABEL_COOKIE, peer_public_key)
        self._cookie = b""
        self._cookie_set: float | None = None
        self._last_mac1: bytes | None = None

    def consume_reply(self, reply: bytes, now: float) -> bool:
        """Take the cookie from a reply to the last message we sent; False if it is not one."""
        if self._last_mac1 is None:
            return False
        _, _, nonce, sealed = m.COOKIE_REPLY.unpack(reply)
        try:
            self._cookie = xaead_decrypt(self._cookie_key, nonce, sealed, self._last_mac1)
        except CryptoFailure:
            return False
        self._cookie_set = now
        return True

    def add_macs(self, message: bytearray, now: float) -> None:
        off = m.mac1_offset(len(message))
        mac1 = mac(self._mac1_key, bytes(message[:off]))
        message[off : off + 16] = mac1
        self._last_mac1 = mac1
        if self._cookie_set is not None and now - self._cookie_set < COOKIE_REFRESH_TIME:
            message[off + 16 : off + 32] = mac(self._cookie, bytes(message[: off + 16]))
        else:
            message[off + 16 : off + 32] = ZERO_MAC
