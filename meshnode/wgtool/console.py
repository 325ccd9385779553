"""Writing to stdout and stderr as wg does.

Text inside meshnode.wgtool is str; bytes that came from the command line,
files or directory entries were decoded with surrogateescape, so encoding
them back here gives the very bytes wg would print.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _write(stream: TextIO | None, text: str) -> None:
    # As meshnode.cli: a closed or full stdout is not an error of ours (wg's
    # stdio ignores it too), and a closed descriptor at start-up leaves None.
    if stream is None or not text:
        return
    buffer = getattr(stream, "buffer", None)  # None for a test's StringIO
    try:
        if buffer is None:
            stream.write(text)
            stream.flush()
        else:
            stream.flush()
            buffer.write(encode(text))
            buffer.flush()
    except OSError:
        pass


def out(text: str) -> None:
    _write(sys.stdout, text)


def err(text: str) -> None:
    _write(sys.stderr, text)


def warn(line: str) -> None:
    """A diagnostic line on stderr, printed at once as wg prints its warnings."""
    err(line + "\n")


def color_enabled() -> bool:
    """wg's rule (terminal.c): WG_COLOR_MODE=always/never, else colour on a tty."""
    mode = os.environ.get("WG_COLOR_MODE")
    if mode == "always":
        return True
    if mode == "never":
        return False
    try:
        return os.isatty(1)
    except OSError:
        return False
