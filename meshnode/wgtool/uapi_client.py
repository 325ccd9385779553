"""The client side of the cross-platform UAPI (https://www.wireguard.com/xplatform/).

get: send "get=1\\n\\n", read key=value lines up to an empty line, the last
one errno=N. set: send "set=1\\n", key=value lines and an empty line; the
answer is "errno=N\\n\\n". Keys are hex.

Both are done as wg 1.0.20210914's ipc-uapi.h does them, so a daemon sees
the same bytes from us as from wg, and a reply wg would reject we reject the
same way: failures are OSError with the errno wg would report (EPROTO for a
reply it cannot parse). Note wg's asymmetry, which a daemon must follow to
have its errors shown: in a get reply N must be plain digits (errno=5 is
"Input/output error"; wireguard-go's "errno=-22" is a protocol error), in a
set reply N is a negative errno (errno=-98 is "Address already in use";
errno=98 would be "Unknown error -98").
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
from collections.abc import Iterable
from typing import BinaryIO

from ..wireguard.keys import KeyFormatError, from_hex, public_key, to_hex
from . import discovery
from .model import (
    ZERO_KEY,
    AllowedIP,
    Device,
    DeviceUpdate,
    Endpoint,
    EndpointSyntaxError,
    Peer,
    resolve_endpoint,
    split_endpoint,
)

IFNAMSIZ = 16
_DIGITS = re.compile(r"[0-9]+")
_SIGNED = re.compile(rb"-?[0-9]+")


class ProtocolError(Exception):
    """A reply line wg would stop at (it then reports EPROTO)."""


def interface_name(name: str) -> str:
    """Names are cut to IFNAMSIZ - 1 bytes, as wg copies them into its struct."""
    raw = name.encode("utf-8", "surrogateescape")[: IFNAMSIZ - 1]
    return raw.decode("utf-8", "surrogateescape")


def _open(name: str) -> socket.socket:
    try:
        return discovery.connect(name)
    except discovery.Absent:
        raise OSError(code := discovery.missing_interface_errno(name), _strerror(code)) from None


def _strerror(code: int) -> str:
    return os.strerror(code)


# --- get -------------------------------------------------------------------


def get_device(name: str) -> Device:
    """The interface's configuration and state (peers in the daemon's order)."""
    with _open(name) as sock:
        with contextlib.suppress(OSError):  # then the reply is missing: EPROTO
            sock.sendall(b"get=1\n\n")
        with sock.makefile("rb") as reply:
            return parse_get(interface_name(name), _lines(reply, stop_on_error=True))


def _lines(reply: BinaryIO, stop_on_error: bool = False) -> Iterable[bytes]:
    """The reply's lines; a read error ends them early (wg's getline() loop
    just stops: a truncated get reply is EPROTO) or, for set, is raised (wg
    then reports that errno)."""
    try:
        while line := reply.readline():
            yield line
    except OSError:
        if not stop_on_error:
            raise


def _num(value: str, maximum: int) -> int:
    """wg's NUM(): decimal digits only, at most `maximum` (strtoull saturates)."""
    if not _DIGITS.fullmatch(value):
        raise ProtocolError(value)
    number = min(int(value), (1 << 64) - 1)
    if number > maximum:
        raise ProtocolError(value)
    return number


def _key(value: str) -> bytes:
    try:
        return from_hex(value)
    except KeyFormatError:
        raise ProtocolError(value) from None


def parse_endpoint_value(value: str) -> Endpoint:
    """An endpoint as the daemon writes it, "[v6]:port" or "v4:port", resolved
    with getaddrinfo as wg does (so a zone "%2" comes back as "%eth0")."""
    try:
        host, port = split_endpoint(value.encode("utf-8", "surrogateescape"))
    except EndpointSyntaxError:
        raise ProtocolError(value) from None
    try:
        endpoint = resolve_endpoint(host, port)
    except OSError:
        # wg gives up on the whole reply here with ENETUNREACH (and then
        # crashes on a sign slip); we just report the errno it meant
        raise OSError(errno.ENETUNREACH, _strerror(errno.ENETUNREACH)) from None
    if endpoint is None:
        raise ProtocolError(value)
    return endpoint


def _allowed_ip(value: str) -> AllowedIP:
    ip, slash, mask = value.partition("/")
    if not slash or not mask[:1].isascii() or not mask[:1].isdigit():
        raise ProtocolError(value)
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    try:
        address = socket.inet_pton(family, ip)
    except (OSError, ValueError, UnicodeEncodeError):
        raise ProtocolError(value) from None
    if not _DIGITS.fullmatch(mask):
        raise ProtocolError(value)
    cidr = min(int(mask), (1 << 64) - 1) & 0xFF  # wg keeps it in a uint8_t
    if cidr > 8 * len(address):
        raise ProtocolError(value)
    return AllowedIP(family, address, cidr)


