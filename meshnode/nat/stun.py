"""A small sans-IO STUN codec (RFC 8489, formerly RFC 5389, plus the RFC 5780 attributes).

Only what a mesh node needs: sorting STUN out of the datagrams that reach its WireGuard socket,
Binding requests and responses, the address attributes, ERROR-CODE, FINGERPRINT and the
short-term MESSAGE-INTEGRITY (HMAC-SHA1), which is what RFC 5769's test vectors exercise.
No sockets, no clocks: every function takes bytes and returns bytes or values.

Addresses are ``(host, port)`` tuples with the host as ``ipaddress`` prints it, so IPv6 hosts
carry no brackets.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

Address = tuple[str, int]

MAGIC_COOKIE = 0x2112A442
_COOKIE_BYTES = struct.pack("!I", MAGIC_COOKIE)
HEADER_LEN = 20
TXID_LEN = 12
# RFC 8489 section 14.7: the CRC-32 is XORed with this so that a STUN message embedded in
# another protocol that also uses CRC-32 does not look like it carries a valid FINGERPRINT.
_FINGERPRINT_XOR = 0x5354554E
_HMAC_SHA1_LEN = 20

METHOD_BINDING = 0x001


class StunClass(enum.IntEnum):
    """The two class bits of the message type."""

    REQUEST = 0b00
    INDICATION = 0b01
    SUCCESS = 0b10
    ERROR = 0b11


# Attribute types. Below 0x8000 an agent that does not understand them must reject the
# message (comprehension-required); this codec keeps unknown ones raw and leaves that
# decision to whoever handles the message.
ATTR_MAPPED_ADDRESS = 0x0001
ATTR_CHANGE_REQUEST = 0x0003  # RFC 5780
ATTR_SOURCE_ADDRESS = 0x0004  # RFC 3489 only: what RESPONSE-ORIGIN replaced
ATTR_CHANGED_ADDRESS = 0x0005  # RFC 3489 only: what OTHER-ADDRESS replaced
ATTR_USERNAME = 0x0006
ATTR_MESSAGE_INTEGRITY = 0x0008
ATTR_ERROR_CODE = 0x0009
ATTR_UNKNOWN_ATTRIBUTES = 0x000A
ATTR_REALM = 0x0014
ATTR_NONCE = 0x0015
ATTR_XOR_MAPPED_ADDRESS = 0x0020
ATTR_PADDING = 0x0026  # RFC 5780
ATTR_RESPONSE_PORT = 0x0027  # RFC 5780
ATTR_SOFTWARE = 0x8022
ATTR_ALTERNATE_SERVER = 0x8023
ATTR_FINGERPRINT = 0x8028
ATTR_RESPONSE_ORIGIN = 0x802B  # RFC 5780
ATTR_OTHER_ADDRESS = 0x802C  # RFC 5780

_CHANGE_IP = 0x04
_CHANGE_PORT = 0x02

_FAMILY_V4 = 0x01
_FAMILY_V6 = 0x02


class StunError(ValueError):
    """A datagram that is not a well-formed STUN message (or a malformed attribute value)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_stun(datagram: bytes) -> bool:
    """Cheaply tell a STUN message from anything else on a shared UDP socket.

    WireGuard messages begin with a type byte 1..4 followed by three zero bytes, so their
    "length" field reads 0 and they are never 20 bytes long (the shortest, a keepalive, is 32):
    the length check alone keeps them apart, whatever their sender index happens to be.
    """
    n = len(datagram)
    if n < HEADER_LEN or n % 4:
        return False
    if datagram[0] & 0xC0:
        return False
    if int.from_bytes(datagram[2:4], "big") + HEADER_LEN != n:
        return False
    return datagram[4:8] == _COOKIE_BYTES


def _message_type(method: int, msg_class: int) -> int:
    # The class bits sit at positions 4 and 8, splitting the 12-bit method into 4+3+5 bits
    # (RFC 8489 section 5): a historical accident kept for RFC 3489 compatibility.
    if not 0 <= method <= 0xFFF:
        raise ValueError(f"STUN method out of range: {method:#x}")
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((msg_class & 0b01) << 4)
        | ((msg_class & 0b10) << 7)
    )


