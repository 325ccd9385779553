"""meshnode show/showconf/set/setconf/addconf/syncconf against the real wg and
a real wireguard-go, in network namespaces.

- Reading: an interface configured with the real `wg set`/`wg setconf` (two
  or three peers, a preshared key, IPv4 and IPv6 endpoints, keepalive, many
  allowed IPs of both families) must look byte-identical through `meshnode
  show` (every form, `all`, `interfaces`, dump) and `meshnode showconf`.
- Writing: each command is applied by wg to one fresh interface and by
  meshnode to another; `wg showconf` of the two must be the same.
- Bad input: wg's message and exit status, and the interface untouched.

wireguard-go lists peers in Go map order, which changes between requests:
output comparisons are retried until the order agrees, and configurations
of two interfaces are compared with their peers sorted.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator

import netns
import pytest
from test_wgtool_support import (
    SHOW_FORMS as SHOW_FORMS_COMMON,
)
from test_wgtool_support import (
    WIREGUARD_GO,
    assert_same,
    keypair,
    meshnode,
    needs_wg,
    peer_sorted,
    psk,
    wg,
)

pytestmark = [
    needs_wg,
    pytest.mark.skipif(WIREGUARD_GO is None, reason="wireguard-go is not installed"),
]

DEVICE, OTHER = keypair(), keypair()
A, B, C, D = (keypair() for _ in range(4))
PSK = psk()

MANY_ALLOWED = ", ".join(
    [f"10.{i}.0.0/16" for i in range(1, 9)]
    + [f"fd00:{i:x}::/64" for i in range(1, 9)]
    + ["192.168.7.7/32", "2001:db8::1/128", "172.16.0.0/12"]
)

BASE_CONF = f"""\
[Interface]
PrivateKey = {DEVICE.private}
ListenPort = 51820
FwMark = 0x2a

[Peer]
PublicKey = {A.public}
PresharedKey = {PSK}
Endpoint = 192.0.2.1:51820
PersistentKeepalive = 25
AllowedIPs = {MANY_ALLOWED}

[Peer]
PublicKey = {B.public}
Endpoint = [fd00::1]:51820
AllowedIPs = 10.200.0.2/32, fd00:200::2/128

[Peer]
PublicKey = {C.public}
AllowedIPs = 10.30.0.0/16
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[netns.Lab]:
    netns.require_netns()
    with netns.Lab() as lab:
        yield lab


@pytest.fixture(scope="module")
def files(lab: netns.Lab) -> dict[str, str]:
    """Configuration and key files, by name."""
    content = {
        "base.conf": BASE_CONF,
        "private": OTHER.private + "\n",
        "psk": PSK + "\n",
        "empty": "",
        "badkey": "this is not a key at all, no, not at all\n",
        "shortkey": "abc\n",
        "trailing": OTHER.private + "\nx",
    }
    paths = {}
    for name, text in content.items():
        path = lab.tmp_path / name
        path.write_text(text)
        paths[name] = str(path)
    return paths


def write(lab: netns.Lab, name: str, text: str) -> str:
    path = lab.tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def ns(lab: netns.Lab) -> netns.Namespace:
    return lab.namespace("wg")


@pytest.fixture(scope="module")
def configured(lab: netns.Lab, ns: netns.Namespace, files: dict[str, str]) -> str:
    """An interface set up by the real wg: setconf, then set."""
    ifname = lab.ifname("c")
    lab.start_userspace_wg(ns, ifname)
    ns.run("wg", "setconf", ifname, files["base.conf"])
    ns.run("wg", "set", ifname, "peer", D.public, "endpoint", "[fd00::4]:4444",
           "persistent-keepalive", "3661", "allowed-ips", "10.40.0.0/16,fd00:40::/48")  # fmt: skip
    return ifname


# --- reading -----------------------------------------------------------------

SHOW_FORMS = [*SHOW_FORMS_COMMON, ("dump", "extra")]


