"""The UAPI unix socket a daemon serves at /var/run/wireguard/IFNAME.sock."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Protocol

import trio

from ..net.unixsock import listen_unix
from .protocol import UapiError

SOCKET_DIR = Path(os.environ.get("WG_SOCKET_DIR", "/var/run/wireguard"))
_MAX_REQUEST = 64 << 20  # a set request with 131,072 allowed IPs is about 4 MiB


class Configurable(Protocol):
    def uapi_get(self) -> str: ...
    def uapi_set(self, lines: list[str]) -> None: ...


def socket_path(interface: str) -> Path:
    return SOCKET_DIR / f"{interface}.sock"


def listen(interface: str) -> socket.socket:
    """Create the listening socket (root only), replacing a stale one."""
    path = socket_path(interface)
    return listen_unix(path, f"UAPI socket {path} is in use")


class SocketRemoved(Exception):
    """The UAPI socket file was deleted: the daemon should exit, as wireguard-go does."""


async def serve(listener: socket.socket, target: Configurable, path: Path) -> None:
    """Accept and answer UAPI clients until cancelled or the socket file goes away."""
    inode = path.lstat().st_ino
    tsock = trio.socket.from_stdlib_socket(listener)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_path, path, inode)
        while True:
            conn, _ = await tsock.accept()
            nursery.start_soon(_handle, trio.SocketStream(conn), target)


async def _watch_path(path: Path, inode: int) -> None:
    while True:
        await trio.sleep(0.25)
        try:
            st = path.lstat()
        except FileNotFoundError:
            raise SocketRemoved(str(path)) from None
        if st.st_ino != inode:
            raise SocketRemoved(str(path))


class _LineReader:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()
        self.received = 0

    async def line(self) -> str | None:
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 1]
                return line.decode("utf-8", "replace")
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                return None
            self.received += len(chunk)
            if self.received > _MAX_REQUEST:
                return None
            self.buffer += chunk


async def _handle(stream: trio.SocketStream, target: Configurable) -> None:
    async with stream:
        reader = _LineReader(stream)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while True:
                op = await reader.line()
                if op == "get=1":
                    if await reader.line() != "":
                        await stream.send_all(b"errno=-22\n\n")
                        return
                    await stream.send_all((target.uapi_get() + "errno=0\n\n").encode())
                elif op == "set=1":
                    lines: list[str] = []
                    while (line := await reader.line()) not in ("", None):
                        lines.append(line)
                    if line is None:
                        return
                    try:
                        target.uapi_set(lines)
                    except UapiError as exc:
                        await stream.send_all(f"errno={-exc.errno}\n\n".encode())
                    else:
                        await stream.send_all(b"errno=0\n\n")
                else:
                    return
