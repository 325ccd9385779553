"""The node's control socket against hostile clients, in-process (no root):
every malformed request line gets an error answer or a closed connection,
and the server answers the next client."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path
from typing import Any

import pytest
import trio

from meshnode.log import ERROR, Logger
from meshnode.node import control

MALFORMED = {
    "deep nesting": b"[" * 60_000 + b"\n",  # RecursionError in json.loads
    "deep objects": b'{"a":' * 30_000 + b"\n",
    "not UTF-8": b'{"command": "st\xffatus"}\n',
    "UTF-16": '{"command": "status"}\n'.encode("utf-16"),
    "a list": b'["status"]\n',
    "a string": b'"status"\n',
    "a number": b"1\n",
    "a huge number": b"1" * 5000 + b"\n",
    "null": b"null\n",
    "command a number": b'{"command": 1}\n',
    "command a list": b'{"command": ["status"]}\n',
    "command an object": b'{"command": {"status": true}}\n',
    "no command": b'{"cmd": "status"}\n',
    "empty": b"\n",
    "NUL bytes": b"\x00" * 100 + b"\n",
    "too long": b"x" * 100_000 + b"\n",
    "too long without newline": b'{"command": "' + b"s" * 100_000,
}


def test_parse_request() -> None:
    command, args = control.parse_request(b'{"command": "status"}')
    assert (command, args.values) == ("status", {})
    command, args = control.parse_request(b'{"command": "x", "args": {"n": 1, "s": "t"}}')
    assert (command, args.integer("n"), args.string("s")) == ("x", 1, "t")
    assert args.string("z", "d") == "d"
    for bad in ({"n": True}, {"n": "1"}, {"n": [1]}):
        with pytest.raises(control.BadRequest, match='"n" must be an integer'):
            control.Args(bad).integer("n")
    with pytest.raises(control.BadRequest, match='"args" must be an object'):
        control.parse_request(b'{"command": "x", "args": [1]}')
    for line in MALFORMED.values():
        with pytest.raises(control.BadRequest):
            control.parse_request(line.rstrip(b"\n"))


async def ask(path: Path, data: bytes) -> bytes:
    """Send data, end our side, and return what the node answered (b"" if it closed)."""
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.connect(str(path))
    stream = trio.SocketStream(sock)
    answer = bytearray()
    async with stream:
        try:
            await stream.send_all(data)
            await stream.send_eof()
        except trio.BrokenResourceError:
            pass  # refused before we were done sending
        with trio.fail_after(15):
            while True:
                try:
                    chunk = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    break
                if not chunk:
                    break
                answer += chunk
    return bytes(answer)


async def test_malformed_requests_get_errors_and_the_server_goes_on(tmp_path: Path) -> None:
    commands: list[str] = []

    async def handle(command: str, args: control.Args) -> dict[str, Any]:
        commands.append(command)
        if command == "explode":
            raise RuntimeError("a bug in a command")
        return {"ok": True, "command": command}

    path = tmp_path / "control.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    logged = io.StringIO()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(control.serve, listener, handle, Logger("node", ERROR, logged))
        for name, data in MALFORMED.items():
            answer = await ask(path, data)
            reply = json.loads(answer)
            assert reply["ok"] is False and reply["error"].startswith("bad request"), name
        assert commands == []
        reply = json.loads(await ask(path, b'{"command": "explode"}\n'))
        assert reply == {"ok": False, "error": "internal error"}
        assert "a bug in a command" in logged.getvalue()
        # many at once, then a good one: still served
        async with trio.open_nursery() as clients:
            for data in MALFORMED.values():
                clients.start_soon(ask, path, data)
        assert json.loads(await ask(path, b'{"command": "status"}\n'))["command"] == "status"
        # without a newline, the request ends where the client stops sending
        assert json.loads(await ask(path, b'{"command": "status"}'))["ok"] is True
        nursery.cancel_scope.cancel()
    listener.close()
