"""Logging in wireguard-go's format, levelled by LOG_LEVEL.

`LOG_LEVEL=verbose` (or `debug`) prints everything, `error` only errors (the
default), `silent` nothing: the levels wireguard-go users know.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

SILENT, ERROR, VERBOSE = 0, 1, 2
LEVELS = {"silent": SILENT, "error": ERROR, "verbose": VERBOSE, "debug": VERBOSE}


def level_from_env(default: int = ERROR) -> int:
    return LEVELS.get(os.environ.get("LOG_LEVEL", "").lower(), default)


class Logger:
    def __init__(self, interface: str, level: int, stream: TextIO | None = None) -> None:
        self.prefix = f"({interface}) "
        self.level = level
        self.stream = stream or sys.stdout

    @property
    def verbose_enabled(self) -> bool:
        return self.level >= VERBOSE

    def _write(self, tag: str, message: str) -> None:
        stamp = time.strftime("%Y/%m/%d %H:%M:%S")
        try:
            self.stream.write(f"{tag}: {self.prefix}{stamp} {message}\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed or full log stream must not stop the tunnel

    def verbose(self, message: str) -> None:
        if self.level >= VERBOSE:
            self._write("DEBUG", message)

    def error(self, message: str) -> None:
        if self.level >= ERROR:
            self._write("ERROR", message)
