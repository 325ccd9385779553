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


def split_dns(items: list[str]) -> tuple[list[str], list[str]]:
    """(servers, search domains), told apart as wg-quick does."""
    servers = [item for item in items if _DNS_SERVER.search(item)]
    return servers, [item for item in items if not _DNS_SERVER.search(item)]


def check_node(config: NodeConfig) -> None:
    """No two interfaces with one name or one listen port."""
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
