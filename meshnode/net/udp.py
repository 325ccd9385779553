"""The interface's UDP sockets: one IPv4 and one IPv6-only, on the same port.

Two sockets rather than one dual-stack socket (as wireguard-go does) so that
addresses arrive and leave in their own family's form, with no mapping of
IPv4 into IPv6 on every packet. Together they are the interface's single
point of entry: every datagram is sorted by its first bytes after this.
"""

from __future__ import annotations

import errno
import socket

SO_MARK = 36


def _open(family: int, port: int, fwmark: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if fwmark:
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, fwmark)
        sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    except BaseException:
        sock.close()
        raise
    return sock


class UdpSockets:
    """Bound sockets for one listen port (0 picks a free one for both families)."""

    def __init__(self, port: int, fwmark: int = 0) -> None:
        last_error: OSError | None = None
        for _ in range(10 if port == 0 else 1):
            v4 = _open(socket.AF_INET, port, fwmark)
            chosen = v4.getsockname()[1]
            try:
                v6: socket.socket | None = _open(socket.AF_INET6, chosen, fwmark)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    v4.close()
                    last_error = exc
                    continue
                v6 = None  # no IPv6 on this host: carry on with IPv4 alone
            self.v4, self.v6, self.port, self.fwmark = v4, v6, chosen, fwmark
            return
        assert last_error is not None
        raise last_error

    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.v4, self.v6) if s is not None]

    def for_endpoint(self, endpoint: tuple) -> socket.socket | None:
        """The socket that can reach an endpoint: 2-tuples are IPv4, 4-tuples IPv6."""
        return self.v4 if len(endpoint) == 2 else self.v6

    def set_fwmark(self, fwmark: int) -> None:
        for sock in self.sockets():
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, fwmark)
        self.fwmark = fwmark

    def close(self) -> None:
        for sock in self.sockets():
            sock.close()
