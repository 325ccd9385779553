"""Unit tests of meshnode.wgtool's pieces: formatting helpers, value parsers,
the config parser, the UAPI encoder/decoder and syncconf's planner.

The expected texts were taken from wg 1.0.20210914; with root and wg
installed, test_table_matches_wg checks the tables against wg again, through
a fake daemon.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from test_wgtool_support import FakeUapi, keypair, needs_root, needs_wg, wg

from meshnode import cli
from meshnode.wgtool import commands, config, show, sync, uapi_client, values
from meshnode.wgtool.errors import WgError
from meshnode.wgtool.model import ZERO_KEY, AllowedIP, Device, DeviceUpdate, Peer, PeerUpdate
from meshnode.wireguard import keys

# seconds -> what wg prints after "latest handshake: " (with " ago") and as keepalive
DURATIONS = [
    (1, "1 second"),
    (2, "2 seconds"),
    (59, "59 seconds"),
    (60, "1 minute"),
    (61, "1 minute, 1 second"),
    (3600, "1 hour"),
    (3661, "1 hour, 1 minute, 1 second"),
    (7322, "2 hours, 2 minutes, 2 seconds"),
    (86400, "1 day"),
    (90061, "1 day, 1 hour, 1 minute, 1 second"),
    (365 * 86400, "1 year"),
    (366 * 86400, "1 year, 1 day"),
    (400_000_000, "12 years, 249 days, 15 hours, 6 minutes, 40 seconds"),
]

# bytes -> wg's text
BYTE_COUNTS = [
    (0, "0 B"),
    (1, "1 B"),
    (1023, "1023 B"),
    (1024, "1.00 KiB"),
    (1535, "1.50 KiB"),
    (1536, "1.50 KiB"),
    (1048575, "1024.00 KiB"),
    (1048576, "1.00 MiB"),
    (1263741824, "1.18 GiB"),
    (1073741823, "1024.00 MiB"),
    (5_000_000_000_000, "4.55 TiB"),
    (2**64 - 1, "16777216.00 TiB"),
]


@pytest.mark.parametrize(("seconds", "text"), DURATIONS)
def test_pretty_time(seconds: int, text: str) -> None:
    assert show.strip_ansi(show.pretty_time(seconds)) == text
    assert show.strip_ansi(show.ago(1000, 1000 + seconds)) == text + " ago"
    assert show.strip_ansi(show.every(seconds)) == "every " + text


def test_ago_edges() -> None:
    assert show.ago(5, 5) == "Now"
    assert show.strip_ansi(show.ago(6, 5)) == (
        "(System clock wound backward; connection problems may ensue.)"
    )
    assert show.ago(6, 5) == (
        "(\x1b[31mSystem clock wound backward; connection problems may ensue.\x1b[0m)"
    )


@pytest.mark.parametrize(("count", "text"), BYTE_COUNTS)
def test_byte_count(count: int, text: str) -> None:
    assert show.strip_ansi(show.byte_count(count)) == text
    number, unit = text.split()
    assert show.byte_count(count) == f"{number} \x1b[36m{unit}\x1b[0m"


def test_strip_ansi_like_wg() -> None:
    assert show.strip_ansi("\x1b[1mbold\x1b[0m: x") == "bold: x"
    assert show.strip_ansi("a\x1b[12;34mb") == "ab"
    # wg scans all but the last two bytes: a code right at the end stays
    assert show.strip_ansi("ab\x1b[") == "ab\x1b["


def _state(peer_lines: list[str]) -> bytes:
    public = keypair().public
    key_hex = keys.to_hex(keys.from_base64(public))
    return ("\n".join([f"public_key={key_hex}", *peer_lines, "errno=0"]) + "\n\n").encode()


@needs_root
@needs_wg
def test_table_matches_wg() -> None:
    """The tables above, as the installed wg prints them today."""
    for seconds, text in DURATIONS:
        with FakeUapi(lambda s=seconds: _state([f"persistent_keepalive_interval={s}"])) as d:
            if seconds <= 65535:
                out = wg("show", d.name).stdout.decode()
                assert f"  persistent keepalive: every {text}\n" in out
        for _ in range(5):  # the clock may tick between the reply and wg's time()
            reply = lambda s=seconds: _state([f"last_handshake_time_sec={int(time.time()) - s}"])  # noqa: E731
            with FakeUapi(reply) as d:
                out = wg("show", d.name).stdout.decode()
            if f"  latest handshake: {text} ago\n" in out:
                break
        else:
            raise AssertionError(out)
    for count, text in BYTE_COUNTS:
        with FakeUapi(_state([f"rx_bytes={count}", "tx_bytes=1"])) as d:
            out = wg("show", d.name).stdout.decode()
        assert f"  transfer: {text} received, 1 B sent\n" in out


# --- values --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"off", 0),
        (b"OFF", 0),
        (b"0", 0),
        (b"012", 12),
        (b"0x10", 16),
        (b"0xffffffff", 0xFFFFFFFF),
        (b"4294967295", 0xFFFFFFFF),
        (b"4294967296", None),
        (b"0x", None),
        (b"0X10", None),
        (b"0x1g", None),
        (b"-1", None),
        (b" 1", None),
        (b"1_0", None),
        (b"", None),
    ],
)
def test_fwmark(value: bytes, expected: int | None) -> None:
    if expected is None:
        with pytest.raises(WgError, match="Fwmark is neither 0/off nor 0-0xffffffff: `"):
            values.parse_fwmark(value)
    else:
        assert values.parse_fwmark(value) == expected


def test_keepalive_and_port() -> None:
    assert values.parse_persistent_keepalive(b"Off") == 0
    assert values.parse_persistent_keepalive(b"65535") == 65535
    for bad in (b"65536", b"x", b"", b"+1", b"1 "):
        with pytest.raises(WgError, match="Persistent keepalive interval"):
            values.parse_persistent_keepalive(bad)
    assert values.parse_port(b"51820") == 51820
    with pytest.raises(WgError, match=r"^Unable to parse empty port$"):
        values.parse_port(b"")


def test_allowed_ips() -> None:
    parsed = values.parse_allowed_ips(b"10.0.0.0/8,fd00::1,1.2.3.4")
    assert [str(a) for a in parsed] == ["10.0.0.0/8", "fd00::1/128", "1.2.3.4/32"]
    assert values.parse_allowed_ips(b"") == []
    assert str(values.parse_allowed_ips(b"::ffff:1.2.3.4/128")[0]) == "::ffff:1.2.3.4/128"
    for bad, message in [
        (b"10.0.0.0/33", "AllowedIP is not in the correct format: `10.0.0.0/33'"),
        (b"10.0.0.0/", "AllowedIP is not in the correct format: `10.0.0.0/'"),
        (b"10.0.0.0/8/8", "AllowedIP is not in the correct format: `10.0.0.0/8/8'"),
        (b"10.0.0/8", "Unable to parse IP address: `10.0.0'"),
        (b"10.0.0.0/8,", "Unable to parse IP address: `'"),
        (b"010.0.0.0/8", "Unable to parse IP address: `010.0.0.0'"),
    ]:
        with pytest.raises(WgError) as info:
            values.parse_allowed_ips(bad)
        assert info.value.message == message


def test_host_bits_warning(capsys: pytest.CaptureFixture[str]) -> None:
    (allowed,) = values.parse_allowed_ips(b"10.1.2.3/8")
    assert allowed.has_host_bits() and str(allowed.masked()) == "10.0.0.0/8"
    assert capsys.readouterr().err == "Warning: AllowedIP has nonzero host part: 10.1.2.3/8\n"


def test_endpoints() -> None:
    assert values.parse_endpoint(b"192.0.2.1:51820").text() == "192.0.2.1:51820"
    assert values.parse_endpoint(b"[fd00::1]:1").text() == "[fd00::1]:1"
    assert values.parse_endpoint(b"[::ffff:1.2.3.4]:5").text() == "[::ffff:1.2.3.4]:5"
    assert values.parse_endpoint(b"localhost:7").text() == "127.0.0.1:7"
    for bad, message in [
        (b"", "Unable to parse empty endpoint"),
        (b"1.2.3.4", "Unable to find port of endpoint: `1.2.3.4'"),
        (b"1.2.3.4:", "Unable to find port of endpoint: `1.2.3.4:'"),
        (b"[::1", "Unable to find matching brace of endpoint: `[::1'"),
        (b"[::1]5", "Unable to find port of endpoint: `[::1]5'"),
    ]:
        with pytest.raises(WgError) as info:
            values.parse_endpoint(bad)
        assert info.value.message == message


def test_key_file(tmp_path: Path) -> None:
    key = keypair().private
    cases = {
        "good": (key + "\n \t", keys.from_base64(key)),
        "empty": ("", ZERO_KEY),
        "short": ("abc", "Invalid length key in key file"),
        "trailing": (key + "\n#", "Found trailing character in key file: `#'"),
        "bad": ("x" * 44, "Key is not the correct length or format: `" + "x" * 44 + "'"),
    }
    for name, (content, expected) in cases.items():
        path = tmp_path / name
        path.write_text(content)
        if isinstance(expected, bytes):
            assert values.read_key_file(bytes(path)) == expected
        else:
            with pytest.raises(WgError) as info:
                values.read_key_file(bytes(path))
            assert info.value.message == expected
    with pytest.raises(WgError, match=r"^fopen: No such file or directory$"):
        values.read_key_file(bytes(tmp_path / "missing"))
    with pytest.raises(WgError, match=r"^Invalid length key in key file$"):
        values.read_key_file(bytes(tmp_path))  # a directory opens, then fails to read


# --- config files and set arguments ----------------------------------------------


def test_config_errors_carry_file_and_line() -> None:
    text = b"[Interface]\n# comment\nListenPort = 1\nAddress = 10.0.0.1/24\n"
    with pytest.raises(WgError) as info:
        config.parse_config(text, append=False, path="wg0.conf")
    assert info.value.message == (
        "Line unrecognized: `Address=10.0.0.1/24'\nConfiguration parsing error"
    )
    assert (info.value.path, info.value.lineno) == ("wg0.conf", 4)
    assert info.value.located().startswith("wg0.conf:4: Line unrecognized")


def test_config_parsing() -> None:
    peer = keypair().public
    text = (
        f"[INTERFACE]\nprivatekey = {keypair().private}\nfwmark=0x10\0ignored\n"
        f"[Peer]\nPublicKey={peer}\nAllowedIPs=10.0.0.0/8\nAllowedIPs = fd00::/8 # x\n"
    ).encode()
    update = config.parse_config(text, append=True)
    assert update.fwmark == 16 and update.listen_port is None and not update.replace_peers
    (p,) = update.peers
    assert p.public_key == keys.from_base64(peer) and p.replace_allowed_ips
    assert [str(a) for a in p.allowed_ips] == ["10.0.0.0/8", "fd00::/8"]
    replace = config.parse_config(b"", append=False)
    assert replace == DeviceUpdate(
        private_key=ZERO_KEY, listen_port=0, fwmark=0, replace_peers=True
    )
    with pytest.raises(WgError, match=r"^A peer is missing a public key\nInvalid configuration$"):
        config.parse_config(b"[Peer]\n", append=False)


def test_set_arguments() -> None:
    a = keypair().public
    update = config.parse_set_args([b"listen-port", b"7", b"peer", a.encode(), b"remove"])
    assert update.listen_port == 7 and update.peers[0].remove
    for args, message in [
        ([b"peer", a.encode(), b"fwmark", b"1"], "Invalid argument: fwmark"),
        ([b"listen-port"], "Invalid argument: listen-port"),
        ([b"remove"], "Invalid argument: remove"),
        ([b"peer"], "Invalid argument: peer"),
    ]:
        with pytest.raises(WgError) as info:
            config.parse_set_args(args)
        assert info.value.message == message


# --- the UAPI --------------------------------------------------------------------


def test_encode_set() -> None:
    a = keypair().public
    update = DeviceUpdate(
        private_key=ZERO_KEY,
        listen_port=0,
        fwmark=5,
        replace_peers=True,
        peers=[
            PeerUpdate(keys.from_base64(a), remove=True, persistent_keepalive=3),
            PeerUpdate(
                keys.from_base64(a),
                preshared_key=ZERO_KEY,
                endpoint=values.parse_endpoint(b"[fd00::1]:2"),
                persistent_keepalive=0,
                replace_allowed_ips=True,
                allowed_ips=values.parse_allowed_ips(b"10.0.0.0/8,::/0"),
            ),
        ],
    )
    hexa = keys.to_hex(keys.from_base64(a))
    assert (
        uapi_client.encode_set(update)
        == (
            f"set=1\nprivate_key={'0' * 64}\nlisten_port=0\nfwmark=5\nreplace_peers=true\n"
            f"public_key={hexa}\nremove=true\n"
            f"public_key={hexa}\npreshared_key={'0' * 64}\nendpoint=[fd00::1]:2\n"
            "persistent_keepalive_interval=0\nreplace_allowed_ips=true\n"
            "allowed_ip=10.0.0.0/8\nallowed_ip=::/0\n\n"
        ).encode()
    )


def test_parse_get() -> None:
    private = keypair().private
    reply = [
        f"private_key={keys.to_hex(keys.from_base64(private))}\n".encode(),
        b"listen_port=51820\n",
        b"public_key=" + b"ab" * 32 + b"\n",
        b"preshared_key=" + b"0" * 64 + b"\n",
        b"endpoint=[fd00::1]:5\n",
        b"allowed_ip=10.0.0.0/8\n",
        b"rx_bytes=18446744073709551615\n",
        b"errno=0\n",
        b"\n",
    ]
    device = uapi_client.parse_get("wg0", reply)
    assert device.private_key == keys.from_base64(private)
    assert device.public_key == keys.public_key(keys.from_base64(private))
    (peer,) = device.peers
    assert peer.preshared_key is None and peer.rx_bytes == 2**64 - 1
    assert peer.endpoint is not None and peer.endpoint.text() == "[fd00::1]:5"
    with pytest.raises(OSError) as info:
        uapi_client.parse_get("wg0", [b"errno=0\n"])
    assert info.value.errno == 71  # EPROTO


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        ([b"errno=0\n", b"\n"], 0),
        ([b"errno=-98\n", b"\n"], -98),
        ([b"errno=22\n", b"\n"], 22),
        ([b"errno=0\n"], -71),
        ([b"errno=+1\n", b"\n"], -71),
        ([b"errno=2147483648\n", b"\n"], -71),
        ([b"errno=99999999999999999999\n", b"\n"], -34),
        ([b"\n"], -71),
    ],
)
def test_parse_set_reply(reply: list[bytes], status: int) -> None:
    assert uapi_client.parse_set_reply(reply) == status


# --- syncconf ----------------------------------------------------------------------


def _net(text: str) -> AllowedIP:
    return values.parse_allowed_ips(text.encode())[0]


def test_sync_plan() -> None:
    a, b, c = (keys.from_base64(keypair().public) for _ in range(3))
    runtime = Device(
        "wg0",
        listen_port=51820,
        peers=[
            Peer(a, allowed_ips=[_net("10.1.0.0/16")], persistent_keepalive=25),
            Peer(b, allowed_ips=[_net("10.2.0.0/16")]),
        ],
    )
    file = DeviceUpdate(
        private_key=ZERO_KEY,
        listen_port=51820,
        fwmark=0,
        replace_peers=True,
        peers=[
            PeerUpdate(a, replace_allowed_ips=True, allowed_ips=[_net("10.1.2.3/16")]),
            PeerUpdate(c, replace_allowed_ips=True, allowed_ips=[_net("10.2.0.0/16")]),
        ],
    )
    plan = sync.plan(file, runtime)
    assert (plan.private_key, plan.listen_port, plan.fwmark, plan.replace_peers) == (
        None, None, None, False
    )  # fmt: skip
    assert [(p.public_key, p.remove) for p in plan.peers] == [(b, True), (c, False)]
    # the same public key twice: everything is sent, as wg does
    twice = DeviceUpdate(peers=[file.peers[0], file.peers[0]])
    assert sync.plan(twice, runtime).peers[1:] == [file.peers[0], file.peers[0]]
    # nothing at runtime: the file as is
    assert sync.plan(file, Device("wg0")) is file


def test_prog_name_matches_cli() -> None:
    assert commands.PROG_NAME == cli.PROG_NAME
    assert list(cli.SUBCOMMANDS)[:6] == [
        "show", "showconf", "set", "setconf", "addconf", "syncconf"
    ]  # fmt: skip


def test_json_object_shape() -> None:
    device = Device(
        "wg0",
        listen_port=1,
        peers=[Peer(ZERO_KEY, endpoint=values.parse_endpoint(b"192.0.2.1:1"))],
    )
    obj = show.json_object(device)
    assert obj["private_key"] is None and obj["listen_port"] == 1
    assert obj["peers"][0]["endpoint"] == "192.0.2.1:1"  # type: ignore[index]
    endpoint = device.peers[0].endpoint
    assert endpoint is not None and endpoint.family == socket.AF_INET
