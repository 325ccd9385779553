"""Unit tests of `meshnode up`'s configuration: the TOML and wg-quick parsers
(meshnode.config) and the route planner (meshnode.node.routes).

Fast and unprivileged: files go to tmp_path, endpoints are numeric (no name
resolution), and the planner is given a fake "is this routing table in use".
Expected line numbers are found in the test's own text (line_of), never
written down as numbers, so the tests say which line they mean.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshnode.config import ConfigError, Gateway, InterfaceConfig, NodeConfig, load_config
from meshnode.interface import Offloads
from meshnode.log import ERROR, VERBOSE
from meshnode.node.routes import RoutePlan, allowed_networks, plan_routes
from meshnode.wgtool.model import DeviceUpdate, PeerUpdate
from meshnode.wgtool.values import parse_allowed_ips
from meshnode.wireguard.keys import (
    generate_preshared_key,
    generate_private_key,
    public_key,
    to_base64,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = REPO / "config.example.toml"

# ---------------------------------------------------------------- helpers


@dataclass(frozen=True)
class KeyPair:
    private: bytes
    public: bytes

    @property
    def private_b64(self) -> str:
        return to_base64(self.private)

    @property
    def public_b64(self) -> str:
        return to_base64(self.public)


def keypair() -> KeyPair:
    private = generate_private_key()
    return KeyPair(private, public_key(private))


SERVER, CLIENT, ALICE, BOB, CAROL, DAVE = (keypair() for _ in range(6))
PSK = generate_preshared_key()
PSK_FROM_FILE = generate_preshared_key()
NONEXISTENT_KEY_FILE = "/nonexistent/meshnode-test/wg0.key"
NOT_A_KEY = "not-a-wireguard-key"


def write(directory: Path, name: str, content: str | bytes) -> str:
    path = directory / name
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    return str(path)


def load(directory: Path, content: str | bytes, name: str = "meshnode.toml") -> NodeConfig:
    return load_config(write(directory, name, content))


def load_error(directory: Path, content: str | bytes, name: str = "meshnode.toml") -> ConfigError:
    path = write(directory, name, content)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    error = caught.value
    assert error.path == path
    where = path if error.line is None else f"{path}:{error.line}"
    assert str(error) == f"{where}: {error.message}"
    return error


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """The number (from 1) of the occurrence-th line of text that contains needle."""
    found = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(found) >= occurrence, f"{needle!r} is not {occurrence} times in the text"
    return found[occurrence - 1]


def interface_toml(name: str | None, *lines: str, private_key: str | None = None) -> str:
    """An [[interface]] table: its name, an inline private key (SERVER's unless
    given; "" for none), then lines."""
    head = ["[[interface]]"]
    if name is not None:
        head.append(f'name = "{name}"')
    key = SERVER.private_b64 if private_key is None else private_key
    if key:
        head.append(f'private_key = "{key}"')
    return "\n".join([*head, *lines]) + "\n\n"


def peer_toml(*lines: str, key: str | None = None) -> str:
    """An [[interface.peer]] table: a public key (ALICE's unless given; "" for none), then lines."""
    key = ALICE.public_b64 if key is None else key
    head = ["[[interface.peer]]"] + ([f'public_key = "{key}"'] if key else [])
    return "\n".join([*head, *lines]) + "\n\n"


def ips(peer: PeerUpdate) -> list[str]:
    return [str(allowed) for allowed in peer.allowed_ips]


def endpoint_text(peer: PeerUpdate) -> str | None:
    return None if peer.endpoint is None else peer.endpoint.text()


def networks(*texts: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(text) for text in texts]


class TableProbe:
    """A fake table_in_use: the given tables are in use; remembers what it was asked."""

    def __init__(self, used: set[int]) -> None:
        self.used = used
        self.asked: list[int] = []

    def __call__(self, table: int) -> bool:
        self.asked.append(table)
        return table in self.used


def routed_interface(
    *peer_allowed_ips: str,
    table: str = "auto",
    addresses: tuple[str, ...] = (),
    fwmark: int | None = None,
) -> InterfaceConfig:
    """An interface with one peer per argument, each a comma list of allowed IPs."""
    peers = [
        PeerUpdate(public_key=keypair().public, allowed_ips=parse_allowed_ips(allowed.encode()))
        for allowed in peer_allowed_ips
    ]
    return InterfaceConfig(
        name="wg0",
        wg=DeviceUpdate(fwmark=fwmark, replace_peers=True, peers=peers),
        addresses=[ipaddress.ip_interface(address) for address in addresses],
        table=table,
    )


# ------------------------------------------------------ TOML: a full file


@dataclass
class FullToml:
    config: NodeConfig
    text: str
    key_file_key: bytes


@pytest.fixture
def full_toml(tmp_path: Path) -> FullToml:
    wg1_key = generate_private_key()
    key_file = write(tmp_path, "wg1.key", to_base64(wg1_key) + "\n")
    psk_file = write(tmp_path, "bob.psk", to_base64(PSK_FROM_FILE) + "\n")
    text = f"""\
[node]
state_dir = "{tmp_path / "state"}"
log_level = "verbose"

[[interface]]
name = "wg0"
private_key = "{SERVER.private_b64}"
listen_port = 51820
fwmark = 0x1234
address = ["10.0.0.1/24", "fd00::1/64"]
mtu = 1400
dns = "10.0.0.53, fd00::53"
table = "off"
post_up = "iptables -A FORWARD -i wg0 -j ACCEPT; ip6tables -A FORWARD -i wg0 -j ACCEPT"
post_down = [
    "iptables -D FORWARD -i wg0 -j ACCEPT",
    "ip6tables -D FORWARD -i wg0 -j ACCEPT",
]
offloads = "none"

[interface.gateway]
out_interface = "eth0"

[[interface.peer]]
public_key = "{ALICE.public_b64}"
preshared_key = "{to_base64(PSK)}"
endpoint = "127.0.0.1:51820"
allowed_ips = ["10.0.0.2/32", "fd00::2/128"]
persistent_keepalive = 25

[[interface.peer]]
public_key = "{BOB.public_b64}"
preshared_key_file = "{psk_file}"
allowed_ips = "10.0.0.3/32, 192.168.50.0/24"

[[interface]]
name = "wg1"
private_key_file = "{key_file}"
listen_port = 51821
address = "10.1.0.1/24"
table = 1234
pre_up = "echo pre-up"
pre_down = ["echo one", "echo two"]

[[interface.peer]]
public_key = "{CAROL.public_b64}"
endpoint = "127.0.0.1:51821"
allowed_ips = ["0.0.0.0/0", "::/0"]
persistent_keepalive = "off"
"""
    path = write(tmp_path, "meshnode.toml", text)
    return FullToml(load_config(path), text, wg1_key)


def test_toml_node_section(full_toml: FullToml, tmp_path: Path) -> None:
    assert full_toml.config.log_level == VERBOSE
    assert full_toml.config.state_dir == str(tmp_path / "state")
    assert full_toml.config.path == str(tmp_path / "meshnode.toml")


def test_toml_interfaces_in_file_order_located_at_their_headers(full_toml: FullToml) -> None:
    wg0, wg1 = full_toml.config.interfaces
    assert (wg0.name, wg1.name) == ("wg0", "wg1")
    assert wg0.line == line_of(full_toml.text, "[[interface]]", 1)
    assert wg1.line == line_of(full_toml.text, "[[interface]]", 2)
    assert wg0.path == wg1.path == full_toml.config.path


def test_toml_inline_private_key(full_toml: FullToml) -> None:
    assert full_toml.config.interfaces[0].wg.private_key == SERVER.private


def test_toml_private_key_file(full_toml: FullToml) -> None:
    assert full_toml.config.interfaces[1].wg.private_key == full_toml.key_file_key


def test_toml_device_settings_replace_everything(full_toml: FullToml) -> None:
    wg0, wg1 = (interface.wg for interface in full_toml.config.interfaces)
    assert (wg0.listen_port, wg0.fwmark, wg0.replace_peers) == (51820, 0x1234, True)
    assert (wg1.listen_port, wg1.fwmark, wg1.replace_peers) == (51821, None, True)
    assert [peer.public_key for peer in wg0.peers] == [ALICE.public, BOB.public]
    assert [peer.public_key for peer in wg1.peers] == [CAROL.public]


def test_toml_addresses_v4_and_v6(full_toml: FullToml) -> None:
    wg0, wg1 = full_toml.config.interfaces
    assert wg0.addresses == [
        ipaddress.ip_interface("10.0.0.1/24"),
        ipaddress.ip_interface("fd00::1/64"),
    ]
    assert wg1.addresses == [ipaddress.ip_interface("10.1.0.1/24")]


def test_toml_mtu_and_dns_comma_string(full_toml: FullToml) -> None:
    wg0, wg1 = full_toml.config.interfaces
    assert (wg0.mtu, wg0.dns) == (1400, ["10.0.0.53", "fd00::53"])
    assert (wg1.mtu, wg1.dns) == (None, [])


def test_toml_table_off_and_number(full_toml: FullToml) -> None:
    assert [interface.table for interface in full_toml.config.interfaces] == ["off", "1234"]


def test_toml_hooks_as_string_and_list(full_toml: FullToml) -> None:
    wg0, wg1 = full_toml.config.interfaces
    assert wg0.post_up == [
        "iptables -A FORWARD -i wg0 -j ACCEPT; ip6tables -A FORWARD -i wg0 -j ACCEPT"
    ]
    assert wg0.post_down == [
        "iptables -D FORWARD -i wg0 -j ACCEPT",
        "ip6tables -D FORWARD -i wg0 -j ACCEPT",
    ]
    assert (wg0.pre_up, wg0.pre_down) == ([], [])
    assert (wg1.pre_up, wg1.pre_down) == (["echo pre-up"], ["echo one", "echo two"])
    assert (wg1.post_up, wg1.post_down) == ([], [])


def test_toml_gateway_and_offloads(full_toml: FullToml) -> None:
    wg0, wg1 = full_toml.config.interfaces
    assert wg0.gateway == Gateway(out_interface="eth0")
    assert wg0.offloads == Offloads(gso=False, gro=False, tun_vnet=False)
    assert wg1.gateway is None
    assert wg1.offloads == Offloads()


def test_toml_peer_with_inline_preshared_key_and_endpoint(full_toml: FullToml) -> None:
    alice = full_toml.config.interfaces[0].wg.peers[0]
    assert alice.preshared_key == PSK
    assert alice.endpoint is not None
    assert alice.endpoint.family == socket.AF_INET
    assert endpoint_text(alice) == "127.0.0.1:51820"
    assert ips(alice) == ["10.0.0.2/32", "fd00::2/128"]
    assert alice.persistent_keepalive == 25
    assert alice.replace_allowed_ips and not alice.remove


def test_toml_peer_with_preshared_key_file_and_comma_allowed_ips(full_toml: FullToml) -> None:
    bob = full_toml.config.interfaces[0].wg.peers[1]
    assert bob.preshared_key == PSK_FROM_FILE
    assert bob.endpoint is None
    assert ips(bob) == ["10.0.0.3/32", "192.168.50.0/24"]
    assert bob.persistent_keepalive == 0


def test_toml_peer_of_second_interface(full_toml: FullToml) -> None:
    carol = full_toml.config.interfaces[1].wg.peers[0]
    assert carol.preshared_key is None
    assert endpoint_text(carol) == "127.0.0.1:51821"
    assert ips(carol) == ["0.0.0.0/0", "::/0"]
    assert carol.persistent_keepalive == 0  # "off"


def test_toml_minimal_interface_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, interface_toml("wg0"))
    assert (config.log_level, config.state_dir) == (ERROR, "/var/lib/meshnode")
    (wg0,) = config.interfaces
    assert (wg0.wg.listen_port, wg0.wg.fwmark, wg0.wg.peers) == (None, None, [])
    assert (wg0.addresses, wg0.mtu, wg0.dns, wg0.dns_search) == ([], None, [], [])
    assert (wg0.table, wg0.gateway, wg0.offloads, wg0.save_config) == (
        "auto",
        None,
        Offloads(),
        False,
    )


