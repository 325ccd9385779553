"""The runtime of one WireGuard interface: trio tasks around the protocol core.

All tasks live in one nursery: the TUN reader, a reader per UDP socket, the
timer loop, the link watch, the source-route check and (when given a
listener) the UAPI server. When
the nursery exits, for whatever reason, the sockets close and the TUN goes.

The data path never awaits per packet: after each wakeup a reader drains its
file descriptor until it would block (or a batch is full), hands the batch to
the device, and sends what the device queued, all before it waits again. The
device writes into reusable buffers (its Outbox and Inbox); the UDP side sends
runs of datagrams with GSO and receives them with GRO; the TUN side writes
consecutive TCP segments as one GSO super-packet (net/offload.py).
"""

from __future__ import annotations

import errno
import io
import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import trio

from .log import Logger
from .net import link, sourceroute
from .net.offload import DATA_VALID_HEADER, VNET_HDR_LEN, coalesce
from .net.tun import Tun
from .net.udp import RECV_CMSG_SPACE, UdpSockets, local_source, parse_receive_ancillary
from .uapi.protocol import UapiError, format_get, parse_set
from .wireguard.constants import DEFAULT_MTU
from .wireguard.device import Device
from .wireguard.drops import Drop
from .wireguard.endpoint import Endpoint
from .wireguard.events import PeerEvent
from .wireguard.messages import INITIATION_SIZE, RESPONSE_SIZE
from .wireguard.settings import SetRequest, apply_settings

_TUN_BATCH = 128  # packets read from the TUN per wakeup (GSO sends up to 64 at once)
_UDP_BATCH = 64  # receive calls per wakeup (each up to 64 KiB with GRO)
_UDP_BUFFER = 1 << 16
_DELIVER_BATCH = 256  # inner packets gathered before writing them to the TUN
_TXQUEUELEN = 5000  # the default 500 drops under load (PERF-NOTES)
_ENDPOINT_CACHE = 4096  # source endpoints remembered; cleared whole when full
_DISPATCH_ROUNDS = 16  # rounds of handlers (relaying, injecting) per flush, at most
# seconds at least between two looks at the routes; a look that took long
# waits longer, so that route churn keeps the lookups to a tenth of the time
_SOURCE_CHECK_SPACING = 0.05
# Under load, the device stays under load while it reads at least this many
# handshake messages a second (counted over windows of _LOAD_WINDOW seconds),
# even when it keeps up with them and drains the socket.
_LOAD_STAY = 1000
_LOAD_WINDOW = 0.25

# A handler for datagrams that are not WireGuard (STUN, probes): it takes
# (datagram, source) and returns nothing; `matches` picks the datagrams it takes.
DatagramHandler = Callable[[bytes, Endpoint], None]
DatagramMatcher = Callable[[bytes], bool]
# A consumer of the device's peer events (the mesh agent's glue).
EventHandler = Callable[[PeerEvent], None]
# The mesh agent's glue: (sender's public key, payload) of a coordination message.
CoordinationHandler = Callable[[bytes, bytes], None]
# The mesh glue's relay: a WireGuard datagram for a relayed endpoint becomes the
# inner packet that carries it to the relay member (None: it cannot be carried).
RelaySender = Callable[[bytes, Endpoint], bytes | None]


@dataclass(frozen=True)
class Offloads:
    """Kernel offloads the data path uses; each can be switched off for kernels
    or paths that misbehave (with all off, it is plain read/write/sendto)."""

    gso: bool = True  # UDP GSO: one sendmsg for a run of datagrams
    gro: bool = True  # UDP GRO: one receive for a run of datagrams
    tun_vnet: bool = True  # TUN with virtio headers: coalesced TCP writes

    @classmethod
    def parse(cls, text: str) -> Offloads:
        """'all', 'none', or a comma list of gso, gro, tun (the ones to keep on)."""
        words = {w.strip() for w in text.split(",") if w.strip()}
        if words in ({"all"}, set()):
            return cls()
        if words == {"none"}:
            return cls(False, False, False)
        unknown = words - {"gso", "gro", "tun"}
        if unknown:
            raise ValueError(
                f"unknown offload {sorted(unknown)[0]!r} (use gso, gro, tun, all, none)"
            )
        return cls("gso" in words, "gro" in words, "tun" in words)


