"""Listening unix sockets for local control (the UAPI, the node's control socket)."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from pathlib import Path

import trio

from ..log import Logger

# accept() failing for want of resources: clients that hold many connections
# open (or a host short of memory) must not end the daemon; it waits and tries
# again, as trio.serve_listeners does
_ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
# a client gone before its connection was accepted
_ACCEPT_SKIP_ERRNOS = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM}
_ACCEPT_RETRY_DELAY = 0.1


def listen_unix(path: Path, in_use: str) -> socket.socket:
    """A listening socket at path, root only (0600), created before trio starts.

    A socket file nobody answers on is left over from a process that died and
    is replaced; one that answers belongs to a live process: OSError
    EADDRINUSE with the message in_use.
    """
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()
        else:
            raise OSError(errno.EADDRINUSE, in_use)
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old_umask = os.umask(0o077)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(16)
    return sock


def close_unix(listener: socket.socket, path: Path, inode: int) -> None:
    """Close the listener and remove its file, unless another process has
    since bound a socket of its own there (another inode)."""
    listener.close()
    with contextlib.suppress(OSError):
        if path.lstat().st_ino == inode:
            path.unlink()


async def accept(listener: trio.socket.SocketType, log: Logger) -> trio.socket.SocketType:
    """The next connection, waiting out accept() errors a client can cause."""
    reported = False
    while True:
        try:
            conn, _ = await listener.accept()
        except OSError as exc:
            if exc.errno in _ACCEPT_SKIP_ERRNOS:
                continue
            if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                raise
            if not reported:  # once per episode, not ten times a second
                log.error(f"Cannot accept a connection ({exc.strerror}); retrying")
                reported = True
            await trio.sleep(_ACCEPT_RETRY_DELAY)
            continue
        return conn
