"""Helpers for the wgtool tests (no tests here): running `meshnode` and the
real `wg` side by side, comparing their output, and a fake UAPI daemon.

`wg` prints its own name only in usage lines, so those are rewritten from
"wg" to "meshnode" before comparing; everything else must be byte-identical.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest

from meshnode.wireguard import keys

WG = shutil.which("wg")
WIREGUARD_GO = shutil.which("wireguard-go")
SOCKET_DIR = Path("/var/run/wireguard")

needs_wg = pytest.mark.skipif(WG is None, reason="wireguard-tools' `wg` is not installed")
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: wg only looks for sockets in /var/run/wireguard"
)

# Variables that change wg's output: tests set them explicitly when they want them.
_OUTPUT_VARIABLES = ("WG_COLOR_MODE", "WG_HIDE_KEYS", "WG_ENDPOINT_RESOLUTION_RETRIES")


class KeyPair(NamedTuple):
    private: str
    public: str


# Every field form of `show`, compared between wg and meshnode.
SHOW_FORMS = [
    (),
    ("dump",),
    ("public-key",),
    ("private-key",),
    ("listen-port",),
    ("fwmark",),
    ("peers",),
    ("preshared-keys",),
    ("endpoints",),
    ("allowed-ips",),
    ("latest-handshakes",),
    ("transfer",),
    ("persistent-keepalive",),
    ("bogus",),
]


def keypair() -> KeyPair:
    private = keys.generate_private_key()
    return KeyPair(keys.to_base64(private), keys.to_base64(keys.public_key(private)))


def psk() -> str:
    return keys.to_base64(keys.generate_preshared_key())


class Result(NamedTuple):
    stdout: bytes
    stderr: bytes
    returncode: int


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _OUTPUT_VARIABLES}
    env.update(extra or {})
    return env


def run(
    argv: list[str],
    netns: str | None = None,
    env: dict[str, str] | None = None,
    input: bytes | None = None,
    timeout: float = 60,
) -> Result:
    executable = None
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    elif argv[0] == "wg":
        executable = WG  # wg names itself by argv[0] in usage lines: keep it "wg"
    p = subprocess.run(
        argv,
        input=input,
        capture_output=True,
        env=_env(env),
        timeout=timeout,
        executable=executable,
    )
    return Result(p.stdout, p.stderr, p.returncode)


def meshnode(*args: str, netns: str | None = None, env: dict[str, str] | None = None) -> Result:
    return run([sys.executable, "-m", "meshnode", *args], netns, env)


def wg(*args: str, netns: str | None = None, env: dict[str, str] | None = None) -> Result:
    assert WG is not None
    r = run(["wg", *args], netns, env)
    return r._replace(stderr=r.stderr.replace(b"Usage: wg ", b"Usage: meshnode "))


def both(
    *args: str, netns: str | None = None, env: dict[str, str] | None = None, attempts: int = 30
) -> tuple[Result, Result]:
    """(meshnode's result, wg's result) for the same command, tried again while
    they differ: wireguard-go lists peers in Go map order, which changes from
    one request to the next, and a relative time may tick between the two."""
    for _ in range(attempts):
        ours, theirs = meshnode(*args, netns=netns, env=env), wg(*args, netns=netns, env=env)
        if ours == theirs:
            break
    return ours, theirs


def assert_same(*args: str, netns: str | None = None, env: dict[str, str] | None = None) -> Result:
    ours, theirs = both(*args, netns=netns, env=env)
    assert ours.stdout.decode(errors="replace") == theirs.stdout.decode(errors="replace")
    assert ours == theirs
    return ours


def peer_sorted(showconf: bytes) -> bytes:
    """A showconf text with its [Peer] sections sorted (wireguard-go's peer
    order is random), to compare the configuration of two interfaces."""
    head, *peers = showconf.split(b"\n[Peer]\n")
    peers = sorted(p if p.endswith(b"\n") else p + b"\n" for p in peers)
    return head + b"".join(b"\n[Peer]\n" + p for p in peers)


class FakeUapi:
    """A UAPI daemon that answers from a script, to show wg and meshnode the same
    state and to record the set requests they send.

    get_reply is the get answer (bytes, or a function called per request, so
    times can follow the clock); set_reply the set answer. Sets are recorded
    in `sets`. Connections that send nothing (wg's liveness probe) are fine.
    """

    def __init__(
        self,
        get_reply: bytes | Callable[[], bytes] = b"errno=0\n\n",
        set_reply: bytes = b"errno=0\n\n",
        directory: Path = SOCKET_DIR,
        name: str | None = None,
    ) -> None:
        self.name = name or f"mnf{secrets.token_hex(3)}"
        self.path = directory / f"{self.name}.sock"
        self.get_reply = get_reply
        self.set_reply = set_reply
        self.sets: list[bytes] = []
        self.gets = 0
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> FakeUapi:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.path))
        listener.listen(16)
        listener.settimeout(0.05)
        self._listener = listener
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()
        assert self._thread is not None and self._listener is not None
        self._thread.join(5)
        self._listener.close()
        self.path.unlink(missing_ok=True)

    def _serve(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    self._handle(conn)

    def _handle(self, conn: socket.socket) -> None:
        data = b""
        while True:
            if data.startswith(b"get=1\n\n"):
                self.gets += 1
                reply = self.get_reply() if callable(self.get_reply) else self.get_reply
                conn.sendall(reply)
                return
            if data.startswith(b"set=1\n") and b"\n\n" in data:
                self.sets.append(data)
                conn.sendall(self.set_reply)
                return
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
