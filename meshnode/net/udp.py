"""The interface's UDP sockets: one IPv4 and one IPv6-only, on the same port.

Two sockets rather than one dual-stack socket (as wireguard-go does) so that
addresses arrive and leave in their own family's form, with no mapping of
IPv4 into IPv6 on every packet. Together they are the interface's single
point of entry: every datagram is sorted by its first bytes after this.

With `gro`, the kernel hands over runs of same-size datagrams from one source
as one buffer (UDP GRO); `send_outbox` sends runs of same-size datagrams to
one endpoint with one sendmsg (UDP GSO).
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
from collections import Counter

from ..wireguard.buffers import Outbox

SO_MARK = 36
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
SOCKET_BUFFER = 7 << 20  # as wireguard-go: room for bursts at a few Gbit/s
GRO_CMSG_SPACE = socket.CMSG_SPACE(4)
_MAX_GSO_SEGMENTS = 64
_MAX_GSO_BYTES = 65000
_SEGMENT_OPTION = {}  # segment size -> packed cmsg data, built on first use


def _open(family: int, port: int, fwmark: int, gro: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if fwmark:
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, fwmark)
        for forced, plain in (
            (SO_RCVBUFFORCE, socket.SO_RCVBUF),
            (SO_SNDBUFFORCE, socket.SO_SNDBUF),
        ):
            try:
                sock.setsockopt(socket.SOL_SOCKET, forced, SOCKET_BUFFER)
            except PermissionError:  # not root: as much as the limits allow
                sock.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER)
        if gro:
            sock.setsockopt(SOL_UDP, UDP_GRO, 1)
        sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    except BaseException:
        sock.close()
        raise
    return sock


class UdpSockets:
    """Bound sockets for one listen port (0 picks a free one for both families)."""

    def __init__(self, port: int, fwmark: int = 0, *, gro: bool = False, gso: bool = False) -> None:
        last_error: OSError | None = None
        self.gro, self.gso = gro, gso
        self.errors: Counter[str] = Counter()
        for _ in range(10 if port == 0 else 1):
            v4 = _open(socket.AF_INET, port, fwmark, gro)
            chosen = v4.getsockname()[1]
            try:
                v6: socket.socket | None = _open(socket.AF_INET6, chosen, fwmark, gro)
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

    def send_outbox(self, outbox: Outbox) -> None:
        """Send every datagram in outbox, runs of equal size to one endpoint as one GSO send."""
        records = outbox.records
        view = outbox.view
        gso = self.gso
        count = len(records)
        i = 0
        while i < count:
            offset, size, endpoint = records[i]
            end = offset + size
            j = i + 1
            if gso:
                while j < count and j - i < _MAX_GSO_SEGMENTS:
                    o, s, e = records[j]
                    if o != end or s > size or end - offset + s > _MAX_GSO_BYTES:
                        break
                    if e is not endpoint and e != endpoint:
                        break
                    end += s
                    j += 1
                    if s != size:
                        break  # only the last segment may be shorter
            self._send(view[offset:end], size, j - i, endpoint, records, i)
            i = j

    def _send(self, data: memoryview, size: int, segments: int, endpoint: tuple,
              records: list, first: int) -> None:  # fmt: skip
        sock = self.for_endpoint(endpoint)
        if sock is None:
            self.errors["no_socket_for_family"] += segments
            return
        try:
            if segments == 1:
                sock.sendto(data, endpoint)
            else:
                option = _SEGMENT_OPTION.get(size)
                if option is None:
                    option = _SEGMENT_OPTION[size] = struct.pack("=H", size)
                sock.sendmsg([data], [(SOL_UDP, UDP_SEGMENT, option)], 0, endpoint)
        except BlockingIOError:
            self.errors["send_buffer_full"] += segments
        except OSError as exc:
            if segments > 1 and exc.errno in (errno.EIO, errno.EINVAL, errno.EOPNOTSUPP):
                # this path cannot segment: stop asking, send these one by one
                self.gso = False
                self.errors["gso_unsupported"] += 1
                with contextlib.suppress(OSError):
                    for k in range(segments):
                        offset, length, _ = records[first + k]
                        start = offset - records[first][0]
                        sock.sendto(data[start : start + length], endpoint)
                return
            self.errors[f"send_{errno.errorcode.get(exc.errno or 0, exc.errno)}"] += segments


def gro_segment(ancillary: list, total: int) -> int:
    """The segment size of a GRO receive (its cmsg), or total for a single datagram."""
    for level, kind, data in ancillary:
        if level == SOL_UDP and kind == UDP_GRO:
            return struct.unpack("=i", data[:4])[0]
    return total