@pytest.mark.parametrize("form", SHOW_FORMS, ids=lambda f: " ".join(f) or "pretty")
def test_show(configured: str, ns: netns.Namespace, form: tuple[str, ...]) -> None:
    assert_same("show", configured, *form, netns=ns.name)


def test_show_environment(configured: str, ns: netns.Namespace) -> None:
    for env in ({"WG_COLOR_MODE": "always"}, {"WG_HIDE_KEYS": "never"}):
        assert_same("show", configured, env=env, netns=ns.name)


def test_show_all_and_interfaces(configured: str, ns: netns.Namespace) -> None:
    for args in [(), ("all",), ("all", "dump"), ("all", "endpoints"), ("interfaces",)]:
        out = assert_same("show", *args, netns=ns.name).stdout
        assert configured.encode() in out


def test_showconf(configured: str, ns: netns.Namespace) -> None:
    out = assert_same("showconf", configured, netns=ns.name).stdout
    assert f"PublicKey = {D.public}\n".encode() in out


def test_json_matches_dump(configured: str, ns: netns.Namespace) -> None:
    obj = json.loads(meshnode("show", configured, "--json", netns=ns.name).stdout)
    dump = wg("show", configured, "dump", netns=ns.name).stdout.decode().splitlines()
    private, public, port, fwmark = dump[0].split("\t")
    assert (obj["private_key"], obj["public_key"]) == (private, public)
    assert (obj["listen_port"], obj["fwmark"]) == (int(port), int(fwmark, 16))
    rows = {row.split("\t")[0]: row.split("\t") for row in dump[1:]}
    assert {p["public_key"] for p in obj["peers"]} == set(rows)
    for peer in obj["peers"]:
        _, psk_, endpoint, allowed, handshake, rx, tx, keepalive = rows[peer["public_key"]]
        assert peer["preshared_key"] == (None if psk_ == "(none)" else psk_)
        assert peer["endpoint"] == (None if endpoint == "(none)" else endpoint)
        assert (",".join(peer["allowed_ips"]) or "(none)") == allowed
        assert (peer["latest_handshake"], peer["transfer_rx"], peer["transfer_tx"]) == (
            int(handshake),
            int(rx),
            int(tx),
        )
        assert str(peer["persistent_keepalive"] or "off") == keepalive


# --- writing -----------------------------------------------------------------


def configuration(ns: netns.Namespace, ifname: str, keep_port: bool) -> bytes:
    text = peer_sorted(ns.run("wg", "showconf", ifname).stdout)
    return text if keep_port else re.sub(rb"ListenPort = \d+\n", b"", text)


def apply_both(
    lab: netns.Lab,
    files: dict[str, str],
    args: tuple[str, ...],
    base: bool = True,
    keep_port: bool = True,
) -> tuple[bytes, bytes]:
    """Run args (IFACE standing for the interface) with wg on one fresh
    interface and with meshnode on another, each in its own namespace so both
    may use the same port; both start from the base configuration if asked.
    Returns the two configurations after; asserts the outputs were the same."""
    results, configs = [], []
    for tool in (wg, meshnode):
        ns = lab.namespace("apply")
        ifname = lab.ifname("a")
        daemon = lab.start_userspace_wg(ns, ifname)
        if base:
            ns.run("wg", "setconf", ifname, files["base.conf"])
        argv = [ifname if a == "IFACE" else a for a in args]
        results.append(tool(*argv, netns=ns.name))
        configs.append(configuration(ns, ifname, keep_port))
        daemon.stop()
    assert results[0] == results[1], args
    return configs[0], configs[1]


def test_set_everything(lab: netns.Lab, files: dict[str, str]) -> None:
    args = (
        "set", "IFACE", "listen-port", "51821", "fwmark", "0x1234",
        "private-key", files["private"],
        "peer", A.public, "preshared-key", files["psk"], "endpoint", "192.0.2.9:9",
        "persistent-keepalive", "30", "allowed-ips", MANY_ALLOWED,
        "peer", B.public, "endpoint", "[fd00::99]:51820",
        "allowed-ips", "fd00:99::/64, 10.99.0.0/16",
    )  # fmt: skip
    ours_wg, ours_mn = apply_both(lab, files, args, base=False)
    assert ours_wg == ours_mn
    assert f"PrivateKey = {OTHER.private}".encode() in ours_mn


