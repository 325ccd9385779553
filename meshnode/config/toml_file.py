"""meshnode's TOML configuration (see config.example.toml for every key).

tomllib reads the file but forgets where each value stood, so a small index
of the file's own lines (table headers and `key =` lines) gives every error
its line: a bad key, a bad CIDR, an unknown setting.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from typing import Any

from ..interface import Offloads
from ..log import LEVELS
from ..wgtool.errors import WgError
from ..wgtool.model import DeviceUpdate, PeerUpdate
from ..wgtool.values import parse_allowed_ips, parse_endpoint, parse_key, read_key_file
from .model import (
    DEFAULT_STATE_DIR,
    ConfigError,
    Gateway,
    InterfaceConfig,
    MeshConfig,
    NodeConfig,
)
from .validate import (
    MIN_MTU,
    check_interface_name,
    check_node,
    parse_host_port,
    parse_table,
    split_dns,
    without_secrets,
)

Where = tuple[str | int, ...]

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\s]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")

_NODE_KEYS = {"state_dir", "log_level"}
_INTERFACE_KEYS = {
    "name",
    "private_key",
    "private_key_file",
    "listen_port",
    "fwmark",
    "address",
    "mtu",
    "dns",
    "table",
    "pre_up",
    "post_up",
    "pre_down",
    "post_down",
    "offloads",
    "gateway",
    "peer",
}
_GATEWAY_KEYS = {"out_interface"}
_MESH_KEYS = {
    "name",
    "interface",
    "listen_port",
    "persistent_keepalive",
    "endpoints",
    "relay",
    "stun",
}
RELAY_POLICIES = ("auto", "never", "only")
_PEER_KEYS = {
    "public_key",
    "preshared_key",
    "preshared_key_file",
    "endpoint",
    "allowed_ips",
    "persistent_keepalive",
}


class _LineIndex:
    """Line numbers of tables and keys, by their path: ("interface", 0, "peer", 1, "endpoint")."""

    def __init__(self, text: str) -> None:
        self.lines: dict[Where, int] = {}
        counts: dict[Where, int] = {}
        table: Where = ()
        for number, line in enumerate(text.splitlines(), start=1):
            if header := _HEADER.match(line):
                names = [part.strip() for part in header.group(2).split(".")]
                table = self._resolve(names, header.group(1) == "[[", counts)
                self.lines.setdefault(table, number)
            elif key := _KEY.match(line):
                self.lines.setdefault((*table, key.group(1)), number)

    def _resolve(self, names: list[str], is_array: bool, counts: dict[Where, int]) -> Where:
        """interface.peer means the last [[interface]]'s current peer table."""
        path: Where = ()
        for i, name in enumerate(names):
            path = (*path, name)
            last = i == len(names) - 1
            if last and is_array:
                index = counts.get(path, -1) + 1
                counts[path] = index
                return (*path, index)
            if path in counts:
                path = (*path, counts[path])
        return path

    def line(self, where: Where) -> int | None:
        """The line of `where`, or of the nearest enclosing table that has one."""
        while where:
            if where in self.lines:
                return self.lines[where]
            where = where[:-1]
        return None