class InterfaceGone(Exception):
    """The TUN device was deleted from outside."""


class Interface:
    """One interface's runtime. `watch_link=False` leaves out the netlink link
    watch (and the txqueuelen setting), for a TUN stand-in such as a socket
    pair in tests that run without root."""

    def __init__(self, tun: Tun, log: Logger, *, mtu: int = DEFAULT_MTU,
                 offloads: Offloads | None = None, watch_link: bool = True) -> None:  # fmt: skip
        self.tun = tun
        self.watch_link = watch_link
        self.name = tun.name
        self.log = log
        self.offloads = offloads or Offloads(tun_vnet=tun.vnet_hdr)
        self.device = Device(mtu=mtu, epoch=time.time() - trio.current_time())
        self.udp = self._bind(0, 0)
        self.device.listen_port = self.udp.port
        if log.verbose_enabled:
            self.device.trace = log.verbose
        self.datagram_handlers: list[tuple[DatagramMatcher, DatagramHandler]] = []
        self.event_handlers: list[EventHandler] = []
        self.coordination_handler: CoordinationHandler | None = None
        self.relay_sender: RelaySender | None = None
        self._dispatching = False  # handlers run: injected work is flushed after them
        self._coordination_out: list[bytes] = []  # sent by handlers, sealed after them
        self._injected: list[tuple[bytes, Endpoint]] = []  # taken by handlers, opened after
        self.drops: Counter[Drop] = Counter()  # the runtime's own; see stats()
        self.last_tun_error = 0
        self._endpoints: dict[tuple, Endpoint] = {}  # (address, packet info) -> Endpoint
        self._udp_scope: trio.CancelScope | None = None
        # the timer loop sleeps in this scope until the device's next deadline
        self._timer_scope = trio.CancelScope()
        # the source-route check: woken by new sources and by the link watch,
        # which also says when everything must be looked at again
        self._source_check = trio.Event()
        self._routes_changed = True

    def _bind(self, port: int, fwmark: int) -> UdpSockets:
        return UdpSockets(port, fwmark, gro=self.offloads.gro, gso=self.offloads.gso)

    # ------------------------------------------------------------ life cycle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled or the TUN disappears; always releases the sockets."""
        if self.watch_link:
            try:
                link.configure(self.name, txqueuelen=_TXQUEUELEN)
            except OSError as exc:
                self.log.error(f"Cannot set txqueuelen: {exc}")
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._tun_reader)
                nursery.start_soon(self._udp_supervisor)
                nursery.start_soon(self._timer_loop)
                if self.watch_link:
                    nursery.start_soon(self._link_watch)
                    nursery.start_soon(self._source_route_watch)
                task_status.started()
        finally:
            self.udp.close()

    # ------------------------------------------------------------ data path

    def _now(self) -> float:
        return trio.current_time()

    def _flush(self) -> None:
        """Send what the device queued and deliver what it decrypted, then let
        it settle its timers (sending what that queued); bring the timer loop's
        wakeup forward if this batch set an earlier deadline."""
        self._send_and_deliver()
        self.device.settle()
        self._send_and_deliver()
        deadline = self.device.next_deadline()
        if deadline is not None and deadline < self._timer_scope.deadline:
            # moving a deadline costs no task switch; waking the timer loop
            # to recompute it after every batch added one to each packet's path
            self._timer_scope.deadline = deadline

    def _send_and_deliver(self) -> None:
        device = self.device
        udp = self.udp
        for _ in range(_DISPATCH_ROUNDS):
            if device.outbox.records:
                udp.send_outbox(device.outbox)
                device.outbox.clear()
                if udp.relayed:
                    self._send_relayed()  # sealed for the relay: in the outbox again
                    continue
            if device.inbox.records:
                self._deliver()
            if not (device.other_datagrams or device.events or device.coordination):
                return
            # handlers may queue datagrams (relaying, answers) and inject some
            self._dispatching = True
            try:
                if device.other_datagrams:
                    self._dispatch_other_datagrams()
                if device.events:
                    self._dispatch_events()
                if device.coordination:
                    self._dispatch_coordination()
            finally:
                self._dispatching = False
            if self._injected:
                self._open_injected()
            if self._coordination_out:
                packets, self._coordination_out = self._coordination_out, []
                device.send_coordination_batch(packets, self._now())
            device.settle()  # for what handlers injected
            if not (device.outbox.records or device.inbox.records or device.other_datagrams
                    or device.events or device.coordination):  # fmt: skip
                return
        # handlers kept making work (relays relaying through each other): what is
        # left waits for the next flush, and nothing more is relayed this time
        self.udp.relayed.clear()

    def _send_relayed(self) -> None:
        relayed, self.udp.relayed = self.udp.relayed, []
        carry = self.relay_sender
        packets = []
        for datagram, endpoint in relayed:
            packet = None if carry is None else carry(datagram, endpoint)
            if packet is None:
                self.drops[Drop.NO_RELAY] += 1
            else:
                packets.append(packet)
        if packets:
            self.device.send_coordination_batch(packets, self._now())

    def _open_injected(self) -> None:
        """Open what handlers injected, runs of equal-size datagrams from one
        endpoint at once, as UDP GRO would have delivered them."""
        injected, self._injected = self._injected, []
        now = self._now()
        i, count = 0, len(injected)
        while i < count:
            datagram, source = injected[i]
            size = len(datagram)
            j = i + 1
            while j < count and injected[j][1] is source and len(injected[j][0]) == size:
                j += 1
            run = b"".join(d for d, _ in injected[i:j]) if j - i > 1 else datagram
            self.device.receive_batch(memoryview(run), len(run), size, source, now)
            i = j

    def _dispatch_coordination(self) -> None:
        found, self.device.coordination = self.device.coordination, []
        handle = self.coordination_handler
        if handle is None:
            return
        for sender, payload in found:
            try:
                handle(sender, payload)
            except Exception as exc:
                self.drops[Drop.HANDLER_FAILED] += 1
                self.log.error(f"The coordination handler failed: {exc!r}")

    def _dispatch_other_datagrams(self) -> None:
        """Hand each datagram that is not WireGuard's to the first handler that
        takes it; a handler's failure is counted, never the data path's end."""
        found, self.device.other_datagrams = self.device.other_datagrams, []
        for datagram, source in found:
            for matches, handle in self.datagram_handlers:
                try:
                    if matches(datagram):
                        handle(datagram, source)
                        break
                except Exception as exc:
                    self.drops[Drop.HANDLER_FAILED] += 1
                    self.log.error(f"A datagram handler failed: {exc!r}")
                    break
            else:
                self.drops[Drop.UNKNOWN_DATAGRAM] += 1

    def _dispatch_events(self) -> None:
        events = self.device.events
        while events:
            event = events.popleft()
            for handle in self.event_handlers:
                try:
                    handle(event)
                except Exception as exc:
                    self.log.error(f"A peer event handler failed on {event}: {exc!r}")

    def _deliver(self) -> None:
        inbox = self.device.inbox
        fd = self.tun.fileno()
        try:
            if not self.tun.vnet_hdr:
                view = inbox.view
                for offset, length in inbox.records:
                    os.write(fd, view[offset : offset + length])
            elif self.offloads.tun_vnet:
                for pieces in coalesce(inbox.buffer, inbox.records):
                    os.writev(fd, pieces)
            else:
                view = inbox.view
                for offset, length in inbox.records:
                    os.writev(fd, [DATA_VALID_HEADER, view[offset : offset + length]])
        except OSError as exc:
            self.drops[Drop.TUN_WRITE_FAILED] += 1
            self.last_tun_error = exc.errno or 0
        finally:
            inbox.clear()

    def _tun_slots(self) -> tuple[list[memoryview], list[memoryview], int]:
        """Buffers for one batch of reads: each with room for the virtio header (if
        any), an MTU-sized packet and its padding; and the packet's part of it."""
        size = max(self.device.mtu, 1500) + 64
        skip = VNET_HDR_LEN if self.tun.vnet_hdr else 0
        arena = memoryview(bytearray(_TUN_BATCH * size))
        reads = [arena[i * size : (i + 1) * size] for i in range(_TUN_BATCH)]
        return [read[skip:] for read in reads], reads, size

    async def _tun_reader(self) -> None:
        fd = self.tun.fileno()
        device = self.device
        skip = VNET_HDR_LEN if self.tun.vnet_hdr else 0
        slots, reads, slot_size = self._tun_slots()
        lengths = [0] * _TUN_BATCH
        # FileIO.readinto reads into one buffer and returns None at EAGAIN: cheaper
        # per packet than os.readv, and no exception to end each batch
        readinto = io.FileIO(fd, "rb", closefd=False).readinto
        while True:
            await trio.lowlevel.wait_readable(fd)
            if device.mtu + 64 > slot_size:
                slots, reads, slot_size = self._tun_slots()
            now = self._now()
            count = 0
            while count < _TUN_BATCH:
                try:
                    length = readinto(reads[count])
                except OSError as exc:
                    if exc.errno in (errno.EBADFD, errno.EIO, errno.ENODEV):
                        raise InterfaceGone(self.name) from exc
                    raise
                if length is None:
                    break
                lengths[count] = length - skip
                count += 1
            if count:
                device.send_batch(slots, lengths, count, now)
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
        device = self.device
        buffer = bytearray(_UDP_BUFFER)
        view = memoryview(buffer)
        buffers = [view]
        recvmsg_into = sock.recvmsg_into
        endpoints = self._endpoints
        screen = device.screen_handshake
        load_window_start, load_window_count = 0.0, 0
        while True:
            if sock.fileno() < 0:
                return  # closed by a second listen-port change before this reader first ran
            try:
                await trio.lowlevel.wait_readable(sock)
            except trio.ClosedResourceError:
                return  # the listen port changed: the supervisor starts new readers
            now = self._now()
            handshakes = handled = 0
            drained = False
            under_load = device.is_under_load(now)
            for _ in range(_UDP_BATCH):
                try:
                    total, ancillary, _flags, address = recvmsg_into(buffers, RECV_CMSG_SPACE)
                except BlockingIOError:
                    drained = True
                    break
                except ConnectionRefusedError:
                    continue  # an ICMP error for an earlier send; nothing to read
                kind = buffer[0]
                if 0 < kind < 4:
                    handshakes += 1
                    if (
                        under_load
                        and total == (INITIATION_SIZE if kind == 1 else RESPONSE_SIZE)
                        and not (buffer[1] or buffer[2] or buffer[3])
                    ):
                        # under load a handshake message costs its MACs and at
                        # most a cookie reply, and no Endpoint, before its
                        # sender has proven it receives at its address
                        verdict = screen(view[:total], address, now)
                        if verdict is not False:
                            self._screened(sock, verdict, view, total, address, ancillary, now)
                        continue
                if ancillary:
                    segment, pktinfo = parse_receive_ancillary(ancillary, total)
                else:
                    segment, pktinfo = total, None
                source = endpoints.get((address, pktinfo))
                if source is None:
                    source = self._endpoint(address, pktinfo)
                # datagrams that are not WireGuard's come back from the device,
                # sorted per GRO segment, in device.other_datagrams
                device.receive_batch(view, total, segment, source, now)
                if not handled or len(device.inbox.records) >= _DELIVER_BATCH:
                    # the first receive of a wakeup goes on at once (a lone packet
                    # waits for nothing); later ones gather so TCP runs coalesce
                    self._flush()
                handled += 1
            # Delivering once per wakeup rather than per receive lets segments of
            # one TCP flow that came as separate datagrams be coalesced too.
            self._flush()
            if not handshakes:
                continue
            if not drained and handshakes >= _UDP_BATCH // 2:
                # handshakes are arriving faster than we answer them: demand
                # cookies for a while, as wireguard-go does when its queue backs up
                device.mark_under_load(now)
            elif under_load:
                # once under load the cheap path may keep up and drain the
                # socket: stay under load while handshakes still pour in
                if now - load_window_start >= _LOAD_WINDOW:
                    load_window_start, load_window_count = now, 0
                load_window_count += handshakes
                if load_window_count >= _LOAD_STAY * _LOAD_WINDOW:
                    device.mark_under_load(now)

    def _screened(self, sock: socket.socket, verdict: bytes | bool, view: memoryview,
                  total: int, address: tuple, ancillary: list, now: float) -> None:  # fmt: skip
        """Act on screen_handshake's verdict: send the cookie reply, or hand a
        message that passed to the device (the only ones given an Endpoint)."""
        pktinfo = parse_receive_ancillary(ancillary, total)[1] if ancillary else None
        if verdict is True:
            source = self._endpoints.get((address, pktinfo))
            if source is None:
                source = self._endpoint(address, pktinfo)
            self.device.receive_screened(bytes(view[:total]), source, now)
            self._flush()
        else:
            self.udp.send_reply(sock, verdict, address, pktinfo)  # type: ignore[arg-type]

    def _endpoint(self, address: tuple, pktinfo: bytes | None) -> Endpoint:
        """The Endpoint of a source address and the local address it wrote to.

        Kept in a bounded cache, so a peer's datagrams share one object (the
        send path compares endpoints by identity first) and a flood from many
        sources cannot grow it without bound."""
        endpoints = self._endpoints
        if len(endpoints) >= _ENDPOINT_CACHE:
            endpoints.clear()
        endpoint = Endpoint(address, None if pktinfo is None else local_source(pktinfo))
        if pktinfo is not None:
            self._source_check.set()  # a peer may roam to it: its route is looked at
        endpoints[(address, pktinfo)] = endpoint
        return endpoint

    async def _timer_loop(self) -> None:
        device = self.device
        while True:
            deadline = device.next_deadline()
            self._timer_scope = trio.CancelScope(
                deadline=float("inf") if deadline is None else deadline
            )
            with self._timer_scope:
                await trio.sleep_forever()
            now = self._now()
            # Handshake timestamps are epoch + monotonic time. Follow the wall
            # clock forward (NTP setting a clock that booted late right, as the
            # kernel does), never back: a clock stepped back would make our
            # initiations look like replays to every peer.
            device.epoch = max(device.epoch, time.time() - now)
            device.handle_timers(now)
            self._send_and_deliver()

    # ------------------------------------------------------------ for the layers above

    def send_datagram(self, datagram: bytes, endpoint: Endpoint) -> None:
        """Send a datagram that is not WireGuard's (STUN, a probe) from the
        interface's own socket, so it takes the WireGuard port's NAT mapping."""
        self.device.outbox.add(datagram, endpoint)
        if not self._dispatching:
            self._send_and_deliver()

    def send_coordination(self, packet: bytes) -> None:
        """Send one of the mesh agent's coordination packets (an inner IP packet
        to a peer's coordination port) through the tunnel."""
        if self._dispatching:  # a handler relaying: sealed with the others after it
            self._coordination_out.append(packet)
            return
        self.device.send_coordination(packet, self._now())
        self._flush()

    def inject(self, datagram: bytes, source: Endpoint) -> None:
        """Take a datagram that arrived another way (through a relay) as if the
        socket had received it from source. From a handler, what it decrypts
        is delivered once the handlers are done."""
        if self._dispatching:
            self._injected.append((datagram, source))
            return
        view = memoryview(datagram)
        self.device.receive_batch(view, len(datagram), len(datagram), source, self._now())
        self._flush()

    def stats(self) -> dict[str, object]:
        """Every counter of the interface: the device's drops, the runtime's and
        the sockets', and the fallbacks the sockets took; zero counts left out."""
        drops = self.device.drops + self.drops + self.udp.drops
        return {
            "drops": {str(reason): count for reason, count in sorted(drops.items())},
            "fallbacks": {str(k): v for k, v in sorted(self.udp.fallbacks.items())},
            "last_send_errno": self.udp.last_send_error,
            "last_tun_errno": self.last_tun_error,
            "icmp_errors_sent": self.device.icmp_errors_sent,
            "peers": len(self.device.peers),
            "listen_port": self.udp.port,
        }

    async def _link_watch(self) -> None:
        """Follow MTU changes (padding depends on it), notice the TUN vanishing,
        let sends try remembered source addresses again when addresses change,
        and have the routes to them looked at again when routes change."""
        while True:
            try:
                events = link.link_events_socket(routes=True)
            except OSError as exc:  # out of descriptors, say: the data path goes on
                self.log.error(f"Cannot watch the link: {exc}; trying again in 1 s")
                await trio.sleep(1)
                continue
            with events:
                await self._watch_link_events(events)

    async def _watch_link_events(self, events: socket.socket) -> None:
        links_or_addresses = True  # the first look is at everything
        while True:
            if links_or_addresses:
                try:
                    mtu = link.mtu_of(self.name)
                except OSError:
                    mtu = self.device.mtu  # cannot ask now (no descriptor): keep it
                if mtu is None:
                    raise InterfaceGone(self.name)
                self.device.mtu = mtu
                self.udp.addresses_changed()
            self.routes_changed()
            await trio.lowlevel.wait_readable(events)
            types = link.drain(events)
            links_or_addresses = bool(types - {link.RTM_NEWROUTE, link.RTM_DELROUTE})

    def routes_changed(self) -> None:
        """Have every remembered source's route looked at again."""
        self._routes_changed = True
        self._source_check.set()

    async def _source_route_watch(self) -> None:
        """Keep `udp.misrouted` true: the remembered IPv4 sources whose route to
        the peer leaves by another interface (net/sourceroute.py). Everything is
        looked at again when routes, links or addresses change (or the fwmark);
        sources learned since, when they come."""
        checked: set[sourceroute.SourcePair] = set()
        while True:
            await self._source_check.wait()
            self._source_check = trio.Event()
            everything, self._routes_changed = self._routes_changed, False
            pinned = sourceroute.pinned_pairs(p.endpoint for p in self.device.peers.values())
            todo = pinned if everything else pinned - checked
            took = 0.0
            if todo:
                started = time.monotonic()
                try:
                    found = await trio.to_thread.run_sync(
                        sourceroute.misrouted, todo, self.udp.fwmark
                    )
                except Exception as exc:  # pyroute2 has errors of its own, and a
                    # failed lookup must not end the interface: keep what we
                    # knew, and look at everything again on the next change
                    self.log.error(f"Cannot look up the routes to peers: {exc}")
                    self._routes_changed = True
                else:
                    kept = set() if everything else self.udp.misrouted & (pinned - todo)
                    self.udp.misrouted = kept | found
                    checked = pinned
                took = time.monotonic() - started
            elif everything:
                self.udp.misrouted = set()
                checked = pinned
            await trio.sleep(max(_SOURCE_CHECK_SPACING, 9 * took))

    # ------------------------------------------------------------ configuration

    def uapi_get(self) -> str:
        return format_get(self.device)

    def uapi_set(self, lines: list[str]) -> None:
        """Apply a UAPI set request whole, or raise UapiError and change nothing."""
        try:
            self.apply(parse_set(lines))
        except UapiError as exc:
            self.log.error(f"UAPI: {exc}")
            raise

    def apply(self, request: SetRequest) -> None:
        """Apply a typed change whole (the UAPI's set is one front end to it, the
        node and the mesh others), or raise UapiError and change nothing: a new
        listen port is bound before anything else changes."""
        new_udp = None
        fwmark = self.udp.fwmark if request.fwmark is None else request.fwmark
        if request.listen_port is not None and request.listen_port != self.udp.port:
            try:
                new_udp = self._bind(request.listen_port, fwmark)
            except OSError as exc:
                raise UapiError(exc.errno or errno.EADDRINUSE, f"cannot bind: {exc}") from exc
        elif fwmark != self.udp.fwmark:
            try:
                self.udp.set_fwmark(fwmark)
            except OSError as exc:
                raise UapiError(exc.errno or errno.EPERM, f"cannot set fwmark: {exc}") from exc
        try:
            apply_settings(request, self.device, self._now())
        except BaseException:
            if new_udp is not None:
                new_udp.close()  # the set failed: the new port is not kept
            raise
        if new_udp is not None:
            new_udp.adopt_state(self.udp)
            old, self.udp = self.udp, new_udp
            for sock in old.sockets():
                trio.lowlevel.notify_closing(sock)
            old.close()
            if self._udp_scope is not None:
                self._udp_scope.cancel()
        self.device.listen_port = self.udp.port
        if self.device.fwmark != self.udp.fwmark:
            self.routes_changed()  # routes are looked up under the fwmark
        self.device.fwmark = self.udp.fwmark
        self._flush()
