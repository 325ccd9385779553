"""The relay's glue: WireGuard datagrams for relayed endpoints into FORWARD
frames, FORWARD frames into DELIVER frames (on a relay member), DELIVER
frames into the device (relayframes.py describes the frames).

It runs inside the data path's dispatch (no queue, no agent round trip):
frames are checked against the roster as it is, and every refusal is
counted by reason.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable

from ..interface import Interface
from ..mesh import relayframes
from ..mesh.agent import MeshAgent
from ..mesh.messages import COORDINATION_PORT
from ..mesh.reach import RELAY_ROLES
from ..wireguard.coordination import coordination_packet
from ..wireguard.endpoint import Endpoint
from ..wireguard.messages import is_wireguard

_ENDPOINT_CACHE = 4096


class RelayGlue:
    def __init__(self, agent: MeshAgent, overlay: dict[bytes, ipaddress.IPv6Address],
                 source: Callable[[], ipaddress.IPv6Address], policy: str) -> None:  # fmt: skip
        self.agent = agent
        self.overlay = overlay  # member key -> its overlay IPv6 (where frames go)
        self.source = source  # this node's overlay IPv6
        self.policy = policy
        self.interface: Interface | None = None
        self.stats: Counter[str] = Counter()
        self._endpoints: dict[tuple[bytes, bytes], Endpoint] = {}

    def attach(self, interface: Interface) -> None:
        self.interface = interface
        interface.relay_sender = self.carry

    def relays_for_others(self) -> bool:
        """A rendezvous (or relay) member relays unless its policy is never."""
        if self.policy == "never":
            return False
        own = self.agent.roster.member(self.agent.public_key)
        return own is not None and bool(RELAY_ROLES & own.roles)

    def _packet(self, member: bytes, payload: bytes) -> bytes | None:
        destination = self.overlay.get(member)
        if destination is None:
            return None
        return coordination_packet(self.source(), destination, COORDINATION_PORT, payload)

    # ------------------------------------------------------------ this node's traffic

    def carry(self, datagram: bytes, endpoint: Endpoint) -> bytes | None:
        """A WireGuard datagram for `endpoint.to` through `endpoint.via`: the inner
        packet to the relay (None: the relay is no peer any more)."""
        assert endpoint.via is not None and endpoint.to is not None
        if endpoint.via == endpoint.to or len(datagram) > relayframes.MAX_DATAGRAM:
            return None
        relay = self.interface.device.peers.get(endpoint.via) if self.interface else None
        if relay is None or (relay.endpoint is not None and relay.endpoint.via is not None):
            self.stats["refused_relay_relayed"] += 1  # never a relay through a relay
            return None
        packet = self._packet(endpoint.via, relayframes.forward(endpoint.to, datagram))
        if packet is not None:
            self.stats["sent_via_relay"] += 1
        return packet

    # ------------------------------------------------------------ frames in

    def on_frame(self, sender: bytes, payload: bytes) -> None:
        frame = relayframes.parse(payload)
        if frame is None:
            self.stats["refused_malformed"] += 1
            return
        members = self.agent.members
        if self.agent.state != "member" or not members.is_live(sender):
            self.stats["refused_not_member"] += 1  # an invite's temporary key, or gone
            return
        if frame.kind == relayframes.DELIVER:
            self._deliver(sender, frame)
        else:
            self._forward(sender, frame)

    def _forward(self, sender: bytes, frame: relayframes.Frame) -> None:
        if not self.relays_for_others():
            self.stats["refused_policy"] += 1
            return
        destination = frame.key
        if destination == sender or destination == self.agent.public_key:
            self.stats["refused_loop"] += 1
            return
        if not self.agent.members.is_live(destination):
            self.stats["refused_no_member"] += 1
            return
        packet = self._packet(destination, relayframes.deliver(sender, frame.datagram))
        if packet is None or self.interface is None:
            self.stats["refused_no_member"] += 1
            return
        self.stats["relayed"] += 1
        self.stats["relayed_bytes"] += len(frame.datagram)
        self.interface.send_coordination(packet)

    def _deliver(self, relay: bytes, frame: relayframes.Frame) -> None:
        origin = frame.key
        if origin == relay or not self.agent.members.is_live(origin) or self.interface is None:
            self.stats["refused_origin"] += 1
            return
        record = self.agent.roster.member(relay)
        if record is None or not RELAY_ROLES & record.roles:
            self.stats["refused_not_relay"] += 1  # only relay members deliver
            return
        if not is_wireguard(frame.datagram):
            self.stats["refused_not_wireguard"] += 1  # probes and STUN never go relayed
            return
        if self.agent.reach.relay_policy == "never":
            self.stats["refused_policy"] += 1
            return
        key = (relay, origin)
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            if len(self._endpoints) >= _ENDPOINT_CACHE:
                self._endpoints.clear()
            endpoint = self._endpoints[key] = Endpoint.relayed(relay, origin)
        self.stats["received_via_relay"] += 1
        self.interface.inject(frame.datagram, endpoint)