class _Table:
    """One TOML table and where it is, with typed, located getters."""

    def __init__(
        self,
        data: dict[str, Any],
        where: Where,
        path: str,
        index: _LineIndex,
        allowed: set[str],
        title: str,
    ) -> None:
        self.data, self.where, self.path, self.index, self.title = data, where, path, index, title
        for key in data:
            if key not in allowed:
                raise self.error(key, f"unknown key {key!r} in {title}")

    def error(self, key: str | None, message: str) -> ConfigError:
        where = self.where if key is None else (*self.where, key)
        return ConfigError(self.path, self.index.line(where), message)

    def has(self, key: str) -> bool:
        return key in self.data

    def string(self, key: str, default: str | None = None) -> str | None:
        value = self.data.get(key, default)
        if value is not None and not isinstance(value, str):
            raise self.error(key, f"{key} must be a string")
        return value

    def required_string(self, key: str) -> str:
        value = self.string(key)
        if value is None:
            raise self.error(None, f"{self.title} needs {key}")
        return value

    def integer(self, key: str, low: int, high: int, *, off: bool = False) -> int | None:
        """An integer in [low, high]; with off, also "off" (0), as wg accepts."""
        value = self.data.get(key)
        if value is None:
            return None
        if off and value == "off":
            return 0
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            extra = ' or "off"' if off else ""
            raise self.error(key, f"{key} must be an integer from {low} to {high}{extra}")
        return value

    def strings(self, key: str) -> list[str]:
        """A string or a list of strings (a string may hold a comma list, as in wg-quick)."""
        value = self.data.get(key)
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise self.error(key, f"{key} must be a string or a list of strings")

    def wg_value(self, key: str, parse: Any, value: Any) -> Any:
        """Run one of wgtool's parsers; its message (wg's words) gets our location."""
        try:
            return parse(value)
        except WgError as exc:
            raise self.error(key, f"{key}: {without_secrets(exc.message)}") from None

    def table(self, key: str) -> dict[str, Any] | None:
        value = self.data.get(key)
        if value is not None and not isinstance(value, dict):
            raise self.error(key, f"{key} must be a table")
        return value

    def tables(self, key: str) -> list[dict[str, Any]]:
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.error(key, f"{key} must be an array of tables ([[...]])")
        return value


