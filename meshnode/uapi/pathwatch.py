"""Notice a socket file being deleted or replaced, without polling.

A userspace WireGuard daemon stops when its UAPI socket file goes away, as
wireguard-go does (it watches it with inotify). Polling the file four times
a second cost every idle interface four wakeups a second; an inotify watch
on the socket's directory costs none until something in it changes. Where
inotify cannot be had (out of watches, say), it falls back to polling.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
from pathlib import Path

import trio

# <sys/inotify.h>
_IN_MOVED_FROM, _IN_MOVED_TO, _IN_CREATE, _IN_DELETE = 0x40, 0x80, 0x100, 0x200
_IN_DELETE_SELF, _IN_MOVE_SELF = 0x400, 0x800
_IN_UNMOUNT, _IN_IGNORED = 0x2000, 0x8000
# the directory itself went (or its watch did): the socket file went with it
_WATCH_GONE = _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_UNMOUNT | _IN_IGNORED
_DIRECTORY_EVENTS = (
    _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE | _IN_DELETE_SELF | _IN_MOVE_SELF
)
POLL_INTERVAL = 0.25  # without inotify

try:
    _libc: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:
    _libc = None


def _watch(directory: Path) -> int | None:
    """An inotify descriptor watching `directory`'s entries, or None."""
    if _libc is None or not hasattr(_libc, "inotify_init1"):
        return None
    fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        return None
    if _libc.inotify_add_watch(fd, os.fsencode(directory), _DIRECTORY_EVENTS) < 0:
        os.close(fd)
        return None
    return fd


_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then the name, NUL-padded


def _touched(fd: int, name: bytes) -> bool:
    """Read every pending event; whether one of them was about `name` (or the
    directory itself). A file deleted and made again may get the same inode
    number: the events, not the inode, tell that it was replaced."""
    touched = False
    with contextlib.suppress(BlockingIOError):
        while data := os.read(fd, 65536):
            offset = 0
            while offset + _EVENT.size <= len(data):
                _wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                start = offset + _EVENT.size
                entry = data[start : start + length].rstrip(b"\0")
                if entry == name or mask & _WATCH_GONE:
                    touched = True
                offset = start + length
    return touched


def _changed(path: Path, inode: int) -> bool:
    try:
        return path.lstat().st_ino != inode
    except FileNotFoundError:
        return True


async def wait_replaced(path: Path, inode: int) -> None:
    """Return once the file at `path` is gone or is another file than `inode`."""
    fd = _watch(path.parent)
    name = os.fsencode(path.name)
    try:
        # the watch is in place before the first look: no change slips between
        while not _changed(path, inode):
            if fd is None:
                await trio.sleep(POLL_INTERVAL)
                continue
            await trio.lowlevel.wait_readable(fd)
            if _touched(fd, name):
                return
    finally:
        if fd is not None:
            trio.lowlevel.notify_closing(fd)
            os.close(fd)
