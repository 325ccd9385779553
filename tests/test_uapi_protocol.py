"""The UAPI request parser and the get formatter, without sockets."""

import contextlib
import errno
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshnode.uapi.protocol import (
    UapiError,
    format_endpoint,
    format_get,
    parse_endpoint,
    parse_set,
)
from meshnode.wireguard import keys
from meshnode.wireguard.device import Device
from meshnode.wireguard.settings import apply_settings


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
    apply_settings(request, device, 0.0)
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
    apply_settings(parse_set([f"public_key={hexkey(peer)}", "allowed_ip=10.1.0.0/16"]), device, 0)
    apply_settings(
        parse_set(
            [f"public_key={hexkey(peer)}", "replace_allowed_ips=true", "allowed_ip=10.2.0.0/16"]
        ),
        device,
        0,
    )
    assert [str(n) for n in device.allowed_ips.networks(device.peers[peer])] == ["10.2.0.0/16"]


def test_update_only_and_remove() -> None:
    device, known, unknown = Device(), new_public(), new_public()
    apply_settings(parse_set([f"public_key={hexkey(known)}"]), device, 0)
    apply_settings(
        parse_set([
            f"public_key={hexkey(unknown)}", "update_only=true", "allowed_ip=10.0.0.1/32",
            f"public_key={hexkey(known)}", "update_only=true", "persistent_keepalive_interval=0",
        ]),
        device, 0,
    )  # fmt: skip
    assert list(device.peers) == [known]
    apply_settings(parse_set([f"public_key={hexkey(known)}", "remove=true"]), device, 0)
    assert device.peers == {}


def test_peer_with_our_own_key_is_ignored() -> None:
    private = keys.generate_private_key()
    device = Device(private)
    apply_settings(parse_set([f"public_key={hexkey(keys.public_key(private))}"]), device, 0)
    assert device.peers == {}


def test_zero_private_key_clears_it() -> None:
    device = Device(keys.generate_private_key())
    apply_settings(parse_set(["private_key=" + "00" * 32]), device, 0)
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
        apply_settings(request, device, 0)
    assert device.peers == {}


@pytest.mark.parametrize(
    ("text", "endpoint"),
    [("192.0.2.1:51820", ("192.0.2.1", 51820)), ("[2001:db8::1]:1", ("2001:db8::1", 1, 0, 0))],
)
def test_endpoint_round_trip(text: str, endpoint: tuple) -> None:
    assert parse_endpoint(text) == endpoint
    assert format_endpoint(endpoint) == text


# ------------------------------------------------------------------ as wireguard-go parses
# Each value is read as wireguard-go reads it: strconv.ParseUint, netip.ParsePrefix,
# netip.ParseAddrPort, hex.DecodeString. Answers checked against Debian's wireguard-go
# 0.0.20220316 (Go 1.19) unless marked "Go 1.22": newer netip refuses those, and so do we.

PEER = "public_key=" + "11" * 32  # any key will do for the peer lines

LOW_ORDER_POINTS = [  # from the Linux kernel's tools/testing/selftests/wireguard/netns.sh
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
]


def refused(lines: list[str]) -> int:
    """The errno parse_set refuses lines with (it must be a UapiError, nothing else)."""
    with pytest.raises(UapiError) as info:
        parse_set(lines)
    return info.value.errno


@pytest.mark.parametrize(
    "line",
    [
        # Unicode digits: str.isdigit() is true, then int() raises or reads them
        "fwmark=²", "listen_port=1²", "listen_port=٣", "fwmark=١٢", "listen_port=５",
        # what ParseUint refuses
        "listen_port=+1", "listen_port=-0", "fwmark=1_0", "fwmark=0x10", "fwmark= 1",
        "fwmark=1 ", "fwmark=", "fwmark=1.0", "listen_port=65536", "fwmark=4294967296",
        # past Python's 4,300-digit int() limit
        "listen_port=" + "1" * 5000, "fwmark=" + "9" * 4301,
        # keys: 64 ASCII hex digits only
        "private_key=" + "ab" * 31 + "a", "private_key=" + "ab" * 33,
        "private_key=" + "ab" * 31 + "é", "private_key=" + "０" * 64, "private_key=" + "٣" * 64,
        "private_key= " + "0" * 63, "private_key=" + "g" * 64,
    ],
)  # fmt: skip
def test_device_values_wireguard_go_refuses(line: str) -> None:
    assert refused([line]) == errno.EINVAL