def load_toml(path: str, raw: bytes) -> NodeConfig:
    try:
        text = raw.decode("utf-8")
        document = tomllib.loads(text)
    except UnicodeDecodeError:
        raise ConfigError(path, None, "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = re.search(r"\s*\((?:at line (\d+), column \d+|at end of document)\)$", message)
        line = None
        if found:
            line = int(found.group(1)) if found.group(1) else text.count("\n") + 1
        raise ConfigError(path, line, message[: found.start()] if found else message) from None
    index = _LineIndex(text)
    top = _Table(document, (), path, index, {"node", "interface", "mesh"}, "the file")
    node = _Table(top.table("node") or {}, ("node",), path, index, _NODE_KEYS, "[node]")
    level_name = node.string("log_level", "error") or "error"
    if level_name.lower() not in LEVELS:
        raise node.error("log_level", f"log_level must be one of {', '.join(sorted(LEVELS))}")
    interfaces = [
        _interface(_Table(data, ("interface", i), path, index, _INTERFACE_KEYS, "[[interface]]"))
        for i, data in enumerate(top.tables("interface"))
    ]
    meshes = [
        _mesh(_Table(data, ("mesh", i), path, index, _MESH_KEYS, "[[mesh]]"))
        for i, data in enumerate(top.tables("mesh"))
    ]
    config = NodeConfig(
        path=path,
        interfaces=interfaces,
        log_level=LEVELS[level_name.lower()],
        state_dir=node.string("state_dir", DEFAULT_STATE_DIR) or DEFAULT_STATE_DIR,
        meshes=meshes,
    )
    check_node(config)
    return config


def _mesh(table: _Table) -> MeshConfig:
    name = table.required_string("name")
    interface = table.string("interface")
    if interface is not None and (problem := check_interface_name(interface)):
        raise table.error("interface", problem)
    endpoints = table.strings("endpoints")
    for text in endpoints:
        if parse_host_port(text) is None:
            raise table.error("endpoints", f"endpoint {text!r} is not HOST:PORT")
    relay = table.string("relay", "auto")
    if relay not in RELAY_POLICIES:
        choices = ", ".join(RELAY_POLICIES)
        raise table.error("relay", f"relay must be one of {choices}, not {relay!r}")
    stun = table.strings("stun")
    for text in stun:
        if parse_host_port(text) is None:
            raise table.error("stun", f"STUN server {text!r} is not HOST:PORT")
    return MeshConfig(
        name=name,
        interface=interface,
        listen_port=table.integer("listen_port", 0, 65535),
        persistent_keepalive=table.integer("persistent_keepalive", 0, 65535),
        endpoints=endpoints,
        relay=relay or "auto",
        stun=stun,
        line=table.index.line(table.where),
    )


def _interface(table: _Table) -> InterfaceConfig:
    name = table.required_string("name")
    if problem := check_interface_name(name):
        raise table.error("name", problem)
    update = DeviceUpdate(
        replace_peers=True, fwmark=table.integer("fwmark", 0, 0xFFFFFFFF, off=True)
    )
    update.listen_port = table.integer("listen_port", 0, 65535)
    if table.has("private_key") == table.has("private_key_file"):
        raise table.error(None, "[[interface]] needs one of private_key and private_key_file")
    if table.has("private_key"):
        update.private_key = table.wg_value(
            "private_key", parse_key, table.required_string("private_key").encode()
        )
    else:
        key_file = table.required_string("private_key_file")
        update.private_key = table.wg_value("private_key_file", read_key_file, key_file.encode())
    addresses = []
    for text in _comma_list(table.strings("address")):
        try:
            addresses.append(ipaddress.ip_interface(text))
        except ValueError:
            raise table.error("address", f"address {text!r} is not an IP address/prefix") from None
    offloads_text = table.string("offloads", "all") or "all"
    try:
        offloads = Offloads.parse(offloads_text)
    except ValueError as exc:
        raise table.error("offloads", str(exc)) from None
    table_value = parse_table(table.data.get("table", "auto"))
    if table_value is None:
        raise table.error("table", 'table must be "auto", "off", "main" or a routing table number')
    gateway = None
    if (gateway_data := table.table("gateway")) is not None:
        gw = _Table(
            gateway_data,
            (*table.where, "gateway"),
            table.path,
            table.index,
            _GATEWAY_KEYS,
            "[interface.gateway]",
        )
        gateway = Gateway(gw.required_string("out_interface"))
    peers = [
        _peer(
            _Table(
                data,
                (*table.where, "peer", j),
                table.path,
                table.index,
                _PEER_KEYS,
                "[[interface.peer]]",
            )
        )
        for j, data in enumerate(table.tables("peer"))
    ]
    update.peers = peers
    dns, dns_search = split_dns(_comma_list(table.strings("dns")))
    return InterfaceConfig(
        name=name,
        wg=update,
        addresses=addresses,
        mtu=table.integer("mtu", MIN_MTU, 65535),
        dns=dns,
        dns_search=dns_search,
        table=table_value,
        pre_up=table.strings("pre_up"),
        post_up=table.strings("post_up"),
        pre_down=table.strings("pre_down"),
        post_down=table.strings("post_down"),
        gateway=gateway,
        offloads=offloads,
        path=table.path,
        line=table.index.line(table.where),
    )


def _peer(table: _Table) -> PeerUpdate:
    key = table.wg_value("public_key", parse_key, table.required_string("public_key").encode())
    peer = PeerUpdate(public_key=key, replace_allowed_ips=True)
    if table.has("preshared_key") and table.has("preshared_key_file"):
        raise table.error(
            "preshared_key_file", "give preshared_key or preshared_key_file, not both"
        )
    if table.has("preshared_key"):
        peer.preshared_key = table.wg_value(
            "preshared_key", parse_key, table.required_string("preshared_key").encode()
        )
    elif table.has("preshared_key_file"):
        peer.preshared_key = table.wg_value(
            "preshared_key_file",
            read_key_file,
            table.required_string("preshared_key_file").encode(),
        )
    if (endpoint := table.string("endpoint")) is not None:
        peer.endpoint = table.wg_value("endpoint", parse_endpoint, endpoint.encode())
    allowed = ",".join(_comma_list(table.strings("allowed_ips")))
    peer.allowed_ips = table.wg_value("allowed_ips", parse_allowed_ips, allowed.encode())
    peer.persistent_keepalive = table.integer("persistent_keepalive", 0, 65535, off=True) or 0
    return peer


def _comma_list(values: list[str]) -> list[str]:
    """["a, b", "c"] -> ["a", "b", "c"]: lists and wg-quick's comma lists both work."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]
