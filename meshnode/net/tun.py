"""A Linux TUN device: a file descriptor that carries IP packets, no framing."""

from __future__ import annotations

import fcntl
import os
import struct

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFNAMSIZ = 16


class TunError(OSError):
    pass


class Tun:
    """Opens (creating if needed) TUN interface `name`, non-blocking."""

    def __init__(self, name: str) -> None:
        if not name or len(name.encode()) >= IFNAMSIZ or "/" in name or name in (".", ".."):
            raise TunError(f"invalid interface name: {name!r}")
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            result = fcntl.ioctl(
                fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI)
            )
        except OSError as exc:
            os.close(fd)
            raise TunError(exc.errno, f"cannot create TUN {name}: {exc.strerror}") from exc
        self.fd = fd
        self.name = result[:IFNAMSIZ].rstrip(b"\0").decode()

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Tun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
