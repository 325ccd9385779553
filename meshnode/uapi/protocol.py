"""UAPI messages without I/O: parse a `set` request into a plan that is checked
whole before anything changes, apply it to a device, and format `get`.

Keys are hex; errors are negative errno values, as wg expects them.
See https://www.wireguard.com/xplatform/#configuration-protocol.

Every value is parsed as wireguard-go parses it (strconv.ParseUint for
numbers, netip.ParsePrefix for allowed IPs, netip.ParseAddrPort for
endpoints, hex.DecodeString for keys): ASCII only, so a Unicode digit such
as '²' or '٣' that str.isdigit() and int() would take is refused, and no
value can make a parser raise anything but UapiError.
"""

from __future__ import annotations

import errno
import ipaddress
import socket

from ..wireguard.allowedips import Network
from ..wireguard.device import Device
from ..wireguard.endpoint import Endpoint
from ..wireguard.keys import clamp, from_hex, to_hex
from ..wireguard.settings import PeerChange, SetRequest
from .goparse import HEX_DIGITS, parse_addr, parse_uint


class UapiError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.errno = code  # positive; sent negated


def _invalid(message: str) -> UapiError:
    return UapiError(errno.EINVAL, message)


def _quoted(text: str) -> str:
    """Client text for an error message (and the log), cut short: a line may be 64 KiB."""
    return repr(text) if len(text) <= 80 else f"{text[:80]!r}..."


_IFNAMSIZ = 16  # Linux interface names are at most 15 bytes


def parse_prefix(text: str) -> Network:
    """An allowed IP as netip.ParsePrefix reads it: ADDRESS/BITS, no zone,
    BITS in decimal without a sign or leading zeros (Go 1.22 and later).
    Host bits may be set; they are masked off, as wireguard-go's table does."""
    address_text, slash, bits_text = text.rpartition("/")
    parsed = parse_addr(address_text) if slash else None
    if parsed is None:
        raise _invalid(f"invalid allowed ip: {_quoted(text)}")
    version, address, zone = parsed
    if zone:
        raise _invalid(f"invalid allowed ip (IPv6 zones are not allowed): {_quoted(text)}")
    if len(bits_text) > 1 and not "1" <= bits_text[0] <= "9":
        raise _invalid(f"invalid allowed ip (bad bits after slash): {_quoted(text)}")
    bits = parse_uint(bits_text, 8)
    if bits is None or bits > (32 if version == 4 else 128):
        raise _invalid(f"invalid allowed ip (prefix length): {_quoted(text)}")
    if version == 4:
        return ipaddress.IPv4Network((address, bits), strict=False)
    return ipaddress.IPv6Network((address, bits), strict=False)


def _scope_id(zone: str) -> int | None:
    """An IPv6 zone as an interface index, as wireguard-go's Linux bind does
    (zoneToUint32): an interface's name, else a decimal 32-bit index."""
    if len(zone.encode("utf-8", "replace")) < _IFNAMSIZ:
        try:
            return socket.if_nametoindex(zone)
        except (OSError, ValueError):  # no such interface; a NUL in the name
            pass
    return parse_uint(zone, 32)


def parse_endpoint(text: str) -> tuple:
    """'1.2.3.4:51820' or '[fd00::1%eth0]:51820' as a socket address tuple,
    read as netip.ParseAddrPort does: the port after the last ':', 0-65535
    in ASCII decimal; brackets exactly around an IPv6 address."""
    host, colon, port_text = text.rpartition(":")
    if not colon or not host or not port_text:
        raise _invalid(f"invalid endpoint {_quoted(text)}")
    bracketed = host[0] == "["
    if bracketed:
        if len(host) < 2 or host[-1] != "]":
            raise _invalid(f"invalid endpoint {_quoted(text)}")
        host = host[1:-1]
    port = parse_uint(port_text, 16)
    parsed = parse_addr(host)
    if port is None or parsed is None or bracketed != (parsed[0] == 6):
        raise _invalid(f"invalid endpoint {_quoted(text)}")
    version, address, zone = parsed
    if version == 4:
        return (str(ipaddress.IPv4Address(address)), port)
    scope_id = _scope_id(zone) if zone else 0
    if scope_id is None:
        raise _invalid(f"invalid endpoint {_quoted(text)} (no interface {_quoted(zone)})")
    return (str(ipaddress.IPv6Address(address)), port, 0, scope_id)


