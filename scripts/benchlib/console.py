"""Progress messages on stderr (stdout carries the table and the JSON line)."""

from __future__ import annotations

import sys
import time

_START = time.monotonic()


def say(message: str) -> None:
    elapsed = time.monotonic() - _START
    sys.stderr.write(f"[bench {elapsed:6.0f} s] {message}\n")
    sys.stderr.flush()


def elapsed() -> float:
    """Seconds since the bench started."""
    return time.monotonic() - _START


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])