def test_set_changes(lab: netns.Lab, files: dict[str, str]) -> None:
    args = (
        "set", "IFACE", "fwmark", "off", "listen-port", "0",
        "peer", A.public, "allowed-ips", "", "persistent-keepalive", "off",
        "preshared-key", files["empty"], "endpoint", "localhost:1",
        "peer", B.public, "remove",
        "peer", C.public, "allowed-ips", "10.30.1.1/16,10.31.0.0/16",
        "peer", D.public, "allowed-ips", "0.0.0.0/0,::/0",
    )  # fmt: skip
    ours_wg, ours_mn = apply_both(lab, files, args, keep_port=False)
    assert ours_wg == ours_mn
    assert B.public.encode() not in ours_mn


def test_set_removes_private_key(lab: netns.Lab, files: dict[str, str]) -> None:
    ours_wg, ours_mn = apply_both(lab, files, ("set", "IFACE", "private-key", files["empty"]))
    assert ours_wg == ours_mn
    assert b"PrivateKey" not in ours_mn


def test_setconf(lab: netns.Lab, files: dict[str, str]) -> None:
    conf = write(
        lab,
        "setconf.conf",
        "# written by hand\n"
        "[interface]\r\n"
        f"privatekey={OTHER.private}\r\n"
        "  Listen Port = 51822   # spaces anywhere are dropped\n"
        "[Peer]\n"
        f"PublicKey = {B.public}\n"
        "AllowedIPs = 10.2.0.0/16\n"
        "AllowedIPs = fd00:2::/64, 10.3.0.1/16\n"
        "Endpoint = localhost:51820\n"
        "[PEER]\n"
        f"PUBLICKEY = {D.public}\n"
        f"PresharedKey = {PSK}\n"
        "PersistentKeepalive = off\n",
    )
    ours_wg, ours_mn = apply_both(lab, files, ("setconf", "IFACE", conf))
    assert ours_wg == ours_mn
    assert A.public.encode() not in ours_mn and b"ListenPort = 51822" in ours_mn


def test_setconf_without_port(lab: netns.Lab, files: dict[str, str]) -> None:
    conf = write(lab, "noport.conf", f"[Peer]\nPublicKey = {A.public}\n")
    ours_wg, ours_mn = apply_both(lab, files, ("setconf", "IFACE", conf), keep_port=False)
    assert ours_wg == ours_mn == f"[Interface]\n\n[Peer]\nPublicKey = {A.public}\n".encode()


def test_addconf(lab: netns.Lab, files: dict[str, str]) -> None:
    conf = write(
        lab,
        "addconf.conf",
        f"[Peer]\nPublicKey = {A.public}\nAllowedIPs = 10.77.0.0/16\n"
        f"[Peer]\nPublicKey = {OTHER.public}\nEndpoint = [2001:db8::5]:5\n",
    )
    ours_wg, ours_mn = apply_both(lab, files, ("addconf", "IFACE", conf))
    assert ours_wg == ours_mn
    assert OTHER.public.encode() in ours_mn and C.public.encode() in ours_mn


def test_syncconf(lab: netns.Lab, files: dict[str, str]) -> None:
    conf = write(
        lab,
        "syncconf.conf",
        f"[Interface]\nPrivateKey = {DEVICE.private}\nListenPort = 51820\nFwMark = 0x2a\n"
        # A: new allowed IPs, no PresharedKey or PersistentKeepalive (wg 1.0.20210914 keeps both)
        f"[Peer]\nPublicKey = {A.public}\nEndpoint = 192.0.2.1:51820\nAllowedIPs = 10.1.0.0/16\n"
        # B: the same; C: gone; OTHER: new
        f"[Peer]\nPublicKey = {B.public}\nEndpoint = [fd00::1]:51820\n"
        "AllowedIPs = 10.200.0.2/32, fd00:200::2/128\n"
        f"[Peer]\nPublicKey = {OTHER.public}\nAllowedIPs = 10.88.0.0/16\n",
    )
    ours_wg, ours_mn = apply_both(lab, files, ("syncconf", "IFACE", conf))
    assert ours_wg == ours_mn
    assert C.public.encode() not in ours_mn and PSK.encode() in ours_mn