def format_endpoint(endpoint: tuple) -> str:
    if len(endpoint) == 2:
        return f"{endpoint[0]}:{endpoint[1]}"
    host, port, _, scope_id = endpoint
    if scope_id:
        try:
            host = f"{host}%{socket.if_indextoname(scope_id)}"
        except (OSError, OverflowError):  # the interface is gone: its index, as wg shows it
            host = f"{host}%{scope_id}"
    return f"[{host}]:{port}"


def _key(value: str, what: str) -> bytes:
    """64 hex digits, either case, as hex.DecodeString takes them. from_hex
    refuses non-ASCII text too; checked here first all the same, so that a
    change there cannot let a Unicode digit through."""
    if len(value) != 64 or not all(c in HEX_DIGITS for c in value):
        raise _invalid(f"invalid {what}: {_quoted(value)}")
    try:
        return from_hex(value)
    except ValueError as exc:  # KeyFormatError is one
        raise _invalid(f"invalid {what}: {_quoted(value)}") from exc


def _uint(value: str, bits: int, what: str) -> int:
    number = parse_uint(value, bits)
    if number is None:
        raise _invalid(f"invalid {what}: {_quoted(value)}")
    return number


def _true(value: str, what: str) -> None:
    if value != "true":
        raise _invalid(f"invalid value for {what}: {_quoted(value)}")


def parse_set(lines: list[str]) -> SetRequest:
    """Parse the lines of a set request (without 'set=1' and the blank line)."""
    request = SetRequest()
    peer: PeerChange | None = None
    for line in lines:
        key, sep, value = line.partition("=")
        if not sep:
            raise UapiError(errno.EPROTO, f"failed to parse line {_quoted(line)}")
        if key == "public_key":
            # A low-order point is taken, as wg and wireguard-go take it: the
            # device keeps such a peer but never sends to it.
            peer = PeerChange(_key(value, "public key"))
            request.peers.append(peer)
        elif peer is None:
            if key == "private_key":
                private = _key(value, "private key")
                # all zeros clears the key; any other is stored (and shown by
                # get) clamped, as wireguard-go's FromMaybeZeroHex does
                request.private_key = None if private == bytes(32) else clamp(private)
            elif key == "listen_port":
                request.listen_port = _uint(value, 16, "listen_port")
            elif key == "fwmark":
                request.fwmark = _uint(value, 32, "fwmark")
            elif key == "replace_peers":
                _true(value, key)
                request.replace_peers = True
            else:
                raise _invalid(f"invalid UAPI device key: {_quoted(key)}")
        elif key == "update_only":
            _true(value, key)
            peer.update_only = True
        elif key == "remove":
            _true(value, key)
            peer.remove = True
        elif key == "preshared_key":
            peer.preshared_key = _key(value, "preshared key")
        elif key == "endpoint":
            peer.endpoint = Endpoint(parse_endpoint(value))
        elif key == "persistent_keepalive_interval":
            peer.persistent_keepalive = _uint(value, 16, "persistent keepalive interval")
        elif key == "replace_allowed_ips":
            _true(value, key)
            peer.allowed_ips.append(None)
        elif key == "allowed_ip":
            peer.allowed_ips.append(parse_prefix(value))
        elif key == "protocol_version":
            if value != "1":
                raise _invalid(f"invalid protocol version: {_quoted(value)}")
        else:
            raise _invalid(f"invalid UAPI peer key: {_quoted(key)}")
    return request


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
        if peer.endpoint is not None and peer.endpoint.via is None:
            # a relayed endpoint has no address wg could show; `meshnode status` names the relay
            lines.append(f"endpoint={format_endpoint(peer.endpoint.sockaddr)}")
        ns = 0 if peer.last_handshake is None else round(peer.last_handshake * 1e9)
        lines.append(f"last_handshake_time_sec={ns // 1_000_000_000}")
        lines.append(f"last_handshake_time_nsec={ns % 1_000_000_000}")
        lines.append(f"tx_bytes={peer.tx_bytes}")
        lines.append(f"rx_bytes={peer.rx_bytes}")
        lines.append(f"persistent_keepalive_interval={peer.persistent_keepalive}")
        lines.extend(f"allowed_ip={net}" for net in device.allowed_ips.networks(peer))
    return "".join(line + "\n" for line in lines)