def _split_type(msg_type: int) -> tuple[int, StunClass]:
    method = (msg_type & 0x000F) | ((msg_type & 0x00E0) >> 1) | ((msg_type & 0x3E00) >> 2)
    msg_class = ((msg_type >> 4) & 0b01) | ((msg_type >> 7) & 0b10)
    return method, StunClass(msg_class)


def _pad_len(n: int) -> int:
    return (4 - n % 4) % 4


def _fingerprint(data: bytes) -> int:
    return (zlib.crc32(data) ^ _FINGERPRINT_XOR) & 0xFFFFFFFF


def _with_length(prefix: bytes, length: int) -> bytes:
    """``prefix`` (header + attributes) with its header length field set to ``length``.

    MESSAGE-INTEGRITY and FINGERPRINT are computed over the message as if it ended right
    after them, so the length field they cover differs from the final one.
    """
    return prefix[:2] + struct.pack("!H", length) + prefix[4:]


@dataclass(frozen=True)
class StunMessage:
    """A STUN message: header fields and the attributes in wire order, values raw.

    MESSAGE-INTEGRITY and FINGERPRINT are not in ``attributes``: they are computed over the
    rest of the message and so belong to encoding. ``parse`` verifies FINGERPRINT itself and
    records the received HMAC in ``integrity`` (checking it needs the key: see
    :func:`check_integrity`). Those two fields are left out of equality, so a message
    compares equal to its own round trip whatever trailers it was sent with.
    """

    method: int
    msg_class: StunClass
    transaction_id: bytes
    attributes: tuple[tuple[int, bytes], ...] = ()
    integrity: bytes | None = field(default=None, compare=False)
    fingerprint: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.transaction_id) != TXID_LEN:
            raise ValueError("a STUN transaction id is 12 bytes")

    @classmethod
    def parse(cls, data: bytes) -> StunMessage:
        """Parse one whole datagram; raise :class:`StunError` on anything malformed."""
        data = bytes(data)
        if len(data) < HEADER_LEN:
            raise StunError("shorter than a STUN header")
        msg_type, length = struct.unpack_from("!HH", data, 0)
        if msg_type & 0xC000:
            raise StunError("the first two bits of a STUN message are zero")
        if data[4:8] != _COOKIE_BYTES:
            raise StunError("bad magic cookie")
        if length % 4:
            raise StunError("length is not a multiple of 4")
        if HEADER_LEN + length != len(data):
            raise StunError("length field does not match the datagram size")
        method, msg_class = _split_type(msg_type)
        txid = data[8:20]

        attributes: list[tuple[int, bytes]] = []
        integrity: bytes | None = None
        fingerprint = False
        pos = HEADER_LEN
        while pos < len(data):
            if fingerprint:
                raise StunError("attribute after FINGERPRINT")
            if pos + 4 > len(data):
                raise StunError("truncated attribute header")
            attr_type, attr_len = struct.unpack_from("!HH", data, pos)
            start = pos + 4
            end = start + attr_len
            if end > len(data):
                raise StunError(f"attribute {attr_type:#06x} runs past the message")
            value = data[start:end]
            if attr_type == ATTR_FINGERPRINT:
                if attr_len != 4:
                    raise StunError("FINGERPRINT is not 4 bytes")
                (got,) = struct.unpack("!I", value)
                if got != _fingerprint(data[:pos]):
                    raise StunError("bad FINGERPRINT")
                fingerprint = True
            elif integrity is not None:
                # RFC 8489 section 14.5: attributes after MESSAGE-INTEGRITY (other than
                # FINGERPRINT) are not covered by it and must be ignored.
                pass
            elif attr_type == ATTR_MESSAGE_INTEGRITY:
                if attr_len != _HMAC_SHA1_LEN:
                    raise StunError("MESSAGE-INTEGRITY is not 20 bytes")
                integrity = value
            else:
                attributes.append((attr_type, value))
            pos = end + _pad_len(attr_len)
        if pos != len(data):
            raise StunError("last attribute padding runs past the message")
        return cls(method, msg_class, txid, tuple(attributes), integrity, fingerprint)

    def encode(
        self,
        *,
        integrity_key: bytes | None = None,
        fingerprint: bool = False,
        pad: int = 0,
    ) -> bytes:
        """The message on the wire, optionally with MESSAGE-INTEGRITY and FINGERPRINT.

        ``integrity_key`` is the short-term credential key, i.e. the password itself
        (RFC 8489 section 9.1.1; a long-term key would be MD5(user:realm:pass)).
        ``pad`` is the value of padding bytes: any value is allowed and receivers ignore it,
        but RFC 5769's vectors pad with spaces (0x20) and their HMACs cover the padding.
        """
        body = bytearray()
        for attr_type, value in self.attributes:
            body += struct.pack("!HH", attr_type, len(value)) + value
            body += bytes([pad]) * _pad_len(len(value))
        header = struct.pack(
            "!HHI", _message_type(self.method, self.msg_class), 0, MAGIC_COOKIE
        ) + bytes(self.transaction_id)
        msg = header + bytes(body)
        if integrity_key is not None:
            # The HMAC covers the message with the length field already counting the
            # MESSAGE-INTEGRITY attribute itself (but not a FINGERPRINT after it).
            covered = _with_length(msg, len(msg) - HEADER_LEN + 4 + _HMAC_SHA1_LEN)
            mac = hmac.new(integrity_key, covered, hashlib.sha1).digest()
            msg = covered + struct.pack("!HH", ATTR_MESSAGE_INTEGRITY, _HMAC_SHA1_LEN) + mac
        if fingerprint:
            covered = _with_length(msg, len(msg) - HEADER_LEN + 8)
            crc = _fingerprint(covered)
            msg = covered + struct.pack("!HHI", ATTR_FINGERPRINT, 4, crc)
        return _with_length(msg, len(msg) - HEADER_LEN)

    # -- attribute access -------------------------------------------------------------------

    def get(self, attr_type: int) -> bytes | None:
        """The value of the first attribute of this type, or None."""
        for t, v in self.attributes:
            if t == attr_type:
                return v
        return None

    def get_all(self, attr_type: int) -> list[bytes]:
        return [v for t, v in self.attributes if t == attr_type]

    def _address(self, attr_type: int, xor: bool) -> Address | None:
        value = self.get(attr_type)
        if value is None:
            return None
        return decode_address(value, self.transaction_id if xor else None)

    def xor_mapped_address(self) -> Address | None:
        return self._address(ATTR_XOR_MAPPED_ADDRESS, xor=True)

    def mapped_address(self) -> Address | None:
        """XOR-MAPPED-ADDRESS, falling back to the plain MAPPED-ADDRESS of older servers."""
        return self.xor_mapped_address() or self._address(ATTR_MAPPED_ADDRESS, xor=False)

    def other_address(self) -> Address | None:
        """OTHER-ADDRESS (RFC 5780), falling back to RFC 3489's CHANGED-ADDRESS."""
        return self._address(ATTR_OTHER_ADDRESS, xor=False) or self._address(
            ATTR_CHANGED_ADDRESS, xor=False
        )

    def response_origin(self) -> Address | None:
        """RESPONSE-ORIGIN (RFC 5780), falling back to RFC 3489's SOURCE-ADDRESS."""
        return self._address(ATTR_RESPONSE_ORIGIN, xor=False) or self._address(
            ATTR_SOURCE_ADDRESS, xor=False
        )

    def error_code(self) -> tuple[int, str] | None:
        """ERROR-CODE as (code, reason phrase), e.g. (420, "Unknown Attribute")."""
        value = self.get(ATTR_ERROR_CODE)
        if value is None:
            return None
        if len(value) < 4:
            raise StunError("ERROR-CODE shorter than 4 bytes")
        err_class = value[2] & 0x07
        number = value[3]
        if not 3 <= err_class <= 6 or number > 99:
            raise StunError("ERROR-CODE out of range")
        return err_class * 100 + number, value[4:].decode("utf-8", "replace")

    def software(self) -> str | None:
        value = self.get(ATTR_SOFTWARE)
        return None if value is None else value.decode("utf-8", "replace")

    def change_request(self) -> tuple[bool, bool] | None:
        """CHANGE-REQUEST as (change_ip, change_port), or None if absent."""
        value = self.get(ATTR_CHANGE_REQUEST)
        if value is None:
            return None
        if len(value) != 4:
            raise StunError("CHANGE-REQUEST is not 4 bytes")
        return bool(value[3] & _CHANGE_IP), bool(value[3] & _CHANGE_PORT)


