"""The STUN codec against RFC 5769's test vectors, round trips, and hostile input."""

from __future__ import annotations

import contextlib
import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.nat.stun import (
    ATTR_CHANGE_REQUEST,
    ATTR_ERROR_CODE,
    ATTR_FINGERPRINT,
    ATTR_MAPPED_ADDRESS,
    ATTR_OTHER_ADDRESS,
    ATTR_SOFTWARE,
    ATTR_USERNAME,
    ATTR_XOR_MAPPED_ADDRESS,
    METHOD_BINDING,
    StunClass,
    StunError,
    StunMessage,
    binding_request,
    binding_response,
    check_integrity,
    decode_address,
    encode_address,
    error_response,
    is_stun,
    parse_binding_response,
)


def unhex(text: str) -> bytes:
    return bytes.fromhex(" ".join(text.split()))


# RFC 5769 section 2.1, "Sample Request": SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME
# (padded with spaces), MESSAGE-INTEGRITY and FINGERPRINT.
SAMPLE_REQUEST = unhex("""
    00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
    00 24 00 04 6e 00 01 ff
    80 29 00 08 93 2f f9 b1 51 26 3b 36
    00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
    00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
    80 28 00 04 e5 7a 3b cf
""")

# Section 2.2, "Sample IPv4 Response": XOR-MAPPED-ADDRESS 192.0.2.1:32853.
SAMPLE_IPV4_RESPONSE = unhex("""
    01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 08 00 01 a1 47 e1 12 a6 43
    00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
    80 28 00 04 c0 7d 4c 96
""")

# Section 2.3, "Sample IPv6 Response": [2001:db8:1234:5678:11:2233:4455:6677]:32853.
SAMPLE_IPV6_RESPONSE = unhex("""
    01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
    00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
    80 28 00 04 c8 fb 0b 4c
""")

PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"
VECTOR_TXID = bytes.fromhex("b7e7a701bc34d686fa87dfae")
VECTORS = [SAMPLE_REQUEST, SAMPLE_IPV4_RESPONSE, SAMPLE_IPV6_RESPONSE]


# -- RFC 5769 ---------------------------------------------------------------------------------


def test_sample_request_parses_and_checks() -> None:
    assert len(SAMPLE_REQUEST) == 108
    assert is_stun(SAMPLE_REQUEST)
    m = StunMessage.parse(SAMPLE_REQUEST)  # raises if the FINGERPRINT were wrong
    assert (m.method, m.msg_class, m.transaction_id) == (
        METHOD_BINDING,
        StunClass.REQUEST,
        VECTOR_TXID,
    )
    assert m.fingerprint
    assert m.integrity == bytes.fromhex("9aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2")
    assert m.software() == "STUN test client"
    assert m.get(ATTR_USERNAME) == b"evtj:h6vY"
    # PRIORITY and ICE-CONTROLLED are ICE's: kept raw, in order.
    assert m.get(0x0024) == bytes.fromhex("6e0001ff")
    assert m.get(0x8029) == bytes.fromhex("932ff9b151263b36")
    assert [t for t, _ in m.attributes] == [ATTR_SOFTWARE, 0x0024, 0x8029, ATTR_USERNAME]
    assert check_integrity(SAMPLE_REQUEST, PASSWORD)
    assert not check_integrity(SAMPLE_REQUEST, b"VOkJxbRl1RmTxUk/WvJxBT")


