"""The node's control socket: MESHNODE_RUN_DIR/control.sock (default /run/meshnode).

One JSON object a line each way: {"command": "reload" | "down" | "status" |
..., "args": {...}} in (args optional, per command), {"ok": true, ...} or
{"ok": false, "error": "..."} out. Root only (0600).

Nothing a client sends can end the node: a request that is too long, not
UTF-8, not JSON, too deeply nested, not an object, or without a string
"command" gets {"ok": false, "error": ...}; an exception while answering (a
bug) is logged and answered the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from ..log import Logger, level_from_env
from ..net.unixsock import accept, listen_unix

DEFAULT_RUN_DIR = "/run/meshnode"
_MAX_REQUEST = 1 << 16  # bytes in the request line, newline included
_READ_TIMEOUT = 10  # s for the whole request line
_INTERNAL_ERROR = b'{"ok": false, "error": "internal error"}\n'



class BadRequest(Exception):
    """A request line the node cannot take; the message goes back to the client."""


class Args:
    """A request's arguments, each taken with its type checked: a wrong or
    missing one is a BadRequest that names it, never a crash."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def _get(self, name: str, kind: type, what: str, default: Any) -> Any:
        if name not in self.values:
            return default
        value = self.values[name]
        # bool is an int to Python, not to a client that sent true for a number
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise BadRequest(f'bad request: "{name}" must be {what}')
        return value

    def string(self, name: str, default: str | None = None) -> str | None:
        return self._get(name, str, "a string", default)

    def integer(self, name: str, default: int | None = None) -> int | None:
        return self._get(name, int, "an integer", default)

    def flag(self, name: str) -> bool:
        return self._get(name, bool, "true or false", False)

    def strings(self, name: str) -> list[str]:
        values = self._get(name, list, "a list of strings", [])
        if not all(isinstance(v, str) for v in values):
            raise BadRequest(f'bad request: "{name}" must be a list of strings')
        return values


Handler = Callable[[str, Args], Awaitable[dict[str, Any]]]


def run_dir() -> Path:
    return Path(os.environ.get("MESHNODE_RUN_DIR", DEFAULT_RUN_DIR))


def socket_path() -> Path:
    return run_dir() / "control.sock"


def listen() -> socket.socket:
    """Bind the control socket; EADDRINUSE if a node already answers there."""
    path = socket_path()
    return listen_unix(path, f"a node is already running (control socket {path})")


def parse_request(line: bytes) -> tuple[str, Args]:
    """The command and arguments of a request line (without its newline), or BadRequest."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("bad request: not UTF-8") from None
    try:
        request = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        raise BadRequest("bad request: not JSON") from None
    if not isinstance(request, dict):
        raise BadRequest("bad request: not a JSON object")
    command = request.get("command")
    if not isinstance(command, str):
        raise BadRequest('bad request: "command" must be a string')
    args = request.get("args", {})
    if not isinstance(args, dict):
        raise BadRequest('bad request: "args" must be an object')
    return command, Args(args)


async def serve(listener: socket.socket, handle: Handler, log: Logger | None = None) -> None:
    if log is None:
        log = Logger("control", level_from_env())
    tsock = trio.socket.from_stdlib_socket(listener)
    async with trio.open_nursery() as nursery:
        while True:
            conn = await accept(tsock, log)
            nursery.start_soon(_answer, trio.SocketStream(conn), handle, log)


async def _read_line(stream: trio.SocketStream) -> bytes:
    """The request line: up to the first newline, or what came before the
    client closed or went quiet; BadRequest past _MAX_REQUEST bytes."""
    data = bytearray()
    with trio.move_on_after(_READ_TIMEOUT):
        while b"\n" not in data and len(data) < _MAX_REQUEST:
            chunk = await stream.receive_some(4096)
            if not chunk:
                break
            data += chunk
    line, newline, _ = data.partition(b"\n")
    if len(line) + len(newline) > _MAX_REQUEST or (not newline and len(data) >= _MAX_REQUEST):
        raise BadRequest(f"bad request: longer than {_MAX_REQUEST} bytes")
    return bytes(line)


async def _answer(stream: trio.SocketStream, handle: Handler, log: Logger) -> None:
    async with stream:
        try:
            command, args = parse_request(await _read_line(stream))
            reply: dict[str, Any] = await handle(command, args)
            answer = json.dumps(reply).encode() + b"\n"
        except BadRequest as exc:
            answer = json.dumps({"ok": False, "error": str(exc)}).encode() + b"\n"
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the client went away
        except Exception:  # a bug: this request fails, the node goes on
            log.error(f"Control socket: {traceback.format_exc()}")
            answer = _INTERNAL_ERROR
        # shielded: "down" cancels the node, this answer included, before it is sent
        with (
            trio.CancelScope(shield=True),
            trio.move_on_after(5),
            contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
        ):
            await stream.send_all(answer)


def request(command: str, timeout: float = 120.0, **args: Any) -> dict[str, Any]:
    """Send one command to the running node and return its answer (blocking).

    OSError if no node runs here; the node answers "down" before it has
    finished, so `wait_closed` in the caller waits for the socket to go."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(socket_path()))
        message = {"command": command, "args": args} if args else {"command": command}
        sock.sendall(json.dumps(message).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data) if data else {"ok": False, "error": "the node closed the connection"}