def check_integrity(data: bytes, key: bytes) -> bool:
    """Whether ``data`` (a whole message) carries a MESSAGE-INTEGRITY valid under ``key``.

    Works on the raw bytes rather than a parsed message because the HMAC covers the exact
    bytes received, padding included, which a re-encoding need not reproduce.
    """
    try:
        msg = StunMessage.parse(data)
    except StunError:
        return False
    if msg.integrity is None:
        return False
    pos = HEADER_LEN
    data = bytes(data)
    while pos + 4 <= len(data):
        attr_type, attr_len = struct.unpack_from("!HH", data, pos)
        if attr_type == ATTR_MESSAGE_INTEGRITY:
            covered = _with_length(data[:pos], pos - HEADER_LEN + 4 + _HMAC_SHA1_LEN)
            mac = hmac.new(key, covered, hashlib.sha1).digest()
            return hmac.compare_digest(mac, data[pos + 4 : pos + 4 + _HMAC_SHA1_LEN])
        pos += 4 + attr_len + _pad_len(attr_len)
    return False


# -- addresses --------------------------------------------------------------------------------


def _normalize_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(host)
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; on the wire they are IPv4.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def encode_address(addr: Address, txid: bytes | None = None) -> bytes:
    """A (XOR-)MAPPED-ADDRESS-style value; XORed with the cookie (and txid) if ``txid``."""
    host, port = addr
    ip = _normalize_ip(host)
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port out of range: {port}")
    raw = ip.packed
    if txid is not None:
        port ^= MAGIC_COOKIE >> 16
        raw = bytes(a ^ b for a, b in zip(raw, _COOKIE_BYTES + bytes(txid), strict=False))
    family = _FAMILY_V4 if ip.version == 4 else _FAMILY_V6
    return struct.pack("!BBH", 0, family, port) + raw


