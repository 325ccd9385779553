"""Our WireGuard handshake against an independent Noise implementation.

The other side of every handshake here is `noiseprotocol` running
Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s with WireGuard's prologue. WireGuard's
own framing (message headers, indices, mac1/mac2, transport headers, padding)
is built and checked by hand in this file, from the protocol description, with
hashlib and cryptography only; nothing of meshnode is used on the noise side.
So a bug that our initiator and responder share (and that the two-device tests
cannot see) shows up here.
"""

from __future__ import annotations

import hashlib
import os
import struct

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from memnet import EPOCH, ip_packet
from noise.connection import Keypair, NoiseConnection
from noise.exceptions import NoiseInvalidMessage

from meshnode.wireguard.allowedips import parse_network
from meshnode.wireguard.device import Device, Drop
from meshnode.wireguard.endpoint import Endpoint

PROTOCOL = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
PROLOGUE = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
TAI64_EPOCH = 2**62 + 10  # TAI64 label of the Unix epoch, with the 10 s TAI offset

DEVICE_INNER = "10.0.0.1"
NOISE_INNER = "10.0.0.2"
NOISE_ENDPOINT = Endpoint(("192.0.2.2", 51820))
NOISE_INDEX = 0x0BADCAFE  # the index the noise side picks for itself

PSKS = [
    pytest.param(None, id="no-psk"),
    pytest.param(bytes(range(1, 33)), id="psk"),
]


# ------------------------------------------------------------------ helpers


def private_key() -> bytes:
    return X25519PrivateKey.generate().private_bytes_raw()


def public_key(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def mac1(receiver_public: bytes, message: bytes) -> bytes:
    """mac1 of a handshake message: keyed BLAKE2s-128 over everything before mac1."""
    key = hashlib.blake2s(b"mac1----" + receiver_public).digest()
    return hashlib.blake2s(message[:-32], key=key, digest_size=16).digest()


def tai64n(unix_time: float) -> bytes:
    seconds = int(unix_time)
    nanos = round((unix_time - seconds) * 1e9)
    return struct.pack(">QI", TAI64_EPOCH + seconds, nanos)


def noise_connection(
    initiator: bool, static_private: bytes, remote_public: bytes | None, psk: bytes | None
) -> NoiseConnection:
    conn = NoiseConnection.from_name(PROTOCOL)
    if initiator:
        conn.set_as_initiator()
    else:
        conn.set_as_responder()
    conn.set_prologue(PROLOGUE)
    conn.set_keypair_from_private_bytes(Keypair.STATIC, static_private)
    if remote_public is not None:
        conn.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, remote_public)
    # Without a preshared key WireGuard still runs psk2, with 32 zero bytes.
    conn.set_psks(psk=psk if psk is not None else bytes(32))
    conn.start_handshake()
    return conn


def make_device(
    device_private: bytes, noise_public: bytes, psk: bytes | None, endpoint: bool
) -> Device:
    device = Device(device_private, epoch=EPOCH)
    peer = device.add_peer(noise_public)
    if psk is not None:
        device.set_preshared_key(peer, psk)
    if endpoint:
        device.set_endpoint(peer, NOISE_ENDPOINT)
    device.add_allowed_ip(peer, parse_network(NOISE_INNER + "/32"))
    return device


def build_initiation(sender: int, noise_message: bytes, receiver_public: bytes) -> bytes:
    assert len(noise_message) == 32 + 48 + 28
    body = b"\x01\x00\x00\x00" + struct.pack("<I", sender) + noise_message
    message = body + bytes(32)
    return body + mac1(receiver_public, message) + bytes(16)


def build_response(
    sender: int, receiver: int, noise_message: bytes, receiver_public: bytes
) -> bytes:
    assert len(noise_message) == 32 + 16
    body = b"\x02\x00\x00\x00" + struct.pack("<II", sender, receiver) + noise_message
    message = body + bytes(32)
    return body + mac1(receiver_public, message) + bytes(16)


def noise_seal(conn: NoiseConnection, receiver: int, counter: int, packet: bytes) -> bytes:
    """A transport message sealed by noise's send cipher state at nonce `counter`."""
    padded = packet + bytes(-len(packet) % 16)
    cipher = conn.noise_protocol.cipher_state_encrypt
    cipher.set_nonce(counter)
    sealed = conn.encrypt(padded)
    return b"\x04\x00\x00\x00" + struct.pack("<IQ", receiver, counter) + sealed


def noise_open(conn: NoiseConnection, datagram: bytes, receiver: int) -> tuple[int, bytes]:
    """Check a transport message's framing and open it with noise's receive cipher state.

    Returns the counter and the padded plaintext.
    """
    assert datagram[:4] == b"\x04\x00\x00\x00"
    assert len(datagram) >= 32
    got_receiver, counter = struct.unpack_from("<IQ", datagram, 4)
    assert got_receiver == receiver
    cipher = conn.noise_protocol.cipher_state_decrypt
    cipher.set_nonce(counter)  # noise's own counter would assume in-order delivery
    plaintext = conn.decrypt(bytes(datagram[16:]))
    assert len(plaintext) % 16 == 0, "transport plaintext is not padded to 16 bytes"
    return counter, plaintext


