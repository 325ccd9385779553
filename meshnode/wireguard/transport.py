"""The data plane: sealing batches of inner packets into transport messages and
opening batches of transport messages into inner packets.

These loops run for every packet of the tunnel, so they are written for
CPython: locals instead of attribute lookups, a one-entry cache for the last
route and the last session, no allocation per packet (AEAD output goes
straight into the device's Outbox or Inbox), and the bookkeeping that is the
same for every packet of a peer (timers, endpoint, counters) done once per
peer per batch; the timers part is left for `Device.settle()`, which the
runtime calls once the batch's datagrams or packets are on their way.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag

from .constants import PADDING_MULTIPLE, REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME
from .coordination import coordination_payload, is_coordination
from .drops import Drop

if TYPE_CHECKING:
    from .device import Device
    from .endpoint import Endpoint
    from .keypair import Keypair
    from .peer import Peer

_HEADER = struct.Struct("<IIQ")  # type word, receiver index, counter
_TRANSPORT_WORD = 4  # b"\x04\x00\x00\x00" as a little-endian word
_NONCE = struct.Struct("<IQ")  # four zero bytes, then the counter
_ZEROS = bytes(PADDING_MULTIPLE)
_V4_DST = struct.Struct("!16xI")  # destination address of an IPv4 header
_V6_DST = struct.Struct("!24xQQ")  # destination address of an IPv6 header
_V4_SRC = struct.Struct("!2xH8xI")  # total length and source address
_V6_SRC = struct.Struct("!4xH2xQQ")  # payload length and source address
_V6_TAG = 1 << 128
_PAD_MASK = ~(PADDING_MULTIPLE - 1)


def padded_length(size: int, mtu: int) -> int:
    """WireGuard pads to a multiple of 16, but never past the MTU."""
    last_unit = size % mtu if mtu and size > mtu else size
    padded = (last_unit + PADDING_MULTIPLE - 1) & _PAD_MASK
    if mtu and padded > mtu:
        padded = mtu
    return size + padded - last_unit


def seal_batch(dev: Device, slots: list[memoryview], lengths: list[int], count: int,
               now: float, from_tun: bool = True) -> None:  # fmt: skip
    """Encrypt inner packets into dev.outbox, or stage them while a session is missing.

    Each slot is a writable view holding one packet of lengths[i] bytes with at
    least 15 spare bytes after it, where the padding is written in place.
    Packets from the TUN to the mesh's coordination port are dropped.
    """
    guard = dev.coordination_port if from_tun else 0
    outbox = dev.outbox
    records = outbox.records
    lookup_v4 = dev.allowed_ips.lookup_v4
    lookup_v6 = dev.allowed_ips.lookup_v6
    mtu = dev.mtu
    sent: dict[Peer, int] = {}  # peer -> bytes sent in this batch
    waiting: set[Peer] = set()
    last_route = -1
    peer: Peer | None = None
    keypair: Keypair | None = None
    encrypt_into = None
    remote_index = 0
    endpoint: Endpoint | None = None
    for i in range(count):
        slot = slots[i]
        size = lengths[i]
        version = slot[0] >> 4 if size else 0
        if version == 4 and size >= 20:
            route = _V4_DST.unpack_from(slot)[0]
        elif version == 6 and size >= 40:
            high, low = _V6_DST.unpack_from(slot)
            route = (high << 64 | low) | _V6_TAG  # kept apart from IPv4 routes
        else:
            dev.count_drop(Drop.INNER_MALFORMED)
            continue
        if route != last_route:
            last_route = route
            peer = lookup_v4(route) if route < _V6_TAG else lookup_v6(route ^ _V6_TAG)
            keypair = None
        if peer is None:
            if from_tun:  # an ICMP error only for what the host sent
                dev.no_route(slot, size, now)
            else:
                dev.count_drop(Drop.NO_ROUTE)
            continue
        if guard and is_coordination(slot, size, guard):
            dev.count_drop(Drop.COORDINATION_FROM_TUN)
            continue
        if keypair is None or keypair is not peer.keypairs.current or peer.staged:
            keypair = peer.keypairs.current
            endpoint = peer.endpoint
            if (
                keypair is None
                or endpoint is None
                or peer.staged
                or now - keypair.created >= REJECT_AFTER_TIME
            ):
                keypair = None
            else:
                encrypt_into = keypair.send_aead.encrypt_into
                remote_index = keypair.remote_index
        if keypair is None or keypair.send_counter >= REJECT_AFTER_MESSAGES:
            dev.stage(peer, bytes(slot[:size]))
            waiting.add(peer)
            keypair = None
            continue
        counter = keypair.send_counter
        keypair.send_counter = counter + 1
        if size <= mtu:
            padded = (size + 15) & _PAD_MASK
            if padded > mtu:
                padded = mtu
        else:
            padded = padded_length(size, mtu)
        if padded != size:
            slot[size:padded] = _ZEROS[: padded - size]
        total = padded + 32
        offset = outbox.used
        if offset + total > len(outbox.buffer):
            offset = outbox.reserve(total)
        view = outbox.view
        _HEADER.pack_into(view, offset, _TRANSPORT_WORD, remote_index, counter)
        encrypt_into(
            _NONCE.pack(0, counter), slot[:padded], None, view[offset + 16 : offset + total]
        )  # type: ignore[misc]
        records.append((offset, total, endpoint))
        outbox.used = offset + total
        sent[peer] = sent.get(peer, 0) + total
    for p, nbytes in sent.items():
        p.tx_bytes += nbytes
    # timers and staged packets are settled after the datagrams are sent
    dev.unsettled_sent.update(sent)
    dev.unsettled_waiting |= waiting
    dev.unsettled_now = now


def seal_one(dev: Device, peer: Peer, keypair: Keypair, packet: bytes) -> int:
    """Encrypt one packet (staged, or a keepalive) into dev.outbox; returns its size."""
    size = len(packet)
    padded = padded_length(size, dev.mtu)
    total = padded + 32
    outbox = dev.outbox
    offset = outbox.reserve(total + padded)
    view = outbox.view
    # the padded plaintext goes just past the datagram, and is then sealed over it
    scratch = view[offset + total : offset + total + padded]
    scratch[:size] = packet
    scratch[size:] = bytes(padded - size)
    counter = keypair.send_counter
    keypair.send_counter = counter + 1
    _HEADER.pack_into(view, offset, _TRANSPORT_WORD, keypair.remote_index, counter)
    keypair.send_aead.encrypt_into(
        _NONCE.pack(0, counter), scratch, None, view[offset + 16 : offset + total]
    )
    outbox.commit(offset, total, peer.endpoint)
    return total


def open_batch(dev: Device, view: memoryview, total: int, segment: int, source: Endpoint,
               now: float) -> None:  # fmt: skip
    """Process datagrams from one source laid end to end in view (all `segment`
    bytes long but the last, as UDP GRO delivers them); inner packets go to
    dev.inbox, anything but transport messages to the device's slow path.

    The inbox's fill level and buffers are kept in locals and stored back at
    the end (nothing else writes the inbox: the slow path and session
    confirmation only queue datagrams).
    """
    inbox = dev.inbox
    records = inbox.records
    used, buffer, out_view = inbox.used, inbox.buffer, inbox.view
    capacity = len(buffer)
    keypairs = dev.keypairs_by_index
    lookup_v4 = dev.allowed_ips.lookup_v4
    lookup_v6 = dev.allowed_ips.lookup_v6
    received: dict[Peer, list[int]] = {}  # peer -> [bytes, data packets]
    last_index = -1
    keypair: Keypair | None = None
    peer: Peer | None = None
    decrypt_into = accept = None
    stats: list[int] = [0, 0]
    unconfirmed = False  # the session is the responder's `next`, still to be confirmed
    last_source = -1
    intercept = dev.coordination_port
    coordination = dev.coordination
    offset = 0
    while offset < total:
        start = offset
        offset = start + segment
        if offset > total:
            offset = total
        size = offset - start
        if size < 32:
            dev.receive_other(bytes(view[start:offset]), source, now)
            continue
        word, index, counter = _HEADER.unpack_from(view, start)
        if word != _TRANSPORT_WORD:
            dev.receive_other(bytes(view[start:offset]), source, now)
            continue
        if index != last_index:
            last_index = index
            keypair = keypairs.get(index)
            if keypair is not None and now - keypair.created > REJECT_AFTER_TIME:
                keypair = None
                dev.count_drop(Drop.EXPIRED_KEYPAIR)
                last_index = -1
                continue
            if keypair is not None:
                peer = keypair.peer
                stats = received.get(peer) or received.setdefault(peer, [0, 0])
                decrypt_into = keypair.receive_aead.decrypt_into
                accept = keypair.replay.accept
                unconfirmed = keypair is peer.keypairs.next
                last_source = -1
        if keypair is None:
            dev.count_drop(Drop.UNKNOWN_INDEX)
            continue
        if counter >= REJECT_AFTER_MESSAGES:
            dev.count_drop(Drop.REPLAYED)  # no need to spend a decryption on it
            continue
        length = size - 32
        if used + length > capacity:
            inbox.used = used
            used = inbox.reserve(length)
            buffer, out_view = inbox.buffer, inbox.view
            capacity = len(buffer)
        try:
            decrypt_into(  # type: ignore[misc]
                _NONCE.pack(0, counter), view[start + 16 : offset], None,
                out_view[used : used + length],
            )  # fmt: skip
        except InvalidTag:
            dev.count_drop(Drop.DECRYPT)
            continue
        if not accept(counter, REJECT_AFTER_MESSAGES):  # type: ignore[misc]
            dev.count_drop(Drop.REPLAYED)
            continue
        if unconfirmed:
            unconfirmed = False
            dev.roam(peer, source)  # type: ignore[arg-type]
            dev.confirm_session(peer, now)  # type: ignore[arg-type]
        stats[0] += size
        if length == 0:
            continue  # a keepalive
        stats[1] += 1
        # the inner packet: trim the padding, check its source against the peer's routes
        version = buffer[used] >> 4
        if version == 4 and length >= 20:
            inner, route = _V4_SRC.unpack_from(buffer, used)
            if inner < 20 or inner > length:
                dev.count_drop(Drop.INNER_MALFORMED)
                continue
            if route != last_source:
                if lookup_v4(route) is not peer:
                    dev.count_drop(Drop.DISALLOWED_SOURCE)
                    continue
                last_source = route
        elif version == 6 and length >= 40:
            inner, high, low = _V6_SRC.unpack_from(buffer, used)
            inner += 40
            if inner > length:
                dev.count_drop(Drop.INNER_MALFORMED)
                continue
            route = (high << 64 | low) | _V6_TAG
            if route != last_source:
                if lookup_v6(route ^ _V6_TAG) is not peer:
                    dev.count_drop(Drop.DISALLOWED_SOURCE)
                    continue
                last_source = route
        else:
            dev.count_drop(Drop.INNER_MALFORMED)
            continue
        if intercept:
            payload = coordination_payload(buffer, used, inner, intercept)
            if payload is not None:
                coordination.append((peer.public_key, payload))  # type: ignore[union-attr]
                continue
            if peer.coordination_only:  # type: ignore[union-attr]
                dev.count_drop(Drop.NOT_COORDINATION)
                continue
        records.append((used, inner))
        used += length
    inbox.used = used
    # timers are settled after the packets are delivered
    unsettled = dev.unsettled_received
    for p, (nbytes, data_packets) in received.items():
        if nbytes:
            if p.endpoint is not source:
                dev.roam(p, source)
            p.rx_bytes += nbytes
            unsettled[p] = unsettled.get(p, 0) + data_packets
    dev.unsettled_now = now