def decode_address(value: bytes, txid: bytes | None = None) -> Address:
    """Decode a (XOR-)MAPPED-ADDRESS-style value; pass ``txid`` for the XOR variants."""
    if len(value) < 4:
        raise StunError("address attribute shorter than 4 bytes")
    _, family, port = struct.unpack_from("!BBH", value, 0)
    raw = value[4:]
    if family == _FAMILY_V4:
        if len(raw) != 4:
            raise StunError("IPv4 address attribute is not 8 bytes")
    elif family == _FAMILY_V6:
        if len(raw) != 16:
            raise StunError("IPv6 address attribute is not 20 bytes")
    else:
        raise StunError(f"unknown address family {family:#04x}")
    if txid is not None:
        port ^= MAGIC_COOKIE >> 16
        raw = bytes(a ^ b for a, b in zip(raw, _COOKIE_BYTES + bytes(txid), strict=False))
    ip = ipaddress.IPv4Address(raw) if family == _FAMILY_V4 else ipaddress.IPv6Address(raw)
    return str(ip), port


def _software_attr(software: str | None) -> list[tuple[int, bytes]]:
    if software is None:
        return []
    # RFC 8489 section 14.14: fewer than 128 characters.
    return [(ATTR_SOFTWARE, software[:127].encode("utf-8"))]


