"""wg's configuration model (what config files and `wg setconf` describe) as
the core's typed `SetRequest`, so the node configures its interfaces with
`Interface.apply` and no UAPI text in between."""

from __future__ import annotations

import ipaddress

from ..wgtool.model import ZERO_KEY, DeviceUpdate, PeerUpdate
from ..wireguard.allowedips import Network
from ..wireguard.endpoint import Endpoint
from ..wireguard.settings import PeerChange, SetRequest


def request_from_update(update: DeviceUpdate) -> SetRequest:
    """The SetRequest that does what `update` says (as wg's set would)."""
    request = SetRequest(
        listen_port=update.listen_port,
        fwmark=update.fwmark,
        replace_peers=update.replace_peers,
        peers=[_peer_change(peer) for peer in update.peers],
    )
    if update.private_key is not None:
        # all zeros removes the key, as in a UAPI set
        request.private_key = None if update.private_key == ZERO_KEY else update.private_key
    return request


def _peer_change(peer: PeerUpdate) -> PeerChange:
    assert peer.public_key is not None, "a [Peer] without a public key was not refused"
    change = PeerChange(peer.public_key, remove=peer.remove)
    if peer.remove:
        return change
    change.preshared_key = peer.preshared_key
    if peer.endpoint is not None:
        change.endpoint = Endpoint(peer.endpoint.sockaddr)
    change.persistent_keepalive = peer.persistent_keepalive
    networks: list[Network | None] = [None] if peer.replace_allowed_ips else []
    networks += [
        ipaddress.ip_network((allowed.ip, allowed.cidr), strict=False)
        for allowed in peer.allowed_ips
    ]
    change.allowed_ips = networks
    return change
