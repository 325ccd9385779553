"""Files the node writes that must never be found half-written: written to a
new temporary file (0600: they hold keys), flushed to disk, then renamed over
the old one, so a crash at any moment leaves the old file or the new one."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_atomic(path: str | Path, data: bytes, mode: int = 0o600) -> None:
    """Replace path with data; OSError (and the old file as it was) on failure."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)  # a stale one could have any mode; ours is new
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    # the rename itself must reach the disk too
    with contextlib.suppress(OSError):
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def append_line(path: str | Path, line: str, mode: int = 0o600) -> None:
    """Append one line (a log of membership changes): a crash loses at most it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "a", encoding="utf-8") as file:
        file.write(line.rstrip("\n") + "\n")