# -- Binding helpers --------------------------------------------------------------------------


def binding_request(
    txid: bytes,
    change_ip: bool = False,
    change_port: bool = False,
    software: str | None = None,
    fingerprint: bool = True,
) -> bytes:
    """A Binding request; CHANGE-REQUEST (RFC 5780) is added only if a flag is set."""
    attrs = _software_attr(software)
    if change_ip or change_port:
        flags = (_CHANGE_IP if change_ip else 0) | (_CHANGE_PORT if change_port else 0)
        attrs.append((ATTR_CHANGE_REQUEST, struct.pack("!I", flags)))
    msg = StunMessage(METHOD_BINDING, StunClass.REQUEST, txid, tuple(attrs))
    return msg.encode(fingerprint=fingerprint)


def binding_response(
    txid: bytes,
    mapped: Address,
    response_origin: Address | None = None,
    other_address: Address | None = None,
    software: str | None = None,
    fingerprint: bool = True,
) -> bytes:
    """A Binding success response telling the requester its ``mapped`` (reflexive) address."""
    attrs: list[tuple[int, bytes]] = [(ATTR_XOR_MAPPED_ADDRESS, encode_address(mapped, txid))]
    if response_origin is not None:
        attrs.append((ATTR_RESPONSE_ORIGIN, encode_address(response_origin)))
    if other_address is not None:
        attrs.append((ATTR_OTHER_ADDRESS, encode_address(other_address)))
    attrs += _software_attr(software)
    msg = StunMessage(METHOD_BINDING, StunClass.SUCCESS, txid, tuple(attrs))
    return msg.encode(fingerprint=fingerprint)


def error_response(
    txid: bytes,
    code: int,
    reason: str,
    method: int = METHOD_BINDING,
    unknown_attributes: Iterable[int] = (),
    fingerprint: bool = True,
) -> bytes:
    """An error response, e.g. 400 Bad Request or 420 Unknown Attribute."""
    if not 300 <= code <= 699:
        raise ValueError(f"STUN error code out of range: {code}")
    value = struct.pack("!HBB", 0, code // 100, code % 100) + reason.encode("utf-8")
    attrs: list[tuple[int, bytes]] = [(ATTR_ERROR_CODE, value)]
    unknown = list(unknown_attributes)
    if unknown:
        attrs.append((ATTR_UNKNOWN_ATTRIBUTES, struct.pack(f"!{len(unknown)}H", *unknown)))
    msg = StunMessage(method, StunClass.ERROR, txid, tuple(attrs))
    return msg.encode(fingerprint=fingerprint)


@dataclass(frozen=True)
class BindingResponse:
    """What a client wants from a Binding response, decoded."""

    transaction_id: bytes
    success: bool
    mapped: Address | None
    other_address: Address | None
    response_origin: Address | None
    error: tuple[int, str] | None
    software: str | None


def parse_binding_response(data: bytes) -> BindingResponse:
    """Parse a Binding success or error response; :class:`StunError` for anything else.

    A success response without any mapped address, or a malformed address attribute, is an
    error too: the caller sent the request to learn exactly that.
    """
    msg = StunMessage.parse(data)
    if msg.method != METHOD_BINDING:
        raise StunError(f"not a Binding message (method {msg.method:#x})")
    if msg.msg_class == StunClass.SUCCESS:
        mapped = msg.mapped_address()
        if mapped is None:
            raise StunError("Binding success response without a mapped address")
        error = None
    elif msg.msg_class == StunClass.ERROR:
        mapped = None
        error = msg.error_code()
        if error is None:
            raise StunError("Binding error response without ERROR-CODE")
    else:
        raise StunError(f"not a response (class {msg.msg_class.name})")
    return BindingResponse(
        transaction_id=msg.transaction_id,
        success=msg.msg_class == StunClass.SUCCESS,
        mapped=mapped,
        other_address=msg.other_address(),
        response_origin=msg.response_origin(),
        error=error,
        software=msg.software(),
    )
