"""The interface's UDP sockets: one IPv4 and one IPv6-only, on the same port.

Two sockets rather than one dual-stack socket (as wireguard-go does) so that
addresses arrive and leave in their own family's form, with no mapping of
IPv4 into IPv6 on every packet. Together they are the interface's single
point of entry: every datagram is sorted by its first bytes after this.

With `gro`, the kernel hands over runs of same-size datagrams from one source
as one buffer (UDP GRO); `send_outbox` sends runs of same-size datagrams to
one endpoint with one sendmsg (UDP GSO).

Sticky source, as the kernel's WireGuard and wireguard-go: each receive
reports the local address the datagram was sent to (IP_PKTINFO,
IPV6_PKTINFO), the endpoint remembers it, and replies leave from that address
rather than the routing table's choice, so a peer that wrote our secondary
address sees its answers come from it (and a NAT or firewall between lets
them through). When that address has gone, the send falls back to the
routing table's choice, and the address is not tried again until the local
addresses change (`addresses_changed`). An IPv4 source whose route to the
peer leaves by another interface is routed too (`misrouted`, kept by the
runtime with net/sourceroute.py).
"""

from __future__ import annotations

import errno
import socket
import struct
import sys
from collections import Counter

from ..wireguard.buffers import Outbox
from ..wireguard.drops import Drop, Fallback
from ..wireguard.endpoint import Endpoint, LocalSource

SO_MARK = 36
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
SOCKET_BUFFER = 7 << 20  # as wireguard-go: room for bursts at a few Gbit/s
IP_PKTINFO = 8  # not in Python's socket module before 3.12
_IN_PKTINFO = struct.Struct("=i4s4s")  # ifindex, local address (spec_dst), header destination
_IN6_PKTINFO = struct.Struct("=16si")  # address, ifindex
# room for a GRO segment size and a packet-info message in one receive
RECV_CMSG_SPACE = socket.CMSG_SPACE(4) + socket.CMSG_SPACE(_IN6_PKTINFO.size)
_MAX_GSO_SEGMENTS = 64
_MAX_GSO_BYTES = 65000
_SEGMENT_OPTION = {}  # segment size -> packed cmsg data, built on first use


def _mark(fwmark: int) -> bytes:
    """SO_MARK's value as the kernel reads it (a u32): Python would pack an int
    as a signed C int and refuse marks of 2**31 and above."""
    return fwmark.to_bytes(4, sys.byteorder)


