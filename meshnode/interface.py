"""The runtime of one WireGuard interface: trio tasks around the protocol core.

All tasks live in one nursery: the TUN reader, a reader per UDP socket, the
timer loop, the link watch and (when given a listener) the UAPI server. When
the nursery exits, for whatever reason, the sockets close and the TUN goes.

The data path never awaits per packet: after each wakeup a reader drains its
file descriptor until it would block, hands every packet to the device, and
sends what the device queued, all before it waits again.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections import Counter
from collections.abc import Callable

import trio

from .log import Logger
from .net import link
from .net.tun import Tun
from .net.udp import UdpSockets
from .uapi.protocol import UapiError, apply_set, format_get, parse_set
from .wireguard.constants import DEFAULT_MTU
from .wireguard.device import Device
from .wireguard.messages import is_wireguard

_BATCH = 512  # packets handled per wakeup before other tasks get a turn
_READ_SIZE = 65536

# A handler for datagrams that are not WireGuard (STUN, mesh messages later):
# it takes (datagram, source) and returns nothing.
DatagramHandler = Callable[[bytes, tuple], None]


class InterfaceGone(Exception):
    """The TUN device was deleted from outside."""


class Interface:
    def __init__(self, tun: Tun, log: Logger, *, mtu: int = DEFAULT_MTU) -> None:
        self.tun = tun
        self.name = tun.name
        self.log = log
        self.device = Device(mtu=mtu, epoch=time.time() - trio.current_time())
        self.udp = UdpSockets(0)
        self.device.listen_port = self.udp.port
        if log.verbose_enabled:
            self.device.trace = log.verbose
        self.other_datagrams: list[tuple[Callable[[bytes], bool], DatagramHandler]] = []
        self.errors: Counter[str] = Counter()
        self._udp_scope: trio.CancelScope | None = None
        self._timer_wakeup = trio.Event()
        self._sleeping_until = float("inf")

    # ------------------------------------------------------------ life cycle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled or the TUN disappears; always releases the sockets."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._tun_reader)
                nursery.start_soon(self._udp_supervisor)
                nursery.start_soon(self._timer_loop)
                nursery.start_soon(self._link_watch)
                task_status.started()
        finally:
            self.udp.close()

    # ------------------------------------------------------------ data path

    def _now(self) -> float:
        return trio.current_time()

    def _flush(self) -> None:
        """Send every datagram the device has queued."""
        udp = self.udp
        for datagram, endpoint in self.device.datagrams_to_send():
            sock = udp.for_endpoint(endpoint)
            if sock is None:
                self.errors["no_socket_for_family"] += 1
                continue
            try:
                sock.sendto(datagram, endpoint)
            except BlockingIOError:
                self.errors["udp_send_would_block"] += 1
            except OSError as exc:
                self.errors[f"udp_send_{errno.errorcode.get(exc.errno or 0, exc.errno)}"] += 1
        deadline = self.device.next_deadline()
        if deadline is not None and deadline < self._sleeping_until:
            self._timer_wakeup.set()

    async def _tun_reader(self) -> None:
        fd = self.tun.fileno()
        device_send = self.device.send
        while True:
            await trio.lowlevel.wait_readable(fd)
            now = self._now()
            for _ in range(_BATCH):
                try:
                    packet = os.read(fd, _READ_SIZE)
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in (errno.EBADFD, errno.EIO, errno.ENODEV):
                        raise InterfaceGone(self.name) from exc
                    raise
                device_send(packet, now)
            self._flush()

    async def _udp_supervisor(self) -> None:
        """Readers for the current sockets, restarted when the listen port changes."""
        while True:
            with trio.CancelScope() as scope:
                self._udp_scope = scope
                async with trio.open_nursery() as nursery:
                    for sock in self.udp.sockets():
                        nursery.start_soon(self._udp_reader, sock)

    async def _udp_reader(self, sock: socket.socket) -> None:
        fd = self.tun.fileno()
        device_receive = self.device.receive
        recvfrom = sock.recvfrom
        while True:
            try:
                await trio.lowlevel.wait_readable(sock)
            except trio.ClosedResourceError:
                return  # the listen port changed: the supervisor starts new readers
            now = self._now()
            for _ in range(_BATCH):
                try:
                    datagram, source = recvfrom(_READ_SIZE)
                except BlockingIOError:
                    break
                except ConnectionRefusedError:
                    continue  # an ICMP error for an earlier send; nothing to read
                if not is_wireguard(datagram):
                    self._other_datagram(datagram, source)
                    continue
                packet = device_receive(datagram, source, now)
                if packet is not None:
                    try:
                        os.write(fd, packet)
                    except OSError as exc:
                        self.errors[f"tun_write_{errno.errorcode.get(exc.errno or 0)}"] += 1
            self._flush()

    def _other_datagram(self, datagram: bytes, source: tuple) -> None:
        for matches, handle in self.other_datagrams:
            if matches(datagram):
                handle(datagram, source)
                return
        self.errors["unknown_datagram"] += 1

    async def _timer_loop(self) -> None:
        device = self.device
        while True:
            deadline = device.next_deadline()
            self._sleeping_until = float("inf") if deadline is None else deadline
            with trio.move_on_at(self._sleeping_until):
                await self._timer_wakeup.wait()
            self._timer_wakeup = trio.Event()
            self._sleeping_until = float("inf")
            device.handle_timers(self._now())
            self._flush()

    async def _link_watch(self) -> None:
        """Follow MTU changes (padding depends on it) and notice the TUN vanishing."""
        with link.link_events_socket() as events:
            while True:
                mtu = link.mtu_of(self.name)
                if mtu is None:
                    raise InterfaceGone(self.name)
                self.device.mtu = mtu
                await trio.lowlevel.wait_readable(events)
                while True:
                    try:
                        events.recv(65536)
                    except BlockingIOError:
                        break

    # ------------------------------------------------------------ configuration

    def uapi_get(self) -> str:
        return format_get(self.device)

    def uapi_set(self, lines: list[str]) -> None:
        """Apply a UAPI set request whole, or raise UapiError and change nothing."""
        try:
            self._uapi_set(lines)
        except UapiError as exc:
            self.log.error(f"UAPI: {exc}")
            raise

    def _uapi_set(self, lines: list[str]) -> None:
        request = parse_set(lines)
        new_udp = None
        fwmark = self.udp.fwmark if request.fwmark is None else request.fwmark
        if request.listen_port is not None and request.listen_port != self.udp.port:
            try:
                new_udp = UdpSockets(request.listen_port, fwmark)
            except OSError as exc:
                raise UapiError(exc.errno or errno.EADDRINUSE, f"cannot bind: {exc}") from exc
        elif fwmark != self.udp.fwmark:
            try:
                self.udp.set_fwmark(fwmark)
            except OSError as exc:
                raise UapiError(exc.errno or errno.EPERM, f"cannot set fwmark: {exc}") from exc
        apply_set(request, self.device, self._now())
        if new_udp is not None:
            old, self.udp = self.udp, new_udp
            for sock in old.sockets():
                trio.lowlevel.notify_closing(sock)
            old.close()
            if self._udp_scope is not None:
                self._udp_scope.cancel()
        self.device.listen_port = self.udp.port
        self.device.fwmark = self.udp.fwmark
        self._flush()
