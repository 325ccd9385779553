"""syncconf: make the interface match a configuration file while leaving
alone what already matches.

wg's syncconf re-sends every peer of the file and removes the peers the file
lacks. Re-sending an unchanged peer is harmless to its session in the kernel
and in wireguard-go, but it is still a write (and a daemon may treat any
write as a change), so we send only what differs, reaching the state wg's
request would reach:

- device settings (private key, listen port, fwmark) only where they differ;
  as in wg, a setting the file lacks is none/0/off;
- peers the file lacks are removed, in wg's order;
- a new peer is sent whole; a known peer only with the settings that differ
  from the daemon's, and not at all if nothing does. As in the installed wg
  (1.0.20210914), a preshared key or keepalive the file doesn't mention is
  left as it is; the allowed IPs are compared, in order, with the file's
  list as the daemon would store it (host bits cleared). An endpoint the
  file names is set when the daemon's differs (so, as with wg, a roamed
  endpoint goes back to the file's).

When the file is not simple enough to predict the daemon's result exactly
(the same public key in two sections, or a prefix listed twice, whose
winner depends on the daemon's insertion rules), every peer of the file is
sent as wg sends it.
"""

from __future__ import annotations

from dataclasses import replace

from .model import ZERO_KEY, AllowedIP, Device, DeviceUpdate, Peer, PeerUpdate


def plan(file: DeviceUpdate, runtime: Device) -> DeviceUpdate:
    """The update to send, given the file and the interface's current state.

    With no peers in the file or none at runtime wg sends the file as
    setconf would (replacing all peers), and so do we: there is nothing to
    keep.
    """
    if not file.peers or not runtime.peers:
        return file
    update = DeviceUpdate(peers=_removals(file, runtime))
    if file.private_key is not None and file.private_key != (runtime.private_key or ZERO_KEY):
        update.private_key = file.private_key
    if file.listen_port is not None and file.listen_port != runtime.listen_port:
        update.listen_port = file.listen_port
    if file.fwmark is not None and file.fwmark != runtime.fwmark:
        update.fwmark = file.fwmark
    if _ambiguous(file.peers):
        update.peers += file.peers
        return update
    known = {peer.public_key: peer for peer in runtime.peers}
    for wanted in file.peers:
        current = known.get(wanted.public_key or b"")
        change = wanted if current is None else _peer_change(wanted, current)
        if change is not None:
            update.peers.append(change)
    return update


def _removals(file: DeviceUpdate, runtime: Device) -> list[PeerUpdate]:
    """Runtime peers the file lacks; wg prepends each while walking the keys
    in ascending order, so they end up in descending order."""
    wanted = {peer.public_key for peer in file.peers}
    gone = sorted((p.public_key for p in runtime.peers if p.public_key not in wanted), reverse=True)
    return [PeerUpdate(public_key=key, remove=True) for key in gone]


def _ambiguous(peers: list[PeerUpdate]) -> bool:
    keys = [peer.public_key for peer in peers]
    prefixes = [allowed.masked() for peer in peers for allowed in peer.allowed_ips]
    return len(set(keys)) != len(keys) or len(set(prefixes)) != len(prefixes)


def _stored(allowed_ips: list[AllowedIP]) -> list[AllowedIP]:
    return [allowed.masked() for allowed in allowed_ips]


def _peer_change(wanted: PeerUpdate, current: Peer) -> PeerUpdate | None:
    """Only the settings of `wanted` that differ from `current`, or None."""
    change = PeerUpdate(public_key=wanted.public_key)
    changed = False
    if wanted.preshared_key is not None and wanted.preshared_key != (
        current.preshared_key or ZERO_KEY
    ):
        change.preshared_key, changed = wanted.preshared_key, True
    if wanted.endpoint is not None and wanted.endpoint != current.endpoint:
        change.endpoint, changed = wanted.endpoint, True
    if (
        wanted.persistent_keepalive is not None
        and wanted.persistent_keepalive != current.persistent_keepalive
    ):
        change.persistent_keepalive, changed = wanted.persistent_keepalive, True
    if wanted.replace_allowed_ips:
        if _stored(wanted.allowed_ips) != current.allowed_ips:
            change = replace(change, replace_allowed_ips=True, allowed_ips=wanted.allowed_ips)
            changed = True
    elif not set(_stored(wanted.allowed_ips)) <= set(current.allowed_ips):
        change = replace(change, allowed_ips=wanted.allowed_ips)
        changed = True
    return change if changed else None