@pytest.mark.parametrize(
    ("vector", "family_v6", "want"),
    [
        (SAMPLE_IPV4_RESPONSE, False, ("192.0.2.1", 32853)),
        (SAMPLE_IPV6_RESPONSE, True, ("2001:db8:1234:5678:11:2233:4455:6677", 32853)),
    ],
    ids=["ipv4", "ipv6"],
)
def test_sample_responses(vector: bytes, family_v6: bool, want: tuple[str, int]) -> None:
    assert is_stun(vector)
    m = StunMessage.parse(vector)
    assert (m.method, m.msg_class) == (METHOD_BINDING, StunClass.SUCCESS)
    assert m.fingerprint
    assert m.software() == "test vector"
    assert m.xor_mapped_address() == want
    assert m.mapped_address() == want
    assert check_integrity(vector, PASSWORD)
    assert not check_integrity(vector, b"wrong")
    r = parse_binding_response(vector)
    assert r.success and r.mapped == want and r.error is None
    assert r.transaction_id == VECTOR_TXID
    assert r.other_address is None and r.response_origin is None
    assert (ipaddress.ip_address(r.mapped[0]).version == 6) is family_v6


@pytest.mark.parametrize("vector", VECTORS, ids=["request", "ipv4", "ipv6"])
def test_vectors_reencode_byte_exact(vector: bytes) -> None:
    """Our encoder writes the RFC's bytes, MESSAGE-INTEGRITY and FINGERPRINT included.

    The RFC pads with spaces where we would pad with zeros (both are allowed); the HMAC covers
    the padding, so the test asks for space padding.
    """
    m = StunMessage.parse(vector)
    assert m.encode(integrity_key=PASSWORD, fingerprint=True, pad=0x20) == vector
    # With zero padding the bytes differ but the result is just as valid.
    zero_padded = m.encode(integrity_key=PASSWORD, fingerprint=True)
    assert StunMessage.parse(zero_padded) == m
    assert check_integrity(zero_padded, PASSWORD)


def test_response_is_rebuilt_by_the_helper() -> None:
    """binding_response() + the vector's trailers gives the IPv4 vector exactly."""
    built = StunMessage.parse(
        binding_response(VECTOR_TXID, ("192.0.2.1", 32853), software="test vector")
    )
    # The vector puts SOFTWARE first; the helper puts it last: reorder and compare bytes.
    reordered = StunMessage(
        built.method, built.msg_class, built.transaction_id, built.attributes[::-1]
    )
    assert reordered.encode(integrity_key=PASSWORD, fingerprint=True, pad=0x20) == (
        SAMPLE_IPV4_RESPONSE
    )


def test_bad_fingerprint_and_tampering_detected() -> None:
    data = bytearray(SAMPLE_IPV4_RESPONSE)
    data[-1] ^= 1
    with pytest.raises(StunError, match="FINGERPRINT"):
        StunMessage.parse(bytes(data))
    # A changed mapped address breaks the FINGERPRINT too.
    data = bytearray(SAMPLE_IPV4_RESPONSE)
    data[40] ^= 1
    with pytest.raises(StunError):
        StunMessage.parse(bytes(data))
    # Without the FINGERPRINT, MESSAGE-INTEGRITY still catches it.
    stripped = bytearray(SAMPLE_IPV4_RESPONSE[:-8])
    stripped[3] -= 8
    assert check_integrity(bytes(stripped), PASSWORD)
    stripped[40] ^= 1
    StunMessage.parse(bytes(stripped))
    assert not check_integrity(bytes(stripped), PASSWORD)


# -- sorting STUN from WireGuard --------------------------------------------------------------


@pytest.mark.parametrize("msg_type", [1, 2, 3, 4])
@pytest.mark.parametrize("size", [148, 92, 64, 32, 36, 48, 80, 1452])
def test_wireguard_is_never_stun(msg_type: int, size: int) -> None:
    # WireGuard: type byte, three reserved zero bytes, then a 32-bit sender/receiver index.
    # The worst case puts the STUN magic cookie exactly where that index lives.
    for index in (b"\x21\x12\xa4\x42", b"\x00\x00\x00\x00", b"\xff\xff\xff\xff"):
        for fill in (b"\x00", b"\xff", b"\x5a"):
            msg = bytes([msg_type, 0, 0, 0]) + index + fill * (size - 8)
            assert not is_stun(msg)


