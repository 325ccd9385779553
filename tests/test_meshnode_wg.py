"""meshnode-wg driven the way users drive wireguard-go: the real wg, wg-quick,
ip, ping and tcpdump, in network namespaces."""

import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from netns import netns_lab, uapi_socket_ready, wait_for  # noqa: F401  (the fixture)
from wgpair import MESHNODE_WG, PORT, Capture, loss, make_pair, start_side

from meshnode.wireguard import keys

# ------------------------------------------------------------------ wg show


def test_wg_show_reads_back_what_wg_set_configured(netns_lab) -> None:  # noqa: F811
    pair = make_pair(netns_lab, "meshnode", "wireguard-go", psk=True)
    m, other = pair.left, pair.right
    allowed = "10.77.0.2/32,fd77::2/128,10.99.0.0/16"
    m.wg("set", m.ifname, "fwmark", "0x1234", "peer", other.public_b64,
         "persistent-keepalive", "25", "allowed-ips", allowed)  # fmt: skip
    # turning persistent keepalive on sends a keepalive at once, so a handshake
    # runs without any traffic (the peer answers within milliseconds, but the
    # dump may be read before the answer arrives on a loaded machine)
    def shaken() -> bool:
        peer = m.wg("show", m.ifname, "dump").splitlines()[1]
        return peer.split("\t")[4] != "0"

    wait_for(shaken, 5, "the handshake the first keepalive starts")
    iface, peer = m.wg("show", m.ifname, "dump").splitlines()
    private, public, port, fwmark = iface.split("\t")
    assert keys.from_base64(private) == m.private_key
    assert public == m.public_b64 and port == str(PORT) and fwmark == "0x1234"
    fields = peer.split("\t")
    assert fields[0] == other.public_b64
    assert fields[1] != "(none)"  # a preshared key is set
    assert fields[2] == f"{other.underlay4}:{PORT}"
    assert sorted(fields[3].split(",")) == ["10.77.0.2/32", "10.99.0.0/16", "fd77::2/128"]
    assert int(fields[4]) > 0 and int(fields[5]) > 0 and int(fields[6]) > 0
    assert fields[7] == "25"
    conf = m.wg("showconf", m.ifname)
    assert f"ListenPort = {PORT}" in conf and "FwMark = 0x1234" in conf
    assert "PersistentKeepalive = 25" in conf and f"Endpoint = {other.underlay4}:{PORT}" in conf


def test_handshake_time_and_transfer_move_with_traffic(netns_lab) -> None:  # noqa: F811
    pair = make_pair(netns_lab, "meshnode", "wireguard-go")
    m = pair.left

    def counters() -> tuple[int, int, int]:
        fields = m.wg("show", m.ifname, "dump").splitlines()[1].split("\t")
        return int(fields[4]), int(fields[5]), int(fields[6])

    assert counters() == (0, 0, 0)
    before = time.time()
    assert loss(m.ping(pair.right.inner4, count=3)) == 0
    handshake, rx, tx = counters()
    assert before - 1 <= handshake <= time.time() + 1
    assert rx >= 92 + 3 * (32 + 96) and tx >= 148 + 3 * (32 + 96)
    assert loss(m.ping(pair.right.inner4, count=2)) == 0
    _, rx2, tx2 = counters()
    assert rx2 > rx and tx2 > tx
    # and the numbers agree with what wireguard-go counted the other way
    other = pair.right.wg("show", pair.right.ifname, "dump").splitlines()[1].split("\t")
    assert (int(other[5]), int(other[6])) == (tx2, rx2)


def test_bad_wg_set_gets_wgs_error_and_changes_nothing(netns_lab) -> None:  # noqa: F811
    pair = make_pair(netns_lab, "meshnode", "wireguard-go")
    m = pair.left
    before = m.wg("showconf", m.ifname)
    # another socket holds a port: wg set listen-port to it must fail with EADDRINUSE
    holder = m.ns.spawn("python3", "-c",
        "import socket,time; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM);"
        "s.bind(('0.0.0.0', 40404)); print('bound', flush=True); time.sleep(60)")  # fmt: skip
    wait_for(lambda: "bound" in holder.log(), 10, "the port holder")
    result = m.ns.run("wg", "set", m.ifname, "listen-port", "40404", "peer",
                      pair.right.public_b64, "persistent-keepalive", "7", check=False)  # fmt: skip
    assert result.returncode == 1
    assert b"Address already in use" in result.stderr
    assert m.wg("showconf", m.ifname) == before  # the keepalive change was not applied
    # malformed input is refused by wg itself, also without effect
    assert m.ns.run("wg", "set", m.ifname, "peer", "notakey", check=False).returncode == 1
    assert m.wg("showconf", m.ifname) == before
    assert m.daemon.running()
    assert loss(m.ping(pair.right.inner4)) == 0


