"""`meshnode up`: one process hosting several interfaces, in network
namespaces with real peers (wireguard-go, another meshnode node), real `wg`,
`ip` and iptables; reload, errors and clean-up as a user meets them."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns import Lab, Namespace, require_netns, wait_for
from nodelab import (
    MESHNODE,
    firewall_rules,
    links,
    make_node,
    new_key,
    node_argv,
    routes,
    rules,
    write_private,
)
from wgpair import loss


@pytest.fixture
def lab() -> Iterator[Lab]:
    """Namespaces for one test; skips without root (fails under CI)."""
    require_netns()
    with Lab() as created:
        yield created


def ping(ns: Namespace, target: str, count: int = 3) -> str:
    result = ns.run("ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2", target, check=False)
    return result.stdout.decode()


def wireguard_go(lab: Lab, ns: Namespace, port: int, address: str, peer_public: str,
                 allowed: str, endpoint: str) -> tuple[str, str]:  # fmt: skip
    """A wireguard-go interface set up with wg and ip; returns (ifname, public key)."""
    ifname = lab.ifname("g")
    lab.start_userspace_wg(ns, ifname)
    private, public = new_key()
    key_file = write_private(lab.tmp_path / f"{ifname}.key", private + "\n")
    ns.run("wg", "set", ifname, "private-key", str(key_file), "listen-port", str(port),
           "peer", peer_public, "allowed-ips", allowed, "endpoint", endpoint)  # fmt: skip
    ns.ip("addr", "add", address, "dev", ifname)
    ns.ip("link", "set", ifname, "up")
    return ifname, public


def exited(pid: int) -> bool:
    """Gone, or a zombie its parent (init here) has not reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def latest_handshakes(ns: Namespace, ifname: str) -> dict[str, int]:
    out = ns.run("wg", "show", ifname, "latest-handshakes").stdout.decode()
    return {key: int(when) for key, when in (line.split("\t") for line in out.splitlines())}


# ---------------------------------------------------------------- two interfaces


def test_one_node_hosts_two_interfaces_to_wireguard_go_and_to_another_node(lab: Lab) -> None:
    node_ns, go_ns, other_ns = lab.namespace("n"), lab.namespace("g"), lab.namespace("m")
    lab.veth(node_ns, go_ns, "192.168.61.1/24", "192.168.61.2/24")
    lab.veth(node_ns, other_ns, "192.168.62.1/24", "192.168.62.2/24")
    to_go, to_other, other_if = lab.ifname("a"), lab.ifname("b"), lab.ifname("c")
    node_a_private, node_a_public = new_key()
    node_b_private, node_b_public = new_key()
    other_private, other_public = new_key()
    _go_if, go_public = wireguard_go(lab, go_ns, 51820, "10.61.0.2/24", node_a_public,
                                     "10.61.0.1/32", "192.168.61.1:51820")  # fmt: skip
    node = make_node(lab, node_ns, "node.toml", f"""
[[interface]]
name = "{to_go}"
private_key = "{node_a_private}"
listen_port = 51820
address = "10.61.0.1/24"

[[interface.peer]]
public_key = "{go_public}"
endpoint = "192.168.61.2:51820"
allowed_ips = ["10.61.0.2/32"]

[[interface]]
name = "{to_other}"
private_key = "{node_b_private}"
listen_port = 51821
address = ["10.62.0.1/24", "fd62::1/64"]

[[interface.peer]]
public_key = "{other_public}"
endpoint = "192.168.62.2:51820"
allowed_ips = ["10.62.0.2/32", "fd62::2/128"]
""").start(to_go, to_other)
    # the other side is a node too, from a wg-quick file named after its interface
    other = make_node(lab, other_ns, f"{other_if}.conf", f"""
[Interface]
PrivateKey = {other_private}
ListenPort = 51820
Address = 10.62.0.2/24, fd62::2/64

[Peer]
PublicKey = {node_b_public}
Endpoint = 192.168.62.1:51821
AllowedIPs = 10.62.0.1/32, fd62::1/128
""").start(other_if)

    # traffic through both interfaces at once
    pingers = [node_ns.spawn("ping", "-n", "-c", "20", "-i", "0.05", "-W", "2", target)
               for target in ("10.61.0.2", "10.62.0.2", "fd62::2")]  # fmt: skip
    for pinger in pingers:
        pinger.popen.wait(30)
        assert loss(pinger.log()) == 0, pinger.log()
    assert loss(ping(other_ns, "10.62.0.1")) == 0

    _, shown = node.cli("show", "interfaces")
    assert {to_go, to_other} <= set(shown.split()), shown  # with other nodes' (shared dir)
    # every counter of both interfaces, over the control socket
    result = node_ns.run(*MESHNODE, "stats", env=node.env)
    stats = json.loads(result.stdout)
    assert set(stats) == {to_go, to_other}
    assert stats[to_go]["listen_port"] == 51820 and stats[to_other]["peers"] == 1
    # nothing dropped on a clean link but what the kernel itself sends into the
    # TUN towards no peer (IPv6 router solicitations, MLD reports)
    assert set(stats[to_go]["drops"]) <= {"no_route"}, stats
    all_shown = node_ns.run("wg", "show", "all", "latest-handshakes").stdout.decode()
    for ifname, peer in ((to_go, go_public), (to_other, other_public)):
        assert re.search(rf"^{ifname}\t{re.escape(peer)}\t[1-9]\d*$", all_shown, re.M), all_shown
    assert node.terminate() == 0, node.log()
    assert other.terminate() == 0, other.log()
    assert not {to_go, to_other} & set(links(node_ns))


