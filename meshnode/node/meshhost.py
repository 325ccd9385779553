"""One mesh on the node: its WireGuard interface, its agent, and the trio glue
that moves bytes and events between them (the agent itself is sans-IO).

The interface is set up as any hosted interface (TUN, overlay addresses whose
connected routes cover the whole mesh, no peers of its own); the agent then
owns its peers. The glue
- hands the agent the coordination messages the core took out of the data
  path (with the authenticated sender) and the device's peer events,
- applies the agent's peer changes with `Interface.apply`,
- sends the agent's messages as UDP to the coordination port of the
  recipient's overlay address, through the tunnel,
- wakes the agent at its timer, tells it this node's local addresses,
- writes its state (atomically) after changes and logs membership changes.

Handlers called from the data path only queue and wake the agent task, so
the agent never runs inside the data path's flush.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import ipaddress
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import trio
from pyroute2 import IPRoute

from ..config.model import InterfaceConfig, MeshConfig
from ..config.validate import parse_host_port
from ..interface import Interface
from ..log import Logger
from ..mesh.agent import AgentParams, MeshAgent
from ..mesh.messages import COORDINATION_PORT
from ..mesh.peerconfig import ConfigurePeer, PeerChange, RemovePeer
from ..wgtool.model import DeviceUpdate
from ..wireguard.coordination import coordination_packet
from ..wireguard.endpoint import Endpoint
from ..wireguard.events import PeerEvent
from ..wireguard.settings import PeerChange as DevicePeerChange
from ..wireguard.settings import SetRequest
from .hosted import HostedInterface
from .meshstore import MeshStore, StoredMesh

_INBOX_LIMIT = 4096  # coordination messages waiting for the agent; more are dropped
_SAVE_INTERVAL = 1.0  # s: state written at most this often (and on the way down)
_CANDIDATES_INTERVAL = 30.0  # s between looks at the local addresses


def interface_name(mesh_name: str) -> str:
    """mn-NAME, cut to Linux's 15 bytes."""
    return f"mn-{mesh_name}"[:15]


