"""The UAPI request parser and the get formatter, without sockets."""

import errno

import pytest

from meshnode.uapi.protocol import (
    UapiError,
    apply_set,
    format_endpoint,
    format_get,
    parse_endpoint,
    parse_set,
)
from meshnode.wireguard import keys
from meshnode.wireguard.device import Device


def hexkey(key: bytes) -> str:
    return keys.to_hex(key)


def new_public() -> bytes:
    return keys.public_key(keys.generate_private_key())


def test_parse_and_apply_every_key() -> None:
    device = Device()
    private, peer, psk = keys.generate_private_key(), new_public(), keys.generate_preshared_key()
    request = parse_set([
        f"private_key={hexkey(private)}", "listen_port=51820", "fwmark=0", "replace_peers=true",
        f"public_key={hexkey(peer)}", "protocol_version=1", f"preshared_key={hexkey(psk)}",
        "endpoint=[fd00::1]:51820", "persistent_keepalive_interval=0", "replace_allowed_ips=true",
        "allowed_ip=10.0.0.0/24", "allowed_ip=fd00::/64",
    ])  # fmt: skip
    apply_set(request, device, 0.0)
    assert device.public_key == keys.public_key(private)
    assert device.listen_port == 51820
    p = device.peers[peer]
    assert p.preshared_key == psk and p.endpoint.sockaddr == ("fd00::1", 51820, 0, 0)
    assert [str(n) for n in device.allowed_ips.networks(p)] == ["10.0.0.0/24", "fd00::/64"]
    text = format_get(device)
    assert text.startswith(f"private_key={hexkey(private)}\nlisten_port=51820\n")
    assert f"public_key={hexkey(peer)}\npreshared_key={hexkey(psk)}\nprotocol_version=1\n" in text
    assert (
        "endpoint=[fd00::1]:51820\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\n" in text
    )
    assert text.endswith("allowed_ip=10.0.0.0/24\nallowed_ip=fd00::/64\n")
    assert "fwmark" not in text  # zero values are left out, as wireguard-go does


def test_replace_allowed_ips_then_add_in_order() -> None:
    device, peer = Device(), new_public()
    apply_set(parse_set([f"public_key={hexkey(peer)}", "allowed_ip=10.1.0.0/16"]), device, 0)
    apply_set(
        parse_set(
            [f"public_key={hexkey(peer)}", "replace_allowed_ips=true", "allowed_ip=10.2.0.0/16"]
        ),
        device,
        0,
    )
    assert [str(n) for n in device.allowed_ips.networks(device.peers[peer])] == ["10.2.0.0/16"]


def test_update_only_and_remove() -> None:
    device, known, unknown = Device(), new_public(), new_public()
    apply_set(parse_set([f"public_key={hexkey(known)}"]), device, 0)
    apply_set(
        parse_set([
            f"public_key={hexkey(unknown)}", "update_only=true", "allowed_ip=10.0.0.1/32",
            f"public_key={hexkey(known)}", "update_only=true", "persistent_keepalive_interval=0",
        ]),
        device, 0,
    )  # fmt: skip
    assert list(device.peers) == [known]
    apply_set(parse_set([f"public_key={hexkey(known)}", "remove=true"]), device, 0)
    assert device.peers == {}


def test_peer_with_our_own_key_is_ignored() -> None:
    private = keys.generate_private_key()
    device = Device(private)
    apply_set(parse_set([f"public_key={hexkey(keys.public_key(private))}"]), device, 0)
    assert device.peers == {}


def test_zero_private_key_clears_it() -> None:
    device = Device(keys.generate_private_key())
    apply_set(parse_set(["private_key=" + "00" * 32]), device, 0)
    assert device.identity is None
    assert "private_key" not in format_get(device)


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ("nonsense", errno.EPROTO),
        ("listen_port=65536", errno.EINVAL),
        ("listen_port=-1", errno.EINVAL),
        ("fwmark=4294967296", errno.EINVAL),
        ("private_key=abc", errno.EINVAL),
        ("replace_peers=false", errno.EINVAL),
        ("unknown_key=1", errno.EINVAL),
        ("public_key=" + "00" * 32, errno.EINVAL),  # a low-order point
    ],
)
def test_bad_device_lines(line: str, code: int) -> None:
    with pytest.raises(UapiError) as info:
        parse_set([line])
    assert info.value.errno == code


@pytest.mark.parametrize(
    "line",
    [
        "endpoint=1.2.3.4",
        "endpoint=1.2.3.4:99999",
        "endpoint=[fd00::1:51820",
        "endpoint=host.example:51820",
        "persistent_keepalive_interval=65536",
        "allowed_ip=10.0.0.0/33",
        "allowed_ip=banana",
        "protocol_version=2",
        "preshared_key=zz",
        "remove=yes",
        "listen_port=1",  # a device key inside a peer section
    ],
)
def test_bad_peer_lines(line: str) -> None:
    with pytest.raises(UapiError) as info:
        parse_set([f"public_key={hexkey(new_public())}", line])
    assert info.value.errno == errno.EINVAL


def test_a_bad_line_anywhere_means_no_change() -> None:
    device, peer = Device(), new_public()
    with pytest.raises(UapiError):
        request = parse_set([f"public_key={hexkey(peer)}", "allowed_ip=10.0.0.0/8", "bogus=1"])
        apply_set(request, device, 0)
    assert device.peers == {}


@pytest.mark.parametrize(
    ("text", "endpoint"),
    [("192.0.2.1:51820", ("192.0.2.1", 51820)), ("[2001:db8::1]:1", ("2001:db8::1", 1, 0, 0))],
)
def test_endpoint_round_trip(text: str, endpoint: tuple) -> None:
    assert parse_endpoint(text) == endpoint
    assert format_endpoint(endpoint) == text
