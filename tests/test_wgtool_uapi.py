"""meshnode's wg commands against a scripted UAPI daemon, compared with wg.

The fake daemon shows both tools exactly the same state, including what
wireguard-go can't easily be made to have (handshakes years ago or in the
future, terabytes transferred, scoped IPv6 endpoints), and records the set
requests each tool sends: for set, setconf and addconf they must be the same
bytes. syncconf sends less than wg by design; what it sends is checked here.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_wgtool_support import (
    SHOW_FORMS,
    FakeUapi,
    Result,
    assert_same,
    keypair,
    meshnode,
    needs_root,
    needs_wg,
    psk,
    wg,
)

from meshnode.wireguard import keys

pytestmark = [needs_root, needs_wg]

DEVICE = keypair()
PEERS = [keypair() for _ in range(6)]
PSK = psk()


def hexkey(b64: str) -> str:
    return keys.to_hex(keys.from_base64(b64))


def rich_state() -> bytes:
    """A get reply exercising every branch of the pretty printer."""
    now = int(time.time())
    p = [hexkey(k.public) for k in PEERS]
    lines = [
        f"private_key={hexkey(DEVICE.private)}",
        "listen_port=51820",
        "fwmark=3735928559",
        # no handshake, but a nanosecond part: sorted among those with one, printed without
        f"public_key={p[0]}",
        "last_handshake_time_sec=0",
        "last_handshake_time_nsec=7",
        # a minute ago, gigabytes and terabytes, keepalive of one second, scoped endpoint
        f"public_key={p[1]}",
        "protocol_version=1",
        "endpoint=[fe80::1%1]:1",
        f"last_handshake_time_sec={now - 60}",
        "last_handshake_time_nsec=5",
        "rx_bytes=1263741824",
        "tx_bytes=5000000000000",
        "persistent_keepalive_interval=1",
        # an hour, a minute and a second ago; B and KiB; a preshared key
        f"public_key={p[2]}",
        f"preshared_key={hexkey(PSK)}",
        "endpoint=[fd00::1]:51820",
        f"last_handshake_time_sec={now - 3661}",
        "rx_bytes=1023",
        "tx_bytes=1024",
        "persistent_keepalive_interval=3661",
        "allowed_ip=10.0.0.0/24",
        "allowed_ip=fd00:1::/64",
        # the clock went backward
        f"public_key={p[3]}",
        f"last_handshake_time_sec={now + 100}",
        "endpoint=192.0.2.1:51820",
        # years ago; a v4-mapped endpoint and allowed IP; an all-zero preshared key is none
        f"public_key={p[4]}",
        "preshared_key=" + "0" * 64,
        f"last_handshake_time_sec={now - 400_000_000}",
        "endpoint=[::ffff:1.2.3.4]:5",
        "allowed_ip=::ffff:1.2.3.4/128",
        "allowed_ip=0.0.0.0/0",
        "allowed_ip=::/0",
        "rx_bytes=1048575",
        "tx_bytes=1048576",
        # nothing at all
        f"public_key={p[5]}",
        "errno=0",
    ]
    return ("\n".join(lines) + "\n\n").encode()


@pytest.fixture(scope="module")
def rich() -> Iterator[FakeUapi]:
    with FakeUapi(rich_state) as daemon:
        yield daemon


@pytest.mark.parametrize("form", SHOW_FORMS, ids=lambda f: " ".join(f) or "pretty")
def test_show_forms(rich: FakeUapi, form: tuple[str, ...]) -> None:
    assert_same("show", rich.name, *form)


@pytest.mark.parametrize(
    "env",
    [{"WG_COLOR_MODE": "always"}, {"WG_HIDE_KEYS": "never"}, {"WG_COLOR_MODE": "never"}],
    ids=lambda e: ",".join(f"{k}={v}" for k, v in e.items()),
)
def test_show_pretty_environment(rich: FakeUapi, env: dict[str, str]) -> None:
    assert_same("show", rich.name, env=env)


def test_showconf(rich: FakeUapi) -> None:
    assert_same("showconf", rich.name)


def test_show_all_and_interfaces(rich: FakeUapi) -> None:
    # whatever else lives in /var/run/wireguard is listed too, by both
    with FakeUapi(b"listen_port=1\nerrno=0\n\n") as small:
        for args in [(), ("all",), ("all", "dump"), ("all", "peers"), ("interfaces",)]:
            result = assert_same("show", *args)
            assert rich.name.encode() in result.stdout
            assert (small.name.encode() in result.stdout) == (args != ("all", "peers"))
        assert_same("show", "all", "bogus")


def test_json(rich: FakeUapi) -> None:
    one = json.loads(meshnode("show", rich.name, "--json").stdout)
    two = json.loads(meshnode("show", "--json", rich.name).stdout)

    def without_times(state: dict) -> dict:  # the two calls may straddle a second
        peers = [{k: v for k, v in p.items() if k != "latest_handshake"} for p in state["peers"]]
        return {**state, "peers": peers}

    assert without_times(one) == without_times(two)
    assert one["interface"] == rich.name
    assert one["public_key"] == DEVICE.public and one["private_key"] == DEVICE.private
    assert (one["listen_port"], one["fwmark"]) == (51820, 0xDEADBEEF)
    peers = {p["public_key"]: p for p in one["peers"]}
    assert list(peers) == [k.public for k in PEERS]  # the daemon's order
    p2 = peers[PEERS[2].public]
    assert p2["preshared_key"] == PSK and p2["endpoint"] == "[fd00::1]:51820"
    assert p2["allowed_ips"] == ["10.0.0.0/24", "fd00:1::/64"]
    assert abs(p2["latest_handshake"] - (time.time() - 3661)) < 5
    assert (p2["transfer_rx"], p2["transfer_tx"], p2["persistent_keepalive"]) == (1023, 1024, 3661)
    p5 = peers[PEERS[5].public]
    assert (p5["preshared_key"], p5["endpoint"], p5["latest_handshake"]) == (None, None, 0)
    everything = json.loads(meshnode("show", "--json").stdout)
    again = next(device for device in everything if device["interface"] == rich.name)
    assert again["peers"][2]["allowed_ips"] == p2["allowed_ips"]
    names = json.loads(meshnode("show", "interfaces", "--json").stdout)
    assert rich.name in names
    assert meshnode("show", rich.name, "dump", "--json").returncode == 1


# --- set requests ------------------------------------------------------------


def requests(
    tool: Callable[..., Result], *args: str, state: bytes = b"errno=0\n\n"
) -> tuple[list[bytes], Result]:
    with FakeUapi(state) as daemon:
        result = tool(*[daemon.name if a == "IFACE" else a for a in args])
        return [r.replace(daemon.name.encode(), b"IFACE") for r in daemon.sets], result


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("wgtool")
    key = keypair()
    content = {
        "private": key.private + "\n",
        "psk": PSK + "\n",
        "empty": "",
        "setconf": (
            "# a comment\n"
            "[Interface]\n"
            f"PrivateKey = {DEVICE.private}\n"
            "ListenPort = 51821\n"
            "FwMark = 0x10\n"
            "\n"
            "[Peer] # the first\n"
            f"PublicKey = {PEERS[0].public}\n"
            f"PresharedKey = {PSK}\n"
            "AllowedIPs = 10.1.0.0/16, fd01::/48\n"
            "allowedips=10.2.0.1/32\n"
            "Endpoint = [fd00::1]:51820\n"
            "PersistentKeepalive = 25\n"
            "[peer]\r\n"
            f"publickey={PEERS[1].public}\r\n"
            "ENDPOINT = 192.0.2.7:1\r\n"
        ),
    }
    paths = {}
    for name, text in content.items():
        path = d / name
        path.write_text(text)
        paths[name] = str(path)
    return paths


def set_cases(files: dict[str, str]) -> list[tuple[str, ...]]:
    a, b = PEERS[0].public, PEERS[1].public
    return [
        ("set", "IFACE", "listen-port", "51820"),
        ("set", "IFACE", "listen-port", "domain", "fwmark", "0x1234",
         "private-key", files["private"]),
        ("set", "IFACE", "fwmark", "off", "private-key", files["empty"]),
        (
            "set", "IFACE", "peer", a, "preshared-key", files["psk"], "endpoint", "[fd00::1]:51820",
            "persistent-keepalive", "25", "allowed-ips", "10.0.0.0/8, fd00::/64,192.168.1.1",
            "peer", b, "endpoint", "localhost:1", "allowed-ips", "", "persistent-keepalive", "off",
            "preshared-key", files["empty"],
        ),
        ("set", "IFACE", "peer", a, "remove", "peer", b, "allowed-ips", "10.9.0.0/16"),
        ("set", "IFACE", "peer", a, "allowed-ips", "10.0.0.1/8", "allowed-ips", "10.1.0.0/16"),
        ("setconf", "IFACE", files["setconf"]),
        ("addconf", "IFACE", files["setconf"]),
        ("setconf", "IFACE", files["empty"]),
        ("syncconf", "IFACE", files["empty"]),  # no peers in the file: as setconf
        ("syncconf", "IFACE", files["setconf"]),  # no peers at the daemon: as setconf
    ]  # fmt: skip


def test_set_requests_match_wg(files: dict[str, str]) -> None:
    for case in set_cases(files):
        ours, ours_result = requests(meshnode, *case)
        theirs, theirs_result = requests(wg, *case)
        assert ours_result == theirs_result, case
        assert ours == theirs, case
        assert len(ours) == 1, case


SET_REPLIES = [
    b"errno=0\n\n",
    b"errno=-0\n\n",
    b"errno=0\n\nextra",
    b"other=1\nerrno=-98\n\n",
    b"errno=-22\n\n",
    b"errno=22\n\n",  # a positive errno: "Unknown error -22"
    b"errno=0",  # no empty line: wg calls that a protocol error
    b"errno=0\n",
    b"errno=0\nx",
    b"errno= 0\n\n",
    b"errno=+0\n\n",
    b"errno=5x\n\n",
    b"errno=-\n\n",
    b"errno=99999999999\n\n",  # beyond a C int
    b"errno=99999999999999999999\n\n",  # beyond a C long long: strtoll's ERANGE
    b"\n",
    b"nonsense\n\n",
    b"",
]


@pytest.mark.parametrize("reply", SET_REPLIES)
def test_set_replies(reply: bytes) -> None:
    results = []
    for tool in (meshnode, wg):
        with FakeUapi(set_reply=reply) as daemon:
            results.append(tool("set", daemon.name, "listen-port", "1"))
    assert results[0] == results[1]


def test_set_reply_messages() -> None:
    with FakeUapi(set_reply=b"errno=-98\n\n") as daemon:
        result = meshnode("set", daemon.name, "listen-port", "1")
    assert result == (b"", b"Unable to modify interface: Address already in use\n", 1)


@pytest.mark.parametrize(
    "reply",
    [
        b"errno=5\n\n",  # a daemon's error
        b"errno=-22\n\n",  # wireguard-go's sign: not a number wg accepts
        b"listen_port=1\n",  # no end
        b"listen_port=1\n\n",  # no errno
        b"listen_port=x\nerrno=0\n\n",
        b"listen_port=65536\nerrno=0\n\n",
        b"public_key=zz\nerrno=0\n\n",
        b"garbage\nerrno=0\n\n",
        b"public_key=" + b"1" * 64 + b"\nallowed_ip=10.0.0.0/33\nerrno=0\n\n",
        b"public_key=" + b"1" * 64 + b"\nallowed_ip=10.0.0.0\nerrno=0\n\n",
        b"public_key=" + b"1" * 64 + b"\nendpoint=1.2.3.4\nerrno=0\n\n",
        # accepted: unknown keys, device keys after a peer, peer keys before one
        b"rx_bytes=5\nfoo=bar\npublic_key=" + b"1" * 64 + b"\nlisten_port=7\nerrno=0\n\n",
        # upper-case hex is fine
        b"private_key=" + b"A" * 64 + b"\nerrno=0\n\n",
    ],
)
def test_get_replies(reply: bytes) -> None:
    with FakeUapi(reply) as daemon:
        for form in [(), ("dump",)]:
            assert_same("show", daemon.name, *form)
        assert_same("showconf", daemon.name)


# --- syncconf ----------------------------------------------------------------


def test_syncconf_sends_only_changes(tmp_path: Path) -> None:
    a, b, c, d = (PEERS[i] for i in range(4))
    state = (
        f"private_key={hexkey(DEVICE.private)}\nlisten_port=51820\n"
        f"public_key={hexkey(a.public)}\npreshared_key={hexkey(PSK)}\n"
        "endpoint=192.0.2.1:51820\npersistent_keepalive_interval=25\n"
        "allowed_ip=10.1.0.0/16\nallowed_ip=fd01::/48\n"
        f"public_key={hexkey(b.public)}\nendpoint=[fd00::2]:51820\nallowed_ip=10.2.0.0/16\n"
        f"public_key={hexkey(c.public)}\nallowed_ip=10.3.0.0/16\n"
        "errno=0\n\n"
    ).encode()
    conf = tmp_path / "sync.conf"
    conf.write_text(
        f"[Interface]\nPrivateKey = {DEVICE.private}\nListenPort = 51820\n"
        # a: unchanged, though written differently (host bits, case)
        f"[Peer]\nPublicKey = {a.public}\nPresharedKey = {PSK}\nEndpoint = 192.0.2.1:51820\n"
        "PersistentKeepalive = 25\nAllowedIPs = 10.1.2.3/16, FD01::/48\n"
        # b: a new endpoint and one more allowed IP; c is gone; d is new
        f"[Peer]\nPublicKey = {b.public}\nEndpoint = [fd00::3]:51820\n"
        "AllowedIPs = 10.2.0.0/16, 10.20.0.0/16\n"
        f"[Peer]\nPublicKey = {d.public}\nAllowedIPs = 10.4.0.0/16\n"
    )
    ours, result = requests(meshnode, "syncconf", "IFACE", str(conf), state=state)
    assert result == (b"", b"Warning: AllowedIP has nonzero host part: 10.1.2.3/16\n", 0)
    assert ours == [
        (
            "set=1\n"
            f"public_key={hexkey(c.public)}\nremove=true\n"
            f"public_key={hexkey(b.public)}\nendpoint=[fd00::3]:51820\n"
            "replace_allowed_ips=true\nallowed_ip=10.2.0.0/16\nallowed_ip=10.20.0.0/16\n"
            f"public_key={hexkey(d.public)}\nreplace_allowed_ips=true\nallowed_ip=10.4.0.0/16\n"
            "\n"
        ).encode()
    ]
    # wg sends everything again, including a's unchanged settings
    theirs, _ = requests(wg, "syncconf", "IFACE", str(conf), state=state)
    assert f"public_key={hexkey(a.public)}".encode() in theirs[0]
    # nothing to change: an empty set
    same = conf.read_text().replace("[fd00::3]", "[fd00::2]").replace(", 10.20.0.0/16", "")
    conf.write_text(same.split(f"[Peer]\nPublicKey = {d.public}")[0])
    state_without_c = state.replace(f"public_key={hexkey(c.public)}\n".encode(), b"")
    state_without_c = state_without_c.replace(b"allowed_ip=10.3.0.0/16\n", b"")
    ours, _ = requests(meshnode, "syncconf", "IFACE", str(conf), state=state_without_c)
    assert ours == [b"set=1\n\n"]


def test_syncconf_unknown_interface_matches_wg(tmp_path: Path) -> None:
    conf = tmp_path / "c.conf"
    conf.write_text(f"[Peer]\nPublicKey = {PEERS[0].public}\n")
    assert_same("syncconf", "mnnosuchif0", str(conf))


# --- discovery ---------------------------------------------------------------


def test_stale_and_foreign_sockets() -> None:
    """A socket nobody listens on is skipped and deleted (as wg does); a file
    that is not a socket is skipped and left alone."""
    for tool in (meshnode, wg):
        with FakeUapi() as live:
            stale = live.path.with_name(f"{live.name}x.sock")
            plain = live.path.with_name(f"{live.name}y.sock")
            with socket.socket(socket.AF_UNIX) as s:
                s.bind(str(stale))  # bound, never listening: connect is refused
            plain.write_text("")
            try:
                names = tool("show", "interfaces").stdout.split()
                assert live.name.encode() in names
                assert stale.stem.encode() not in names and plain.stem.encode() not in names
                assert not stale.exists() and plain.exists()
                r = tool("show", stale.stem)
                assert r.stderr.startswith(b"Unable to access interface: ")
            finally:
                stale.unlink(missing_ok=True)
                plain.unlink()


def test_socket_dir_override(tmp_path: Path) -> None:
    """WG_SOCKET_DIR (ours, not wg's) points meshnode elsewhere."""
    with FakeUapi(b"listen_port=7\nerrno=0\n\n", directory=tmp_path) as daemon:
        env = {"WG_SOCKET_DIR": str(tmp_path)}
        assert meshnode("show", "interfaces", env=env).stdout == daemon.name.encode() + b"\n"
        assert meshnode("show", daemon.name, "listen-port", env=env).stdout == b"7\n"
        assert meshnode("show", daemon.name, "listen-port").returncode == 1
        assert os.path.exists(daemon.path)