def test_syncconf_without_peers(lab: netns.Lab, files: dict[str, str]) -> None:
    conf = write(lab, "nopeers.conf", "[Interface]\nListenPort = 51823\n")
    ours_wg, ours_mn = apply_both(lab, files, ("syncconf", "IFACE", conf))
    assert ours_wg == ours_mn == b"[Interface]\nListenPort = 51823\n\n"


def test_daemon_refusal_midway(lab: netns.Lab, files: dict[str, str]) -> None:
    """A set that wireguard-go refuses partway (the port is taken): the same
    message as wg, and the same partly applied state. wireguard-go applies a
    request line by line and keeps what came before the failure: the new
    private key stays, the interface is left without a listening port, and
    the peers after it are never added."""
    results, configs = [], []
    for tool in (wg, meshnode):
        ns = lab.namespace("busy")
        blocker, ifname = lab.ifname("b"), lab.ifname("a")
        lab.start_userspace_wg(ns, blocker)
        ns.run("wg", "set", blocker, "listen-port", "40000")
        lab.start_userspace_wg(ns, ifname)
        ns.run("wg", "setconf", ifname, files["base.conf"])
        args = ("set", ifname, "private-key", files["private"], "listen-port", "40000",
                "peer", OTHER.public, "allowed-ips", "10.123.0.0/16")  # fmt: skip
        results.append(tool(*args, netns=ns.name))
        configs.append(configuration(ns, ifname, keep_port=True))
    refused = (b"", b"Unable to modify interface: Address already in use\n", 1)
    assert results[0] == results[1] == refused
    assert configs[0] == configs[1]
    assert f"PrivateKey = {OTHER.private}".encode() in configs[1]
    assert b"ListenPort" not in configs[1] and OTHER.public.encode() not in configs[1]


# --- bad input ---------------------------------------------------------------