def test_failed_uapi_set_is_all_or_nothing(netns_lab) -> None:  # noqa: F811
    """A request with a bad line half-way applies none of its earlier lines."""
    pair = make_pair(netns_lab, "meshnode", "wireguard-go")
    m = pair.left
    before = m.wg("showconf", m.ifname)
    peer_hex = keys.to_hex(keys.from_base64(pair.right.public_b64))
    request = (f"set=1\nlisten_port=40000\npublic_key={peer_hex}\nallowed_ip=10.55.0.0/16\n"
               "persistent_keepalive_interval=99999999\n\n")  # fmt: skip
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(f"/var/run/wireguard/{m.ifname}.sock")
        s.sendall(request.encode())
        assert s.recv(100) == b"errno=-22\n\n"
    assert m.wg("showconf", m.ifname) == before


# ------------------------------------------------------------------ on the wire


def test_wire_sizes(netns_lab) -> None:  # noqa: F811
    pair = make_pair(netns_lab, "meshnode", "wireguard-go", only_left_knows_endpoint=True)
    capture = Capture(pair.left.ns, pair.veth.a_ifname)
    for size in (1, 50, 333, 1000):
        pair.left.ns.run("ping", "-n", "-c", "1", "-W", "2", "-s", str(size), pair.right.inner4)
    pair.left.wg("set", pair.left.ifname, "peer", pair.right.public_b64,
                 "persistent-keepalive", "1")  # fmt: skip
    time.sleep(1.5)
    capture.stop()
    ours = capture.lengths(pair.left.underlay4)
    theirs = capture.lengths(pair.right.underlay4)
    assert ours[0] == 148 and theirs[0] == 92
    transport = ours[1:]
    assert transport and all(n >= 32 and (n - 32) % 16 == 0 for n in transport), transport
    assert 32 in transport  # keepalives are empty: header and tag only
    # an ICMP echo of 1000 bytes is a 1028-byte IP packet, padded to 1040
    assert 32 + 1040 in transport


def test_roaming_follows_the_peer_to_a_new_port(netns_lab) -> None:  # noqa: F811
    pair = make_pair(netns_lab, "meshnode", "wireguard-go")
    m, other = pair.left, pair.right
    assert loss(m.ping(other.inner4)) == 0
    assert m.wg("show", m.ifname, "endpoints").split()[-1] == f"{other.underlay4}:{PORT}"
    other.wg("set", other.ifname, "listen-port", "51999")
    assert loss(other.ping(m.inner4)) == 0  # its next packets come from the new port
    assert m.wg("show", m.ifname, "endpoints").split()[-1] == f"{other.underlay4}:51999"
    assert loss(m.ping(other.inner4)) == 0  # and our replies follow it there
    # then to a new address (IPv6 underlay), as a laptop changing networks would
    other.wg("set", other.ifname, "peer", m.public_b64, "endpoint", f"[{m.underlay6}]:{PORT}")
    assert loss(other.ping(m.inner6)) == 0
    assert m.wg("show", m.ifname, "endpoints").split()[-1] == f"[{other.underlay6}]:51999"


def test_cryptokey_routing(netns_lab) -> None:  # noqa: F811
    pair = make_pair(netns_lab, "meshnode", "wireguard-go")
    m, other = pair.left, pair.right
    # the other side may send anything into the tunnel...
    other.wg("set", other.ifname, "peer", m.public_b64, "allowed-ips", "10.77.0.0/24,fd77::/64")
    other.ns.ip("addr", "add", "10.77.0.99/24", "dev", other.ifname)
    assert loss(other.ping(m.inner4)) == 0
    # ...but meshnode accepts from it only sources in its AllowedIPs (10.77.0.2/32)
    assert loss(other.ping(m.inner4, source="10.77.0.99")) == 100
    # towards an address no peer owns, nothing leaves meshnode
    rx_before = other.wg("show", other.ifname, "transfer").split()[-2]
    assert loss(m.ping("10.77.0.50", count=2)) == 100
    assert other.wg("show", other.ifname, "transfer").split()[-2] == rx_before


def test_persistent_keepalive_on_the_wire(netns_lab) -> None:  # noqa: F811
    pair = make_pair(netns_lab, "meshnode", "wireguard-go")
    m = pair.left
    capture = Capture(m.ns, pair.veth.a_ifname)
    m.wg("set", m.ifname, "peer", pair.right.public_b64, "persistent-keepalive", "2")
    time.sleep(7.0)
    capture.stop()
    # turning it on sends at once (after the handshake it needs), then every 2 s
    assert capture.lengths(m.underlay4)[0] == 148
    stamps = capture.times(m.underlay4, 32)
    assert len(stamps) >= 3, capture.lengths()
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert all(1.8 <= g <= 2.3 for g in gaps), gaps


def test_131072_allowed_ips_through_setconf(netns_lab) -> None:  # noqa: F811
    ns = netns_lab.namespace("big")
    side = start_side(netns_lab, ns, "meshnode", 1)
    peer = keys.to_base64(keys.public_key(keys.generate_private_key()))
    networks = [f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}/32" for i in range(1 << 17)]
    conf = netns_lab.tmp_path / "big.conf"
    conf.write_text(
        f"[Interface]\nPrivateKey = {keys.to_base64(side.private_key)}\n\n"
        f"[Peer]\nPublicKey = {peer}\nAllowedIPs = {', '.join(networks)}\n"
    )
    side.wg("setconf", side.ifname, str(conf))
    shown = side.wg("show", side.ifname, "allowed-ips").split("\t")[1].split()
    assert len(shown) == 1 << 17
    assert set(shown) == set(networks)


