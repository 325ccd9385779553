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
- wakes the agent at its timer, tells it this node's local addresses and
  the public ones its netcheck found (meshnat.py),
- hands it the path probes that arrive on the WireGuard socket and sends
  the ones it makes from that socket,
- carries WireGuard datagrams for relayed endpoints (meshrelay.py),
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
from ..mesh.paths import Relay
from ..mesh.peerconfig import ConfigurePeer, PeerChange, RemovePeer
from ..mesh.probe import is_probe
from ..mesh.relayframes import is_frame
from ..nat.netcheck import NetReport
from ..wgtool.model import DeviceUpdate
from ..wireguard.coordination import coordination_packet
from ..wireguard.endpoint import Endpoint
from ..wireguard.events import PeerEvent
from ..wireguard.settings import PeerChange as DevicePeerChange
from ..wireguard.settings import SetRequest
from .hosted import HostedInterface
from .meshnat import NatWatch
from .meshrelay import RelayGlue
from .meshstore import MeshStore, StoredMesh

_INBOX_LIMIT = 4096  # coordination messages waiting for the agent; more are dropped
_PROBES_PER_SECOND = 500  # path probes taken from the socket per second, at most
_SAVE_INTERVAL = 1.0  # s: state written at most this often (and on the way down)
_CANDIDATES_INTERVAL = 30.0  # s between looks at the local addresses
# The overlay's MTU: a relayed datagram (WireGuard in a relay frame in WireGuard)
# must still fit a 1500-byte underlay, as in Tailscale.
MESH_MTU = 1280


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
        stun: list[str] = []
        if config is not None:  # the [[mesh]] table of the node's configuration wins
            self.settings.interface = config.interface or self.settings.interface
            if config.listen_port is not None:
                self.settings.listen_port = config.listen_port
            self.settings.endpoints = config.endpoints or self.settings.endpoints
            if config.persistent_keepalive is not None:
                params = dataclasses.replace(
                    params, rendezvous_keepalive=config.persistent_keepalive
                )
            params = dataclasses.replace(params, relay=config.relay)
            stun = list(config.stun)
        self.log = Logger(f"mesh {stored.name}", log_level)
        self.agent = MeshAgent(
            stored.state, time.time(), params=params, private_key=stored.private_key
        )
        self.hosted = HostedInterface(self._interface_config(stored), log_level)
        self.interface: Interface | None = None
        self.cancel_scope = trio.CancelScope()
        self.stopped = trio.Event()
        self.dropped_messages = 0
        self.dropped_probes = 0
        self._probe_second = self._probe_count = 0
        self._overlay: dict[bytes, ipaddress.IPv6Address] = {}  # peer -> where messages go
        self._source = stored.state.record.ipv6  # where this node's messages come from
        self._inbox: deque[Callable[[float], None]] = deque()
        self._wakeup = trio.Event()
        self.agent_errors = 0
        self._dirty = False
        self._last_save = 0.0
        self._local: list[tuple[str, int]] = []  # this node's own addresses
        self._reflexive: list[tuple[str, int]] = []  # its public ones, from the netcheck
        self.relay = RelayGlue(self.agent, self._overlay, lambda: self._source, params.relay)
        self.nat = NatWatch(self.agent, stun, self.log, self._on_report)

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
            mtu=MESH_MTU,
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
                    nursery.start_soon(self.nat.run)
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
        interface.datagram_handlers.append((is_probe, self._on_probe))
        self.relay.attach(interface)
        self.nat.attach(interface)
        self._pump(time.time())

    # ------------------------------------------------------------ from the data path

    def _queue(self, work: Callable[[float], None]) -> None:
        if len(self._inbox) >= _INBOX_LIMIT:
            self.dropped_messages += 1
            return
        self._inbox.append(work)
        self._wakeup.set()

    def _on_message(self, sender: bytes, payload: bytes) -> None:
        if is_frame(payload):  # relayed traffic: in the data path, never queued
            self.relay.on_frame(sender, payload)
            return
        self._queue(lambda now: self.agent.handle_message(sender, payload, now))

    def _on_probe(self, datagram: bytes, source: Endpoint) -> None:
        """Probes from members only (the claimed key, before any crypto), at most
        _PROBES_PER_SECOND, so strangers cannot crowd out messages and events."""
        if not self.agent.members.is_live(bytes(datagram[5:37])):
            self.dropped_probes += 1
            return
        second = int(time.monotonic())
        if second != self._probe_second:
            self._probe_second, self._probe_count = second, 0
        self._probe_count += 1
        if self._probe_count > _PROBES_PER_SECOND:
            self.dropped_probes += 1
            return
        address = (source.sockaddr[0], source.sockaddr[1])
        self._queue(lambda now: self.agent.handle_datagram(address, datagram, now))

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
                self._guarded(self._inbox.popleft(), now)
            deadline = self.agent.get_timer()
            if deadline is not None and deadline <= now:
                self._guarded(self.agent.handle_timer, now)
            self._pump(now)
            self._save()

    def _guarded(self, work: Callable[[float], object], now: float) -> None:
        """A bug in the agent is logged and counted, never the node's end."""
        try:
            work(now)
        except Exception as exc:
            self.agent_errors += 1
            self.log.error(f"The mesh agent failed: {exc!r}")

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
        for (host, port), datagram in self.agent.datagrams_to_send():
            endpoint = Endpoint.literal(host, port)
            if endpoint is not None:
                interface.send_datagram(datagram, endpoint)
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
        if isinstance(change.endpoint, Relay):
            endpoint = Endpoint.relayed(change.endpoint.key, change.public_key)
        elif change.endpoint is not None:
            endpoint = Endpoint.literal(*change.endpoint)
        return DevicePeerChange(
            change.public_key,
            preshared_key=change.preshared_key,
            endpoint=endpoint,
            persistent_keepalive=change.persistent_keepalive,
            allowed_ips=[None, *change.allowed_ips],
            coordination_only=change.coordination_only,
        )

    def traversal(self) -> dict[str, Any]:
        """NAT traversal's view for status: the last netcheck, the relay policy
        and counters, the path probes' counters."""
        report = self.nat.report
        return {
            "relay_policy": self.relay.policy,
            "relays_for_others": self.relay.relays_for_others(),
            "nat": self.agent.reach.nat,
            "netcheck": None if report is None else report.to_json(),
            "netcheck_at": self.nat.report_at,
            "relay": dict(self.relay.stats),
            "probes": dict(self.agent.reach.probe_stats),
            "stun": dict(self.nat.stats),
            "dropped_probes": self.dropped_probes,
            "dropped_messages": self.dropped_messages,  # the agent's queue was full
            "agent_errors": self.agent_errors,
        }

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
                self._local = candidates
                self._publish_candidates()
            await trio.sleep(_CANDIDATES_INTERVAL)

    def _publish_candidates(self) -> None:
        """The local addresses, then the public ones the netcheck found."""
        local = list(self._local)
        reflexive = [c for c in self._reflexive if c not in local]
        self._queue(lambda now: self.agent.set_local_candidates(local, now, reflexive))

    def _on_report(self, report: NetReport) -> None:
        # behind an endpoint-dependent NAT the address STUN saw is good for the STUN
        # server only: publishing it would only make others probe in vain
        hard = report.mapping == "endpoint-dependent"
        reflexive = [] if hard else [a for a in (report.ipv4, report.ipv6) if a is not None]
        self._queue(lambda now: self.agent.reach.set_nat(report.mapping, now))
        if reflexive != self._reflexive:
            self._reflexive = reflexive
            self._publish_candidates()

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