@pytest.mark.parametrize(
    "line",
    [
        "persistent_keepalive_interval=²", "persistent_keepalive_interval=65536",
        "persistent_keepalive_interval=" + "1" * 4400, "persistent_keepalive_interval=+7",
        "endpoint=1.2.3.4:²", "endpoint=1.2.3.4:٣", "endpoint=1.2.3.4:+1", "endpoint=1.2.3.4:",
        "endpoint=1.2.3.4:65536", "endpoint=1.2.3.4:" + "1" * 5000,
        "endpoint=[fe80::1%]:1",  # an empty zone
        "endpoint=[fe80::1%4294967296]:1", "endpoint=[fe80::1%99999999999]:1",
        "endpoint=[fe80::1%no-such-if]:1", "endpoint=[fe80::1%²]:1", "endpoint=[fe80::1%lo%x]:1",
        "endpoint=[1.2.3.4]:1", "endpoint=::1:1", "endpoint=1.2.3.4%lo:1", "endpoint=01.2.3.4:1",
        "endpoint=1.2.3:1", "endpoint=localhost:1", "endpoint= 1.2.3.4:1", "endpoint=[]:1",
        "endpoint=[::1:1", "endpoint=1.2.3.٤:1", "endpoint=[fd00::١]:1",
        "allowed_ip=1.2.3.4", "allowed_ip=fd00::1",  # no /N
        "allowed_ip=1.2.3.4/033", "allowed_ip=1.2.3.4/33", "allowed_ip=::/129",
        "allowed_ip=1.2.3.4/024", "allowed_ip=0.0.0.0/00", "allowed_ip=1.2.3.4/+8",  # Go 1.22
        "allowed_ip=01.2.3.4/32", "allowed_ip=fe80::%lo/64", "allowed_ip=1.2.3.4/255.255.255.0",
        "allowed_ip=1.2.3.4/٣", "allowed_ip=1.2.3.٣/32", "allowed_ip=1.2.3.4/32 ",
        "allowed_ip=-1.2.3.4/32", "allowed_ip=1.2.3.4/", "allowed_ip=/32", "allowed_ip=1.2.3.4//32",
        "allowed_ip=1.2.3.4::/128", "allowed_ip=fd00::00001/128",  # Go 1.22: four digits a group
        "allowed_ip=1.2.3.4/" + "1" * 5000, "allowed_ip=1::2::3/128",
        "allowed_ip=::1:2:3:4:5:6:7:8/128",
        "preshared_key=" + "ab" * 31 + "é", "preshared_key=" + "AB" * 31,
        "protocol_version=01", "update_only=TRUE", "remove=true ",
    ],
)  # fmt: skip
def test_peer_values_wireguard_go_refuses(line: str) -> None:
    assert refused([PEER, line]) == errno.EINVAL


def test_numbers_as_parseuint_reads_them() -> None:
    request = parse_set(["listen_port=0051820", "fwmark=4294967295"])
    assert (request.listen_port, request.fwmark) == (51820, 4294967295)
    # leading zeros never overflow ParseUint, however many
    assert parse_set(["listen_port=" + "0" * 5000 + "1"]).listen_port == 1
    assert parse_set(["fwmark=0"]).fwmark == 0
    peer = parse_set([PEER, "persistent_keepalive_interval=007"]).peers[0]
    assert peer.persistent_keepalive == 7


@pytest.mark.parametrize(
    ("text", "network"),
    [
        ("10.0.0.1/24", "10.0.0.0/24"),  # host bits set: taken, and masked off
        ("1.2.3.4/0", "0.0.0.0/0"),
        ("FD00::/8", "fd00::/8"),
        ("::ffff:1.2.3.4/128", "::ffff:102:304/128"),
        ("1::1.2.3.4/128", "1::102:304/128"),
        ("1:2:3:4:5:6:7::/128", "1:2:3:4:5:6:7:0/128"),
        ("::1:2:3:4:5:6:7/128", "0:1:2:3:4:5:6:7/128"),
        ("::/0", "::/0"),
    ],
)
def test_allowed_ips_wireguard_go_takes(text: str, network: str) -> None:
    peer = parse_set([PEER, f"allowed_ip={text}"]).peers[0]
    assert [str(n) for n in peer.allowed_ips] == [network]


