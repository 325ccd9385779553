"""NAT-traversal path probes: wire format, authentication, and hostile input."""

from __future__ import annotations

import hashlib
import random
from ipaddress import ip_address

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshnode.mesh.probe import (
    MAGIC,
    MIN_SIZE,
    PING,
    PONG,
    Probe,
    ProbeCodec,
    ProbeError,
    is_probe,
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TXID = bytes(range(12))
REASONS = {"short", "magic", "kind", "auth", "low-order key", "address"}

# Low-order X25519 points (and non-canonical encodings of them): each makes the
# shared secret all-zero whatever the private key.
LOW_ORDER = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    (2**255 - 19 - 1).to_bytes(32, "little"),
    (2**255 - 19).to_bytes(32, "little"),
    (2**255 - 19 + 1).to_bytes(32, "little"),
]


def private(seed: int) -> bytes:
    return random.Random(seed).randbytes(32)


def codec(seed: int) -> ProbeCodec:
    return ProbeCodec(private(seed), random.Random(seed))


A, B, C = codec(1), codec(2), codec(3)


def pair_key(own_private: bytes, peer_public: bytes) -> bytes:
    """The pair key built straight from the spec, independently of the codec."""
    shared = X25519PrivateKey.from_private_bytes(own_private).exchange(
        X25519PublicKey.from_public_bytes(peer_public)
    )
    return hashlib.blake2s(b"meshnode probe v1" + shared).digest()


def seal(kind: int, sender_private: bytes, peer_public: bytes, plaintext: bytes) -> bytes:
    """A probe built straight from the spec, with any plaintext at all."""
    sender = X25519PrivateKey.from_private_bytes(sender_private).public_key().public_bytes_raw()
    header = MAGIC + bytes([kind]) + sender
    nonce = b"\x07" * 12
    aead = ChaCha20Poly1305(pair_key(sender_private, peer_public))
    return header + nonce + aead.encrypt(nonce, plaintext, header)


def reason(datagram: bytes, receiver: ProbeCodec = B) -> str:
    with pytest.raises(ProbeError) as caught:
        receiver.open(datagram)
    assert caught.value.args[0] in REASONS
    return caught.value.args[0]


def test_ping_pong_round_trip() -> None:
    ping = A.ping(B.public_key, TXID)
    assert is_probe(ping)
    assert len(ping) == MIN_SIZE
    assert B.open(ping) == Probe(PING, A.public_key, TXID, None)

    pong = B.pong(A.public_key, TXID, ("198.51.100.7", 41641))
    assert is_probe(pong)
    assert A.open(pong) == Probe(PONG, B.public_key, TXID, ("198.51.100.7", 41641))


def test_pair_key_is_symmetric_and_matches_the_spec() -> None:
    assert pair_key(private(1), B.public_key) == pair_key(private(2), A.public_key)
    # A datagram built by hand from the spec opens, and the codec's own output
    # decrypts with the hand-derived key: the wire format is what the docs say.
    assert B.open(seal(PING, private(1), B.public_key, TXID)) == Probe(
        PING, A.public_key, TXID, None
    )
    ping = A.ping(B.public_key, TXID)
    assert ping[:4] == MAGIC
    assert ping[4] == PING
    assert ping[5:37] == A.public_key
    aead = ChaCha20Poly1305(pair_key(private(2), A.public_key))
    assert aead.decrypt(ping[37:49], ping[49:], ping[:37]) == TXID


def test_nonces_come_from_the_rng() -> None:
    one = ProbeCodec(private(1), random.Random(9)).ping(B.public_key, TXID)
    two = ProbeCodec(private(1), random.Random(9)).ping(B.public_key, TXID)
    assert one == two
    assert one[37:49] == random.Random(9).randbytes(12)
    assert A.ping(B.public_key, TXID) != A.ping(B.public_key, TXID)


@pytest.mark.parametrize(
    "observed",
    [
        ("198.51.100.7", 51820),
        ("0.0.0.1", 1),
        ("255.255.255.255", 65535),
        ("2001:db8::1", 51820),
        ("::", 443),
        ("fe80::1", 51820),
        ("2001:db8:1:2:3:4:5:6", 65535),
    ],
)
def test_observed_addresses_round_trip(observed: tuple[str, int]) -> None:
    assert A.open(B.pong(A.public_key, TXID, observed)).observed == observed