@pytest.mark.parametrize(
    ("line", "table"),
    [("", "auto"), ('table = "auto"', "auto"), ('table = "off"', "off"), ("table = 1234", "1234")],
)
def test_toml_table_values(tmp_path: Path, line: str, table: str) -> None:
    config = load(tmp_path, interface_toml("wg0", line))
    assert config.interfaces[0].table == table


def test_toml_keepalive_and_fwmark_accept_off(tmp_path: Path) -> None:
    text = interface_toml("wg0", 'fwmark = "off"') + peer_toml('persistent_keepalive = "off"')
    wg0 = load(tmp_path, text).interfaces[0]
    assert wg0.wg.fwmark == 0
    assert wg0.wg.peers[0].persistent_keepalive == 0


def test_toml_dns_search_domains_go_to_dns_search(tmp_path: Path) -> None:
    text = interface_toml("wg0", 'dns = ["10.0.0.53", "example.com"]')
    wg0 = load(tmp_path, text).interfaces[0]
    assert (wg0.dns, wg0.dns_search) == (["10.0.0.53"], ["example.com"])


# ------------------------------------------------------- TOML: errors


# (id, text, the text of the line the error is on (None: no line), a part of the message)
TOML_ERRORS: list[tuple[str, str, str | None, str]] = [
    (
        "unknown interface key",
        interface_toml("wg0", "listen_port = 1", 'colour = "blue"'),
        "colour",
        "unknown key 'colour' in [[interface]]",
    ),
    (
        "unknown peer key",
        interface_toml("wg0") + peer_toml('endpont = "127.0.0.1:1"'),
        "endpont",
        "unknown key 'endpont' in [[interface.peer]]",
    ),
    (
        "unknown gateway key",
        interface_toml("wg0", "[interface.gateway]", 'out = "eth0"'),
        "out =",
        "unknown key 'out' in [interface.gateway]",
    ),
    (
        "unknown top-level table",
        '[nodes]\nlog_level = "error"\n',
        "[nodes]",
        "unknown key 'nodes' in the file",
    ),
    (
        "bad private key",
        interface_toml("wg0", "mtu = 1420", private_key=NOT_A_KEY),
        NOT_A_KEY,
        "private_key: Key is not the correct length or format: `(hidden)'",
    ),
    (
        "bad public key",
        interface_toml("wg0") + peer_toml('endpoint = "127.0.0.1:1"', key=NOT_A_KEY),
        NOT_A_KEY,
        "public_key: Key is not the correct length or format: `(hidden)'",
    ),
    (
        "bad preshared key",
        interface_toml("wg0") + peer_toml(f'preshared_key = "{NOT_A_KEY}"'),
        NOT_A_KEY,
        "preshared_key: Key is not the correct length or format",
    ),
    (
        "prefix too long in allowed_ips",
        interface_toml("wg0") + peer_toml('allowed_ips = ["10.0.0.2/32", "10.0.0.0/33"]'),
        "allowed_ips",
        "allowed_ips: AllowedIP is not in the correct format: `10.0.0.0/33'",
    ),
    (
        "bad address in allowed_ips",
        interface_toml("wg0") + peer_toml('allowed_ips = "10.0.0.2/32, 10.0.0.300/32"'),
        "allowed_ips",
        "allowed_ips: Unable to parse IP address: `10.0.0.300'",
    ),
    (
        "bad address",
        interface_toml("wg0", 'address = ["10.0.0.1/24", "fd00::1/129"]'),
        "address",
        "address 'fd00::1/129' is not an IP address/prefix",
    ),
    (
        "missing name",
        interface_toml(None, "listen_port = 51820"),
        "[[interface]]",
        "[[interface]] needs name",
    ),
    (
        "invalid interface name",
        interface_toml("way-too-long-interface-name"),
        "way-too-long",
        "interface name 'way-too-long-interface-name' is not 1-15",
    ),
    (
        "both private_key and private_key_file",
        interface_toml("wg0", f'private_key_file = "{NONEXISTENT_KEY_FILE}"'),
        "[[interface]]",
        "[[interface]] needs one of private_key and private_key_file",
    ),
    (
        "no private key",
        interface_toml("wg0", "listen_port = 51820", private_key=""),
        "[[interface]]",
        "[[interface]] needs one of private_key and private_key_file",
    ),
    (
        "nonexistent private_key_file",
        interface_toml("wg0", f'private_key_file = "{NONEXISTENT_KEY_FILE}"', private_key=""),
        "private_key_file",
        "private_key_file: fopen: No such file or directory",
    ),
    (
        "missing public key",
        interface_toml("wg0") + peer_toml('allowed_ips = "10.0.0.2/32"', key=""),
        "[[interface.peer]]",
        "[[interface.peer]] needs public_key",
    ),
    (
        "missing out_interface",
        interface_toml("wg0", "[interface.gateway]"),
        "[interface.gateway]",
        "[interface.gateway] needs out_interface",
    ),
    (
        "bad endpoint",
        interface_toml("wg0") + peer_toml('endpoint = "127.0.0.1"'),
        "endpoint",
        "endpoint: Unable to find port of endpoint: `127.0.0.1'",
    ),
    (
        "bad log_level",
        '[node]\nstate_dir = "/tmp"\nlog_level = "loud"\n',
        "log_level",
        "log_level must be one of debug, error, silent, verbose",
    ),
    (
        "listen_port not a number",
        interface_toml("wg0", 'listen_port = "x"'),
        "listen_port",
        "listen_port must be an integer from 0 to 65535",
    ),
    (
        "listen_port out of range",
        interface_toml("wg0", "listen_port = 65536"),
        "listen_port",
        "listen_port must be an integer from 0 to 65535",
    ),
    (
        "mtu too small",
        interface_toml("wg0", "mtu = 100"),
        "mtu",
        "mtu must be an integer from 576 to 65535",
    ),
    (
        "boolean keepalive",
        interface_toml("wg0") + peer_toml("persistent_keepalive = true"),
        "persistent_keepalive",
        'persistent_keepalive must be an integer from 0 to 65535 or "off"',
    ),
    (
        "table zero",
        interface_toml("wg0", "table = 0"),
        "table",
        'table must be "auto", "off", "main" or a routing table number',
    ),
    (
        "table by an unknown name",
        interface_toml("wg0", 'table = "vpn"'),
        "table",
        'table must be "auto", "off", "main" or a routing table number',
    ),
    (
        "unknown offload",
        interface_toml("wg0", 'offloads = "gso,fast"'),
        "offloads",
        "unknown offload 'fast'",
    ),
    (
        "hooks not strings",
        interface_toml("wg0", "post_up = [1, 2]"),
        "post_up",
        "post_up must be a string or a list of strings",
    ),
    (
        "address not a string",
        interface_toml("wg0", "address = 10"),
        "address",
        "address must be a string or a list of strings",
    ),
    (
        "peer not an array of tables",
        interface_toml("wg0", 'peer = "alice"'),
        "peer =",
        "peer must be an array of tables",
    ),
]