@pytest.mark.parametrize(
    ("text", "endpoint"),
    [
        ("1.2.3.4:065535", ("1.2.3.4", 65535)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[fd00::1]:00001", ("fd00::1", 1, 0, 0)),
        ("[FD00::ABCD]:1", ("fd00::abcd", 1, 0, 0)),
        ("[::ffff:1.2.3.4]:1", ("::ffff:102:304", 1, 0, 0)),
        ("[fe80::1%4294967295]:1", ("fe80::1", 1, 0, 4294967295)),
    ],
)
def test_endpoints_wireguard_go_takes(text: str, endpoint: tuple) -> None:
    assert parse_endpoint(text) == endpoint


def test_endpoint_zone_is_an_interface_name_or_index() -> None:
    """As wireguard-go's Linux bind (zoneToUint32): a name first, else a 32-bit number."""
    lo = socket.if_nametoindex("lo")
    assert parse_endpoint("[fe80::1%lo]:1") == ("fe80::1", 1, 0, lo)
    assert parse_endpoint("[fe80::1%0007]:1") == ("fe80::1", 1, 0, 7)


def test_keys_in_either_case() -> None:
    upper = parse_set(["private_key=" + "AB" * 32, PEER.upper().replace("PUBLIC_KEY", "public_key"),
                       "preshared_key=" + "CD" * 32])  # fmt: skip
    assert upper.private_key == keys.clamp(bytes([0xAB]) * 32)
    assert upper.peers[0].public_key == bytes([0x11]) * 32
    assert upper.peers[0].preshared_key == bytes([0xCD]) * 32


def test_private_key_is_stored_clamped() -> None:
    request = parse_set(["private_key=" + "ff" * 32])
    assert request.private_key == bytes.fromhex("f8" + "ff" * 30 + "7f")
    device = Device()
    apply_settings(request, device, 0)
    assert format_get(device).startswith("private_key=f8" + "ff" * 30 + "7f\n")
    # all zeros still means "no key", not the clamp of zero
    assert parse_set(["private_key=" + "00" * 32]).private_key is None


@pytest.mark.parametrize("point", LOW_ORDER_POINTS)
def test_low_order_public_keys_are_taken(point: str) -> None:
    """wg and wireguard-go add such a peer (the device never sends to it)."""
    request = parse_set([f"public_key={point}", "endpoint=127.0.0.1:1111"])
    assert request.peers[0].public_key == bytes.fromhex(point)
    device = Device(keys.generate_private_key())
    apply_settings(request, device, 0)
    assert list(device.peers) == [bytes.fromhex(point)]


VALUE_KEYS = ["private_key", "listen_port", "fwmark", "replace_peers", "public_key",
              "update_only", "remove", "preshared_key", "endpoint",
              "persistent_keepalive_interval", "replace_allowed_ips", "allowed_ip",
              "protocol_version"]  # fmt: skip
TRICKY = ["²", "٣", "0" * 4400, "9" * 4400, "+1", "", "%", "[", "]", ":", "/", "::", "[::]:",
          "[fe80::1%]:1", "1.2.3.4", "fd00::/", "\x00", "\ufffd", "lo", "\ud800"]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(VALUE_KEYS),
            st.one_of(
                st.text(max_size=70),
                st.sampled_from(TRICKY),
                st.lists(st.sampled_from(TRICKY + list("0123456789abcdef.:%/[]")), max_size=12).map(
                    "".join
                ),
            ),
        ),
        max_size=6,
    )
)
def test_parse_set_raises_nothing_but_uapi_error(pairs: list[tuple[str, str]]) -> None:
    """Whatever the values, parse_set returns a plan or raises UapiError."""
    lines = [PEER] + [f"{key}={value}" for key, value in pairs]
    with contextlib.suppress(UapiError):
        parse_set(lines)
    with contextlib.suppress(UapiError):
        parse_set(lines[1:])
