"""`meshnode join`'s network part: the sans-IO Joiner (meshnode/mesh/join.py)
driven over a throwaway WireGuard interface with the invite's derived key.

That interface has no TUN (a detached stand-in): the join only ever speaks
the coordination channel, which the core takes out of the data path, so
nothing is created in the kernel and nothing is left behind.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from io import StringIO

import trio

from ..interface import Interface, Offloads
from ..log import ERROR, Logger
from ..mesh.join import Joiner, JoinState
from ..mesh.messages import COORDINATION_PORT
from ..mesh.peerconfig import ConfigurePeer
from ..net.tun import DetachedTun
from ..wireguard.coordination import coordination_packet
from ..wireguard.endpoint import Endpoint
from ..wireguard.events import PeerEvent
from ..wireguard.settings import PeerChange, SetRequest


async def run_join(joiner: Joiner, progress: Callable[[str], None]) -> None:
    """Run the join until it succeeds or fails (joiner.result or joiner.failure)."""
    temp = joiner.temp_interface()
    tun = DetachedTun("mn-join")
    interface = Interface(tun, Logger("join", ERROR, StringIO()),  # type: ignore[arg-type]
                          offloads=Offloads(tun_vnet=False), watch_link=False)  # fmt: skip
    overlay: dict[bytes, ipaddress.IPv6Address] = {}
    wakeup = trio.Event()
    inbox: list[Callable[[float], None]] = []

    async def configure(change: ConfigurePeer) -> None:
        for network in change.allowed_ips:
            if network.version == 6:
                overlay[change.public_key] = network.network_address
        endpoint = None
        if change.endpoint is not None:
            endpoint = await _resolve(*change.endpoint)
            if endpoint is None:
                progress(f"cannot resolve {change.endpoint[0]}: that endpoint is skipped")
        interface.apply(SetRequest(peers=[PeerChange(
            change.public_key, preshared_key=change.preshared_key, endpoint=endpoint,
            allowed_ips=[None, *change.allowed_ips], coordination_only=change.coordination_only,
            persistent_keepalive=change.persistent_keepalive,
        )]))  # fmt: skip

    def on_message(sender: bytes, payload: bytes) -> None:
        inbox.append(lambda now: joiner.handle_message(sender, payload, now))
        wakeup.set()

    def on_event(event: PeerEvent) -> None:
        inbox.append(lambda now: joiner.handle_device_event(event, now))
        wakeup.set()

    async def pump() -> None:
        for change in joiner.config_changes():
            await configure(change)
        for recipient, payload in joiner.messages_to_send():
            destination = overlay.get(recipient)
            if destination is not None:
                packet = coordination_packet(temp.address, destination, COORDINATION_PORT, payload)
                interface.send_coordination(packet)
        while (event := joiner.next_event()) is not None:
            progress(event.text)

    try:
        interface.apply(SetRequest(private_key=temp.private_key))
        for peer in temp.peers:
            await configure(peer)
        interface.device.coordination_port = COORDINATION_PORT
        interface.coordination_handler = on_message
        interface.event_handlers.append(on_event)
        async with trio.open_nursery() as nursery:
            await nursery.start(interface.run)
            joiner.start(time.time())
            await pump()
            while joiner.state not in (JoinState.JOINED, JoinState.FAILED):
                deadline = joiner.get_timer()
                wait = 1.0 if deadline is None else max(0.0, deadline - time.time())
                with trio.move_on_after(wait):
                    await wakeup.wait()
                wakeup = trio.Event()
                now = time.time()
                work, inbox[:] = list(inbox), []
                for item in work:
                    item(now)
                deadline = joiner.get_timer()
                if deadline is not None and deadline <= now:
                    joiner.handle_timer(now)
                await pump()
            nursery.cancel_scope.cancel()
    finally:
        tun.close()


async def _resolve(host: str, port: int) -> Endpoint | None:
    """An invite's bootstrap endpoint (an IP literal or a DNS name) as an
    Endpoint, or None if the name does not resolve."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            found = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except (OSError, UnicodeError):
            return None
        families = (socket.AF_INET, socket.AF_INET6)
        sockaddrs = [info[4] for info in found if info[0] in families]
        return Endpoint(tuple(sockaddrs[0])) if sockaddrs else None
    if address.version == 4:
        return Endpoint((str(address), port))
    return Endpoint((str(address), port, 0, 0))
