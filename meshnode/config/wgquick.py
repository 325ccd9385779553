"""wg-quick's .conf files, as they are: one interface, named after the file.

As wg-quick does, the keys it handles itself (Address, DNS, MTU, Table,
PreUp, PostUp, PreDown, PostDown, SaveConfig in [Interface]) are taken out
and the rest is read as `wg setconf` reads it, by wgtool's own parser (so
its errors are wg's, here with file and line).
"""

from __future__ import annotations

import ipaddress
import os
import re

from ..wgtool.config import parse_config
from ..wgtool.errors import WgError
from ..wgtool.model import DeviceUpdate
from .model import ConfigError, InterfaceConfig, NodeConfig
from .validate import MIN_MTU, check_interface_name, parse_table, split_dns, without_secrets

_QUICK_KEYS = {
    "address",
    "dns",
    "mtu",
    "table",
    "preup",
    "postup",
    "predown",
    "postdown",
    "saveconfig",
}


def load_wg_quick(path: str, raw: bytes) -> NodeConfig:
    name = os.path.basename(path)[: -len(".conf")]
    if problem := check_interface_name(name):
        raise ConfigError(path, None, f"the file's name gives the interface name: {problem}")
    config = InterfaceConfig(name=name, wg=DeviceUpdate(), path=path)  # wg: filled in below
    wg_lines: list[bytes] = []
    in_interface = False
    for number, line in enumerate(raw.split(b"\n"), start=1):
        stripped = line.split(b"#", 1)[0].strip()
        key, equals, value = (part.strip() for part in stripped.partition(b"="))
        if stripped.startswith(b"["):
            in_interface = stripped.lower() == b"[interface]"
            if in_interface and config.line is None:
                config.line = number
        if in_interface and equals and key.lower().decode("latin-1") in _QUICK_KEYS:
            try:
                _quick_key(config, key.lower().decode(), value.decode())
            except (ValueError, UnicodeDecodeError) as exc:
                raise ConfigError(path, number, str(exc)) from None
            wg_lines.append(b"")  # keep the line numbers of what wg's parser sees
        else:
            wg_lines.append(line)
    try:
        config.wg = parse_config(b"\n".join(wg_lines), append=False, path=path)
    except WgError as exc:
        message = without_secrets(exc.message.splitlines()[0])
        raise ConfigError(path, exc.lineno, message) from None
    return NodeConfig(path=path, interfaces=[config])


def _quick_key(config: InterfaceConfig, key: str, value: str) -> None:
    items = [item for item in re.split(r"[,\s]+", value) if item]
    if key == "address":
        for item in items:
            try:
                config.addresses.append(ipaddress.ip_interface(item))
            except ValueError:
                raise ValueError(f"Address {item!r} is not an IP address/prefix") from None
    elif key == "dns":
        servers, search = split_dns(items)
        config.dns += servers
        config.dns_search += search
    elif key == "mtu":
        if not value.isdigit() or not MIN_MTU <= int(value) <= 65535:
            raise ValueError(f"MTU {value!r} is not a number from {MIN_MTU} to 65535")
        config.mtu = int(value)
    elif key == "table":
        table = parse_table(value)
        if table is None:
            raise ValueError(f"Table {value!r} is not auto, off, main or a routing table number")
        config.table = table
    elif key == "saveconfig":
        # wg-quick reads its keys and values with nocasematch
        if value.lower() not in ("true", "false"):
            raise ValueError(f"SaveConfig {value!r} is neither true nor false")
        config.save_config = value.lower() == "true"
    else:  # the hooks: each line adds one command
        hooks = {
            "preup": config.pre_up,
            "postup": config.post_up,
            "predown": config.pre_down,
            "postdown": config.post_down,
        }
        hooks[key].append(value)