def error_cases(files: dict[str, str], lab: netns.Lab) -> list[tuple[str, ...]]:
    def conf(name: str, text: str) -> str:
        return write(lab, name, text)

    peer_a = f"[Peer]\nPublicKey={A.public}\n"
    quick = [
        conf(f"quick-{key}.conf", f"[Interface]\nPrivateKey = {OTHER.private}\n{key} = {value}\n")
        for key, value in [
            ("Address", "10.0.0.1/24"),
            ("DNS", "1.1.1.1"),
            ("MTU", "1420"),
            ("Table", "off"),
            ("PreUp", "true"),
            ("PostUp", "true"),
            ("PreDown", "true"),
            ("PostDown", "true"),
            ("SaveConfig", "true"),
        ]
    ]
    return [
        ("set", "IFACE", "peer", "abc"),
        ("set", "IFACE", "peer", A.public[:-2] + "B="),  # stray low bits
        ("set", "IFACE", "private-key", files["badkey"]),
        ("set", "IFACE", "private-key", files["shortkey"]),
        ("set", "IFACE", "private-key", files["trailing"]),
        ("set", "IFACE", "private-key", "/nonexistent/key"),
        ("set", "IFACE", "listen-port", "abc"),
        ("set", "IFACE", "listen-port", ""),
        ("set", "IFACE", "listen-port", "-1"),
        ("set", "IFACE", "fwmark", "0x"),
        ("set", "IFACE", "fwmark", "4294967296"),
        ("set", "IFACE", "fwmark", "0X10"),
        ("set", "IFACE", "peer", A.public, "allowed-ips", "10.0.0.0/33"),
        ("set", "IFACE", "peer", A.public, "allowed-ips", "10.0.0.0/"),
        ("set", "IFACE", "peer", A.public, "allowed-ips", "fd00::/129"),
        ("set", "IFACE", "peer", A.public, "allowed-ips", "1.2.3/8"),
        ("set", "IFACE", "peer", A.public, "allowed-ips", "10.0.0.0/8,"),
        ("set", "IFACE", "peer", A.public, "allowed-ips", "+10.0.0.0/8"),  # not in 1.0.20210914
        ("set", "IFACE", "peer", A.public, "endpoint", "1.2.3.4"),
        ("set", "IFACE", "peer", A.public, "endpoint", "[::1"),
        ("set", "IFACE", "peer", A.public, "endpoint", "[::1]"),
        ("set", "IFACE", "peer", A.public, "endpoint", ""),
        ("set", "IFACE", "peer", A.public, "persistent-keepalive", "65536"),
        ("set", "IFACE", "peer", A.public, "persistent-keepalive", "-1"),
        ("set", "IFACE", "listen-port", "1", "bogus"),
        ("set", "IFACE", "peer", A.public, "listen-port", "1"),
        ("set", "IFACE", "listen-port"),
        ("set", "IFACE", "remove"),
        ("set", "IFACE"),
        ("setconf", "IFACE", conf("unknown.conf", "[Interface]\nFoo = bar\n")),
        ("setconf", "IFACE", conf("nosection.conf", "ListenPort = 1\n")),
        ("setconf", "IFACE", conf("emptyvalue.conf", f"{peer_a}AllowedIPs=\n")),
        ("setconf", "IFACE", conf("badpub.conf", "[Peer]\nPublicKey = nope\n")),
        ("setconf", "IFACE", conf("nopub.conf", "[Peer]\nAllowedIPs = 10.0.0.0/8\n")),
        ("setconf", "IFACE", conf("badport.conf", "[Interface]\nListenPort = 1=2\n")),
        ("setconf", "IFACE", conf("badcidr.conf", f"{peer_a}AllowedIPs=10.0.0.0/40\n")),
        ("addconf", "IFACE", conf("badka.conf", f"{peer_a}PersistentKeepalive=x\n")),
        ("syncconf", "IFACE", conf("devkey.conf", f"[Interface]\nPublicKey = {A.public}\n")),
        *[("setconf", "IFACE", path) for path in quick],
        ("setconf", "IFACE", "/nonexistent/wg0.conf"),
        ("addconf", "IFACE", "/nonexistent/wg0.conf"),
        ("setconf", "IFACE"),
        ("syncconf", "IFACE", "a", "b"),
        ("showconf",),
        ("showconf", "IFACE", "x"),
        ("show", "IFACE", "dump", "x"),
        ("show", "interfaces", "x"),
        ("show", "-h"),
        ("show", "mnnosuchif0"),
        ("showconf", "mnnosuchif0"),
        ("set", "mnnosuchif0", "listen-port", "1"),
        ("setconf", "mnnosuchif0", files["base.conf"]),
        ("addconf", "mnnosuchif0", files["base.conf"]),
        ("syncconf", "mnnosuchif0", files["base.conf"]),
        ("syncconf", "mnnosuchif0", files["empty"]),
        ("show", "bad/name"),
    ]  # fmt: skip


def test_bad_input(lab: netns.Lab, files: dict[str, str]) -> None:
    """Every case: wg's output and exit status, and the interface unchanged."""
    ns = lab.namespace("bad")
    ifname = lab.ifname("x")
    lab.start_userspace_wg(ns, ifname)
    ns.run("wg", "setconf", ifname, files["base.conf"])
    before = configuration(ns, ifname, keep_port=True)
    for case in error_cases(files, lab):
        args = [ifname if a == "IFACE" else a for a in case]
        ours = meshnode(*args, netns=ns.name)
        theirs = wg(*args, netns=ns.name)
        assert ours == theirs, case
        assert ours.returncode == (0 if case == ("show", "-h") else 1), case
        assert configuration(ns, ifname, keep_port=True) == before, case