class MeshHost:
    def __init__(self, store: MeshStore, stored: StoredMesh, log_level: int,
                 config: MeshConfig | None = None) -> None:  # fmt: skip
        self.store = store
        self.name = stored.name
        self.settings = stored.settings
        params = AgentParams()
        if config is not None:  # the [[mesh]] table of the node's configuration wins
            self.settings.interface = config.interface or self.settings.interface
            if config.listen_port is not None:
                self.settings.listen_port = config.listen_port
            self.settings.endpoints = config.endpoints or self.settings.endpoints
            if config.persistent_keepalive is not None:
                params = dataclasses.replace(
                    params, rendezvous_keepalive=config.persistent_keepalive
                )
        self.log = Logger(f"mesh {stored.name}", log_level)
        self.agent = MeshAgent(stored.state, time.time(), params=params)
        self.hosted = HostedInterface(self._interface_config(stored), log_level)
        self.interface: Interface | None = None
        self.cancel_scope = trio.CancelScope()
        self.stopped = trio.Event()
        self.dropped_messages = 0
        self._overlay: dict[bytes, ipaddress.IPv6Address] = {}  # peer -> where messages go
        self._source = stored.state.record.ipv6  # where this node's messages come from
        self._inbox: deque[Callable[[float], None]] = deque()
        self._wakeup = trio.Event()
        self._dirty = False
        self._last_save = 0.0

    @property
    def ifname(self) -> str:
        return self.settings.interface

    def _interface_config(self, stored: StoredMesh) -> InterfaceConfig:
        record = stored.state.record
        prefix4 = stored.state.ipv4_cidr.prefixlen
        prefix6 = stored.state.ipv6_prefix.prefixlen
        return InterfaceConfig(
            name=stored.settings.interface,
            wg=DeviceUpdate(
                private_key=stored.private_key,
                listen_port=stored.settings.listen_port,
                fwmark=0,
                replace_peers=True,
            ),
            addresses=[
                ipaddress.IPv4Interface(f"{record.ipv4}/{prefix4}"),
                ipaddress.IPv6Interface(f"{record.ipv6}/{prefix6}"),
            ],
            table="off",  # the addresses' own routes cover the mesh; the agent owns the peers
            path=str(self.store.directory(stored.name)),
        )

    # ------------------------------------------------------------ life cycle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Bring the interface up, run the agent until stopped, save on the way out."""
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.hosted.run)
                with self.cancel_scope:
                    self._attach()
                    nursery.start_soon(self._candidates_loop)
                    task_status.started()
                    await self._agent_loop()
                await self.hosted.stop()
                nursery.cancel_scope.cancel()
        finally:
            with contextlib.suppress(OSError):
                self._save(force=True)
            self.stopped.set()

    async def stop(self) -> None:
        self.cancel_scope.cancel()
        await self.stopped.wait()

    def _attach(self) -> None:
        interface = self.hosted.interface
        assert interface is not None
        self.interface = interface
        if self.settings.listen_port != interface.udp.port:
            # keep the port the kernel chose: others remember this node by it
            self.settings.listen_port = interface.udp.port
            self.store.save_settings(self.name, self.settings)
        interface.device.coordination_port = COORDINATION_PORT
        interface.coordination_handler = self._on_message
        interface.event_handlers.append(self._on_event)
        self._pump(time.time())

    # ------------------------------------------------------------ from the data path

    def _queue(self, work: Callable[[float], None]) -> None:
        if len(self._inbox) >= _INBOX_LIMIT:
            self.dropped_messages += 1
            return
        self._inbox.append(work)
        self._wakeup.set()

    def _on_message(self, sender: bytes, payload: bytes) -> None:
        self._queue(lambda now: self.agent.handle_message(sender, payload, now))

    def _on_event(self, event: PeerEvent) -> None:
        self._queue(lambda now: self.agent.handle_device_event(event, now))

    # ------------------------------------------------------------ the agent task

    async def _agent_loop(self) -> None:
        while True:
            deadline = self.agent.get_timer()
            wait = 3600.0 if deadline is None else max(0.0, deadline - time.time())
            if self._dirty:
                wait = min(wait, _SAVE_INTERVAL)
            with trio.move_on_after(wait):
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            now = time.time()
            while self._inbox:
                self._inbox.popleft()(now)
            deadline = self.agent.get_timer()
            if deadline is not None and deadline <= now:
                self.agent.handle_timer(now)
            self._pump(now)
            self._save()

    def call(self, action: Callable[[MeshAgent, float], Any]) -> Any:
        """Run an action on the agent (a control command) and send what it queued."""
        now = time.time()
        result = action(self.agent, now)
        self._pump(now)
        self._wakeup.set()  # its timer may have moved
        return result

    def _pump(self, now: float) -> None:
        """Apply what the agent asks of the device, send its messages, log its events."""
        interface = self.interface
        if interface is None:
            return
        for change in self.agent.config_changes():
            self._apply(interface, change)
            self._dirty = True
        for recipient, payload in self.agent.messages_to_send():
            destination = self._overlay.get(recipient)
            if destination is None:
                continue  # a peer removed in the same round
            interface.send_coordination(
                coordination_packet(self._source, destination, COORDINATION_PORT, payload)
            )
        while (event := self.agent.next_event()) is not None:
            self._dirty = True
            text = event.describe()
            self.log.verbose(text)
            stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            with contextlib.suppress(OSError):
                self.store.log(self.name, f"{stamp}  {text}")

    def _apply(self, interface: Interface, change: PeerChange) -> None:
        if isinstance(change, RemovePeer):
            self._overlay.pop(change.public_key, None)
            request = SetRequest(peers=[DevicePeerChange(change.public_key, remove=True)])
        else:
            request = SetRequest(peers=[self._peer_change(change)])
        try:
            interface.apply(request)
        except Exception as exc:  # the agent asked for something the device refuses
            self.log.error(f"Cannot configure a mesh peer: {exc}")

    def _peer_change(self, change: ConfigurePeer) -> DevicePeerChange:
        for network in change.allowed_ips:
            if network.version == 6:
                self._overlay[change.public_key] = network.network_address
                break
        endpoint = None
        if change.endpoint is not None:
            endpoint = _literal_endpoint(*change.endpoint)
        return DevicePeerChange(
            change.public_key,
            preshared_key=change.preshared_key,
            endpoint=endpoint,
            persistent_keepalive=change.persistent_keepalive,
            allowed_ips=[None, *change.allowed_ips],
            coordination_only=change.coordination_only,
        )

    def _save(self, force: bool = False) -> None:
        now = time.monotonic()
        if not (self._dirty or force) or (not force and now - self._last_save < _SAVE_INTERVAL):
            return
        try:
            self.store.save_state(self.name, self.agent.to_state())
        except OSError as exc:  # a full or read-only disk: keep running, keep the old file
            self.log.error(f"Cannot save the mesh state: {exc}")
            return
        self._dirty = False
        self._last_save = now

    # ------------------------------------------------------------ local candidates

    async def _candidates_loop(self) -> None:
        while True:
            try:
                candidates = await trio.to_thread.run_sync(self._local_candidates)
            except OSError as exc:
                self.log.error(f"Cannot list the local addresses: {exc}")
            else:
                self._queue(lambda now, c=candidates: self.agent.set_local_candidates(c, now))
            await trio.sleep(_CANDIDATES_INTERVAL)

    def _local_candidates(self) -> list[tuple[str, int]]:
        """Configured endpoints first, then every usable local address with the
        listen port: global and private IPv4 and IPv6, no loopback, no link-local,
        nothing inside a mesh's own overlay."""
        port = self.settings.listen_port
        out: list[tuple[str, int]] = []
        for text in self.settings.endpoints:
            endpoint = parse_host_port(text)
            if endpoint is not None:
                out.append(endpoint)
        overlay = (self.agent.pool.ipv4, self.agent.pool.ipv6)
        with IPRoute() as ipr:
            names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
            for message in ipr.get_addr():
                address = ipaddress.ip_address(message.get_attr("IFA_ADDRESS"))
                if address.is_loopback or address.is_link_local or address.is_multicast:
                    continue
                if any(address in network for network in overlay):
                    continue
                if (names.get(message["index"]) or "").startswith("mn-"):
                    continue  # another mesh's overlay
                candidate = (str(address), port)
                if candidate not in out:
                    out.append(candidate)
        return out


def _literal_endpoint(host: str, port: int) -> Endpoint | None:
    """An endpoint from an IP literal; a name is not resolved here (no blocking
    lookups in the event loop): the peer is reached at its other candidates."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if address.version == 4:
        return Endpoint((str(address), port))
    return Endpoint((str(address), port, 0, 0))


def jsonable(value: Any) -> Any:
    """A status or listing as JSON: keys base64, addresses and enums as text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {str(jsonable(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | frozenset | set):
        items = [jsonable(v) for v in value]
        return sorted(items, key=str) if isinstance(value, frozenset | set) else items
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
