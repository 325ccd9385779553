"""UAPI messages without I/O: parse a `set` request into a plan that is checked
whole before anything changes, apply it to a device, and format `get`.

Keys are hex; errors are negative errno values, as wg expects them.
See https://www.wireguard.com/xplatform/#configuration-protocol.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass, field

from ..wireguard.allowedips import Network
from ..wireguard.device import Device
from ..wireguard.keys import KeyFormatError, from_hex, is_low_order, to_hex


class UapiError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.errno = code  # positive; sent negated


def _invalid(message: str) -> UapiError:
    return UapiError(errno.EINVAL, message)


@dataclass
class PeerChange:
    public_key: bytes
    remove: bool = False
    update_only: bool = False
    preshared_key: bytes | None = None
    endpoint: tuple | None = None
    persistent_keepalive: int | None = None
    # In request order: None means replace_allowed_ips, a network means add it.
    allowed_ips: list[Network | None] = field(default_factory=list)


_UNSET = object()


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


def parse_endpoint(text: str) -> tuple:
    """'1.2.3.4:51820' or '[fd00::1%eth0]:51820' as a socket address tuple."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise _invalid(f"invalid endpoint {text!r}")
    port = int(port_text)
    if host.startswith("[") and host.endswith("]"):
        host, _, scope = host[1:-1].partition("%")
        try:
            address = ipaddress.IPv6Address(host)
            scope_id = 0
            if scope:
                scope_id = int(scope) if scope.isdigit() else socket.if_nametoindex(scope)
        except (ValueError, OSError) as exc:
            raise _invalid(f"invalid endpoint {text!r}") from exc
        return (str(address), port, 0, scope_id)
    try:
        return (str(ipaddress.IPv4Address(host)), port)
    except ValueError as exc:
        raise _invalid(f"invalid endpoint {text!r}") from exc


def format_endpoint(endpoint: tuple) -> str:
    if len(endpoint) == 2:
        return f"{endpoint[0]}:{endpoint[1]}"
    host, port, _, scope_id = endpoint
    if scope_id:
        try:
            host = f"{host}%{socket.if_indextoname(scope_id)}"
        except OSError:
            host = f"{host}%{scope_id}"
    return f"[{host}]:{port}"


def _key(value: str, what: str) -> bytes:
    try:
        return from_hex(value)
    except KeyFormatError as exc:
        raise _invalid(f"invalid {what}: {value!r}") from exc


def _uint(value: str, bits: int, what: str) -> int:
    if not value.isdigit() or int(value) >= 1 << bits:
        raise _invalid(f"invalid {what}: {value!r}")
    return int(value)


def _true(value: str, what: str) -> None:
    if value != "true":
        raise _invalid(f"invalid value for {what}: {value!r}")


def parse_set(lines: list[str]) -> SetRequest:
    """Parse the lines of a set request (without 'set=1' and the blank line)."""
    request = SetRequest()
    peer: PeerChange | None = None
    for line in lines:
        key, sep, value = line.partition("=")
        if not sep:
            raise UapiError(errno.EPROTO, f"failed to parse line {line!r}")
        if key == "public_key":
            public_key = _key(value, "public key")
            if is_low_order(public_key):
                raise _invalid("public key is a low-order point")
            peer = PeerChange(public_key)
            request.peers.append(peer)
        elif peer is None:
            if key == "private_key":
                private = _key(value, "private key")
                request.private_key = None if private == bytes(32) else private
            elif key == "listen_port":
                request.listen_port = _uint(value, 16, "listen_port")
            elif key == "fwmark":
                request.fwmark = _uint(value, 32, "fwmark")
            elif key == "replace_peers":
                _true(value, key)
                request.replace_peers = True
            else:
                raise _invalid(f"invalid UAPI device key: {key}")
        elif key == "update_only":
            _true(value, key)
            peer.update_only = True
        elif key == "remove":
            _true(value, key)
            peer.remove = True
        elif key == "preshared_key":
            peer.preshared_key = _key(value, "preshared key")
        elif key == "endpoint":
            peer.endpoint = parse_endpoint(value)
        elif key == "persistent_keepalive_interval":
            peer.persistent_keepalive = _uint(value, 16, "persistent keepalive interval")
        elif key == "replace_allowed_ips":
            _true(value, key)
            peer.allowed_ips.append(None)
        elif key == "allowed_ip":
            try:
                peer.allowed_ips.append(ipaddress.ip_network(value, strict=False))
            except ValueError as exc:
                raise _invalid(f"invalid allowed ip: {value!r}") from exc
        elif key == "protocol_version":
            if value != "1":
                raise _invalid(f"invalid protocol version: {value!r}")
        else:
            raise _invalid(f"invalid UAPI peer key: {key}")
    return request


def apply_set(request: SetRequest, device: Device, now: float) -> None:
    """Apply a parsed request. Every check that can fail ran in parse_set."""
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
    if change.persistent_keepalive is not None:
        device.set_persistent_keepalive(peer, change.persistent_keepalive, now)
    device.flush_staged(peer, now)


def format_get(device: Device) -> str:
    lines: list[str] = []
    if device.identity is not None:
        lines.append(f"private_key={to_hex(device.identity.private_key.private_bytes_raw())}")
    if device.listen_port:
        lines.append(f"listen_port={device.listen_port}")
    if device.fwmark:
        lines.append(f"fwmark={device.fwmark}")
    for peer in device.peers.values():
        lines.append(f"public_key={to_hex(peer.public_key)}")
        lines.append(f"preshared_key={to_hex(peer.preshared_key)}")
        lines.append("protocol_version=1")
        if peer.endpoint is not None:
            lines.append(f"endpoint={format_endpoint(peer.endpoint.sockaddr)}")
        ns = 0 if peer.last_handshake is None else round(peer.last_handshake * 1e9)
        lines.append(f"last_handshake_time_sec={ns // 1_000_000_000}")
        lines.append(f"last_handshake_time_nsec={ns % 1_000_000_000}")
        lines.append(f"tx_bytes={peer.tx_bytes}")
        lines.append(f"rx_bytes={peer.rx_bytes}")
        lines.append(f"persistent_keepalive_interval={peer.persistent_keepalive}")
        lines.extend(f"allowed_ip={net}" for net in device.allowed_ips.networks(peer))
    return "".join(line + "\n" for line in lines)
