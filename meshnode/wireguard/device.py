"""The device state machine: one WireGuard interface's peers, sessions and timers.

Fed datagrams from the network (`receive`), inner packets from the TUN
(`send`) and the passing of time (`handle_timers`), it returns inner packets
to deliver and queues datagrams to send, which the runtime drains with
`datagrams_to_send()`. It never blocks, sleeps or reads a clock: `now` is a
monotonic time in seconds, and `epoch` turns it into Unix time where the
protocol needs wall time (handshake timestamps, last-handshake times).

The order of effects follows wireguard-go (device/receive.go, send.go,
timers.go) so that both behave alike on the wire.
"""

from __future__ import annotations

import os
import random
from collections import Counter, deque
from collections.abc import Callable

from . import messages as m
from .allowedips import AllowedIPs, Network
from .buffers import Inbox, Outbox
from .constants import (
    DEFAULT_MTU,
    KEEPALIVE_TIMEOUT,
    MAX_TIMER_HANDSHAKES,
    PADDING_MULTIPLE,
    QUEUE_STAGED_SIZE,
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER_MAX_MS,
    UNDER_LOAD_AFTER_TIME,
)
from .cookie import CookieChecker
from .drops import Drop
from .endpoint import Endpoint
from .events import (
    EndpointChanged,
    HandshakeCompleted,
    HandshakeGaveUp,
    KeysZeroed,
    PeerEvent,
)
from .icmp import host_unreachable
from .keypair import Keypair
from .keys import clamp
from .noise import (
    Handshake,
    HandshakeError,
    StaticIdentity,
    consume_initiation,
    consume_response,
    create_initiation,
    create_response,
    derive_transport_keys,
    precompute_static_static,
)
from .peer import Peer
from .ratelimit import RateLimiter
from .timers import Timer, TimerQueue
from .transport import open_batch, seal_batch, seal_one

_EVENT_QUEUE = 4096
# Under load, cookie replies to one source address (wireguard-go sends one to
# every datagram it reads): a legitimate initiator needs one per 5 s retry.
COOKIE_REPLIES_PER_SECOND = 20
COOKIE_REPLIES_BURSTABLE = 5
# ICMP errors for packets no peer takes, limited as the kernel limits its own
# to a local address (icmp_msgs_per_sec and icmp_msgs_burst; its per-address
# limit exempts them)
ICMP_ERRORS_PER_SECOND, ICMP_ERRORS_BURST = 1000, 50

__all__ = ["ConfigError", "Device", "Drop"]


class ConfigError(ValueError):
    """A configuration change the device refuses; nothing was changed."""


