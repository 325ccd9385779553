"""A typed change to a running interface: what a UAPI `set` carries, and
what the node and the mesh build directly (no UAPI text in between).

`SetRequest` is checked whole by whoever builds it (the UAPI parser checks
every value) and then applied with `apply_settings`, which cannot fail on
values: the request is all or nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .allowedips import Network
from .device import Device
from .endpoint import Endpoint


@dataclass
class PeerChange:
    public_key: bytes
    remove: bool = False
    update_only: bool = False
    preshared_key: bytes | None = None
    endpoint: Endpoint | None = None
    persistent_keepalive: int | None = None
    coordination_only: bool | None = None  # None: leave as it is (see Peer.coordination_only)
    # In request order: None means replace_allowed_ips, a network means add it.
    allowed_ips: list[Network | None] = field(default_factory=list)


_UNSET = object()  # private_key: leave it as it is


@dataclass
class SetRequest:
    private_key: object = _UNSET  # bytes, None to clear, or _UNSET
    listen_port: int | None = None
    fwmark: int | None = None
    replace_peers: bool = False
    peers: list[PeerChange] = field(default_factory=list)

    @property
    def sets_private_key(self) -> bool:
        return self.private_key is not _UNSET


def apply_settings(request: SetRequest, device: Device, now: float) -> None:
    """Apply a checked request (every check that can fail ran when it was built)."""
    if request.sets_private_key:
        device.set_private_key(request.private_key, now)  # type: ignore[arg-type]
    if request.listen_port is not None:
        device.listen_port = request.listen_port
    if request.fwmark is not None:
        device.fwmark = request.fwmark
    if request.replace_peers:
        device.remove_all_peers()
    for change in request.peers:
        _apply_peer(change, device, now)


def _apply_peer(change: PeerChange, device: Device, now: float) -> None:
    if change.public_key == device.public_key:
        return  # a peer with our own key is ignored, as wireguard-go does
    existing = device.peers.get(change.public_key)
    if change.remove:
        device.remove_peer(change.public_key)
        return
    if existing is None and change.update_only:
        return
    peer = existing or device.add_peer(change.public_key)
    if change.preshared_key is not None:
        device.set_preshared_key(peer, change.preshared_key)
    if change.endpoint is not None:
        device.set_endpoint(peer, change.endpoint)
    for network in change.allowed_ips:
        if network is None:
            device.clear_allowed_ips(peer)
        else:
            device.add_allowed_ip(peer, network)
    if change.coordination_only is not None:
        peer.coordination_only = change.coordination_only
    if change.persistent_keepalive is not None:
        device.set_persistent_keepalive(peer, change.persistent_keepalive, now)
    device.flush_staged(peer, now)
