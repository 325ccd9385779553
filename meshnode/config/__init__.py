"""`meshnode up`'s configuration: meshnode's TOML, or a wg-quick .conf file."""

from __future__ import annotations

from pathlib import Path

from .model import (
    DEFAULT_CONFIG,
    ConfigError,
    Gateway,
    InterfaceConfig,
    NodeConfig,
)
from .toml_file import load_toml
from .wgquick import load_wg_quick

__all__ = [
    "DEFAULT_CONFIG",
    "ConfigError",
    "Gateway",
    "InterfaceConfig",
    "NodeConfig",
    "load_config",
]


def load_config(path: str) -> NodeConfig:
    """Read and check a whole configuration; ConfigError names file and line.

    A file ending in .conf is a wg-quick file for one interface named after
    it; anything else is meshnode's TOML.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read: {exc.strerror}") from None
    if path.endswith(".conf"):
        return load_wg_quick(path, raw)
    return load_toml(path, raw)
