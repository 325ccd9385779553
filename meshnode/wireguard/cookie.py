"""mac1, mac2 and cookie replies: WireGuard's defence against handshake floods.

mac1 proves the sender knows our public key and is always checked. Under load
a responder also demands mac2, keyed with a cookie that only a sender who can
receive at its source address learns (from a cookie reply).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

from . import messages as m
from .crypto import MAC_LEN, CryptoFailure, hash_, mac, xaead_decrypt, xaead_encrypt
from .endpoint import source_bytes

LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"
COOKIE_REFRESH_TIME = 120.0  # the responder's secret and the initiator's cookie both last this long
ZERO_MAC = bytes(16)
_COOKIE_CACHE = 4096  # source addresses whose cookie is remembered; cleared whole when full


class CookieChecker:
    """The responder side, keyed with our own public key."""

    __slots__ = ("_cookie_key", "_cookies", "_mac1", "_mac1_key", "_random", "_secret",
                 "_secret_set")  # fmt: skip

    def __init__(self, public_key: bytes, random: Callable[[int], bytes] = os.urandom) -> None:
        self._mac1_key = hash_(LABEL_MAC1, public_key)
        # keyed once: copying a keyed BLAKE2s state costs half of keying a new one
        self._mac1 = hashlib.blake2s(key=self._mac1_key, digest_size=MAC_LEN)
        self._cookie_key = hash_(LABEL_COOKIE, public_key)
        self._random = random
        self._secret = b""
        self._secret_set: float | None = None
        # socket address -> its cookie under the current secret, and a BLAKE2s
        # keyed with it: the under-load path sees the same sources again and again
        self._cookies: dict[tuple, tuple[bytes, Any]] = {}

    def check_mac1(self, message: bytes | memoryview) -> bool:
        off = m.mac1_offset(len(message))
        h = self._mac1.copy()
        h.update(message[:off])
        return h.digest() == message[off : off + 16]

    def _current_cookie(self, source: bytes, now: float, refresh: bool) -> bytes | None:
        if self._secret_set is None or now - self._secret_set > COOKIE_REFRESH_TIME:
            if not refresh:
                return None
            self._secret = self._random(32)
            self._secret_set = now
            self._cookies.clear()
        return mac(self._secret, source)

    def source_cookie(self, sockaddr: tuple, now: float) -> tuple[bytes, Any]:
        """The cookie of a socket address under the current secret (made if
        there is none) and a BLAKE2s keyed with it for `check_mac2_with`,
        cached per address, with a bounded cache."""
        if self._secret_set is None or now - self._secret_set > COOKIE_REFRESH_TIME:
            self._secret = self._random(32)
            self._secret_set = now
            self._cookies.clear()
        known = self._cookies.get(sockaddr)
        if known is None:
            if len(self._cookies) >= _COOKIE_CACHE:
                self._cookies.clear()
            cookie = mac(self._secret, source_bytes(sockaddr))
            known = (cookie, hashlib.blake2s(key=cookie, digest_size=MAC_LEN))
            self._cookies[sockaddr] = known
        return known

    @staticmethod
    def check_mac2_with(message: bytes | memoryview, keyed: Any) -> bool:
        """mac2 against a source's keyed BLAKE2s (from `source_cookie`)."""
        off = m.mac1_offset(len(message)) + 16
        mac2 = message[off : off + 16]
        if mac2 == ZERO_MAC:
            # no mac2 at all (what a flood, or an initiator without a cookie,
            # sends) needs no BLAKE2s to refuse
            return False
        h = keyed.copy()
        h.update(message[:off])
        return h.digest() == mac2

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
        return self.reply_with(message, receiver, cookie)

    def reply_with(self, message: bytes | memoryview, receiver: int, cookie: bytes) -> bytes:
        """A cookie reply carrying cookie, to a handshake message (its mac1 is the AD)."""
        off = m.mac1_offset(len(message))
        nonce = self._random(m.COOKIE_NONCE_LEN)
        sealed = xaead_encrypt(self._cookie_key, nonce, cookie, bytes(message[off : off + 16]))
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