def test_observed_addresses_are_normalised() -> None:
    pong = B.pong(A.public_key, TXID, ("2001:DB8:0:0::1", 51820))
    assert A.open(pong).observed == ("2001:db8::1", 51820)
    # A v4-mapped address stays IPv6 (the ping came in on a v6 socket); how
    # it is spelt depends on the Python version, so compare addresses.
    pong = B.pong(A.public_key, TXID, ("::ffff:192.0.2.1", 9))
    observed = A.open(pong).observed
    assert observed is not None
    assert ip_address(observed[0]) == ip_address("::ffff:192.0.2.1")
    assert observed[1] == 9


@pytest.mark.parametrize(
    "observed",
    [
        ("hub.example.net", 51820),
        ("[2001:db8::1]", 51820),
        ("fe80::1%eth0", 51820),
        ("198.51.100.7", 0),
        ("198.51.100.7", 65536),
        ("198.51.100.7", -1),
        ("198.51.100.7", True),
    ],
)
def test_pong_refuses_unencodable_addresses(observed: tuple[str, int]) -> None:
    with pytest.raises(ProbeError, match="address"):
        B.pong(A.public_key, TXID, observed)


def test_caller_bugs_are_plain_value_errors() -> None:
    for call in (
        lambda: A.ping(B.public_key[:31], TXID),
        lambda: A.ping(B.public_key, TXID[:11]),
        lambda: A.pong(B.public_key, TXID + b"x", ("192.0.2.1", 1)),
        lambda: ProbeCodec(bytes(31), random.Random(0)),
        lambda: ProbeCodec(private(1), random.Random(0), cache_size=0),
    ):
        with pytest.raises(ValueError) as caught:
            call()
        assert not isinstance(caught.value, ProbeError)


def test_a_third_party_cannot_forge() -> None:
    # C claims to be A: it can seal only with its own pair key with B.
    forged = bytearray(C.ping(B.public_key, TXID))
    forged[5:37] = A.public_key
    assert reason(bytes(forged)) == "auth"
    # C's probe meant for A does not open at B, nor B's for A at C.
    assert reason(C.ping(A.public_key, TXID)) == "auth"
    assert reason(B.pong(A.public_key, TXID, ("192.0.2.1", 1)), C) == "auth"
    # C's own honest probe opens: `open` authenticates keys, not membership.
    assert B.open(C.ping(B.public_key, TXID)).sender == C.public_key


def test_a_reflected_probe_does_not_open_at_its_sender() -> None:
    assert reason(A.ping(B.public_key, TXID), A) == "auth"


def test_the_kind_is_authenticated() -> None:
    ping = bytearray(A.ping(B.public_key, TXID))
    ping[4] = PONG
    assert reason(bytes(ping)) == "auth"