# ---------------------------------------------------------------- gateway


def test_gateway_server_carries_a_full_tunnel_client_to_the_internet(lab: Lab) -> None:
    """The guide's server and client: the client routes 0.0.0.0/0 and ::/0
    through the tunnel, the server forwards and masquerades to its uplink."""
    client_ns, server_ns, internet_ns = lab.namespace("c"), lab.namespace("s"), lab.namespace("i")
    lab.veth(client_ns, server_ns, ["192.168.63.1/24", "fd63::1/64"],
             ["192.168.63.2/24", "fd63::2/64"])  # fmt: skip
    uplink = lab.veth(server_ns, internet_ns, ["198.51.100.1/24", "2001:db8:1::1/64"],
                      ["198.51.100.2/24", "2001:db8:1::2/64"])  # fmt: skip
    # The server's public address is reachable only through the client's
    # default route: if the tunnel's own packets followed the tunnel's default
    # route, the handshake could never complete.
    server_ns.ip("addr", "add", "203.0.113.10/32", "dev", "lo")
    client_ns.ip("route", "add", "default", "via", "192.168.63.2")
    client_ns.ip("-6", "route", "add", "default", "via", "fd63::2")
    forwarding_before = server_ns.run("sysctl", "-n", "net.ipv4.ip_forward").stdout.strip()
    firewall_before = firewall_rules(server_ns)
    client_rules_before = {4: rules(client_ns, 4), 6: rules(client_ns, 6)}
    client_firewall_before = firewall_rules(client_ns)

    server_if, client_if = lab.ifname("s"), lab.ifname("c")
    server_private, server_public = new_key()
    client_private, client_public = new_key()
    server = make_node(lab, server_ns, "server.toml", f"""
[[interface]]
name = "{server_if}"
private_key = "{server_private}"
listen_port = 51820
address = ["10.64.0.1/24", "fd64::1/64"]

[interface.gateway]
out_interface = "{uplink.a_ifname}"

[[interface.peer]]
public_key = "{client_public}"
allowed_ips = ["10.64.0.2/32", "fd64::2/128"]
""").start(server_if)
    client = make_node(lab, client_ns, f"{client_if}.conf", f"""
[Interface]
PrivateKey = {client_private}
Address = 10.64.0.2/24, fd64::2/64

[Peer]
PublicKey = {server_public}
Endpoint = 203.0.113.10:51820
AllowedIPs = 0.0.0.0/0, ::/0
""").start(client_if)

    for target in ("198.51.100.2", "2001:db8:1::2"):
        out = ping(client_ns, target)
        assert loss(out) == 0, f"{target}:\n{out}\n{client.log()}\n{server.log()}"
    # it went through the tunnel: the server saw the client's tunnel traffic
    transfer = server_ns.run("wg", "show", server_if, "transfer").stdout.decode()
    assert int(transfer.split()[1]) > 0, transfer
    # the internet host has no route to the tunnel: its replies came back only
    # because the server's MASQUERADE rule rewrote the client's packets
    nat = server_ns.run("iptables", "-w", "5", "-t", "nat", "-L", "POSTROUTING", "-v", "-n",
                        "-x").stdout.decode()  # fmt: skip
    masqueraded = [line for line in nat.splitlines() if "MASQUERADE" in line and "meshnode" in line]
    assert masqueraded and int(masqueraded[0].split()[0]) > 0, nat
    assert server_ns.run("sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == b"1"
    assert any("suppress_prefixlength 0" in rule for rule in rules(client_ns, 4))
    # wg-quick's firewall rules for a full tunnel: no spoofed packets to the
    # tunnel's address from outside it, the tunnel's UDP flows keep their mark
    client_firewall = "\n".join(firewall_rules(client_ns))
    anti_spoof = r"PREROUTING -d 10\.64\.0\.2/32 ! -i \S+ -m addrtype ! --src-type LOCAL .*-j DROP"
    assert re.search(anti_spoof, client_firewall), client_firewall
    assert "CONNMARK --restore-mark" in client_firewall

    assert client.terminate() == 0, client.log()
    assert server.terminate() == 0, server.log()
    # nothing of either node is left: links, rules, routes, firewall, sysctls
    assert client_if not in links(client_ns) and server_if not in links(server_ns)
    assert rules(client_ns, 4) == client_rules_before[4]
    assert rules(client_ns, 6) == client_rules_before[6]
    assert not [r for r in routes(client_ns, 4) + routes(client_ns, 6) if client_if in r]
    assert firewall_rules(server_ns) == firewall_before
    assert firewall_rules(client_ns) == client_firewall_before
    assert server_ns.run("sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == forwarding_before


# ---------------------------------------------------------------- reload


def test_reload_adds_and_removes_peers_and_leaves_the_others_alone(lab: Lab) -> None:
    node_ns = lab.namespace("n")
    ifname = lab.ifname("n")
    node_private, node_public = new_key()
    peers = {}
    for n in (2, 3, 4):  # three wireguard-go peers, each on a host of its own
        peer_ns = lab.namespace(f"p{n}")
        lab.veth(node_ns, peer_ns, f"192.168.7{n}.1/24", f"192.168.7{n}.2/24")
        peers[n] = wireguard_go(lab, peer_ns, 51820, f"10.65.0.{n}/24", node_public,
                                "10.65.0.1/32", f"192.168.7{n}.1:51820")[1]  # fmt: skip

    def config(*ns: int) -> str:
        text = f"""
[[interface]]
name = "{ifname}"
private_key = "{node_private}"
listen_port = 51820
address = "10.65.0.1/24"
"""
        for n in ns:
            text += f"""
[[interface.peer]]
public_key = "{peers[n]}"
endpoint = "192.168.7{n}.2:51820"
allowed_ips = "10.65.0.{n}/32"
"""
        return text

    node = make_node(lab, node_ns, "node.toml", config(2, 3)).start(ifname)
    for n in (2, 3):
        assert loss(ping(node_ns, f"10.65.0.{n}")) == 0
    before = latest_handshakes(node_ns, ifname)
    assert before[peers[2]] > 0
    time.sleep(1.1)  # a new handshake would show a later second

    write_private(node.config, config(2, 4))
    status, out = node.cli("reload")
    assert status == 0, out
    after = latest_handshakes(node_ns, ifname)
    assert set(after) == {peers[2], peers[4]}
    assert loss(ping(node_ns, "10.65.0.4")) == 0
    assert loss(ping(node_ns, "10.65.0.2")) == 0
    assert latest_handshakes(node_ns, ifname)[peers[2]] == before[peers[2]]
    assert loss(ping(node_ns, "10.65.0.3", count=1)) == 100

    # a bad file changes nothing: the reload says why, the node keeps running
    node.config.write_text(config(2, 4).replace("10.65.0.4/32", "10.65.0.400/32"))
    status, out = node.cli("reload", check=False)
    assert status == 1
    assert f"{node.config}:" in out and "10.65.0.400" in out, out
    assert set(latest_handshakes(node_ns, ifname)) == {peers[2], peers[4]}
    # SIGHUP reloads too; its error goes to the log
    node.process.popen.send_signal(1)  # type: ignore[union-attr]
    wait_for(lambda: "Reload failed" in node.log(), 10, "the failed SIGHUP reload in the log")
    assert loss(ping(node_ns, "10.65.0.2")) == 0
    assert node.terminate() == 0, node.log()


# ---------------------------------------------------------------- errors


_SECOND = "[[interface]]\nname = '{other}'\nprivate_key = '{key}'\n"
BAD_CONFIGS = {
    "unknown key": ("colour = 'blue'\n", 6, "unknown key 'colour'"),
    "bad key": ("", 3, None),  # private_key replaced below
    "bad CIDR": ("address = '10.1.2.0/33'\n", 6, "10.1.2.0/33"),
    "duplicate name": (_SECOND.replace("{other}", "{name}"), 6, "defined twice"),
    "duplicate port": (f"{_SECOND}listen_port = 51830\n", 6, "listen_port 51830"),
    "unreadable key file": ("", 3, "private_key_file"),
    # the first interface comes up, the second cannot bind: both must go
    "port in use": (f"{_SECOND}listen_port = 51831\n", 6, "cannot bind"),
}


_HOLD_PORT_51831 = (
    "import socket, time\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.bind(('0.0.0.0', 51831))\n"
    "time.sleep(60)\n"
)


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_a_bad_config_names_file_and_line_and_leaves_nothing(lab: Lab, case: str) -> None:
    ns = lab.namespace("e")
    name, other = lab.ifname("e"), lab.ifname("f")
    private, _ = new_key()
    extra, line, message = BAD_CONFIGS[case]
    key_line = f"private_key = '{private}'"
    if case == "bad key":
        key_line, message = "private_key = 'not-a-key'", "private_key: Key is not the correct"
    if case == "unreadable key file":
        key_line = f"private_key_file = '{lab.tmp_path / 'missing.key'}'"
    text = f"[[interface]]\nname = '{name}'\n{key_line}\nlisten_port = 51830\n\n"
    text += extra.format(name=name, other=other, key=private)
    holder = None
    if case == "port in use":
        holder = ns.spawn("python3", "-c", _HOLD_PORT_51831)
        wait_for(lambda: b"51831" in ns.run("ss", "-uln").stdout, 10, "the port holder")
    node = make_node(lab, ns, "bad.toml", text)
    rules_before = rules(ns, 4) + rules(ns, 6)
    status, out = node.cli("up", str(node.config), check=False, timeout=60)
    assert status != 0, out
    assert f"{node.config}:{line}:" in out, out
    assert message in out, out
    assert private not in out
    # nothing left: no TUN, no UAPI or control socket, no rule
    assert links(ns) == ["lo"], out
    assert not [n for n in (name, other) if Path(f"/var/run/wireguard/{n}.sock").exists()]
    assert not (node.run_dir / "control.sock").exists()
    assert rules(ns, 4) + rules(ns, 6) == rules_before
    if holder is not None:
        holder.stop()


# ---------------------------------------------------------------- hooks, SaveConfig


def test_hooks_run_in_wg_quick_order_and_saveconfig_writes_the_live_state(lab: Lab) -> None:
    ns, peer_ns = lab.namespace("h"), lab.namespace("q")
    lab.veth(ns, peer_ns, "192.168.66.1/24", "192.168.66.2/24")
    ifname = lab.ifname("h")
    private, _ = new_key()
    _, first_peer = new_key()
    _, added_peer = new_key()
    trace = lab.tmp_path / "hooks.log"
    node = make_node(lab, ns, f"{ifname}.conf", f"""
[Interface]
PrivateKey = {private}
Address = 10.66.0.1/24
SaveConfig = true
PreUp = echo "pre-up %i $(ip -br link show dev %i 2>/dev/null | wc -l)" >> {trace}
PostUp = echo "post-up %i $(ip -br addr show dev %i | grep -c 10.66.0.1)" >> {trace}
PreDown = echo "pre-down %i" >> {trace}
PostDown = echo "post-down %i $(ip -br link show dev %i 2>/dev/null | wc -l)" >> {trace}

[Peer]
PublicKey = {first_peer}
AllowedIPs = 10.66.0.2/32
""").start(ifname)
    # a peer added at run time, as with wg-quick: SaveConfig keeps it
    ns.run("wg", "set", ifname, "peer", added_peer, "allowed-ips", "10.66.0.3/32",
           "endpoint", "192.168.66.2:51820")  # fmt: skip
    assert node.terminate() == 0, node.log()
    # PreUp before the TUN exists, PostUp once it has its address, PostDown after it is gone
    assert trace.read_text().splitlines() == [
        f"pre-up {ifname} 0", f"post-up {ifname} 1", f"pre-down {ifname}", f"post-down {ifname} 0"
    ]
    saved = node.config.read_text()
    assert oct(node.config.stat().st_mode & 0o777) == "0o600"
    assert "SaveConfig = true" in saved and "Address = 10.66.0.1/24" in saved
    assert f"PublicKey = {added_peer}" in saved and "Endpoint = 192.168.66.2:51820" in saved
    assert "PostDown = echo \"post-down %i" in saved
    # and the saved file brings the same interface up again
    node.start(ifname)
    peers = ns.run("wg", "show", ifname, "peers").stdout.decode().split()
    assert sorted(peers) == sorted([first_peer, added_peer])
    assert node.terminate() == 0, node.log()


# ---------------------------------------------------------------- failures on the way


def test_a_failed_reload_undoes_itself_and_a_rename_can_keep_the_port(lab: Lab) -> None:
    ns = lab.namespace("r")
    first, second, renamed = lab.ifname("r"), lab.ifname("s"), lab.ifname("t")
    private, _ = new_key()

    def interface(name: str, port: int, extra: str = "") -> str:
        return (
            f"[[interface]]\nname = '{name}'\nprivate_key = '{private}'\n"
            f"listen_port = {port}\naddress = '10.67.{port % 100}.1/24'\n{extra}\n"
        )

    node = make_node(lab, ns, "node.toml", interface(first, 51840)).start(first)
    # a new interface whose PostUp fails: the reload fails, the node is as it was
    failing = interface(second, 51841, "post_up = 'false'")
    write_private(node.config, interface(first, 51840) + failing)
    status, out = node.cli("reload", check=False)
    assert status == 1 and "PostUp command failed" in out and f"{second}" in out, out
    assert second not in links(ns) and first in links(ns)
    # ... and it left nothing behind: the same interface comes up once the hook is fixed
    write_private(node.config, interface(first, 51840) + interface(second, 51841))
    status, out = node.cli("reload")
    assert status == 0, out
    assert {first, second} <= set(links(ns))
    # renaming an interface while keeping its port works (the old one goes first)
    write_private(node.config, interface(renamed, 51840) + interface(second, 51841))
    status, out = node.cli("reload")
    assert status == 0, out
    assert renamed in links(ns) and first not in links(ns)
    assert b"51840" in ns.run("wg", "show", renamed, "listen-port").stdout
    assert node.terminate() == 0, node.log()
    assert links(ns) == ["lo"]


def test_sigterm_while_coming_up_leaves_nothing(lab: Lab) -> None:
    ns = lab.namespace("t")
    ifname = lab.ifname("t")
    private, _ = new_key()
    _, peer = new_key()
    marker = lab.tmp_path / "post-up-started"
    rules_before = rules(ns, 4) + rules(ns, 6)
    node = make_node(lab, ns, "node.toml", f"""
[[interface]]
name = "{ifname}"
private_key = "{private}"
address = "10.68.0.1/24"
post_up = "touch {marker}; sleep 20"
post_down = "touch {marker}.down"

[[interface.peer]]
public_key = "{peer}"
allowed_ips = ["0.0.0.0/0", "::/0"]
endpoint = "127.0.0.1:51820"
""")
    node.process = ns.spawn(*node_argv(node), env=node.env)
    wait_for(marker.exists, 20, "PostUp to start")
    assert any("suppress_prefixlength" in rule for rule in rules(ns, 4))
    started = time.monotonic()
    status = node.terminate(timeout=20)
    assert time.monotonic() - started < 10  # the hook is cut short, not waited for
    assert status == 0, node.log()
    assert links(ns) == ["lo"]
    assert rules(ns, 4) + rules(ns, 6) == rules_before
    assert not Path(f"/var/run/wireguard/{ifname}.sock").exists()
    assert not Path(f"{marker}.down").exists()  # it never came up: no PostDown, as wg-quick


def test_post_up_hooks_can_use_wg_on_the_interface(lab: Lab) -> None:
    ns = lab.namespace("w")
    ifname = lab.ifname("w")
    private, _ = new_key()
    _, peer = new_key()
    node = make_node(lab, ns, f"{ifname}.conf", f"""
[Interface]
PrivateKey = {private}
Address = 10.69.0.1/24
PostUp = wg set %i peer {peer} allowed-ips 10.69.0.2/32
PreDown = wg show %i peers > {lab.tmp_path / "peers-at-pre-down"}
""").start(ifname)
    assert ns.run("wg", "show", ifname, "peers").stdout.decode().split() == [peer]
    assert node.terminate() == 0, node.log()
    assert (lab.tmp_path / "peers-at-pre-down").read_text().split() == [peer]


def test_up_daemon_returns_once_up_and_down_waits_until_all_is_gone(lab: Lab) -> None:
    ns = lab.namespace("d")
    ifname = lab.ifname("d")
    private, _ = new_key()
    node = make_node(lab, ns, "node.toml",
                     f"[[interface]]\nname = '{ifname}'\nprivate_key = '{private}'\n"
                     "address = '10.70.0.1/24'\n")  # fmt: skip
    status, out = node.cli("up", "--daemon", str(node.config), quiet=True)
    assert status == 0, out
    pid = None
    try:
        status_reply = node.status()
        assert status_reply is not None
        pid = status_reply["pid"]
        # up means up: the address is there the moment the command returns
        assert b"10.70.0.1/24" in ns.run("ip", "-br", "addr", "show", "dev", ifname).stdout
        status, out = node.cli("up", "--daemon", str(node.config), check=False, quiet=True)
        assert status == 1 and "already running" in out, out
        status, out = node.cli("down")
        assert status == 0, out
        wait_for(lambda: exited(pid), 10, "the detached node to exit")
    finally:  # the detached node is no child of ours: the lab would not stop it
        if pid is None:
            node.cli("down", check=False)
        elif not exited(pid):
            os.kill(pid, signal.SIGKILL)
    assert links(ns) == ["lo"]
    assert not (node.run_dir / "control.sock").exists()
    status, out = node.cli("down", check=False)
    assert status == 1 and "no node is running" in out, out
    # a start-up failure is reported once, by the command that was asked
    node.config.write_text(node.config.read_text() + "colour = 'blue'\n")
    status, out = node.cli("up", "--daemon", str(node.config), check=False, quiet=True)
    if status == 0:
        node.cli("down", check=False)
    assert status == 1 and out.count("unknown key 'colour'") == 1, out