def unpad_ipv4(plaintext: bytes) -> bytes:
    length = int.from_bytes(plaintext[2:4], "big")
    assert length <= len(plaintext) < length + 16
    assert plaintext[length:] == bytes(len(plaintext) - length), "padding is not zeros"
    return plaintext[:length]


# ------------------------------------------------------------------ device initiates


def device_initiation(psk: bytes | None, noise_psk: bytes | None, now: float):
    """A device with data staged for the noise responder, and the initiation it sent."""
    device_private, noise_private = private_key(), private_key()
    device_public, noise_public = public_key(device_private), public_key(noise_private)
    device = make_device(device_private, noise_public, psk, endpoint=True)
    outgoing = ip_packet(DEVICE_INNER, NOISE_INNER, b"hello from meshnode")
    device.send(outgoing, now)
    out = device.datagrams_to_send()
    assert len(out) == 1
    initiation, to = out[0]
    assert to == NOISE_ENDPOINT
    responder = noise_connection(False, noise_private, None, noise_psk)
    return device, device_public, noise_public, responder, initiation, outgoing


@pytest.mark.parametrize("psk", PSKS)
def test_device_initiator_noise_responder(psk: bytes | None) -> None:
    now = 3.25
    device, device_public, noise_public, responder, initiation, outgoing = device_initiation(
        psk, psk, now
    )

    # The initiation's framing and mac1.
    assert len(initiation) == 148
    assert initiation[:4] == b"\x01\x00\x00\x00"
    device_index = struct.unpack_from("<I", initiation, 4)[0]
    assert initiation[116:132] == mac1(noise_public, initiation)
    assert initiation[132:148] == bytes(16)  # no cookie yet

    # Noise accepts message 1, learns our static key, and finds a fresh timestamp.
    timestamp = responder.read_message(bytes(initiation[8:116]))
    assert responder.noise_protocol.handshake_state.rs.public_bytes == device_public
    assert len(timestamp) == 12
    seconds, nanos = struct.unpack(">QI", timestamp)
    assert nanos < 10**9
    sent_at = seconds - TAI64_EPOCH + nanos / 1e9
    assert abs(sent_at - (EPOCH + now)) < 0.02  # whitening drops up to 2**24 ns

    # Noise answers; the device completes the handshake and sends the staged data.
    noise_message = responder.write_message(b"")
    assert responder.handshake_finished
    response = build_response(NOISE_INDEX, device_index, bytes(noise_message), device_public)
    assert len(response) == 92
    assert device.receive(response, NOISE_ENDPOINT, now + 0.05) is None
    assert not device.drops, dict(device.drops)

    out = device.datagrams_to_send()
    assert out, "the device sent nothing after the response"
    delivered = []
    for expected_counter, (datagram, to) in enumerate(out):
        assert to == NOISE_ENDPOINT
        counter, plaintext = noise_open(responder, datagram, NOISE_INDEX)
        assert counter == expected_counter
        if plaintext:
            delivered.append(unpad_ipv4(plaintext))
    assert delivered == [outgoing]

    # A later packet uses the next counter and still opens with noise's key.
    second = ip_packet(DEVICE_INNER, NOISE_INNER, b"x" * 37)
    device.send(second, now + 0.1)
    ((datagram, _),) = device.datagrams_to_send()
    counter, plaintext = noise_open(responder, datagram, NOISE_INDEX)
    assert counter == len(out)
    assert unpad_ipv4(plaintext) == second

    # Noise's send key reaches the device, which delivers the inner packet.
    incoming = ip_packet(NOISE_INNER, DEVICE_INNER, b"hello from noise")
    transport = noise_seal(responder, device_index, 0, incoming)
    assert device.receive(transport, NOISE_ENDPOINT, now + 0.2) == incoming
    assert not device.drops, dict(device.drops)


def test_device_initiator_wrong_psk() -> None:
    now = 1.0
    device, device_public, _, responder, initiation, _ = device_initiation(
        bytes(range(1, 33)), bytes(range(2, 34)), now
    )
    # psk2 only enters with message 2: noise reads the initiation fine...
    responder.read_message(bytes(initiation[8:116]))
    device_index = struct.unpack_from("<I", initiation, 4)[0]
    noise_message = responder.write_message(b"")
    response = build_response(NOISE_INDEX, device_index, bytes(noise_message), device_public)
    # ...but the device cannot authenticate the response.
    assert device.receive(response, NOISE_ENDPOINT, now + 0.05) is None
    assert device.drops == {Drop.HANDSHAKE_DECRYPT: 1}
    assert device.datagrams_to_send() == []
    peer = next(iter(device.peers.values()))
    assert peer.keypairs.current is None