@pytest.mark.parametrize(
    ("text", "line_text", "message"),
    [case[1:] for case in TOML_ERRORS],
    ids=[case[0] for case in TOML_ERRORS],
)
def test_toml_error_located(tmp_path: Path, text: str, line_text: str, message: str) -> None:
    error = load_error(tmp_path, text)
    assert error.line == line_of(text, line_text)
    assert message in error.message


def test_toml_duplicate_interface_name_at_second_header(tmp_path: Path) -> None:
    text = (
        interface_toml("wg0", "listen_port = 51820")
        + peer_toml()
        + interface_toml("wg0", "listen_port = 51821")
    )
    error = load_error(tmp_path, text)
    assert error.line == line_of(text, "[[interface]]", 2)
    first = line_of(text, "[[interface]]", 1)
    assert error.message == f"interface wg0 is defined twice (first at line {first})"


def test_toml_duplicate_listen_port_at_second_header(tmp_path: Path) -> None:
    text = (
        interface_toml("wg0", "listen_port = 51820")
        + interface_toml("wg1", "listen_port = 51821")
        + interface_toml("wg2", "listen_port = 51820")
    )
    error = load_error(tmp_path, text)
    assert error.line == line_of(text, "[[interface]]", 3)
    assert error.message == "listen_port 51820 of wg2 is also wg0's"