def test_is_stun_rules() -> None:
    good = binding_request(bytes(12))
    assert is_stun(good)
    assert not is_stun(good[:19])
    assert not is_stun(good + b"\0\0\0\0")  # length field no longer matches
    assert not is_stun(b"\x80" + good[1:])  # first two bits must be zero
    assert not is_stun(good[:4] + b"\x21\x12\xa4\x43" + good[8:])  # cookie
    odd = good[:2] + struct.pack("!H", len(good) - 20 + 2) + good[4:] + b"\0\0"
    assert not is_stun(odd)  # length not a multiple of 4


# -- helpers and attributes -------------------------------------------------------------------


@pytest.mark.parametrize(
    "mapped",
    [("203.0.113.7", 51820), ("2001:db8::1", 443), ("::", 0), ("255.255.255.255", 65535)],
)
def test_binding_response_round_trip(mapped: tuple[str, int]) -> None:
    txid = bytes(range(12))
    origin = ("192.0.2.10", 3478) if ":" not in mapped[0] else ("2001:db8::10", 3478)
    other = ("192.0.2.11", 3479) if ":" not in mapped[0] else ("2001:db8::11", 3479)
    data = binding_response(txid, mapped, origin, other, software="meshnode")
    assert is_stun(data)
    r = parse_binding_response(data)
    assert r.success
    assert r.mapped == mapped
    assert r.response_origin == origin
    assert r.other_address == other
    assert r.software == "meshnode"
    assert r.transaction_id == txid


def test_ipv4_mapped_ipv6_is_written_as_ipv4() -> None:
    # What a dual-stack socket reports for an IPv4 peer.
    data = binding_response(bytes(12), ("::ffff:198.51.100.9", 1234))
    assert parse_binding_response(data).mapped == ("198.51.100.9", 1234)


def test_binding_request_change_request() -> None:
    txid = b"\x01" * 12
    plain = StunMessage.parse(binding_request(txid))
    assert plain.change_request() is None
    assert plain.fingerprint
    assert StunMessage.parse(binding_request(txid, fingerprint=False)).fingerprint is False
    for ip, port in [(True, True), (False, True), (True, False)]:
        m = StunMessage.parse(binding_request(txid, change_ip=ip, change_port=port))
        assert (m.method, m.msg_class, m.transaction_id) == (
            METHOD_BINDING,
            StunClass.REQUEST,
            txid,
        )
        assert m.change_request() == (ip, port)
    assert StunMessage.parse(binding_request(txid, change_ip=True, change_port=True)).get(
        ATTR_CHANGE_REQUEST
    ) == bytes([0, 0, 0, 6])
    assert StunMessage.parse(binding_request(txid, software="x")).software() == "x"


def test_error_response() -> None:
    data = error_response(b"\x02" * 12, 420, "Unknown Attribute", unknown_attributes=[0x0003])
    r = parse_binding_response(data)
    assert not r.success and r.mapped is None
    assert r.error == (420, "Unknown Attribute")
    m = StunMessage.parse(data)
    assert m.msg_class is StunClass.ERROR
    assert m.get(0x000A) == b"\x00\x03"


def test_mapped_address_fallback_and_rfc3489_attributes() -> None:
    txid = b"\x03" * 12
    m = StunMessage(
        METHOD_BINDING,
        StunClass.SUCCESS,
        txid,
        (
            (ATTR_MAPPED_ADDRESS, encode_address(("192.0.2.5", 7))),
            (0x0005, encode_address(("192.0.2.6", 8))),  # CHANGED-ADDRESS
            (0x0004, encode_address(("192.0.2.7", 9))),  # SOURCE-ADDRESS
        ),
    )
    r = parse_binding_response(m.encode())
    assert r.mapped == ("192.0.2.5", 7)
    assert r.other_address == ("192.0.2.6", 8)
    assert r.response_origin == ("192.0.2.7", 9)


