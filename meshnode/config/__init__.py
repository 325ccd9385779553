"""`meshnode up`'s configuration: meshnode's TOML, or a wg-quick .conf file."""

from __future__ import annotations

import os
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
    it; anything else is meshnode's TOML. MESHNODE_STATE_DIR overrides the
    state directory.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read: {exc.strerror}") from None
    config = load_wg_quick(path, raw) if path.endswith(".conf") else load_toml(path, raw)
    config.state_dir = os.environ.get("MESHNODE_STATE_DIR") or config.state_dir
    return config