class Device:
    def __init__(
        self,
        private_key: bytes | None = None,
        *,
        mtu: int = DEFAULT_MTU,
        epoch: float = 0.0,
        rng: random.Random | None = None,
        under_load_threshold: int | None = None,
    ) -> None:
        self.mtu = mtu
        self.epoch = epoch  # Unix time at now == 0
        self.listen_port = 0
        self.fwmark = 0
        self.identity: StaticIdentity | None = None
        self.cookie_checker: CookieChecker | None = None
        self.peers: dict[bytes, Peer] = {}
        self.allowed_ips: AllowedIPs[Peer] = AllowedIPs()
        self.rate_limiter = RateLimiter()
        # under load, cookie replies per source address: a flood from a few
        # addresses costs a BLAKE2s per datagram, not a reply each
        self.cookie_limiter = RateLimiter(COOKIE_REPLIES_PER_SECOND, COOKIE_REPLIES_BURSTABLE)
        self.timers = TimerQueue()
        self.drops: Counter[Drop] = Counter()
        self.icmp_limiter = RateLimiter(ICMP_ERRORS_PER_SECOND, ICMP_ERRORS_BURST)
        self.icmp_errors_sent = 0  # host unreachable, written back to the TUN
        # what happened to peers, for the layers above (drained with next_event);
        # bounded, so a device nobody drains (meshnode-wg) cannot grow it
        self.events: deque[PeerEvent] = deque(maxlen=_EVENT_QUEUE)
        # datagrams that are not WireGuard's (STUN, probes), found inside a
        # batch: the runtime hands them to their handlers (see receive_other)
        self.other_datagrams: list[tuple[bytes, Endpoint]] = []
        # the mesh's coordination channel (coordination.py): 0 is off; when set,
        # UDP to this port from a peer goes to `coordination` (sender's public
        # key, payload), never to the TUN, and the TUN cannot send to it
        self.coordination_port = 0
        self.coordination: list[tuple[bytes, bytes]] = []
        self._rng = rng or random.Random(os.urandom(16))
        self.outbox = Outbox()  # datagrams to send, drained by the runtime
        self.inbox = Inbox()  # inner packets to deliver, drained by the runtime
        # The per-peer bookkeeping of the batches since the last settle() (timers,
        # key freshness, staged packets): the runtime hands the batch's
        # datagrams and packets on first, so no packet waits for it.
        self.unsettled_sent: set[Peer] = set()
        self.unsettled_waiting: set[Peer] = set()  # packets staged for a session
        self.unsettled_received: dict[Peer, int] = {}  # peer -> data packets
        self.unsettled_now = 0.0
        self._handshakes: dict[int, Peer] = {}  # local index -> peer awaiting a reply
        self.keypairs_by_index: dict[int, Keypair] = {}  # local index -> session
        # Load is normally reported by the runtime, which sees a backlog of
        # handshake messages (mark_under_load), as wireguard-go watches its queue;
        # a threshold of handshake messages per second can be set as well.
        self.under_load_threshold = under_load_threshold
        self._load_window_start = float("-inf")
        self._load_window_count = 0
        self._under_load_until = float("-inf")
        # Set by a runtime that logs verbosely: called with one line per protocol
        # event (handshakes, keepalives, timers), never per data packet.
        self.trace: Callable[[str], None] | None = None
        if private_key is not None:
            self.set_private_key(private_key, 0.0)

    # ---------------------------------------------------------------- config

    @property
    def public_key(self) -> bytes | None:
        return None if self.identity is None else self.identity.public_key

    def set_private_key(self, private_key: bytes | None, now: float) -> None:
        """Change identity; sessions made under the old key can no longer be used."""
        if private_key is not None:
            private_key = clamp(private_key)  # stored and shown clamped, as wireguard-go
        if self.identity is not None and private_key is not None:
            current = self.identity.private_key.private_bytes_raw()
            if current == private_key:
                return
        if private_key is None:
            self.identity = None
            self.cookie_checker = None
        else:
            self.identity = StaticIdentity.from_private_bytes(private_key)
            self.cookie_checker = CookieChecker(self.identity.public_key)
            own = self.peers.get(self.identity.public_key)
            if own is not None:
                self.remove_peer(own.public_key)
        for peer in self.peers.values():
            hs = peer.handshake
            hs.precomputed_static_static = precompute_static_static(self.identity, hs.remote_static)
            self._expire_current_keypairs(peer, now)

    def add_peer(self, public_key: bytes) -> Peer:
        """Add a peer (or return the existing one with this key)."""
        existing = self.peers.get(public_key)
        if existing is not None:
            return existing
        if len(public_key) != 32:
            raise ConfigError("a public key is 32 bytes")
        # A low-order key is accepted, as wg and wireguard-go accept it, but its
        # static-static secret is all zeros, so no initiation is ever built for
        # it (create_initiation refuses) and nothing is ever sent to it.
        if self.identity is not None and public_key == self.identity.public_key:
            raise ConfigError("public key is this interface's own")
        peer = Peer(public_key, self.identity)
        self.peers[public_key] = peer
        return peer

    def remove_peer(self, public_key: bytes) -> None:
        peer = self.peers.pop(public_key, None)
        if peer is None:
            return
        self.allowed_ips.remove_peer(peer)
        self._zero_and_flush(peer)
        for timer in Timer:
            TimerQueue.cancel(peer, timer)
        peer.removed = True

    def remove_all_peers(self) -> None:
        for public_key in list(self.peers):
            self.remove_peer(public_key)

    def set_preshared_key(self, peer: Peer, psk: bytes) -> None:
        if len(psk) != 32:
            raise ConfigError("a preshared key is 32 bytes")
        peer.handshake.preshared_key = psk

    def set_endpoint(self, peer: Peer, endpoint: Endpoint | tuple | None) -> None:
        if endpoint is not None and not isinstance(endpoint, Endpoint):
            endpoint = Endpoint(endpoint)
        peer.endpoint = endpoint

    def set_persistent_keepalive(self, peer: Peer, interval: int, now: float) -> None:
        """Set the interval in seconds (0 is off); turning it on sends a keepalive at once."""
        if not 0 <= interval <= 65535:
            raise ConfigError("persistent keepalive interval must be 0 to 65535 seconds")
        was_off = peer.persistent_keepalive == 0
        peer.persistent_keepalive = interval
        if interval == 0:
            TimerQueue.cancel(peer, Timer.PERSISTENT_KEEPALIVE)
        elif was_off:
            self.send_keepalive(peer, now)

    def add_allowed_ip(self, peer: Peer, network: Network) -> None:
        self.allowed_ips.insert(network, peer)

    def clear_allowed_ips(self, peer: Peer) -> None:
        self.allowed_ips.remove_peer(peer)

    # ---------------------------------------------------------------- output

    def next_event(self) -> PeerEvent | None:
        """The oldest event not yet taken, or None."""
        return self.events.popleft() if self.events else None

    def roam(self, peer: Peer, source: Endpoint) -> None:
        """An authenticated datagram from the peer came from source: send there
        from now on; a new remote address is an EndpointChanged event."""
        old = peer.endpoint
        if old is source:
            return
        if source.to is not None and source.to != peer.public_key:
            return  # a relay named another sender: keep the path this peer has
        peer.endpoint = source
        if old is None or old.sockaddr != source.sockaddr:
            self.events.append(EndpointChanged(peer.public_key, old, source))

    def datagrams_to_send(self) -> list[tuple[bytes, Endpoint]]:
        """Take copies of the datagrams queued since the last call, oldest first.

        The runtime sends straight from `outbox` instead; this is for tests.
        """
        return self.outbox.take()

    def next_deadline(self) -> float | None:
        """When `handle_timers` next has work to do, or None if never."""
        return self.timers.next_deadline()

    # ---------------------------------------------------------------- receive

    def receive(self, datagram: bytes, source: Endpoint, now: float) -> bytes | None:
        """Process one datagram from source; return an inner packet to deliver, if any.

        The runtime uses `receive_batch`; this is the same path for one datagram.
        """
        self.receive_batch(memoryview(datagram), len(datagram), len(datagram), source, now)
        self.settle()
        delivered = self.inbox.take()
        return delivered[0] if delivered else None

    def receive_batch(self, view: memoryview, total: int, segment: int, source: Endpoint,
                      now: float) -> None:  # fmt: skip
        """Process datagrams laid end to end in view, each `segment` bytes but the
        last (as UDP GRO delivers them); inner packets are added to `inbox`.
        Call `settle()` once they have been delivered."""
        if total <= 0 or segment <= 0:
            self.receive_other(bytes(view[:total]), source, now)  # an empty datagram
            return
        open_batch(self, view, total, segment, source, now)

    def receive_other(self, datagram: bytes, source: Endpoint, now: float) -> None:
        """Everything but well-formed transport messages: handshakes and junk."""
        header = datagram[:4]
        size = len(datagram)
        if header == m.HEADER_TRANSPORT:
            return self._drop(Drop.MALFORMED)  # shorter than a keepalive
        if header == m.HEADER_INITIATION:
            expected = m.INITIATION_SIZE
        elif header == m.HEADER_RESPONSE:
            expected = m.RESPONSE_SIZE
        elif header == m.HEADER_COOKIE_REPLY:
            expected = m.COOKIE_REPLY_SIZE
        elif size >= 4:
            # not WireGuard (STUN, a probe): GRO may have put it in a run of
            # WireGuard datagrams of the same size from the same source, so it
            # is sorted out here, per datagram, and handed back to the runtime
            self.other_datagrams.append((datagram, source))
            return None
        else:
            return self._drop(Drop.UNKNOWN_TYPE)
        if size != expected:
            return self._drop(Drop.MALFORMED)
        self._receive_handshake(datagram, source, now)
        return None

    def _drop(self, reason: Drop) -> None:
        self.drops[reason] += 1

    def count_drop(self, reason: Drop) -> None:
        self.drops[reason] += 1

    def no_route(self, packet: memoryview, size: int, now: float) -> None:
        """An inner packet from the TUN that no peer's allowed IPs cover: dropped,
        and answered with an ICMP host unreachable into the inbox, as the kernel
        does (icmp.py), within the rate limit."""
        self.drops[Drop.NO_ROUTE] += 1
        if not self.icmp_limiter.allow(None, now):
            return
        error = host_unreachable(packet, size)
        if error is not None:
            self.inbox.add(error)
            self.icmp_errors_sent += 1

    def _log(self, peer: Peer, event: str) -> None:
        if self.trace is not None:
            self.trace(f"{peer} - {event}")

    def is_under_load(self, now: float) -> bool:
        return now < self._under_load_until

    def mark_under_load(self, now: float) -> None:
        """The runtime saw a backlog of handshake messages: demand cookies for a while."""
        self._under_load_until = now + UNDER_LOAD_AFTER_TIME

    def _count_handshake_load(self, now: float) -> None:
        if now - self._load_window_start >= 1.0:
            self._load_window_start = now
            self._load_window_count = 0
        self._load_window_count += 1
        threshold = self.under_load_threshold
        if threshold is not None and self._load_window_count > threshold:
            self.mark_under_load(now)

    def screen_handshake(self, message: bytes | memoryview, sockaddr: tuple,
                         now: float) -> bytes | bool:  # fmt: skip
        """Under load, all a handshake message costs before its sender proves it
        receives at its address: the mac1 check, the mac2 check and, without a
        valid mac2, a cookie reply (at most COOKIE_REPLIES_PER_SECOND to one
        source address). No Endpoint is made for it.

        message is an initiation or a response of the right size; sockaddr the
        socket address it came from. Returns True when the message passed mac2
        and the per-source rate limit (hand it to `receive_screened`), the
        cookie reply to send to sockaddr, or False (dropped, counted)."""
        checker = self.cookie_checker
        if checker is None or self.identity is None:
            self.drops[Drop.NO_PRIVATE_KEY] += 1
            return False
        if not checker.check_mac1(message):
            self.drops[Drop.INVALID_MAC1] += 1
            return False
        cookie, keyed = checker.source_cookie(sockaddr, now)
        if checker.check_mac2_with(message, keyed):
            if self.rate_limiter.allow(sockaddr[0], now):
                return True
            self.drops[Drop.RATE_LIMITED] += 1
            return False
        if not self.cookie_limiter.allow(sockaddr[0], now):
            self.drops[Drop.COOKIE_RATE_LIMITED] += 1
            return False
        self.drops[Drop.COOKIE_SENT] += 1
        sender = int.from_bytes(message[4:8], "little")
        return checker.reply_with(message, sender, cookie)

    def receive_screened(self, message: bytes, source: Endpoint, now: float) -> None:
        """A handshake message that `screen_handshake` let through; queues the
        response (or completes our handshake). Call `settle()` afterwards."""
        if message[0] == m.MESSAGE_INITIATION:
            self._receive_initiation(message, source, now)
        else:
            self._receive_response(message, source, now)

    def _receive_handshake(self, message: bytes, source: Endpoint, now: float) -> None:
        checker = self.cookie_checker
        if checker is None or self.identity is None:
            return self._drop(Drop.NO_PRIVATE_KEY)
        kind = message[0]
        if kind == m.MESSAGE_COOKIE_REPLY:
            _, receiver, _, _ = m.COOKIE_REPLY.unpack(message)
            peer = self._handshakes.get(receiver)
            if peer is None:
                return self._drop(Drop.NO_HANDSHAKE)
            if not peer.cookies.consume_reply(message, now):
                return self._drop(Drop.INVALID_COOKIE)
            return None

        if not checker.check_mac1(message):
            return self._drop(Drop.INVALID_MAC1)
        self._count_handshake_load(now)
        if self.is_under_load(now):
            source_bytes = source.cookie_bytes
            if not checker.check_mac2(message, source_bytes, now):
                if not self.cookie_limiter.allow(source.rate_key, now):
                    return self._drop(Drop.COOKIE_RATE_LIMITED)
                sender = int.from_bytes(message[4:8], "little")
                reply = checker.create_reply(message, sender, source_bytes, now)
                self.outbox.add(reply, source)
                return self._drop(Drop.COOKIE_SENT)
            if not self.rate_limiter.allow(source.rate_key, now):
                return self._drop(Drop.RATE_LIMITED)

        if kind == m.MESSAGE_INITIATION:
            self._receive_initiation(message, source, now)
        else:
            self._receive_response(message, source, now)
        return None

    def _receive_initiation(self, message: bytes, source: Endpoint, now: float) -> None:
        assert self.identity is not None
        found: list[Peer] = []

        def find(remote_static: bytes) -> Handshake | None:
            peer = self.peers.get(remote_static)
            if peer is None:
                return None
            found.append(peer)
            return peer.handshake

        try:
            consume_initiation(self.identity, message, find, now)
        except HandshakeError as exc:
            return self._drop(exc.reason)
        peer = found[0]
        self._log(peer, "Received handshake initiation")
        self._timers_any_authenticated_packet_traversal(peer, now)
        self._timers_any_authenticated_packet_received(peer)
        self.roam(peer, source)
        peer.rx_bytes += len(message)
        self._send_response(peer, now)
        return None

    def _receive_response(self, message: bytes, source: Endpoint, now: float) -> None:
        assert self.identity is not None
        receiver = int.from_bytes(message[8:12], "little")
        peer = self._handshakes.get(receiver)
        if peer is None:
            return self._drop(Drop.NO_HANDSHAKE)
        try:
            consume_response(self.identity, peer.handshake, message)
        except HandshakeError as exc:
            return self._drop(exc.reason)
        self._log(peer, "Received handshake response")
        self.roam(peer, source)
        peer.rx_bytes += len(message)
        self._timers_any_authenticated_packet_traversal(peer, now)
        self._timers_any_authenticated_packet_received(peer)
        self._begin_session(peer, now)
        self._timers_handshake_complete(peer, now)
        self.send_keepalive(peer, now)
        return None

    def confirm_session(self, peer: Peer, now: float) -> None:
        """The first packet under the responder's new session arrived: it is current."""
        self._promote_next_keypair(peer)
        self._timers_handshake_complete(peer, now)
        self._send_staged(peer, now)

    def after_data_received(self, peer: Peer, now: float, data_packets: int) -> None:
        """Bookkeeping once per peer per batch of authenticated transport messages."""
        self._keep_key_fresh_receiving(peer, now)
        self._timers_any_authenticated_packet_traversal(peer, now)
        self._timers_any_authenticated_packet_received(peer)
        if data_packets:
            self._timers_data_received(peer, now)
        elif self.trace is not None:
            self._log(peer, "Receiving keepalive packet")

    # ---------------------------------------------------------------- send

    def send(self, packet: bytes, now: float) -> None:
        """Route one inner packet by its destination and encrypt it, or stage it.

        The runtime uses `send_batch`; this is the same path for one packet.
        """
        slot = bytearray(len(packet) + PADDING_MULTIPLE)
        slot[: len(packet)] = packet
        seal_batch(self, [memoryview(slot)], [len(packet)], 1, now)
        self.settle()

    def send_batch(self, slots: list[memoryview], lengths: list[int], count: int,
                   now: float) -> None:  # fmt: skip
        """Route and encrypt count packets into `outbox` (see transport.seal_batch).
        Call `settle()` once they have been sent."""
        seal_batch(self, slots, lengths, count, now)

    def send_coordination(self, packet: bytes, now: float) -> None:
        """Route and seal one of the agent's own coordination packets (the TUN
        may not send to the coordination port; the agent may)."""
        self.send_coordination_batch([packet], now)

    def send_coordination_batch(self, packets: list[bytes], now: float) -> None:
        """Route and seal several (relay frames come in runs): one pass, one settle."""
        slots, lengths = [], []
        for packet in packets:
            slot = bytearray(len(packet) + PADDING_MULTIPLE)
            slot[: len(packet)] = packet
            slots.append(memoryview(slot))
            lengths.append(len(packet))
        seal_batch(self, slots, lengths, len(slots), now, from_tun=False)
        self.settle()

    def settle(self) -> None:
        """The per-peer bookkeeping of the batches since the last call: timers,
        key freshness, packets staged for a session. It may queue datagrams
        (keepalives, handshake initiations) in `outbox`."""
        now = self.unsettled_now
        if self.unsettled_received:
            received, self.unsettled_received = self.unsettled_received, {}
            for peer, data_packets in received.items():
                self.after_data_received(peer, now, data_packets)
        if self.unsettled_sent:
            sent, self.unsettled_sent = self.unsettled_sent, set()
            for peer in sent:
                self.after_data_sent(peer, now)
        if self.unsettled_waiting:
            waiting, self.unsettled_waiting = self.unsettled_waiting, set()
            for peer in waiting:
                self.flush_staged(peer, now)

    def after_data_sent(self, peer: Peer, now: float) -> None:
        """Bookkeeping once per peer per batch of sealed data packets."""
        self._timers_any_authenticated_packet_traversal(peer, now)
        self._timers_any_authenticated_packet_sent(peer)
        self._timers_data_sent(peer, now)
        self._keep_key_fresh_sending(peer, now)

    def flush_staged(self, peer: Peer, now: float) -> None:
        """Try again to send what waits for a session (after a configuration change)."""
        self._send_staged(peer, now)

    def send_keepalive(self, peer: Peer, now: float) -> None:
        if not peer.staged:
            peer.staged.append(b"")
            if peer.keypairs.current is not None:
                self._log(peer, "Sending keepalive packet")
        self._send_staged(peer, now)

    def stage(self, peer: Peer, packet: bytes) -> None:
        """Queue a packet for when the peer has a session (the oldest goes when full)."""
        if len(peer.staged) >= QUEUE_STAGED_SIZE:
            peer.staged.popleft()
            self._drop(Drop.STAGED_OVERFLOW)
        peer.staged.append(packet)

    def _send_staged(self, peer: Peer, now: float) -> None:
        if not peer.staged:
            return
        keypair = peer.keypairs.current
        if (
            keypair is None
            or keypair.send_counter >= REJECT_AFTER_MESSAGES
            or now - keypair.created >= REJECT_AFTER_TIME
        ):
            self._send_initiation(peer, now, is_retry=False)
            return
        data_sent = False
        staged = peer.staged
        while staged:
            if keypair.send_counter >= REJECT_AFTER_MESSAGES:
                self._send_initiation(peer, now, is_retry=False)
                return
            packet = staged.popleft()
            if packet:
                data_sent = True
            if peer.endpoint is None:
                self._drop(Drop.NO_ENDPOINT)
                continue
            peer.tx_bytes += seal_one(self, peer, keypair, packet)
        self._timers_any_authenticated_packet_traversal(peer, now)
        self._timers_any_authenticated_packet_sent(peer)
        if data_sent:
            self._timers_data_sent(peer, now)
        self._keep_key_fresh_sending(peer, now)

    def _transmit(self, peer: Peer, datagram: bytes) -> None:
        endpoint = peer.endpoint
        if endpoint is None:
            self._drop(Drop.NO_ENDPOINT)
            return
        self.outbox.add(datagram, endpoint)
        peer.tx_bytes += len(datagram)

    # ---------------------------------------------------------------- handshakes

    def _new_index(self) -> int:
        while True:
            index = int.from_bytes(os.urandom(4), "little")
            if index not in self._handshakes and index not in self.keypairs_by_index:
                return index

    def _forget_handshake_index(self, peer: Peer) -> None:
        index = peer.handshake.local_index
        if index and self._handshakes.get(index) is peer:
            del self._handshakes[index]

    def _send_initiation(self, peer: Peer, now: float, is_retry: bool) -> None:
        if not is_retry:
            peer.handshake_attempts = 0
        last = peer.last_sent_handshake
        if last is not None and now - last < REKEY_TIMEOUT:
            return
        if self.identity is None:
            return
        peer.last_sent_handshake = now
        self._forget_handshake_index(peer)
        index = self._new_index()
        try:
            message = create_initiation(self.identity, peer.handshake, index, self.epoch + now)
        except HandshakeError as exc:
            self._drop(exc.reason)
            return
        self._handshakes[index] = peer
        self._log(peer, "Sending handshake initiation")
        peer.cookies.add_macs(message, now)
        self._timers_any_authenticated_packet_traversal(peer, now)
        self._timers_any_authenticated_packet_sent(peer)
        self._transmit(peer, bytes(message))
        self._timers_handshake_initiated(peer, now)

    def _send_response(self, peer: Peer, now: float) -> None:
        peer.last_sent_handshake = now
        self._forget_handshake_index(peer)
        index = self._new_index()
        try:
            message = create_response(peer.handshake, index)
        except HandshakeError as exc:
            self._drop(exc.reason)
            return
        self._handshakes[index] = peer
        self._log(peer, "Sending handshake response")
        peer.cookies.add_macs(message, now)
        self._begin_session(peer, now)
        self._timers_any_authenticated_packet_traversal(peer, now)
        self._timers_any_authenticated_packet_sent(peer)
        self._transmit(peer, bytes(message))

    def _begin_session(self, peer: Peer, now: float) -> None:
        keys = derive_transport_keys(peer.handshake)
        keypair = Keypair(
            peer, keys.send, keys.receive, keys.initiator, keys.local_index, keys.remote_index, now
        )
        self._handshakes.pop(keys.local_index, None)
        self.keypairs_by_index[keys.local_index] = keypair
        kps = peer.keypairs
        previous, current, pending = kps.previous, kps.current, kps.next
        if keys.initiator:
            if pending is not None:
                kps.next = None
                kps.previous = pending
                self._delete_keypair(current)
            else:
                kps.previous = current
            self._delete_keypair(previous)
            kps.current = keypair
        else:
            kps.next = keypair
            self._delete_keypair(pending)
            kps.previous = None
            self._delete_keypair(previous)
        self._timers_session_derived(peer, now)

    def _promote_next_keypair(self, peer: Peer) -> None:
        kps = peer.keypairs
        self._delete_keypair(kps.previous)
        kps.previous = kps.current
        kps.current = kps.next
        kps.next = None

    def _delete_keypair(self, keypair: Keypair | None) -> None:
        if keypair is not None and self.keypairs_by_index.get(keypair.local_index) is keypair:
            del self.keypairs_by_index[keypair.local_index]

    def _expire_current_keypairs(self, peer: Peer, now: float) -> None:
        """After a key change: no more sending on old sessions, and rekey right away."""
        self._forget_handshake_index(peer)
        peer.handshake.clear()
        peer.last_sent_handshake = now - REKEY_TIMEOUT - 1.0
        for keypair in (peer.keypairs.current, peer.keypairs.next):
            if keypair is not None:
                keypair.send_counter = REJECT_AFTER_MESSAGES

    def _zero_and_flush(self, peer: Peer) -> None:
        kps = peer.keypairs
        for keypair in kps.all():
            self._delete_keypair(keypair)
        kps.previous = kps.current = kps.next = None
        self._forget_handshake_index(peer)
        peer.handshake.clear()
        self._flush_staged(peer)

    def _flush_staged(self, peer: Peer) -> None:
        dropped = sum(1 for packet in peer.staged if packet)
        if dropped:
            self.drops[Drop.HANDSHAKE_GAVE_UP] += dropped
        peer.staged.clear()

    def _keep_key_fresh_sending(self, peer: Peer, now: float) -> None:
        keypair = peer.keypairs.current
        if keypair is None:
            return
        if keypair.send_counter > REKEY_AFTER_MESSAGES or (
            keypair.initiator and now - keypair.created > REKEY_AFTER_TIME
        ):
            self._send_initiation(peer, now, is_retry=False)

    def _keep_key_fresh_receiving(self, peer: Peer, now: float) -> None:
        if peer.sent_last_minute_handshake:
            return
        keypair = peer.keypairs.current
        if (
            keypair is not None
            and keypair.initiator
            and now - keypair.created > REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
        ):
            peer.sent_last_minute_handshake = True
            self._send_initiation(peer, now, is_retry=False)

    # ---------------------------------------------------------------- timers

    def handle_timers(self, now: float) -> None:
        """Fire every timer whose deadline is at or before now."""
        for owner, timer in self.timers.expired(now):
            peer = owner
            assert isinstance(peer, Peer)
            if peer.removed:
                continue
            if timer == Timer.RETRANSMIT_HANDSHAKE:
                self._expired_retransmit_handshake(peer, now)
            elif timer == Timer.SEND_KEEPALIVE:
                self.send_keepalive(peer, now)
                if peer.need_another_keepalive:
                    peer.need_another_keepalive = False
                    self.timers.set(peer, Timer.SEND_KEEPALIVE, now + KEEPALIVE_TIMEOUT)
            elif timer == Timer.NEW_HANDSHAKE:
                self._log(
                    peer, "Retrying handshake because we stopped hearing back after 15 seconds"
                )
                self._send_initiation(peer, now, is_retry=False)
            elif timer == Timer.ZERO_KEY_MATERIAL:
                self._log(
                    peer, "Removing all keys, since we haven't received a new one in 540 seconds"
                )
                self._zero_and_flush(peer)
                self.events.append(KeysZeroed(peer.public_key))
            elif timer == Timer.PERSISTENT_KEEPALIVE and peer.persistent_keepalive > 0:
                self.send_keepalive(peer, now)

    def _expired_retransmit_handshake(self, peer: Peer, now: float) -> None:
        if peer.handshake_attempts > MAX_TIMER_HANDSHAKES:
            self._log(
                peer,
                f"Handshake did not complete after {MAX_TIMER_HANDSHAKES + 2} attempts, giving up",
            )
            TimerQueue.cancel(peer, Timer.SEND_KEEPALIVE)
            self._flush_staged(peer)
            self.events.append(HandshakeGaveUp(peer.public_key))
            if not TimerQueue.pending(peer, Timer.ZERO_KEY_MATERIAL):
                self.timers.set(peer, Timer.ZERO_KEY_MATERIAL, now + REJECT_AFTER_TIME * 3)
        else:
            peer.handshake_attempts += 1
            self._log(
                peer,
                f"Handshake did not complete after {REKEY_TIMEOUT:.0f} seconds, "
                f"retrying (try {peer.handshake_attempts + 1})",
            )
            self._send_initiation(peer, now, is_retry=True)

    def _timers_data_sent(self, peer: Peer, now: float) -> None:
        if not TimerQueue.pending(peer, Timer.NEW_HANDSHAKE):
            # 0-333 ms of jitter, as wireguard-go and the kernel add, so two
            # peers that both stopped hearing each other do not retry in lockstep
            jitter = self._rng.randrange(REKEY_TIMEOUT_JITTER_MAX_MS) / 1000
            self.timers.set(
                peer, Timer.NEW_HANDSHAKE, now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + jitter
            )

    def _timers_data_received(self, peer: Peer, now: float) -> None:
        if not TimerQueue.pending(peer, Timer.SEND_KEEPALIVE):
            self.timers.set(peer, Timer.SEND_KEEPALIVE, now + KEEPALIVE_TIMEOUT)
        else:
            peer.need_another_keepalive = True

    @staticmethod
    def _timers_any_authenticated_packet_sent(peer: Peer) -> None:
        TimerQueue.cancel(peer, Timer.SEND_KEEPALIVE)

    @staticmethod
    def _timers_any_authenticated_packet_received(peer: Peer) -> None:
        TimerQueue.cancel(peer, Timer.NEW_HANDSHAKE)

    def _timers_handshake_initiated(self, peer: Peer, now: float) -> None:
        jitter = self._rng.randrange(REKEY_TIMEOUT_JITTER_MAX_MS) / 1000
        self.timers.set(peer, Timer.RETRANSMIT_HANDSHAKE, now + REKEY_TIMEOUT + jitter)

    def _timers_handshake_complete(self, peer: Peer, now: float) -> None:
        TimerQueue.cancel(peer, Timer.RETRANSMIT_HANDSHAKE)
        peer.handshake_attempts = 0
        peer.sent_last_minute_handshake = False
        peer.last_handshake = self.epoch + now
        current = peer.keypairs.current
        initiator = current is not None and current.initiator
        self.events.append(HandshakeCompleted(peer.public_key, peer.endpoint, initiator))

    def _timers_session_derived(self, peer: Peer, now: float) -> None:
        self.timers.set(peer, Timer.ZERO_KEY_MATERIAL, now + REJECT_AFTER_TIME * 3)

    def _timers_any_authenticated_packet_traversal(self, peer: Peer, now: float) -> None:
        if peer.persistent_keepalive > 0:
            self.timers.set(peer, Timer.PERSISTENT_KEEPALIVE, now + peer.persistent_keepalive)
