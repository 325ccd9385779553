"""The node's control socket: MESHNODE_RUN_DIR/control.sock (default /run/meshnode).

One JSON object a line each way: {"command": "reload" | "down" | "status"}
in, {"ok": true, ...} or {"ok": false, "error": "..."} out. Root only (0600).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from ..net.unixsock import listen_unix

DEFAULT_RUN_DIR = "/run/meshnode"
_MAX_REQUEST = 1 << 16

Handler = Callable[[str], Awaitable[dict[str, Any]]]


def run_dir() -> Path:
    return Path(os.environ.get("MESHNODE_RUN_DIR", DEFAULT_RUN_DIR))


def socket_path() -> Path:
    return run_dir() / "control.sock"


def listen() -> socket.socket:
    """Bind the control socket; EADDRINUSE if a node already answers there."""
    path = socket_path()
    return listen_unix(path, f"a node is already running (control socket {path})")


async def serve(listener: socket.socket, handle: Handler) -> None:
    tsock = trio.socket.from_stdlib_socket(listener)
    async with trio.open_nursery() as nursery:
        while True:
            conn, _ = await tsock.accept()
            nursery.start_soon(_answer, trio.SocketStream(conn), handle)


async def _answer(stream: trio.SocketStream, handle: Handler) -> None:
    async with stream:
        data = b""
        with trio.move_on_after(10):
            while b"\n" not in data and len(data) < _MAX_REQUEST:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                data += chunk
        try:
            request = json.loads(data.split(b"\n", 1)[0])
            command = request["command"]
            if not isinstance(command, str):
                raise TypeError(command)
        except (ValueError, KeyError, TypeError):
            reply: dict[str, Any] = {"ok": False, "error": "bad request"}
        else:
            reply = await handle(command)
        # shielded: "down" cancels the node, this answer included, before it is sent
        with (
            trio.CancelScope(shield=True),
            trio.move_on_after(5),
            contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
        ):
            await stream.send_all(json.dumps(reply).encode() + b"\n")


def request(command: str, timeout: float = 120.0) -> dict[str, Any]:
    """Send one command to the running node and return its answer (blocking).

    OSError if no node runs here; the node answers "down" before it has
    finished, so `wait_closed` in the caller waits for the socket to go."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(socket_path()))
        sock.sendall(json.dumps({"command": command}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data) if data else {"ok": False, "error": "the node closed the connection"}