@pytest.mark.parametrize("make", ["ping", "pong4", "pong6"])
def test_any_bit_flip_is_a_probe_error(make: str) -> None:
    if make == "ping":
        datagram = A.ping(B.public_key, TXID)
    else:
        host = "198.51.100.7" if make == "pong4" else "2001:db8::1"
        datagram = A.pong(B.public_key, TXID, (host, 51820))
    for bit in range(len(datagram) * 8):
        flipped = bytearray(datagram)
        flipped[bit // 8] ^= 1 << (bit % 8)
        expected = {"magic"} if bit < 32 else {"kind", "auth", "low-order key"}
        assert reason(bytes(flipped)) in expected


@pytest.mark.parametrize("make", ["ping", "pong"])
def test_truncation_at_every_length_is_a_probe_error(make: str) -> None:
    if make == "ping":
        datagram = A.ping(B.public_key, TXID)
    else:
        datagram = A.pong(B.public_key, TXID, ("2001:db8::1", 51820))
    for size in range(len(datagram)):
        expected = "short" if size < MIN_SIZE else "auth"
        assert reason(datagram[:size]) == expected
        assert not is_probe(datagram[:size]) or size >= MIN_SIZE


@pytest.mark.parametrize("kind", [0, 3, 4, 0x80, 0xFF])
def test_wrong_kind(kind: int) -> None:
    ping = bytearray(A.ping(B.public_key, TXID))
    ping[4] = kind
    assert reason(bytes(ping)) == "kind"
    # Checked before any cryptography, even with a valid box for that kind.
    assert reason(seal(kind, private(1), B.public_key, TXID)) == "kind"


def test_wrong_magic() -> None:
    ping = A.ping(B.public_key, TXID)
    assert reason(b"\xffMNq" + ping[4:]) == "magic"
    assert reason(bytes(MIN_SIZE)) == "magic"


@pytest.mark.parametrize("peer", LOW_ORDER)
def test_low_order_keys_are_refused(peer: bytes) -> None:
    with pytest.raises(ProbeError, match="low-order key"):
        A.ping(peer, TXID)
    with pytest.raises(ProbeError, match="low-order key"):
        A.pong(peer, TXID, ("192.0.2.1", 1))
    datagram = MAGIC + bytes([PING]) + peer + bytes(12 + 12 + 16)
    assert reason(datagram) == "low-order key"


def test_malformed_plaintexts_that_authenticate() -> None:
    # A member with a buggy encoder: the box opens, the contents do not parse.
    def opened(kind: int, plaintext: bytes) -> str:
        return reason(seal(kind, private(1), B.public_key, plaintext))

    assert opened(PING, TXID + b"\x00") == "kind"
    assert opened(PONG, TXID) == "address"
    assert opened(PONG, TXID + b"\x05" + bytes(6)) == "address"  # family 5
    assert opened(PONG, TXID + b"\x04" + bytes(5)) == "address"  # short v4
    assert opened(PONG, TXID + b"\x04" + bytes(7)) == "address"  # long v4
    assert opened(PONG, TXID + b"\x06" + bytes(17)) == "address"  # short v6
    assert opened(PONG, TXID + b"\x04\xc0\x00\x02\x01\x00\x00") == "address"  # port 0
    good = TXID + b"\x04\xc0\x00\x02\x01\xca\x6c"
    assert B.open(seal(PONG, private(1), B.public_key, good)).observed == ("192.0.2.1", 51820)


def test_is_probe_tells_probes_from_wireguard_and_stun() -> None:
    assert is_probe(A.ping(B.public_key, TXID))
    rng = random.Random(5)
    for kind, size in ((1, 148), (2, 92), (3, 64), (4, 32), (4, 1500)):
        wireguard = bytes([kind, 0, 0, 0]) + rng.randbytes(size - 4)
        assert not is_probe(wireguard)
        assert reason(wireguard) in {"short", "magic"}
    for message_type in (b"\x00\x01", b"\x01\x01", b"\x01\x11"):  # request, success, error
        stun = message_type + (80).to_bytes(2, "big") + bytes.fromhex("2112a442")
        stun += rng.randbytes(12 + 80)
        assert not is_probe(stun)
        assert reason(stun) == "magic"
    assert not is_probe(MAGIC + bytes(MIN_SIZE - len(MAGIC) - 1))
    assert is_probe(MAGIC + bytes(MIN_SIZE - len(MAGIC)))


def test_the_key_cache_is_bounded_and_forgettable() -> None:
    small = ProbeCodec(private(1), random.Random(0), cache_size=2)
    peers = [codec(seed) for seed in range(10, 15)]
    for peer in peers:
        small.ping(peer.public_key, TXID)
        assert len(small._aeads) <= 2
    small.forget(peers[-1].public_key)
    assert peers[-1].public_key not in small._aeads
    small.forget(peers[-1].public_key)  # forgetting twice is fine
    # Forgetting only drops the cache: a later probe still works.
    assert peers[-1].open(small.ping(peers[-1].public_key, TXID)).sender == small.public_key
    assert small.open(peers[0].ping(small.public_key, TXID)).sender == peers[0].public_key


def test_unauthenticated_senders_are_not_cached() -> None:
    fresh = codec(20)
    for seed in range(30, 40):
        bogus = MAGIC + bytes([PING]) + codec(seed).public_key + bytes(40)
        assert reason(bogus, fresh) == "auth"
    assert fresh._aeads == {}
    fresh.open(A.ping(fresh.public_key, TXID))
    assert list(fresh._aeads) == [A.public_key]


@SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_probe_error(data: bytes) -> None:
    try:
        B.open(data)
    except ProbeError as error:
        assert error.args[0] in REASONS
    else:  # pragma: no cover - forging a tag by chance is not going to happen
        pytest.fail("random bytes opened")


@SETTINGS
@given(st.sampled_from([0, PING, PONG, 3]), st.binary(min_size=32, max_size=32), st.binary())
def test_random_probe_shaped_datagrams_only_raise_probe_error(
    kind: int, sender: bytes, rest: bytes
) -> None:
    with pytest.raises(ProbeError) as caught:
        B.open(MAGIC + bytes([kind]) + sender + rest)
    assert caught.value.args[0] in REASONS


@SETTINGS
@given(st.sampled_from([PING, PONG]), st.binary(max_size=40))
def test_random_authenticated_plaintexts_only_raise_probe_error(
    kind: int, plaintext: bytes
) -> None:
    # Past the AEAD, a member's malformed contents must still be a ProbeError.
    try:
        probe = B.open(seal(kind, private(1), B.public_key, plaintext))
    except ProbeError as error:
        assert error.args[0] in REASONS
    else:
        assert probe.sender == A.public_key
        assert probe.txid == plaintext[:12]
        assert len(probe.txid) == 12