# ------------------------------------------------------------------ life cycle


def _start_detached(lab, ns, ifname: str) -> int:
    """meshnode-wg without -f: returns once the interface exists; the daemon's PID."""
    argv = [a for a in MESHNODE_WG if a != "-f"]
    ns.run(*argv, ifname, timeout=20)
    assert uapi_socket_ready(ifname)
    pid = _daemon_pid(ifname)
    assert pid is not None
    return pid


def _exited(pid: int) -> bool:
    """Gone, or a zombie waiting for init to reap it (it has exited all the same)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _daemon_pid(ifname: str) -> int | None:
    """The PID of the detached meshnode-wg serving ifname (unique to this lab)."""
    pattern = f"meshnode(-wg|\\.wgdaemon) {ifname}$"
    pids = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    assert len(pids) <= 1, pids
    return int(pids[0]) if pids else None


@pytest.mark.parametrize("how", ["sigterm", "sigint", "link-del", "socket-removed"])
def test_daemon_exits_cleanly(netns_lab, how: str) -> None:  # noqa: F811
    ns = netns_lab.namespace("life")
    ifname = netns_lab.ifname("l")
    pid = _start_detached(netns_lab, ns, ifname)
    try:
        ns.run("ip", "link", "show", ifname)
        start = time.monotonic()
        if how == "sigterm":
            os.kill(pid, signal.SIGTERM)
        elif how == "sigint":
            os.kill(pid, signal.SIGINT)
        elif how == "link-del":
            ns.ip("link", "del", ifname)
        else:
            os.unlink(f"/var/run/wireguard/{ifname}.sock")
        wait_for(lambda: _exited(pid), 2.0, "the daemon to exit")
        assert time.monotonic() - start < 2.0
        assert ns.run("ip", "link", "show", ifname, check=False).returncode != 0
        assert not os.path.exists(f"/var/run/wireguard/{ifname}.sock")
    finally:
        if os.path.exists(f"/proc/{pid}"):
            os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------ wg-quick


def test_wg_quick_up_and_down_with_a_client_config(netns_lab) -> None:  # noqa: F811
    """The guide's client: Address, AllowedIPs = 0.0.0.0/0, ::/0 (so fwmark
    policy routing), Endpoint, PersistentKeepalive; the server is wireguard-go."""
    client_ns, server_ns = netns_lab.namespace("cli"), netns_lab.namespace("srv")
    netns_lab.veth(client_ns, server_ns, ["192.168.50.1/24"], ["192.168.50.2/24"])
    server = start_side(netns_lab, server_ns, "wireguard-go", 2)
    client_key = keys.generate_private_key()
    client_public = keys.to_base64(keys.public_key(client_key))
    server.wg(
        "set", server.ifname, "peer", client_public, "allowed-ips", "10.77.0.1/32,fd77::1/128"
    )
    ifname = netns_lab.ifname("q")
    conf = netns_lab.tmp_path / f"{ifname}.conf"
    conf.write_text(
        "[Interface]\n"
        f"PrivateKey = {keys.to_base64(client_key)}\n"
        "Address = 10.77.0.1/24, fd77::1/64\n\n"
        "[Peer]\n"
        f"PublicKey = {server.public_b64}\n"
        f"Endpoint = 192.168.50.2:{PORT}\n"
        "AllowedIPs = 0.0.0.0/0, ::/0\n"
        "PersistentKeepalive = 25\n"
    )
    conf.chmod(0o600)
    # wg-quick wants one command name: the console script next to this Python
    daemon = str(Path(sys.executable).parent / "meshnode-wg")
    env = dict(os.environ, WG_QUICK_USERSPACE_IMPLEMENTATION=daemon)
    pid = None
    try:
        up = client_ns.run("wg-quick", "up", str(conf), env=env, check=False, timeout=60)
        pid = _daemon_pid(ifname)
        assert up.returncode == 0, up.stderr.decode()
        shown = client_ns.run("wg", "show", ifname).stdout.decode()
        assert "persistent keepalive: every 25 seconds" in shown
        assert re.search(r"fwmark: 0x[0-9a-f]+", shown)  # wg-quick's loop prevention
        assert loss(ping_from(client_ns, server.inner4)) == 0
        assert loss(ping_from(client_ns, server.inner6)) == 0
        down = client_ns.run("wg-quick", "down", str(conf), env=env, check=False, timeout=60)
        assert down.returncode == 0, down.stderr.decode()
        assert pid is not None
        wait_for(lambda: _exited(pid), 3.0, "the daemon to exit")
        assert client_ns.run("ip", "link", "show", ifname, check=False).returncode != 0
        rules = client_ns.run("ip", "rule").stdout.decode()
        assert "suppress_prefixlength" not in rules
    finally:
        if pid is not None and os.path.exists(f"/proc/{pid}"):
            os.kill(pid, signal.SIGKILL)


def ping_from(ns, target: str) -> str:
    return ns.run(
        "ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", target, check=False
    ).stdout.decode()