def test_warning_only(lab: netns.Lab, files: dict[str, str]) -> None:
    """A nonzero host part is a warning: the prefix is stored masked."""
    args = ("set", "IFACE", "peer", A.public, "allowed-ips", "10.1.2.3/8, fd00::1/64")
    ours_wg, ours_mn = apply_both(lab, files, args)
    assert ours_wg == ours_mn
    assert b"AllowedIPs = 10.0.0.0/8, fd00::/64" in ours_mn


def test_endpoint_resolution_retries(lab: netns.Lab) -> None:
    """No DNS inside a fresh namespace: a transient failure, retried as wg does."""
    ns = lab.namespace("dns")
    ifname = lab.ifname("r")
    lab.start_userspace_wg(ns, ifname)
    args = ("set", ifname, "peer", A.public, "endpoint", "nosuchhost.invalid:1")
    for retries in ("1", "abc"):
        env = {"WG_ENDPOINT_RESOLUTION_RETRIES": retries}
        ours = meshnode(*args, netns=ns.name, env=env)
        assert ours == wg(*args, netns=ns.name, env=env)
        assert ours.returncode == 1


# --- sessions ------------------------------------------------------------------


def test_syncconf_keeps_sessions(lab: netns.Lab) -> None:
    """Two wireguard-go peers over a veth with a live session; syncconf with the
    same peer plus a new one adds the new one and leaves the session as it is."""
    left, right = lab.namespace("left"), lab.namespace("right")
    lab.veth(left, right, "10.99.0.1/24", "10.99.0.2/24")
    lif, rif = lab.ifname("l"), lab.ifname("r")
    lab.start_userspace_wg(left, lif)
    lab.start_userspace_wg(right, rif)
    left_conf = (
        f"[Interface]\nPrivateKey = {DEVICE.private}\nListenPort = 51820\n"
        f"[Peer]\nPublicKey = {OTHER.public}\nPresharedKey = {PSK}\n"
        "Endpoint = 10.99.0.2:51820\nAllowedIPs = 10.200.0.2/32\n"
    )
    right_conf = (
        f"[Interface]\nPrivateKey = {OTHER.private}\nListenPort = 51820\n"
        f"[Peer]\nPublicKey = {DEVICE.public}\nPresharedKey = {PSK}\nAllowedIPs = 10.200.0.1/32\n"
    )
    for ns, ifname, conf, addr in (
        (left, lif, left_conf, "10.200.0.1/24"),
        (right, rif, right_conf, "10.200.0.2/24"),
    ):
        ns.run("wg", "setconf", ifname, write(lab, f"{ifname}.conf", conf))
        ns.ip("addr", "add", addr, "dev", ifname)
        ns.ip("link", "set", ifname, "up")

    def handshake() -> int:
        out = left.run("wg", "show", lif, "latest-handshakes").stdout.decode()
        times = dict(line.split("\t") for line in out.splitlines())
        return int(times[OTHER.public])

    def transfer() -> dict[str, int]:
        out = left.run("wg", "show", lif, "transfer").stdout.decode()
        return {line.split("\t")[0]: int(line.split("\t")[1]) for line in out.splitlines()}

    # a datagram into the tunnel makes wireguard-go shake hands
    send = (
        "import socket; "
        "socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('10.200.0.2', 9))"
    )
    deadline = time.monotonic() + 10
    while not handshake() and time.monotonic() < deadline:
        left.run(sys.executable, "-c", send)
        time.sleep(0.2)
    first = handshake()
    assert first, left.run("wg", "show", lif).stdout
    received = transfer()[OTHER.public]
    assert received > 0
    added = f"[Peer]\nPublicKey = {A.public}\nAllowedIPs = 10.201.0.0/16\n"
    synced = write(lab, "synced.conf", left_conf + added)
    assert meshnode("syncconf", lif, synced, netns=left.name) == (b"", b"", 0)
    time.sleep(1.1)  # a new handshake would now show a later time
    left.run(sys.executable, "-c", send)
    assert handshake() == first
    assert A.public in transfer()