def _open(family: int, port: int, fwmark: int, gro: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        if fwmark:
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, _mark(fwmark))
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
        self.drops: Counter[Drop] = Counter()
        self.fallbacks: Counter[Fallback] = Counter()
        # local addresses a send from failed (removed since): routed instead
        self.stale_sources: set[LocalSource] = set()
        # (peer address, source) pairs whose route leaves by another interface
        # than the peer's datagrams came in on: routed instead (net/sourceroute.py)
        self.misrouted: set[tuple[str, LocalSource]] = set()
        self._source_controls: dict[LocalSource, tuple] = {}
        self._reply_controls: dict[bytes, tuple] = {}  # received packet info -> send control
        self.last_send_error = 0  # errno of the last failed send, for stats
        # datagrams for relayed endpoints, left by send_outbox for the runtime
        self.relayed: list[tuple[bytes, Endpoint]] = []
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

    def for_endpoint(self, endpoint: Endpoint) -> socket.socket | None:
        """The socket that can reach an endpoint (None: no socket of its family)."""
        return self.v4 if endpoint.family == socket.AF_INET else self.v6

    def addresses_changed(self) -> None:
        """Local addresses came or went: try every remembered source again."""
        self.stale_sources.clear()

    def _source_control(self, local: LocalSource, family: int) -> tuple:
        """The packet-info message that makes a send leave from `local`."""
        control = self._source_controls.get(local)
        if control is None:
            if len(self._source_controls) > 1024:
                self._source_controls.clear()
            if family == socket.AF_INET:
                packed = socket.inet_pton(socket.AF_INET, local.address)
                # ifindex 0: the route to the peer picks the device, as the kernel's
                # WireGuard does; only the source address is pinned
                control = (socket.IPPROTO_IP, IP_PKTINFO, _IN_PKTINFO.pack(0, packed, bytes(4)))
            else:
                packed = socket.inet_pton(socket.AF_INET6, local.address)
                # a link-local source is only meaningful on the link it came in on
                ifindex = local.ifindex if packed[:2] == b"\xfe\x80" else 0
                control = (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO,
                           _IN6_PKTINFO.pack(packed, ifindex))  # fmt: skip
            self._source_controls[local] = control
        return control

    def send_reply(self, sock: socket.socket, reply: bytes, sockaddr: tuple,
                   pktinfo: bytes | None) -> None:  # fmt: skip
        """Send one reply (a cookie reply under load) straight back to where a
        datagram came from, leaving from the local address it arrived at
        (pktinfo as received), without making an Endpoint."""
        try:
            if pktinfo is None:
                sock.sendto(reply, sockaddr)
            else:
                sock.sendmsg([reply], [self._reply_control(pktinfo)], 0, sockaddr)
        except BlockingIOError:
            self.drops[Drop.SEND_BUFFER_FULL] += 1
        except OSError as failed:
            error = failed
            if pktinfo is not None:
                try:  # that local address may have gone: let the routing table choose
                    sock.sendto(reply, sockaddr)
                    return
                except OSError as routed:
                    error = routed
            self._count_send_error(error, 1)

    def _reply_control(self, pktinfo: bytes) -> tuple:
        """The packet-info message that makes a send leave from the address a
        received packet-info message names (cached by its bytes)."""
        control = self._reply_controls.get(pktinfo)
        if control is None:
            if len(self._reply_controls) > 1024:
                self._reply_controls.clear()
            if len(pktinfo) >= _IN6_PKTINFO.size:
                address, ifindex = _IN6_PKTINFO.unpack_from(pktinfo)
                ifindex = ifindex if address[:2] == b"\xfe\x80" else 0
                control = (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO,
                           _IN6_PKTINFO.pack(address, ifindex))  # fmt: skip
            else:
                _, spec_dst, _ = _IN_PKTINFO.unpack_from(pktinfo)
                control = (socket.IPPROTO_IP, IP_PKTINFO, _IN_PKTINFO.pack(0, spec_dst, bytes(4)))
            self._reply_controls[pktinfo] = control
        return control

    def set_fwmark(self, fwmark: int) -> None:
        for sock in self.sockets():
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, _mark(fwmark))
        self.fwmark = fwmark

    def adopt_state(self, old: UdpSockets) -> None:
        """Carry counters and what was learned about the path over from the
        sockets these replace (a listen-port change)."""
        self.drops.update(old.drops)
        self.fallbacks.update(old.fallbacks)
        self.last_send_error = old.last_send_error
        self.misrouted = old.misrouted
        if not old.gso:
            self.gso = False  # the path could not segment; it still cannot

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
            if endpoint.via is not None:  # through a relay member: the runtime's to send
                self.relayed.append((bytes(view[offset:end]), endpoint))
                i += 1
                continue
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

    def _send(self, data: memoryview, size: int, segments: int, endpoint: Endpoint,
              records: list, first: int) -> None:  # fmt: skip
        sock = self.for_endpoint(endpoint)
        if sock is None:
            self.drops[Drop.NO_SOCKET_FOR_FAMILY] += segments
            return
        local = endpoint.local
        sticky = local is not None and local not in self.stale_sources
        if sticky and self.misrouted and (endpoint.sockaddr[0], local) in self.misrouted:
            sticky = False
        try:
            self._sendmsg(sock, data, size, segments, endpoint, sticky)
        except BlockingIOError:
            self.drops[Drop.SEND_BUFFER_FULL] += segments
        except OSError as exc:
            if sticky:
                # the address the peer wrote to may have gone: let the routing
                # table choose, and remember that for the next sends
                try:
                    self._sendmsg(sock, data, size, segments, endpoint, False)
                except OSError:
                    pass
                else:
                    self.stale_sources.add(local)  # type: ignore[arg-type]
                    self.fallbacks[Fallback.STALE_SOURCE] += 1
                    return
            if segments > 1 and exc.errno in (errno.EIO, errno.EINVAL, errno.EOPNOTSUPP):
                # this path cannot segment: stop asking, send these one by one
                self.gso = False
                self.fallbacks[Fallback.GSO_UNSUPPORTED] += 1
                base = records[first][0]
                for k in range(segments):
                    offset, length, _ = records[first + k]
                    start = offset - base
                    try:
                        self._sendmsg(sock, data[start : start + length], length, 1, endpoint,
                                      sticky and local not in self.stale_sources)  # fmt: skip
                    except OSError as single:
                        self._count_send_error(single, 1)
                return
            self._count_send_error(exc, segments)

    def _sendmsg(self, sock: socket.socket, data: memoryview, size: int, segments: int,
                 endpoint: Endpoint, sticky: bool) -> None:  # fmt: skip
        if segments == 1 and not sticky:
            sock.sendto(data, endpoint.sockaddr)
            return
        controls = []
        if sticky:
            controls.append(self._source_control(endpoint.local, endpoint.family))  # type: ignore[arg-type]
        if segments > 1:
            option = _SEGMENT_OPTION.get(size)
            if option is None:
                option = _SEGMENT_OPTION[size] = struct.pack("=H", size)
            controls.append((SOL_UDP, UDP_SEGMENT, option))
        sock.sendmsg([data], controls, 0, endpoint.sockaddr)

    def _count_send_error(self, exc: OSError, count: int) -> None:
        if isinstance(exc, BlockingIOError):
            self.drops[Drop.SEND_BUFFER_FULL] += count
        else:
            self.drops[Drop.SEND_FAILED] += count
            self.last_send_error = exc.errno or 0


def parse_receive_ancillary(ancillary: list, total: int) -> tuple[int, bytes | None]:
    """The GRO segment size of a receive (total for a single datagram) and the
    raw packet-info data (the local address it was sent to), if any."""
    segment = total
    pktinfo = None
    for level, kind, data in ancillary:
        if level == SOL_UDP and kind == UDP_GRO:
            segment = struct.unpack("=i", data[:4])[0]
        elif (level == socket.IPPROTO_IP and kind == IP_PKTINFO) or (
            level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO
        ):
            pktinfo = data
    return segment, pktinfo


def local_source(pktinfo: bytes) -> LocalSource:
    """The local address and interface of a packet-info message."""
    if len(pktinfo) >= _IN6_PKTINFO.size:
        address, ifindex = _IN6_PKTINFO.unpack_from(pktinfo)
        return LocalSource(socket.inet_ntop(socket.AF_INET6, address), ifindex)
    ifindex, spec_dst, _ = _IN_PKTINFO.unpack_from(pktinfo)
    return LocalSource(socket.inet_ntop(socket.AF_INET, spec_dst), ifindex)
