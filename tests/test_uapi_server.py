"""The UAPI server's framing and its refusal to die, in-process over socket pairs
(no root): each hostile request gets wireguard-go's answer, and the connection or
at least the server goes on."""

from __future__ import annotations

import errno
import io
import socket

import pytest
import trio

from meshnode.log import ERROR, Logger
from meshnode.net.unixsock import accept
from meshnode.uapi import server
from meshnode.uapi.protocol import format_get, parse_set
from meshnode.wireguard import keys
from meshnode.wireguard.device import Device
from meshnode.wireguard.settings import apply_settings


class DeviceTarget:
    """What Interface does with a request, without a TUN or sockets."""

    def __init__(self) -> None:
        self.device = Device(keys.generate_private_key())

    def uapi_get(self) -> str:
        return format_get(self.device)

    def uapi_set(self, lines: list[str]) -> None:
        apply_settings(parse_set(lines), self.device, 0.0)


class Recorder:
    """Records set requests; raises `error` from set (and get, if get_error)."""

    def __init__(self, error: Exception | None = None, get_error: bool = False) -> None:
        self.error = error
        self.get_error = get_error
        self.requests: list[list[str]] = []

    def uapi_get(self) -> str:
        if self.get_error and self.error is not None:
            raise self.error
        return "listen_port=1\n"

    def uapi_set(self, lines: list[str]) -> None:
        self.requests.append(lines)
        if self.error is not None:
            raise self.error


def new_log() -> tuple[Logger, io.StringIO]:
    stream = io.StringIO()
    return Logger("test", ERROR, stream), stream


async def converse(target: server.Configurable, data: bytes, log: Logger | None = None) -> bytes:
    """Send data on one connection, end our side, and return all the server answered."""
    ours, theirs = socket.socketpair()
    client = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(theirs))
    answer = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server._handle, stream, target, log or new_log()[0])

        async def send() -> None:
            try:
                await client.send_all(data)
                await client.send_eof()
            except trio.BrokenResourceError:
                pass  # the server closed on a request it refused

        nursery.start_soon(send)
        with trio.fail_after(10):
            while True:
                try:
                    chunk = await client.receive_some(65536)
                except trio.BrokenResourceError:
                    break  # reset: the server closed with our data unread
                if not chunk:
                    break
                answer += chunk
    await client.aclose()
    return bytes(answer)


KILLERS = [
    "fwmark=²", "listen_port=1²", "listen_port=٣", "listen_port=" + "1" * 5000,
    f"public_key={'11' * 32}\npersistent_keepalive_interval=²",
    f"public_key={'11' * 32}\nendpoint=1.2.3.4:²",
    f"public_key={'11' * 32}\nendpoint=[fe80::1%]:1",
    f"public_key={'11' * 32}\nendpoint=[fe80::1%99999999999]:1",
    f"public_key={'11' * 32}\nallowed_ip=1.2.3.4",
    f"public_key={'11' * 32}\nallowed_ip=fd00::1",
    "private_key=" + "é" * 64,
]  # fmt: skip


@pytest.mark.parametrize("body", KILLERS)
async def test_killer_requests_are_refused_and_the_connection_goes_on(body: str) -> None:
    target = DeviceTarget()
    answer = await converse(target, f"set=1\n{body}\n\nget=1\n\n".encode())
    refusal, _, rest = answer.partition(b"\n\n")
    assert refusal == b"errno=-22"
    assert rest.startswith(b"private_key=") and rest.endswith(b"errno=0\n\n")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (RuntimeError("bug"), errno.EIO),
        (ValueError("bug"), errno.EINVAL),
        (KeyError("bug"), errno.EIO),
    ],
)
async def test_an_unexpected_exception_fails_only_its_request(error: Exception, code: int) -> None:
    target = Recorder(error)
    log, logged = new_log()
    answer = await converse(target, b"set=1\nfwmark=1\n\nget=1\n\n", log)
    assert answer == f"errno={-code}\n\nlisten_port=1\nerrno=0\n\n".encode()
    assert type(error).__name__ in logged.getvalue()  # logged, with its traceback


async def test_an_exception_in_get_is_answered_eio() -> None:
    target = Recorder(RuntimeError("bug"), get_error=True)
    assert await converse(target, b"get=1\n\n") == b"errno=-5\n\n"


async def test_crlf_lines_as_bufio_scanner_reads_them() -> None:
    """wireguard-go drops one '\\r' before each newline of a set, so "\\r\\n" ends it."""
    target = Recorder()
    answer = await converse(target, b"set=1\nfwmark=1\r\nlisten_port=2\r\r\n\r\n")
    assert answer == b"errno=0\n\n"
    assert target.requests == [["fwmark=1", "listen_port=2\r"]]


async def test_set_line_limit_is_bufio_scanners() -> None:
    """65,535 bytes before the newline are a line; one more is EIO, and the end."""
    target = Recorder()
    longest = b"fwmark=" + b"0" * (65535 - 7)
    assert await converse(target, b"set=1\n" + longest + b"\n\n") == b"errno=0\n\n"
    assert target.requests == [[longest.decode()]]
    answer = await converse(target, b"set=1\n" + longest + b"0\n\nget=1\n\n")
    assert answer == b"errno=-5\n\n"
    assert len(target.requests) == 1


async def test_get_with_a_trailing_byte_is_einval_and_the_connection_goes_on() -> None:
    target = Recorder()
    assert (
        await converse(target, b"get=1\nxget=1\n\n") == b"errno=-22\n\nlisten_port=1\nerrno=0\n\n"
    )


@pytest.mark.parametrize(
    "data",
    [
        b"bogus\n",
        b"set=1\r\n\n",
        b"\xff\xfe\n",
        b"get=2\n\n",
        b"x" * 200_000,
        b"",
        b"set=1\nfwmark=1",
    ],
)
async def test_invalid_operations_and_unfinished_requests_just_close(data: bytes) -> None:
    target = Recorder()
    assert await converse(target, data) == b""
    assert target.requests == []


async def test_non_utf8_bytes_in_a_set_are_einval() -> None:
    answer = await converse(DeviceTarget(), b"set=1\nfwmark=1\xff\n\n")
    assert answer == b"errno=-22\n\n"


class FlakyListener:
    """accept() fails with each of `errors` in turn, then succeeds."""

    def __init__(self, errors: list[int]) -> None:
        self.errors = list(errors)

    async def accept(self) -> tuple[str, str]:
        await trio.lowlevel.checkpoint()
        if self.errors:
            code = self.errors.pop(0)
            raise OSError(code, errno.errorcode[code])
        return "connection", "address"


async def test_accept_waits_out_running_out_of_descriptors() -> None:
    log, logged = new_log()
    listener = FlakyListener([errno.EMFILE, errno.EMFILE, errno.ECONNABORTED, errno.ENFILE])
    assert await accept(listener, log) == "connection"  # type: ignore[arg-type]
    assert logged.getvalue().count("Cannot accept a connection") == 1


async def test_accept_still_raises_what_no_client_can_cause() -> None:
    with pytest.raises(OSError) as info:
        await accept(FlakyListener([errno.EBADF]), new_log()[0])  # type: ignore[arg-type]
    assert info.value.errno == errno.EBADF