def test_message_type_bits() -> None:
    # RFC 8489 section 5: Binding request 0x0001, success 0x0101, error 0x0111,
    # indication 0x0011; an odd method shows the interleaving.
    for cls, want in [
        (StunClass.REQUEST, 0x0001),
        (StunClass.INDICATION, 0x0011),
        (StunClass.SUCCESS, 0x0101),
        (StunClass.ERROR, 0x0111),
    ]:
        data = StunMessage(METHOD_BINDING, cls, bytes(12)).encode()
        assert struct.unpack("!H", data[:2])[0] == want
    data = StunMessage(0xFFF, StunClass.REQUEST, bytes(12)).encode()
    assert struct.unpack("!H", data[:2])[0] == 0x3EEF
    assert StunMessage.parse(data).method == 0xFFF


def test_malformed_messages_raise_stun_error() -> None:
    good = binding_request(b"\x04" * 12, fingerprint=False)
    cases = {
        "short": good[:19],
        "cookie": good[:4] + b"\0\0\0\0" + good[8:],
        "length": good[:2] + b"\x00\x04" + good[4:],
        "top bits": b"\xc0" + good[1:],
    }
    # An attribute whose length runs past the message.
    hdr = good[:2] + struct.pack("!H", 8) + good[4:20]
    cases["attr past end"] = hdr + struct.pack("!HH", ATTR_SOFTWARE, 5) + b"abcd"
    cases["short fingerprint"] = hdr + struct.pack("!HH", ATTR_FINGERPRINT, 2) + b"\0\0\0\0"
    cases["short integrity"] = hdr + struct.pack("!HH", 0x0008, 4) + b"\0\0\0\0"
    fp = binding_request(b"\x04" * 12)
    after = fp + struct.pack("!HH", ATTR_SOFTWARE, 0)
    cases["after fingerprint"] = after[:2] + struct.pack("!H", len(after) - 20) + after[4:]
    for name, data in cases.items():
        with pytest.raises(StunError):
            StunMessage.parse(data)
            pytest.fail(name)
        # is_stun() looks at the header only: the header cases fail it, the rest need parse().
        assert is_stun(data) is (name not in {"short", "cookie", "length", "top bits"}), name


def test_bad_attribute_values_raise_stun_error() -> None:
    txid = b"\x05" * 12
    for value in [b"", b"\0\x01\0", b"\0\x01\0\0\0", b"\0\x03" + bytes(6), b"\0\x02" + bytes(6)]:
        m = StunMessage(
            METHOD_BINDING, StunClass.SUCCESS, txid, ((ATTR_XOR_MAPPED_ADDRESS, value),)
        )
        with pytest.raises(StunError):
            parse_binding_response(m.encode())
    m = StunMessage(METHOD_BINDING, StunClass.ERROR, txid, ((ATTR_ERROR_CODE, b"\0\0\x09\x00"),))
    with pytest.raises(StunError):
        parse_binding_response(m.encode())
    # Not a response at all.
    with pytest.raises(StunError):
        parse_binding_response(binding_request(txid))
    # A success response that does not say the one thing it is for.
    with pytest.raises(StunError):
        parse_binding_response(StunMessage(METHOD_BINDING, StunClass.SUCCESS, txid).encode())


def test_attributes_after_integrity_are_ignored() -> None:
    txid = b"\x06" * 12
    signed = StunMessage(METHOD_BINDING, StunClass.REQUEST, txid, ((ATTR_SOFTWARE, b"a"),)).encode(
        integrity_key=b"k"
    )
    extra = signed + struct.pack("!HH", ATTR_SOFTWARE, 4) + b"evil"
    extra = extra[:2] + struct.pack("!H", len(extra) - 20) + extra[4:]
    m = StunMessage.parse(extra)
    assert m.attributes == ((ATTR_SOFTWARE, b"a"),)
    assert check_integrity(extra, b"k")


# -- property tests ---------------------------------------------------------------------------

