"""Checks that concern more than one value: names, and the interfaces together."""

from __future__ import annotations

import re

from .model import ConfigError, NodeConfig

MIN_MTU = 576  # IPv4's minimum; wg-quick checks none (IPv6 needs 1280)
# what wg-quick counts as a DNS server; anything else is a search domain
_DNS_SERVER = re.compile(r"^[0-9.]+$|:")
# what wg-quick accepts as an interface name (and Linux: at most 15 bytes)
_NAME = re.compile(r"[a-zA-Z0-9_=+.-]{1,15}")


def check_interface_name(name: str) -> str | None:
    """Why name cannot be an interface name, or None."""
    if not _NAME.fullmatch(name) or name in (".", ".."):
        return f"interface name {name!r} is not 1-15 of letters, digits and _=+.-"
    return None


_TABLE_NAMES = {"main": 254, "default": 253, "local": 255}


def parse_table(value: object) -> str | None:
    """wg-quick's Table: "auto", "off", a number or a standard table's name;
    as text ("auto", "off" or the number), None if it is none of these."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value) if 0 < value < 2**32 else None
    if not isinstance(value, str):
        return None
    word = value.strip().lower()
    if word in ("auto", "off"):
        return word
    if word in _TABLE_NAMES:
        return str(_TABLE_NAMES[word])
    if word.isdigit() and 0 < int(word) < 2**32:
        return str(int(word))
    return None


def without_secrets(message: str) -> str:
    """A wg parser's message with any key it quotes hidden: errors are printed
    and logged, private keys must never be (wg itself prints them)."""

    def hide(quoted: re.Match[str]) -> str:
        text = quoted.group(1)
        key, equals, _ = text.partition("=")
        if equals and "key" in key.lower():
            return f"`{key}=(hidden)'"
        return "`(hidden)'" if message.startswith("Key is not") else quoted.group(0)

    return re.sub(r"`([^`]*)'", hide, message)


def split_dns(items: list[str]) -> tuple[list[str], list[str]]:
    """(servers, search domains), told apart as wg-quick does."""
    servers = [item for item in items if _DNS_SERVER.search(item)]
    return servers, [item for item in items if not _DNS_SERVER.search(item)]


def check_node(config: NodeConfig) -> None:
    """No two interfaces (static or mesh) with one name or one listen port."""
    names: dict[str, int | None] = {}
    ports: dict[int, str] = {}
    for interface in config.interfaces:
        if interface.name in names:
            first = names[interface.name]
            raise ConfigError(
                config.path,
                interface.line,
                f"interface {interface.name} is defined twice (first at line {first})",
            )
        names[interface.name] = interface.line
        port = interface.wg.listen_port
        if port:
            if port in ports:
                raise ConfigError(
                    config.path,
                    interface.line,
                    f"listen_port {port} of {interface.name} is also {ports[port]}'s",
                )
            ports[port] = interface.name
    meshes: dict[str, int | None] = {}
    for mesh in config.meshes:
        if mesh.name in meshes:
            raise ConfigError(config.path, mesh.line,
                              f"mesh {mesh.name} is configured twice (first at line "
                              f"{meshes[mesh.name]})")  # fmt: skip
        meshes[mesh.name] = mesh.line
        if mesh.interface in names:
            raise ConfigError(config.path, mesh.line,
                              f"interface {mesh.interface} of mesh {mesh.name} is also a "
                              "static interface")  # fmt: skip
        if mesh.listen_port and mesh.listen_port in ports:
            raise ConfigError(config.path, mesh.line,
                              f"listen_port {mesh.listen_port} of mesh {mesh.name} is also "
                              f"{ports[mesh.listen_port]}'s")  # fmt: skip
        if mesh.listen_port:
            ports[mesh.listen_port] = f"mesh {mesh.name}"


def parse_host_port(text: str) -> tuple[str, int] | None:
    """'HOST:PORT' or '[IPV6]:PORT' as (host, port), or None if it is not one
    (a mesh's published endpoints: names are allowed, ports 0-65535)."""
    host, colon, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not colon or not host or not (port.isascii() and port.isdigit()) or len(port) > 5:
        return None
    return (host, int(port)) if int(port) <= 65535 else None
