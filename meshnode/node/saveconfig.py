"""wg-quick's SaveConfig: on the way down, the interface's live state (peers
added with `wg set` included) is written back to its .conf file, atomically
and readable by root only."""

from __future__ import annotations

from ..config import InterfaceConfig
from ..wgtool.show import showconf
from ..wgtool.uapi_client import parse_get_text
from .statefiles import write_atomic


def render(config: InterfaceConfig, uapi_get_reply: str) -> str:
    """The file wg-quick would write: its own keys, then `wg showconf`'s body."""
    lines = ["[Interface]"]
    lines += [f"Address = {address}" for address in config.addresses]
    lines += [f"DNS = {server}" for server in config.dns + config.dns_search]
    if config.mtu is not None:
        lines.append(f"MTU = {config.mtu}")
    if config.table != "auto":
        lines.append(f"Table = {config.table}")
    lines.append("SaveConfig = true")
    for key, commands in (
        ("PreUp", config.pre_up),
        ("PostUp", config.post_up),
        ("PreDown", config.pre_down),
        ("PostDown", config.post_down),
    ):
        lines += [f"{key} = {command}" for command in commands]
    current = showconf(parse_get_text(config.name, uapi_get_reply))
    return current.replace("[Interface]\n", "\n".join(lines) + "\n", 1)


def save(config: InterfaceConfig, uapi_get_reply: str) -> None:
    write_atomic(config.path, render(config, uapi_get_reply).encode())
