"""Handshake floods: what a flood costs under load, that a legitimate peer
still gets in, and that a stalled log output stalls nothing.

The core tests need no root; `test_flood_against_meshnode_wg` floods a real
meshnode-wg in namespaces (scripts/benchlib/flood.py, which scripts/flood runs
many times beside wireguard-go) while a real wireguard-go peer connects.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from pathlib import Path

import trio
from memnet import MemNet, ip_packet
from netns import netns_lab  # noqa: F401 - a fixture

from meshnode.log import VERBOSE, Logger, drain
from meshnode.wireguard import keys
from meshnode.wireguard.device import COOKIE_REPLIES_BURSTABLE, Device
from meshnode.wireguard.drops import Drop
from meshnode.wireguard.endpoint import Endpoint

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
sys.path.insert(0, str(SCRIPTS))

from benchlib.flood import Options, flood_messages, run_once  # noqa: E402

INITIATION, RESPONSE, COOKIE_REPLY = 1, 2, 3


def test_flood_under_load_costs_macs_and_rate_limited_cookie_replies() -> None:
    device = Device(keys.generate_private_key())
    device.mark_under_load(0.0)
    flood = flood_messages(device.public_key, 64)
    source = ("192.168.60.1", 40000)
    verdicts = [device.screen_handshake(memoryview(msg), source, 0.5) for msg in flood]
    replies = [v for v in verdicts if isinstance(v, bytes)]
    assert len(replies) == COOKIE_REPLIES_BURSTABLE  # then this source gets no more
    assert all(r[0] == COOKIE_REPLY and len(r) == 64 for r in replies)
    assert verdicts.count(False) == 64 - COOKIE_REPLIES_BURSTABLE
    assert device.drops[Drop.COOKIE_SENT] == COOKIE_REPLIES_BURSTABLE
    assert device.drops[Drop.COOKIE_RATE_LIMITED] == 64 - COOKIE_REPLIES_BURSTABLE
    # another source has its own allowance
    assert isinstance(device.screen_handshake(flood[0], ("192.168.60.2", 40000), 0.5), bytes)
    # a wrong mac1 costs one BLAKE2s and nothing else
    bad = bytearray(flood[0])
    bad[20] ^= 1
    assert device.screen_handshake(bytes(bad), ("192.168.60.3", 1), 0.5) is False
    assert device.drops[Drop.INVALID_MAC1] == 1
    assert not device.outbox.records  # the runtime sends the replies itself
    assert not device.peers  # and nothing of the flood reached the handshake


def test_legitimate_initiator_gets_in_under_load() -> None:
    """Its first initiation earns a cookie reply; the retry carries mac2, passes
    the per-source rate limit although floods exhausted other sources', and is
    answered: the packet waiting on it is delivered."""
    net = MemNet()
    a, b = net.a, net.b
    b.device.mark_under_load(0.0)
    flood = flood_messages(b.device.public_key, 32)
    for i, msg in enumerate(flood):  # other sources, out of allowance
        b.device.screen_handshake(msg, (f"192.168.60.{i % 4}", 1), 0.0)
    packet = b"legit"
    a.device.send(ip_packet(a.inner, b.inner, packet), net.now)
    (initiation, _), = net.collect(a)
    assert initiation[0] == INITIATION
    reply = b.device.screen_handshake(initiation, a.address.sockaddr, net.now)
    assert isinstance(reply, bytes)
    assert a.device.receive(reply, b.address, net.now) is None  # the cookie, kept
    # a's retry, 5 s (+ jitter) later, with mac2
    net.now = 5.4
    b.device.mark_under_load(net.now)
    a.device.handle_timers(net.now)
    (retry, _), = net.collect(a)
    assert retry[0] == INITIATION and retry[-16:] != bytes(16)
    assert b.device.screen_handshake(retry, a.address.sockaddr, net.now) is True
    b.device.receive_screened(retry, Endpoint(a.address.sockaddr), net.now)
    b.device.settle()
    (response, _), = net.collect(b)
    assert response[0] == RESPONSE
    a.device.receive(response, b.address, net.now)
    net.run()
    assert b.delivered and b.delivered[-1].endswith(packet)


def test_normal_path_rate_limits_cookie_replies_too() -> None:
    net = MemNet()
    net.b.device.mark_under_load(0.0)
    source = Endpoint(("192.168.60.9", 5))
    for msg in flood_messages(net.b.device.public_key, 20):
        net.b.device.receive(msg, source, 0.0)
    assert net.b.device.drops[Drop.COOKIE_SENT] == COOKIE_REPLIES_BURSTABLE
    assert net.b.device.drops[Drop.COOKIE_RATE_LIMITED] == 20 - COOKIE_REPLIES_BURSTABLE


async def test_stalled_log_output_blocks_no_caller() -> None:
    """A pipe nobody reads: with the drain running, logging returns at once,
    drops and counts what does not fit, and says so once the output moves
    again."""
    r, w = os.pipe()
    stream = open(w, "w")  # noqa: SIM115 - closed below
    try:
        log = Logger("wg0", VERBOSE, stream)
        async with trio.open_nursery() as nursery:
            await nursery.start(drain)
            started = time.monotonic()
            for i in range(20_000):
                log.verbose(f"line {i} " + "x" * 100)
            assert time.monotonic() - started < 2.0
            assert log.dropped > 0
            os.set_blocking(r, False)
            data = b""
            notice = f"({log.dropped} log lines dropped: output stalled)".encode()
            with trio.move_on_after(10):
                while notice not in data or not log.flush(0):
                    try:
                        data += os.read(r, 1 << 20)
                    except BlockingIOError:
                        await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        with contextlib.suppress(BlockingIOError):
            data += os.read(r, 1 << 20)
        assert notice in data
        assert b" line 0 x" in data  # what was queued before the stall was kept
    finally:
        stream.close()
        os.close(r)


def test_stalled_log_output_does_not_stall_the_event_loop() -> None:
    """In trio, a task that logs a line per iteration towards a stalled pipe
    keeps pace with a task that only ticks."""
    r, w = os.pipe()
    stream = open(w, "w")  # noqa: SIM115 - closed below
    log = Logger("wg0", VERBOSE, stream)
    ticks = {"logger": 0, "ticker": 0}

    async def main() -> None:
        async def logger() -> None:
            while True:
                log.verbose("Received handshake initiation " + "y" * 200)
                ticks["logger"] += 1
                await trio.sleep(0)

        async def ticker() -> None:
            while True:
                ticks["ticker"] += 1
                await trio.sleep(0.001)

        with trio.move_on_after(1.0):
            async with trio.open_nursery() as nursery:
                await nursery.start(drain)
                nursery.start_soon(logger)
                nursery.start_soon(ticker)

    try:
        trio.run(main)
        assert ticks["ticker"] > 200  # not stuck behind a blocking write
        assert ticks["logger"] > 1000
        assert log.dropped > 0
    finally:
        os.close(r)  # the abandoned worker's blocked write now fails: it finishes
        with contextlib.suppress(OSError):
            stream.close()


def test_flood_against_meshnode_wg(netns_lab) -> None:  # noqa: F811
    """Thousands of initiations a second with a valid mac1 from 64 source
    addresses against meshnode-wg on one core, while a wireguard-go peer
    connects: it answers with cookie replies, its CPU stays within one core,
    `wg show` answers during the flood, and the peer gets in and pings."""
    opts = Options(rate=20_000, sources=64, duration=12.0, settle=1.0, connect_timeout=10.5)
    argv = [sys.executable, "-m", "meshnode.wgdaemon", "-f"]
    result = run_once(netns_lab, argv, opts, SCRIPTS)
    assert result["daemon_running"], result
    assert result["sent_per_s"] >= 5000, result  # the generator did flood
    assert result["connect_s"] is not None, result
    assert result["pings_during_flood_1s"] is not None and result["pings_during_flood_1s"] >= 3
    assert result["uapi_s"] is not None and result["uapi_s"] < 2.0, result
    assert result["cookie_replies_per_s"] > 100, result  # it switched to cookie replies
    assert result["responses_per_s"] < 10, result  # the flood got no responses
    assert result["daemon_cpu_pct"] < 115, result  # one process on one core
    assert result["share_read"] > 0.5, result


async def test_runtime_screens_a_flood_and_lets_a_peer_in() -> None:
    """The runtime's under-load path, over loopback without root: 300
    initiations with a valid mac1 from one socket earn 5 cookie replies (the
    rest cost their MACs), and a real initiator gets in with its mac2 retry."""
    from test_interface_runtime import link, make_interface, receive_packet

    a, a_tun, a_key = make_interface("fl-a")
    b, b_tun, b_key = make_interface("fl-b")
    link(a, b, b_key, "10.0.0.2")
    link(b, a, a_key, "10.0.0.1")
    flooder = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await flooder.bind(("127.0.0.1", 0))

    async def keep_b_under_load() -> None:
        while True:
            b.device.mark_under_load(trio.current_time())
            await trio.sleep(0.2)

    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        nursery.start_soon(keep_b_under_load)
        await trio.sleep(0.05)
        for msg in flood_messages(b_key, 300):
            await flooder.sendto(msg, ("127.0.0.1", b.udp.port))
        replies = []
        with trio.move_on_after(1.0):
            while True:
                replies.append(await flooder.recv(2048))
        # the burst, and a token more per 50 ms the sending took
        assert COOKIE_REPLIES_BURSTABLE <= len(replies) <= COOKIE_REPLIES_BURSTABLE + 5
        assert all(r[0] == COOKIE_REPLY for r in replies)
        assert b.device.drops[Drop.COOKIE_RATE_LIMITED] == 300 - len(replies)
        assert not b._endpoints  # no Endpoint was made for the flood
        packet = ip_packet("10.0.0.1", "10.0.0.2", b"through")
        a_tun.outside.send(packet)
        with trio.fail_after(9):  # a cookie reply, then the retry 5 s later
            assert await receive_packet(b_tun) == packet
        nursery.cancel_scope.cancel()
    flooder.close()
    for tun in (a_tun, b_tun):
        tun.close()


def test_socket_receive_buffer_is_forced_to_7_mib() -> None:
    """As root, SO_RCVBUFFORCE takes effect beyond net.core.rmem_max (the
    kernel reports double what was asked for: its bookkeeping share)."""
    if os.geteuid() != 0:
        return  # without root it is as much as rmem_max allows
    from meshnode.net.udp import SOCKET_BUFFER, UdpSockets

    udp = UdpSockets(0)
    try:
        for sock in udp.sockets():
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 2 * SOCKET_BUFFER
    finally:
        udp.close()
