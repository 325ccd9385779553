"""The trio runtime of one interface, without root: a socket pair stands in for
the TUN, UDP is bound on all addresses with a kernel-chosen port, the peers
are reached over loopback, and no netlink link watch runs. This tests the
runtime's own logic (timer deadlines, datagrams that are not WireGuard's,
peer events, a listen-port change, counters) on every machine."""

from __future__ import annotations

import itertools
import socket

import trio
import trio.testing
from memnet import ip_packet
from runtimelab import link, make_interface

from meshnode.net.tun import DetachedTun
from meshnode.wireguard import keys
from meshnode.wireguard.drops import Drop
from meshnode.wireguard.endpoint import Endpoint
from meshnode.wireguard.events import HandshakeCompleted, PeerEvent


async def receive_packet(tun: DetachedTun) -> bytes:
    sock = trio.socket.from_stdlib_socket(tun.outside.dup())
    with sock:
        return await sock.recv(65536)


async def test_two_interfaces_carry_packets_and_report_events() -> None:
    a, a_tun, a_key = make_interface("rt-a")
    b, b_tun, b_key = make_interface("rt-b")
    link(a, b, b_key, "10.0.0.2")
    link(b, a, a_key, "10.0.0.1")
    a_events: list[PeerEvent] = []
    a.event_handlers.append(a_events.append)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        packet = ip_packet("10.0.0.1", "10.0.0.2", b"hello")
        a_tun.outside.send(packet)
        with trio.fail_after(10):
            assert await receive_packet(b_tun) == packet
        completed = [e for e in a_events if isinstance(e, HandshakeCompleted)]
        assert [(e.public_key, e.initiator) for e in completed] == [(b_key, True)]
        # the source b wrote from is remembered with the local address it wrote to
        endpoint = a.device.peers[b_key].endpoint
        assert endpoint is not None and endpoint.sockaddr == ("127.0.0.1", b.udp.port)
        assert endpoint.local is not None and endpoint.local.address == "127.0.0.1"
        nursery.cancel_scope.cancel()
    for tun in (a_tun, b_tun):
        tun.close()


async def test_datagrams_that_are_not_wireguard_go_to_their_handler() -> None:
    a, a_tun, _ = make_interface("rt-c")
    got: list[tuple[bytes, Endpoint]] = []
    probes = (lambda d: d.startswith(b"\x00\x01"), lambda d, s: got.append((d, s)))
    a.datagram_handlers.append(probes)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        sender = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sender:
            await sender.bind(("127.0.0.1", 0))
            for datagram in (b"\x00\x01probe-0", b"\x09junk", b"\x00\x01probe-1"):
                await sender.sendto(datagram, ("127.0.0.1", a.udp.port))
            with trio.fail_after(10):
                while len(got) < 2 or a.stats()["drops"].get(Drop.UNKNOWN_DATAGRAM) != 1:
                    await trio.sleep(0.01)
            assert [d for d, _ in got] == [b"\x00\x01probe-0", b"\x00\x01probe-1"]
            assert got[0][1].sockaddr == sender.getsockname()
            # an answer from the interface's own socket (what STUN needs)
            a.send_datagram(b"answer", got[0][1])
            with trio.fail_after(10):
                data, source = await sender.recvfrom(100)
            assert (data, source[1]) == (b"answer", a.udp.port)
        nursery.cancel_scope.cancel()
    a_tun.close()


async def test_timers_fire_at_the_device_deadline(autojump_clock: trio.testing.MockClock) -> None:
    """Initiations to a peer that never answers are retried every 5 s plus up to
    333 ms of jitter, in virtual time: the timer loop sleeps until the device's
    next deadline and no longer."""
    a, a_tun, _ = make_interface("rt-d")
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    silent_key = keys.public_key(keys.generate_private_key())
    a.uapi_set([f"public_key={silent_key.hex()}", f"endpoint=127.0.0.1:{silent.getsockname()[1]}",
                "allowed_ip=10.0.0.9/32", "persistent_keepalive_interval=1"])  # fmt: skip
    times = []
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        receiver = trio.socket.from_stdlib_socket(silent)
        while len(times) < 4:
            data = await receiver.recv(2048)
            assert data[0] == 1  # a handshake initiation
            times.append(trio.current_time())
        nursery.cancel_scope.cancel()
    silent.close()
    a_tun.close()
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(5.0 <= gap <= 5.34 for gap in gaps), gaps


async def test_a_listen_port_change_keeps_the_counters() -> None:
    a, a_tun, _ = make_interface("rt-e")
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        sender = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sender:
            await sender.sendto(b"\x09junk", ("127.0.0.1", a.udp.port))
            with trio.fail_after(10):
                while a.stats()["drops"].get(Drop.UNKNOWN_DATAGRAM) != 1:
                    await trio.sleep(0.01)
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            probe.bind(("127.0.0.1", 0))
            new_port = probe.getsockname()[1]
            probe.close()
            a.uapi_set([f"listen_port={new_port}"])
            assert a.udp.port == new_port
            await sender.sendto(b"\x09junk", ("127.0.0.1", new_port))
            with trio.fail_after(10):
                while a.stats()["drops"].get(Drop.UNKNOWN_DATAGRAM) != 2:
                    await trio.sleep(0.01)
        assert a.stats()["listen_port"] == new_port
        nursery.cancel_scope.cancel()
    a_tun.close()