def test_toml_zero_listen_ports_may_repeat(tmp_path: Path) -> None:
    text = interface_toml("wg0", "listen_port = 0") + interface_toml("wg1", "listen_port = 0")
    assert [i.wg.listen_port for i in load(tmp_path, text).interfaces] == [0, 0]


def test_toml_syntax_error_has_tomllib_line(tmp_path: Path) -> None:
    text = interface_toml("wg0", "listen_port = = 51820", "mtu = 1420")
    error = load_error(tmp_path, text)
    assert error.line == line_of(text, "listen_port")
    assert error.message == "Invalid value"  # tomllib's words, its "(at line ...)" taken off


def test_toml_not_utf8(tmp_path: Path) -> None:
    raw = interface_toml("wg0").encode() + b'dns = "caf\xe9.example"\n'
    error = load_error(tmp_path, raw)
    assert (error.line, error.message) == (None, "not UTF-8 text")


def test_missing_file_cannot_be_read(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.toml")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert (caught.value.path, caught.value.line) == (path, None)
    assert caught.value.message == "cannot read: No such file or directory"


# Two interfaces with two peers each, every peer with the same keys, a gateway
# table between the second interface's peers: an error in any one peer must
# get that peer's line, not the same key's line in another peer.
PEER_KEYS = [[ALICE, BOB], [CAROL, DAVE]]  # [interface][peer]
PEERS = [(0, 0), (0, 1), (1, 0), (1, 1)]


def two_interfaces_two_peers(bad: tuple[int, int], bad_line: str) -> str:
    """The text, with bad_line added to peer bad = (interface, peer)."""
    text = ""
    for i, (name, port) in enumerate([("wg0", 51820), ("wg1", 51821)]):
        text += interface_toml(name, f"listen_port = {port}")
        for j, key in enumerate(PEER_KEYS[i]):
            lines = [
                'endpoint = "127.0.0.1:51820"',
                f'allowed_ips = ["10.{i}.{j}.0/24"]',
                "persistent_keepalive = 25",
            ]
            if (i, j) == bad:
                lines.insert(1, bad_line)
            text += peer_toml(*lines, key=key.public_b64)
            if i == 1 and j == 0:
                text += '[interface.gateway]\nout_interface = "eth0"\n\n'
    return text


def test_two_interfaces_two_peers_parse(tmp_path: Path) -> None:
    text = two_interfaces_two_peers((-1, -1), "")
    wg0, wg1 = load(tmp_path, text).interfaces
    assert [ips(peer) for peer in wg0.wg.peers] == [["10.0.0.0/24"], ["10.0.1.0/24"]]
    assert [ips(peer) for peer in wg1.wg.peers] == [["10.1.0.0/24"], ["10.1.1.0/24"]]
    assert [peer.public_key for peer in wg1.wg.peers] == [CAROL.public, DAVE.public]
    assert wg1.gateway == Gateway("eth0")


@pytest.mark.parametrize("bad", PEERS, ids=[f"interface{i}-peer{j}" for i, j in PEERS])
def test_toml_unknown_peer_key_located_in_its_peer(tmp_path: Path, bad: tuple[int, int]) -> None:
    text = two_interfaces_two_peers(bad, "keep_alive = 25")
    error = load_error(tmp_path, text)
    assert error.line == line_of(text, "keep_alive = 25")
    assert error.message == "unknown key 'keep_alive' in [[interface.peer]]"


@pytest.mark.parametrize("bad", PEERS, ids=[f"interface{i}-peer{j}" for i, j in PEERS])
def test_toml_bad_preshared_key_located_in_its_peer(tmp_path: Path, bad: tuple[int, int]) -> None:
    text = two_interfaces_two_peers(bad, f'preshared_key = "{NOT_A_KEY}"')
    error = load_error(tmp_path, text)
    assert error.line == line_of(text, NOT_A_KEY)
    assert error.message.startswith("preshared_key: Key is not the correct length or format")


@pytest.mark.parametrize("bad", PEERS, ids=[f"interface{i}-peer{j}" for i, j in PEERS])
def test_toml_bad_allowed_ips_located_in_its_peer(tmp_path: Path, bad: tuple[int, int]) -> None:
    # every peer has an allowed_ips line: only the index can tell them apart
    text = two_interfaces_two_peers((-1, -1), "")
    i, j = bad
    good = f'allowed_ips = ["10.{i}.{j}.0/24"]'
    text = text.replace(good, 'allowed_ips = ["10.9.9.9/99"]')
    error = load_error(tmp_path, text)
    assert error.line == line_of(text, "10.9.9.9/99")
    assert error.message == "allowed_ips: AllowedIP is not in the correct format: `10.9.9.9/99'"


@pytest.mark.parametrize("bad", PEERS, ids=[f"interface{i}-peer{j}" for i, j in PEERS])
def test_toml_missing_public_key_located_at_its_peer_header(
    tmp_path: Path, bad: tuple[int, int]
) -> None:
    text = two_interfaces_two_peers((-1, -1), "")
    i, j = bad
    key = PEER_KEYS[i][j]
    text = text.replace(f'public_key = "{key.public_b64}"\n', "")
    error = load_error(tmp_path, text)
    assert error.line == line_of(text, "[[interface.peer]]", 2 * i + j + 1)
    assert error.message == "[[interface.peer]] needs public_key"


def test_toml_gateway_of_second_interface_located(tmp_path: Path) -> None:
    text = two_interfaces_two_peers((-1, -1), "").replace("out_interface", "out_iface")
    error = load_error(tmp_path, text)
    assert error.line == line_of(text, "out_iface")
    assert error.message == "unknown key 'out_iface' in [interface.gateway]"


def test_toml_interface_key_after_node_table_located(tmp_path: Path) -> None:
    # an array of tables may go on after another table: [[interface]], [node], [[interface]]
    text = (
        interface_toml("wg0", "listen_port = 51820")
        + '[node]\nlog_level = "error"\n\n'
        + interface_toml("wg1", "mtu = 99")
    )
    error = load_error(tmp_path, text)
    assert error.line == line_of(text, "mtu = 99")
    assert error.message == "mtu must be an integer from 576 to 65535"


# --------------------------------------------------------- wg-quick files

# The two examples of the WireGuard guide (a server and its road-warrior client).
POST_UP = (
    "iptables -A FORWARD -i wg0 -j ACCEPT; iptables -t nat -A POSTROUTING -o eth0 -j MASQUERADE; "
    "ip6tables -A FORWARD -i wg0 -j ACCEPT; ip6tables -t nat -A POSTROUTING -o eth0 -j MASQUERADE"
)
POST_DOWN = (
    "iptables -D FORWARD -i wg0 -j ACCEPT; iptables -t nat -D POSTROUTING -o eth0 -j MASQUERADE; "
    "ip6tables -D FORWARD -i wg0 -j ACCEPT; ip6tables -t nat -D POSTROUTING -o eth0 -j MASQUERADE"
)
SERVER_CONF = f"""\
[Interface]
Address = 10.66.66.1/24,fd42:42:42::1/64
PostUp = {POST_UP}
PostDown = {POST_DOWN}
ListenPort = 53
PrivateKey = {SERVER.private_b64}

[Peer]
PublicKey = {CLIENT.public_b64}
AllowedIPs = 10.66.66.2/32, fd42:42:42::2/128
"""
CLIENT_CONF = f"""\
[Interface]
PrivateKey = {CLIENT.private_b64}
Address = 10.66.66.2/24,fd42:42:42::2/64
DNS = 176.103.130.130,176.103.130.131

[Peer]
PublicKey = {SERVER.public_b64}
Endpoint = 127.0.0.1:53
AllowedIPs = 0.0.0.0/0,::/0
"""


def test_wgquick_server_interface(tmp_path: Path) -> None:
    config = load(tmp_path, SERVER_CONF, "wg0.conf")
    assert config.path == str(tmp_path / "wg0.conf")
    (wg0,) = config.interfaces
    assert (wg0.name, wg0.line, wg0.path) == ("wg0", 1, config.path)
    assert wg0.addresses == [
        ipaddress.ip_interface("10.66.66.1/24"),
        ipaddress.ip_interface("fd42:42:42::1/64"),
    ]
    assert (wg0.dns, wg0.dns_search, wg0.mtu, wg0.table) == ([], [], None, "auto")
    assert (wg0.wg.private_key, wg0.wg.listen_port) == (SERVER.private, 53)


def test_wgquick_hook_line_is_one_command(tmp_path: Path) -> None:
    wg0 = load(tmp_path, SERVER_CONF, "wg0.conf").interfaces[0]
    assert (wg0.post_up, wg0.post_down) == ([POST_UP], [POST_DOWN])
    assert (wg0.pre_up, wg0.pre_down) == ([], [])


def test_wgquick_server_peer(tmp_path: Path) -> None:
    wg = load(tmp_path, SERVER_CONF, "wg0.conf").interfaces[0].wg
    assert wg.replace_peers
    (client,) = wg.peers
    assert client.public_key == CLIENT.public
    assert ips(client) == ["10.66.66.2/32", "fd42:42:42::2/128"]
    assert (client.endpoint, client.preshared_key) == (None, None)


def test_wgquick_client(tmp_path: Path) -> None:
    (client,) = load(tmp_path, CLIENT_CONF, "wg-client.conf").interfaces
    assert client.name == "wg-client"
    assert client.addresses == [
        ipaddress.ip_interface("10.66.66.2/24"),
        ipaddress.ip_interface("fd42:42:42::2/64"),
    ]
    assert (client.dns, client.dns_search) == (["176.103.130.130", "176.103.130.131"], [])
    assert client.post_up == client.post_down == []
    # as `wg setconf`: what the file leaves out is none/0/off
    assert (client.wg.private_key, client.wg.listen_port, client.wg.fwmark) == (
        CLIENT.private,
        0,
        0,
    )
    (server,) = client.wg.peers
    assert server.public_key == SERVER.public
    assert endpoint_text(server) == "127.0.0.1:53"
    assert ips(server) == ["0.0.0.0/0", "::/0"]


def test_wgquick_several_hook_lines_add_up(tmp_path: Path) -> None:
    text = SERVER_CONF.replace(
        "ListenPort", "PreUp = echo one\nPreUp = echo two; echo three\nPreDown = true\nListenPort"
    )
    wg0 = load(tmp_path, text, "wg0.conf").interfaces[0]
    assert wg0.pre_up == ["echo one", "echo two; echo three"]
    assert wg0.pre_down == ["true"]
    assert wg0.post_up == [POST_UP]


def test_wgquick_mtu_table_saveconfig_and_dns_search(tmp_path: Path) -> None:
    text = CLIENT_CONF.replace(
        "DNS = 176.103.130.130,176.103.130.131",
        "DNS = 10.0.0.53, fd00::53, example.com, corp.example\n"
        "MTU = 1380\nTable = 1234\nSaveConfig = true",
    )
    wg0 = load(tmp_path, text, "wg0.conf").interfaces[0]
    assert wg0.dns == ["10.0.0.53", "fd00::53"]
    assert wg0.dns_search == ["example.com", "corp.example"]
    assert (wg0.mtu, wg0.table, wg0.save_config) == (1380, "1234", True)


@pytest.mark.parametrize("table", ["off", "auto"])
def test_wgquick_table_words(tmp_path: Path, table: str) -> None:
    text = CLIENT_CONF.replace("[Peer]", f"Table = {table}\n\n[Peer]")
    assert load(tmp_path, text, "wg0.conf").interfaces[0].table == table


def test_wgquick_keys_are_case_insensitive(tmp_path: Path) -> None:
    text = CLIENT_CONF.replace("Address", "address").replace("DNS", "dns")
    text = text.replace("[Interface]", "[interface]\nmtu = 1400\nsaveconfig = false")
    wg0 = load(tmp_path, text, "wg0.conf").interfaces[0]
    assert (wg0.mtu, wg0.save_config) == (1400, False)
    assert len(wg0.addresses) == 2
    assert wg0.dns == ["176.103.130.130", "176.103.130.131"]


def test_wgquick_saveconfig_is_case_insensitive_as_in_wg_quick(tmp_path: Path) -> None:
    text = CLIENT_CONF.replace("[Peer]", "SaveConfig = True\n\n[Peer]")
    assert load(tmp_path, text, "wg0.conf").interfaces[0].save_config is True


def test_wgquick_comments_and_crlf(tmp_path: Path) -> None:
    text = CLIENT_CONF.replace(
        "Address = 10.66.66.2/24,fd42:42:42::2/64",
        "# the tunnel's addresses\nAddress = 10.66.66.2/24 # v4\nAddress = fd42:42:42::2/64",
    ).replace("\n", "\r\n")
    wg0 = load(tmp_path, text, "wg0.conf").interfaces[0]
    assert wg0.addresses == [
        ipaddress.ip_interface("10.66.66.2/24"),
        ipaddress.ip_interface("fd42:42:42::2/64"),
    ]
    assert ips(wg0.wg.peers[0]) == ["0.0.0.0/0", "::/0"]


def test_wgquick_bad_address_located(tmp_path: Path) -> None:
    text = SERVER_CONF.replace("fd42:42:42::1/64", "fd42:42:42::1/129")
    error = load_error(tmp_path, text, "wg0.conf")
    assert error.line == line_of(text, "Address")
    assert error.message == "Address 'fd42:42:42::1/129' is not an IP address/prefix"


def test_wgquick_unknown_key_located_after_removed_quick_keys(tmp_path: Path) -> None:
    # Address, PostUp and PostDown are taken out before wg's parser runs:
    # its line numbers must still be the file's
    text = SERVER_CONF.replace("ListenPort = 53", "ListenPort = 53\nSpeed = fast")
    error = load_error(tmp_path, text, "wg0.conf")
    assert error.line == line_of(text, "Speed")
    assert error.message == "Line unrecognized: `Speed=fast'"


def test_wgquick_quick_key_in_peer_section_is_unrecognized(tmp_path: Path) -> None:
    text = CLIENT_CONF + "MTU = 1400\n"
    error = load_error(tmp_path, text, "wg0.conf")
    assert error.line == line_of(text, "MTU")
    assert error.message == "Line unrecognized: `MTU=1400'"


def test_wgquick_bad_private_key_located(tmp_path: Path) -> None:
    text = SERVER_CONF.replace(SERVER.private_b64, NOT_A_KEY)
    error = load_error(tmp_path, text, "wg0.conf")
    assert error.line == line_of(text, "PrivateKey")
    # keys are never printed, not even one that is not quite right
    assert error.message == "Key is not the correct length or format: `(hidden)'"
    assert NOT_A_KEY not in str(error)


def test_wgquick_bad_allowed_ips_located(tmp_path: Path) -> None:
    text = SERVER_CONF.replace("10.66.66.2/32", "10.66.66.2/40")
    error = load_error(tmp_path, text, "wg0.conf")
    assert error.line == line_of(text, "AllowedIPs")
    assert error.message == "AllowedIP is not in the correct format: `10.66.66.2/40'"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("MTU = 500", "MTU '500' is not a number from 576 to 65535"),
        ("MTU = big", "MTU 'big' is not a number from 576 to 65535"),
        ("Table = vpn", "Table 'vpn' is not auto, off, main or a routing table number"),
        ("SaveConfig = yes", "SaveConfig 'yes' is neither true nor false"),
    ],
)
def test_wgquick_bad_quick_value_located(tmp_path: Path, line: str, message: str) -> None:
    text = SERVER_CONF.replace("ListenPort = 53", f"ListenPort = 53\n{line}")
    error = load_error(tmp_path, text, "wg0.conf")
    assert error.line == line_of(text, line)
    assert error.message == message