def parse_get(name: str, lines: Iterable[bytes]) -> Device:
    """Parse a get reply, line by line, with wg's rules.

    Device keys count only before the first public_key; unknown keys (such
    as protocol_version) are ignored; a preshared key of all zeros means
    none; the public key is derived from the private key. The reply ends at
    an empty line, and succeeds only if it said errno=0 before.
    """
    device = Device(name=name)
    peer: Peer | None = None
    status = -errno.EPROTO
    try:
        for raw in lines:
            line = raw.split(b"\0", 1)[0]  # a C string
            if line == b"\n":
                if status:
                    raise OSError(-status, _strerror(-status))
                return device
            if not line.endswith(b"\n") or b"=" not in line:
                break
            key, _, value = line[:-1].decode("utf-8", "surrogateescape").partition("=")
            if peer is None and key == "private_key":
                device.private_key = _key(value)
                device.public_key = public_key(device.private_key)
            elif peer is None and key == "listen_port":
                device.listen_port = _num(value, 0xFFFF)
            elif peer is None and key == "fwmark":
                device.fwmark = _num(value, 0xFFFFFFFF)
            elif key == "public_key":
                peer = Peer(public_key=_key(value))
                device.peers.append(peer)
            elif peer is not None and key == "preshared_key":
                psk = _key(value)
                peer.preshared_key = None if psk == ZERO_KEY else psk
            elif peer is not None and key == "endpoint":
                peer.endpoint = parse_endpoint_value(value)
            elif peer is not None and key == "persistent_keepalive_interval":
                peer.persistent_keepalive = _num(value, 0xFFFF)
            elif peer is not None and key == "allowed_ip":
                peer.allowed_ips.append(_allowed_ip(value))
            elif peer is not None and key == "last_handshake_time_sec":
                peer.last_handshake_sec = _num(value, (1 << 63) - 1)
            elif peer is not None and key == "last_handshake_time_nsec":
                peer.last_handshake_nsec = _num(value, (1 << 63) - 1)
            elif peer is not None and key == "rx_bytes":
                peer.rx_bytes = _num(value, (1 << 64) - 1)
            elif peer is not None and key == "tx_bytes":
                peer.tx_bytes = _num(value, (1 << 64) - 1)
            elif key == "errno":
                status = -_num(value, 0x7FFFFFFF)
    except ProtocolError:
        pass
    raise OSError(errno.EPROTO, _strerror(errno.EPROTO))


def parse_get_text(name: str, text: str) -> Device:
    """A get reply as a daemon's own `uapi_get()` returns it (no errno line)."""
    lines = [(line + "\n").encode("utf-8", "surrogateescape") for line in text.splitlines()]
    return parse_get(name, [*lines, b"errno=0\n", b"\n"])


# --- set -------------------------------------------------------------------


def encode_set(update: DeviceUpdate) -> bytes:
    """The set request wg writes for this update, byte for byte."""
    lines = ["set=1"]
    if update.private_key is not None:
        lines.append(f"private_key={to_hex(update.private_key)}")
    if update.listen_port is not None:
        lines.append(f"listen_port={update.listen_port}")
    if update.fwmark is not None:
        lines.append(f"fwmark={update.fwmark}")
    if update.replace_peers:
        lines.append("replace_peers=true")
    for peer in update.peers:
        assert peer.public_key is not None
        lines.append(f"public_key={to_hex(peer.public_key)}")
        if peer.remove:
            lines.append("remove=true")
            continue
        if peer.preshared_key is not None:
            lines.append(f"preshared_key={to_hex(peer.preshared_key)}")
        if peer.endpoint is not None and (endpoint := peer.endpoint.text()) is not None:
            lines.append(f"endpoint={endpoint}")
        if peer.persistent_keepalive is not None:
            lines.append(f"persistent_keepalive_interval={peer.persistent_keepalive}")
        if peer.replace_allowed_ips:
            lines.append("replace_allowed_ips=true")
        lines += [f"allowed_ip={allowed}" for allowed in peer.allowed_ips]
    return ("\n".join(lines) + "\n\n").encode("utf-8", "surrogateescape")


def set_device(name: str, update: DeviceUpdate) -> None:
    """Apply an update; OSError with the daemon's errno if it refuses.

    The daemon applies a request line by line, so a refusal can come after
    part of it took effect (wireguard-go keeps what it had applied).
    """
    with _open(interface_name(name)) as sock:
        # a daemon may answer and hang up before reading everything: its
        # answer, if any, is what counts (wg forgets write errors too)
        with contextlib.suppress(OSError):
            sock.sendall(encode_set(update))
        with sock.makefile("rb") as reply:
            status = parse_set_reply(_lines(reply))
    if status:
        raise OSError(-status, _strerror(-status))


def parse_set_reply(lines: Iterable[bytes]) -> int:
    """The status of a set, as wg 1.0.20210914 reads it: 0, or minus an errno.

    Lines up to an empty one; the errno line's value must be a whole C int
    (a negative errno, as daemons send it; a positive one makes wg print
    "Unknown error -N", and so do we). A reply that ends early or that wg
    cannot parse is EPROTO; a number beyond a C long long is ERANGE (the
    errno strtoll leaves behind); a read error is that error.
    """
    status = -errno.EPROTO
    try:
        for raw in lines:
            line = raw.split(b"\0", 1)[0]
            if line == b"\n":
                return status
            if not line.endswith(b"\n") or b"=" not in line:
                break
            key, _, value = line[:-1].partition(b"=")
            if key != b"errno":
                continue
            if not _SIGNED.fullmatch(value):
                break
            number = int(value)
            if not -(1 << 63) <= number < (1 << 63):
                return -errno.ERANGE
            if not -(1 << 31) <= number < (1 << 31):
                break
            status = number
    except OSError as exc:
        return -(exc.errno or errno.EPROTO)
    return -errno.EPROTO