# ------------------------------------------------------------------ noise initiates


def noise_initiation(psk: bytes | None, noise_psk: bytes | None, now: float):
    device_private, noise_private = private_key(), private_key()
    device_public, noise_public = public_key(device_private), public_key(noise_private)
    device = make_device(device_private, noise_public, psk, endpoint=False)
    initiator = noise_connection(True, noise_private, device_public, noise_psk)
    noise_message = initiator.write_message(tai64n(EPOCH + now))
    initiation = build_initiation(NOISE_INDEX, bytes(noise_message), device_public)
    assert len(initiation) == 148
    return device, device_public, noise_public, initiator, initiation


@pytest.mark.parametrize("psk", PSKS)
def test_noise_initiator_device_responder(psk: bytes | None) -> None:
    now = 7.5
    device, _, noise_public, initiator, initiation = noise_initiation(psk, psk, now)

    assert device.receive(initiation, NOISE_ENDPOINT, now) is None
    assert not device.drops, dict(device.drops)
    ((response, to),) = device.datagrams_to_send()
    assert to == NOISE_ENDPOINT  # learned from the initiation's source

    # The response's framing and mac1 (keyed with the initiator's public key).
    assert len(response) == 92
    assert response[:4] == b"\x02\x00\x00\x00"
    device_index, receiver = struct.unpack_from("<II", response, 4)
    assert receiver == NOISE_INDEX
    assert response[60:76] == mac1(noise_public, response)
    assert response[76:92] == bytes(16)

    # Noise accepts message 2 with its empty payload and splits.
    assert initiator.read_message(bytes(response[12:60])) == b""
    assert initiator.handshake_finished

    # The first transport message from noise confirms the session and is delivered.
    incoming = ip_packet(NOISE_INNER, DEVICE_INNER, b"hello from noise")
    transport = noise_seal(initiator, device_index, 0, incoming)
    assert device.receive(transport, NOISE_ENDPOINT, now + 0.05) == incoming
    assert not device.drops, dict(device.drops)
    assert device.datagrams_to_send() == []

    # Now the device can send back with its own send key.
    outgoing = ip_packet(DEVICE_INNER, NOISE_INNER, b"hello from meshnode, padded")
    device.send(outgoing, now + 0.1)
    ((datagram, to),) = device.datagrams_to_send()
    assert to == NOISE_ENDPOINT
    counter, plaintext = noise_open(initiator, datagram, NOISE_INDEX)
    assert counter == 0
    assert unpad_ipv4(plaintext) == outgoing

    # And a second message from noise, at counter 1, is delivered as well.
    again = ip_packet(NOISE_INNER, DEVICE_INNER, b"again")
    transport = noise_seal(initiator, device_index, 1, again)
    assert device.receive(transport, NOISE_ENDPOINT, now + 0.2) == again
    assert not device.drops, dict(device.drops)


def test_noise_initiator_wrong_psk() -> None:
    now = 2.0
    device, _, _, initiator, initiation = noise_initiation(
        bytes(range(1, 33)), bytes(range(2, 34)), now
    )
    # The device cannot tell yet (psk2 enters with message 2) and answers...
    assert device.receive(initiation, NOISE_ENDPOINT, now) is None
    ((response, _),) = device.datagrams_to_send()
    assert len(response) == 92
    # ...but noise refuses the response.
    with pytest.raises((InvalidTag, NoiseInvalidMessage)):
        initiator.read_message(bytes(response[12:60]))
    assert not initiator.handshake_finished


def test_noise_initiation_psk_vs_no_psk() -> None:
    """A PSK on the noise side only, against a device with none (zero PSK)."""
    now = 2.0
    device, _, _, initiator, initiation = noise_initiation(None, os.urandom(32), now)
    assert device.receive(initiation, NOISE_ENDPOINT, now) is None
    ((response, _),) = device.datagrams_to_send()
    with pytest.raises((InvalidTag, NoiseInvalidMessage)):
        initiator.read_message(bytes(response[12:60]))


@pytest.mark.parametrize("key_owner", ["initiator", "zero"])
def test_initiation_with_wrong_mac1_is_dropped(key_owner: str) -> None:
    """mac1 must be keyed with the receiver's public key, not anything else."""
    now = 4.0
    device, _, noise_public, _, initiation = noise_initiation(None, None, now)
    wrong_key = noise_public if key_owner == "initiator" else bytes(32)
    forged = initiation[:116] + mac1(wrong_key, initiation) + bytes(16)
    assert device.receive(forged, NOISE_ENDPOINT, now) is None
    assert device.drops == {Drop.INVALID_MAC1: 1}
    assert device.datagrams_to_send() == []
    # The same message with the right mac1 is still accepted.
    assert device.receive(initiation, NOISE_ENDPOINT, now) is None
    assert len(device.datagrams_to_send()) == 1
