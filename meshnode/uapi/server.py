"""The UAPI unix socket a daemon serves at /var/run/wireguard/IFNAME.sock.

Whatever a client sends, the daemon goes on: a malformed request gets an
errno answer or a closed connection, and an exception that is not a
UapiError (a bug) fails that one request, is logged, and is answered with
EINVAL or EIO. Framing is wireguard-go's: a request line `get=1` or `set=1`;
a set's lines end at a blank line, each may end in "\\r\\n" (bufio.Scanner
drops the '\\r') and may be at most 65,535 bytes (bufio.Scanner's limit, EIO
past it).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import traceback
from pathlib import Path
from typing import Protocol

import trio

from ..log import Logger, level_from_env
from ..net.unixsock import accept, listen_unix
from .pathwatch import wait_replaced
from .protocol import UapiError

SOCKET_DIR = Path(os.environ.get("WG_SOCKET_DIR", "/var/run/wireguard"))
_MAX_REQUEST = 64 << 20  # a set request with 131,072 allowed IPs is about 4 MiB
_MAX_LINE = 65535  # bytes before the newline: bufio.Scanner's 64 KiB token, newline included


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


async def serve(
    listener: socket.socket, target: Configurable, path: Path, log: Logger | None = None
) -> None:
    """Accept and answer UAPI clients until cancelled or the socket file goes away."""
    if log is None:
        log = Logger(path.stem, level_from_env())
    inode = path.lstat().st_ino
    tsock = trio.socket.from_stdlib_socket(listener)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_path, path, inode)
        while True:
            conn = await accept(tsock, log)
            nursery.start_soon(_handle, trio.SocketStream(conn), target, log)


async def _watch_path(path: Path, inode: int) -> None:
    await wait_replaced(path, inode)
    raise SocketRemoved(str(path))


class _TooLong(Exception):
    """A line or a request past its limit."""


class _Reader:
    """Lines and bytes from a stream, each line at most `limit` bytes."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()
        self.scanned = 0  # bytes at the start of buffer known to hold no newline

    async def _fill(self) -> bool:
        chunk = await self.stream.receive_some(65536)
        self.buffer += chunk
        return bool(chunk)

    async def line(self, limit: int = _MAX_LINE) -> bytes | None:
        """The next line without its newline; None at end of stream (a last
        line without a newline is dropped); _TooLong past limit."""
        while True:
            end = self.buffer.find(b"\n", self.scanned)
            if end > limit or (end < 0 and len(self.buffer) > limit):
                raise _TooLong
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 1]
                self.scanned = 0
                return line
            self.scanned = len(self.buffer)
            if not await self._fill():
                return None

    async def byte(self) -> int | None:
        if not self.buffer and not await self._fill():
            return None
        value = self.buffer[0]
        del self.buffer[:1]
        self.scanned = 0
        return value


async def _read_set(reader: _Reader) -> list[str] | None:
    """A set request's lines up to the blank line; None if the stream ends
    first; _TooLong for a line or a request past its limit."""
    lines: list[str] = []
    size = 0
    while (raw := await reader.line()) is not None:
        if raw.endswith(b"\r"):
            raw = raw[:-1]  # as bufio.ScanLines does, so "\r\n" ends a line too
        if not raw:
            return lines
        size += len(raw) + 1
        if size > _MAX_REQUEST:
            raise _TooLong
        # not UTF-8: U+FFFD makes the line invalid, as the bytes are in wireguard-go
        lines.append(raw.decode("utf-8", "replace"))
    return None


def _get(target: Configurable, log: Logger) -> tuple[str, int]:
    try:
        return target.uapi_get(), 0
    except Exception:  # a bug: this request fails, the daemon goes on
        log.error(f"UAPI: get failed:\n{traceback.format_exc()}")
        return "", errno.EIO


def _set(target: Configurable, lines: list[str], log: Logger) -> int:
    try:
        target.uapi_set(lines)
    except UapiError as exc:
        return exc.errno
    except ValueError:  # input a parser let through, or a device refusal
        log.error(f"UAPI: set refused:\n{traceback.format_exc()}")
        return errno.EINVAL
    except Exception:  # a bug: this request fails, the daemon goes on
        log.error(f"UAPI: set failed:\n{traceback.format_exc()}")
        return errno.EIO
    return 0


async def _handle(stream: trio.SocketStream, target: Configurable, log: Logger) -> None:
    async with stream:
        try:
            await _converse(stream, _Reader(stream), target, log)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away
        except Exception:  # a bug: this connection ends, the daemon goes on
            log.error(f"UAPI: connection failed:\n{traceback.format_exc()}")


async def _converse(
    stream: trio.SocketStream, reader: _Reader, target: Configurable, log: Logger
) -> None:
    while True:
        try:
            op = await reader.line()
        except _TooLong:
            log.error("UAPI: request line too long")
            return
        reply = ""
        if op == b"get=1":
            # wireguard-go reads one more byte, which must end the request
            following = await reader.byte()
            if following is None:
                return
            if following == ord("\n"):
                reply, status = _get(target, log)
            else:
                status = errno.EINVAL
        elif op == b"set=1":
            try:
                lines = await _read_set(reader)
            except _TooLong:
                log.error("UAPI: set request line or request too long")
                with contextlib.suppress(trio.BrokenResourceError):
                    await stream.send_all(f"errno={-errno.EIO}\n\n".encode())
                return  # the rest of it cannot be told from the next request
            if lines is None:
                return
            status = _set(target, lines, log)
        else:
            if op is not None:
                log.error(f"UAPI: invalid operation {op[:80]!r}")
            return
        # surrogateescape: an interface name that is not UTF-8 goes out as its bytes
        await stream.send_all(f"{reply}errno={-status}\n\n".encode("utf-8", "surrogateescape"))