ip4 = st.ip_addresses(v=4).map(str)
ip6 = st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None).map(str)
addresses = st.tuples(st.one_of(ip4, ip6), st.integers(0, 65535))
txids = st.binary(min_size=12, max_size=12)
attributes = st.lists(
    st.tuples(
        st.integers(0, 0xFFFF).filter(lambda t: t not in (0x0008, 0x8028)),
        st.binary(max_size=40),
    ),
    max_size=6,
).map(tuple)


@given(
    method=st.integers(0, 0xFFF),
    cls=st.sampled_from(list(StunClass)),
    txid=txids,
    attrs=attributes,
    key=st.one_of(st.none(), st.binary(min_size=1, max_size=32)),
    fingerprint=st.booleans(),
)
def test_message_round_trip(
    method: int,
    cls: StunClass,
    txid: bytes,
    attrs: tuple[tuple[int, bytes], ...],
    key: bytes | None,
    fingerprint: bool,
) -> None:
    m = StunMessage(method, cls, txid, attrs)
    data = m.encode(integrity_key=key, fingerprint=fingerprint)
    assert is_stun(data)
    back = StunMessage.parse(data)
    assert back == m
    assert back.fingerprint is fingerprint
    assert (back.integrity is not None) is (key is not None)
    if key is not None:
        assert check_integrity(data, key)
        assert not check_integrity(data, key + b"x")


@given(txid=txids, mapped=addresses, origin=addresses, other=addresses)
def test_binding_response_property(
    txid: bytes, mapped: tuple[str, int], origin: tuple[str, int], other: tuple[str, int]
) -> None:
    r = parse_binding_response(binding_response(txid, mapped, origin, other))
    assert (r.mapped, r.response_origin, r.other_address) == (mapped, origin, other)


@given(addr=addresses, txid=st.one_of(st.none(), txids))
def test_address_codec_round_trip(addr: tuple[str, int], txid: bytes | None) -> None:
    assert decode_address(encode_address(addr, txid), txid) == addr


def _mutants(data: bytes) -> list[bytes]:
    out = [data[:n] for n in range(len(data))]
    for i in range(len(data)):
        for bit in range(8):
            flipped = bytearray(data)
            flipped[i] ^= 1 << bit
            out.append(bytes(flipped))
    return out


def _full_decode(data: bytes) -> None:
    """Everything a consumer might call on a datagram; only StunError may escape."""
    is_stun(data)
    check_integrity(data, PASSWORD)
    try:
        m = StunMessage.parse(data)
        m.mapped_address()
        m.other_address()
        m.response_origin()
        m.error_code()
        m.software()
        m.change_request()
        m.encode()
    except StunError:
        pass
    with contextlib.suppress(StunError):
        parse_binding_response(data)


@pytest.mark.parametrize(
    "data",
    [
        *VECTORS,
        binding_request(b"\x07" * 12, change_ip=True, change_port=True, software="s"),
        binding_response(b"\x08" * 12, ("2001:db8::5", 9), ("2001:db8::6", 3478), ("::7", 1)),
        binding_response(b"\x09" * 12, ("192.0.2.1", 9), fingerprint=False),
        error_response(b"\x0a" * 12, 400, "Bad Request", fingerprint=False),
    ],
    ids=["req", "v4", "v6", "change", "resp6", "resp4-nofp", "error-nofp"],
)
def test_every_truncation_and_bit_flip(data: bytes) -> None:
    for mutant in _mutants(data):
        _full_decode(mutant)


@given(st.binary(max_size=120))
def test_random_bytes_never_crash(data: bytes) -> None:
    _full_decode(data)
    # Also with a valid-looking header, so the attribute walker sees the garbage.
    body = data[: len(data) // 4 * 4]
    _full_decode(struct.pack("!HHI", 0x0101, len(body), 0x2112A442) + bytes(12) + body)


def test_other_address_attribute_constant() -> None:
    txid = b"\x0b" * 12
    data = binding_response(txid, ("192.0.2.1", 1), other_address=("192.0.2.2", 2))
    assert StunMessage.parse(data).get(ATTR_OTHER_ADDRESS) == encode_address(("192.0.2.2", 2))