def test_wgquick_peer_without_public_key(tmp_path: Path) -> None:
    text = SERVER_CONF.replace(f"PublicKey = {CLIENT.public_b64}\n", "")
    error = load_error(tmp_path, text, "wg0.conf")
    assert error.message == "A peer is missing a public key"


@pytest.mark.parametrize("name", ["way-too-long-interface-name.conf", "wg 0.conf", ".conf"])
def test_wgquick_file_name_must_be_an_interface_name(tmp_path: Path, name: str) -> None:
    error = load_error(tmp_path, CLIENT_CONF, name)
    assert error.line is None
    assert error.message.startswith("the file's name gives the interface name: interface name")


def test_wgquick_longest_interface_name(tmp_path: Path) -> None:
    config = load(tmp_path, CLIENT_CONF, "a23456789012345.conf")
    assert config.interfaces[0].name == "a23456789012345"


def test_toml_suffix_other_than_conf_is_toml(tmp_path: Path) -> None:
    error = load_error(tmp_path, CLIENT_CONF, "wg0.ini")  # wg-quick syntax read as TOML
    assert error.line == line_of(CLIENT_CONF, "PrivateKey")


# ----------------------------------------------------- config.example.toml


def test_example_config_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The example loads once its *_file paths (say /etc/meshnode/wg0.key) are
    replaced by key files in tmp_path; each key read is the one written."""
    text = EXAMPLE_CONFIG.read_text()
    # a host name instead of an address would be resolved: fail at once, never hang
    monkeypatch.setenv("WG_ENDPOINT_RESOLUTION_RETRIES", "0")
    written: dict[str, list[bytes]] = {}

    def key_file(match: re.Match[str]) -> str:
        key = generate_private_key()
        path = write(tmp_path, f"example{sum(map(len, written.values()))}.key", to_base64(key))
        written.setdefault(match.group(2), []).append(key)
        return f'{match.group(1)} = "{path}"'

    text = re.sub(r'^(\s*(\w+_file))\s*=\s*"[^"]*"', key_file, text, flags=re.MULTILINE)
    config = load(tmp_path, text, "config.toml")
    assert len(config.interfaces) == len(re.findall(r"^\s*\[\[interface\]\]", text, re.M))
    peers = [peer for interface in config.interfaces for peer in interface.wg.peers]
    assert len(peers) == len(re.findall(r"^\s*\[\[interface\.peer\]\]", text, re.M))
    private_keys = [interface.wg.private_key for interface in config.interfaces]
    assert all(key in private_keys for key in written.get("private_key_file", []))
    preshared_keys = [peer.preshared_key for peer in peers]
    assert all(key in preshared_keys for key in written.get("preshared_key_file", []))


# ------------------------------------------------------------ route plans


def test_routes_table_off_plans_nothing() -> None:
    probe = TableProbe({51820})
    config = routed_interface("10.0.0.2/32,0.0.0.0/0", "::/0", table="off")
    assert plan_routes(config, probe) == RoutePlan()
    assert probe.asked == []


def test_routes_table_number_takes_every_network() -> None:
    probe = TableProbe({51820})
    config = routed_interface(
        "10.0.0.0/24,0.0.0.0/0", "fd00::2/128,10.0.0.2/32", table="1234", addresses=("10.0.0.1/24",)
    )
    plan = plan_routes(config, probe)
    # in a table of its own choice, even the interface's own prefix and the defaults
    assert plan.routes == [
        (net, 1234) for net in networks("fd00::2/128", "10.0.0.2/32", "10.0.0.0/24", "0.0.0.0/0")
    ]
    assert plan.policy == (None, ())
    assert probe.asked == []


def test_routes_auto_most_specific_first_own_prefix_skipped_defaults_in_policy_table() -> None:
    probe = TableProbe({51820})
    config = routed_interface(
        "10.0.0.2/32,10.1.0.0/16,0.0.0.0/0",
        "192.168.1.0/24,::/0,fd00::2/128,2001:db8::/32",
        addresses=("10.0.0.1/24", "fd00::1/64"),
    )
    plan = plan_routes(config, probe)
    assert plan.routes == [
        (ipaddress.ip_network("2001:db8::/32"), None),
        (ipaddress.ip_network("192.168.1.0/24"), None),
        (ipaddress.ip_network("10.1.0.0/16"), None),
        (ipaddress.ip_network("0.0.0.0/0"), 51821),
        (ipaddress.ip_network("::/0"), 51821),
    ]
    assert plan.default_table == 51821  # the first free one from 51820
    assert plan.default_versions == (4, 6)
    assert probe.asked == [51820, 51821]


def test_routes_auto_own_prefix_is_per_family() -> None:
    # fd00::/64 is ours, 10.0.0.0/24 is not: only the v6 network is skipped
    config = routed_interface("fd00::5/128,10.0.0.5/32", addresses=("fd00::1/64",))
    plan = plan_routes(config, TableProbe(set()))
    assert plan.routes == [(ipaddress.ip_network("10.0.0.5/32"), None)]


def test_routes_auto_without_default_needs_no_policy_table() -> None:
    probe = TableProbe({51820})
    plan = plan_routes(routed_interface("10.2.0.0/16", "10.3.0.0/24"), probe)
    assert plan.routes == [(net, None) for net in networks("10.3.0.0/24", "10.2.0.0/16")]
    assert plan.policy == (None, ())
    assert probe.asked == []


def test_routes_auto_only_v6_default() -> None:
    plan = plan_routes(routed_interface("::/0"), TableProbe(set()))
    assert plan.routes == [(ipaddress.ip_network("::/0"), 51820)]
    assert plan.policy == (51820, (6,))


def test_routes_auto_uses_fwmark_as_policy_table() -> None:
    probe = TableProbe({51820})
    config = routed_interface("0.0.0.0/0,10.5.0.0/16", fwmark=0x1234)
    plan = plan_routes(config, probe)
    assert plan.routes == [
        (ipaddress.ip_network("10.5.0.0/16"), None),
        (ipaddress.ip_network("0.0.0.0/0"), 0x1234),
    ]
    assert plan.policy == (0x1234, (4,))
    assert probe.asked == []


def test_routes_auto_skips_every_used_table() -> None:
    probe = TableProbe({51820, 51821, 51822})
    plan = plan_routes(routed_interface("0.0.0.0/0"), probe)
    assert plan.default_table == 51823
    assert probe.asked == [51820, 51821, 51822, 51823]


def test_allowed_networks_lists_duplicates_once() -> None:
    config = routed_interface(
        "10.9.0.0/16,0.0.0.0/0", "10.9.0.0/16,10.9.5.5/16", "0.0.0.0/0,fd00::/64,fd00::1/64"
    )
    # host bits are masked as a daemon does, so 10.9.5.5/16 is 10.9.0.0/16 again
    assert allowed_networks(config) == networks("fd00::/64", "10.9.0.0/16", "0.0.0.0/0")


def test_allowed_networks_without_peers_is_empty() -> None:
    assert allowed_networks(routed_interface()) == []


def test_routes_from_a_wgquick_client_file(tmp_path: Path) -> None:
    client = load(tmp_path, CLIENT_CONF, "wg0.conf").interfaces[0]
    plan = plan_routes(client, TableProbe({51820}))
    assert plan.routes == [(net, 51821) for net in networks("0.0.0.0/0", "::/0")]
    assert plan.policy == (51821, (4, 6))


def test_routes_from_a_toml_table_number(full_toml: FullToml) -> None:
    wg1 = full_toml.config.interfaces[1]
    plan = plan_routes(wg1, TableProbe({51820}))
    assert plan.routes == [(net, 1234) for net in networks("0.0.0.0/0", "::/0")]
    assert plan_routes(full_toml.config.interfaces[0], TableProbe(set())) == RoutePlan()


def test_an_almost_right_private_key_is_not_printed(tmp_path: Path) -> None:
    almost = SERVER.private_b64[:-2] + "="
    error = load_error(tmp_path, SERVER_CONF.replace(SERVER.private_b64, almost), "wg0.conf")
    assert almost[:20] not in str(error)
    text = SERVER_CONF.replace("PrivateKey", "PrivateKeyy")
    error = load_error(tmp_path, text, "wg0.conf")
    assert error.message == "Line unrecognized: `PrivateKeyy=(hidden)'"
    assert SERVER.private_b64 not in str(error)


@pytest.mark.parametrize(("written", "meant"), [("main", "254"), ("Auto", "auto"), ("OFF", "off"),
                                                ("1234", "1234"), ("local", "255")])  # fmt: skip
def test_table_names_and_numbers_as_wg_quick_takes_them(tmp_path: Path, written: str,
                                                        meant: str) -> None:  # fmt: skip
    text = CLIENT_CONF.replace("[Peer]", f"Table = {written}\n\n[Peer]")
    assert load(tmp_path, text, "wg0.conf").interfaces[0].table == meant
    toml = interface_toml("wg0", f'table = "{written}"')
    assert load(tmp_path, toml).interfaces[0].table == meant


# ---------------------------------------------------------------- [[mesh]]


def test_toml_mesh_tables(tmp_path: Path) -> None:
    config = load(tmp_path, interface_toml("wg0", "listen_port = 51820") + """
