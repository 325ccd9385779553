"""A Linux TUN device: a file descriptor that carries IP packets, no framing.

With `vnet_hdr`, every packet read or written is preceded by a 10-byte
virtio-net header (see offload.py); no offloads are requested for reads, so
the kernel still hands over finished, MTU-sized packets.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct

TUNSETIFF = 0x400454CA
TUNSETVNETHDRSZ = 0x400454D8
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFNAMSIZ = 16


class TunError(OSError):
    pass


class Tun:
    """Opens (creating if needed) TUN interface `name`, non-blocking."""

    def __init__(self, name: str, *, vnet_hdr: bool = False) -> None:
        if not name or len(name.encode()) >= IFNAMSIZ or "/" in name or name in (".", ".."):
            raise TunError(f"invalid interface name: {name!r}")
        flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0)
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            result = fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
            if vnet_hdr:
                fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", 10))
        except OSError as exc:
            os.close(fd)
            raise TunError(exc.errno, f"cannot create TUN {name}: {exc.strerror}") from exc
        self.fd = fd
        self.vnet_hdr = vnet_hdr
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


class DetachedTun:
    """What the runtime needs of a Tun, with no kernel interface behind it: one
    end of a socket pair. For an interface that only speaks the coordination
    channel (joining a mesh), and for tests that run without root."""

    def __init__(self, name: str) -> None:
        self.inside, self.outside = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.inside.setblocking(False)
        self.outside.setblocking(False)
        self.name = name
        self.vnet_hdr = False

    def fileno(self) -> int:
        return self.inside.fileno()

    def close(self) -> None:
        self.inside.close()
        self.outside.close()