[[mesh]]
name = "home"
interface = "mn-home2"
listen_port = 51900
persistent_keepalive = 15
endpoints = ["home.example.net:51900", "[2001:db8::1]:51900"]

[[mesh]]
name = "work"
""")
    home, work = config.meshes
    assert (home.name, home.interface, home.listen_port, home.persistent_keepalive) == (
        "home", "mn-home2", 51900, 15)
    assert home.endpoints == ["home.example.net:51900", "[2001:db8::1]:51900"]
    assert (work.interface, work.listen_port, work.endpoints) == (None, None, [])


@pytest.mark.parametrize(
    ("tables", "needle", "message"),
    [
        ('[[mesh]]\nname = "a"\n[[mesh]]\nname = "a"\n', '[[mesh]]\nname = "a"\n[[mesh]]',
         "mesh a is configured twice"),
        ('[[mesh]]\nname = "a"\ninterface = "wg0"\n', '[[mesh]]', "also a static interface"),
        ('[[mesh]]\nname = "a"\nlisten_port = 51820\n', '[[mesh]]', "is also wg0's"),
        ('[[mesh]]\nname = "a"\nendpoints = ["nowhere"]\n', 'endpoints', "not HOST:PORT"),
        ('[[mesh]]\nname = "a"\nkeepalive = 3\n', 'keepalive', "unknown key 'keepalive'"),
    ],
    ids=["twice", "interface-clash", "port-clash", "bad-endpoint", "unknown-key"],
)  # fmt: skip
def test_toml_mesh_errors_name_file_and_line(tmp_path: Path, tables: str, needle: str,
                                             message: str) -> None:  # fmt: skip
    text = interface_toml("wg0", "listen_port = 51820") + "\n" + tables
    error = load_error(tmp_path, text)
    assert message in error.message
    expected_line = line_of(text, needle.splitlines()[-1], 2 if "twice" in message else 1)
    assert error.line == expected_line, (error.line, expected_line)
