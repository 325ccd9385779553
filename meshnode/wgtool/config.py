"""wg's configuration: INI files (setconf, addconf, syncconf) and the
arguments of `wg set`, both turned into a DeviceUpdate.

The file format, as wg's config.c reads it: a line ends at NUL or '#', every
whitespace character in it is dropped (so "List enPort = 5" is ListenPort),
section headers and keys are case-insensitive, a key needs a non-empty value
("AllowedIPs =" alone is an unrecognized line), anything else, including
wg-quick's Address, DNS, MTU, Table, Pre/PostUp/Down and SaveConfig, is
"Line unrecognized". Messages are wg's; the failing file and line are kept
on the WgError for callers that want them (wg does not print them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from . import values
from .errors import WgError, perror
from .model import ZERO_KEY, DeviceUpdate, PeerUpdate
from .values import text


def _value(line: bytes, key: bytes) -> bytes | None:
    """The value after `key` if the line starts with it (ASCII case-insensitive)
    and something follows, as wg's get_value."""
    if len(key) >= len(line) or line[: len(key)].lower() != key.lower():
        return None
    return line[len(key) :]


@dataclass
class _FileParser:
    update: DeviceUpdate
    in_device: bool = False
    peer: PeerUpdate | None = None
    peers: list[PeerUpdate] = field(default_factory=list)

    def line(self, line: bytes) -> None:
        lowered = line.lower()
        if lowered == b"[interface]":
            self.in_device, self.peer = True, None
            return
        if lowered == b"[peer]":
            # a [Peer] section states the whole list of allowed IPs
            self.peer = PeerUpdate(public_key=None, replace_allowed_ips=True)
            self.update.peers.append(self.peer)
            self.in_device = False
            return
        if self.in_device:
            self._device_key(line)
        elif self.peer is not None:
            self._peer_key(self.peer, line)
        else:
            raise WgError(f"Line unrecognized: `{text(line)}'")

    def _device_key(self, line: bytes) -> None:
        if (v := _value(line, b"ListenPort=")) is not None:
            self.update.listen_port = values.parse_port(v)
        elif (v := _value(line, b"FwMark=")) is not None:
            self.update.fwmark = values.parse_fwmark(v)
        elif (v := _value(line, b"PrivateKey=")) is not None:
            self.update.private_key = values.parse_key(v)
        else:
            raise WgError(f"Line unrecognized: `{text(line)}'")

    def _peer_key(self, peer: PeerUpdate, line: bytes) -> None:
        if (v := _value(line, b"Endpoint=")) is not None:
            peer.endpoint = values.parse_endpoint(v)
        elif (v := _value(line, b"PublicKey=")) is not None:
            peer.public_key = values.parse_key(v)
        elif (v := _value(line, b"AllowedIPs=")) is not None:
            # several AllowedIPs lines add up
            peer.allowed_ips += values.parse_allowed_ips(v)
        elif (v := _value(line, b"PersistentKeepalive=")) is not None:
            peer.persistent_keepalive = values.parse_persistent_keepalive(v)
        elif (v := _value(line, b"PresharedKey=")) is not None:
            peer.preshared_key = values.parse_key(v)
        else:
            raise WgError(f"Line unrecognized: `{text(line)}'")


def new_update(*, append: bool) -> DeviceUpdate:
    """What a file states before its first line: setconf replaces everything,
    so an absent PrivateKey, ListenPort or FwMark means none/0/off; addconf
    leaves what the file doesn't mention."""
    if append:
        return DeviceUpdate()
    return DeviceUpdate(private_key=ZERO_KEY, listen_port=0, fwmark=0, replace_peers=True)


def parse_config(data: bytes, *, append: bool, path: str | None = None) -> DeviceUpdate:
    """Parse a configuration file's bytes (append=True for addconf)."""
    parser = _FileParser(new_update(append=append))
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        line = values.strip_spaces(raw.split(b"\0", 1)[0].split(b"#", 1)[0])
        if not line:
            continue
        try:
            parser.line(line)
        except WgError as exc:
            raise WgError(
                exc.message + "\nConfiguration parsing error", path=path, lineno=lineno
            ) from None
    if any(peer.public_key is None for peer in parser.update.peers):
        raise WgError("A peer is missing a public key\nInvalid configuration", path=path)
    return parser.update


def read_config_file(path: str, *, append: bool) -> DeviceUpdate:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise WgError(perror("fopen", exc.errno or 0), path=path) from None
    try:
        with os.fdopen(fd, "rb") as file:
            data = file.read()
    except OSError as exc:
        # wg's getline() loop takes a read error (say, on a directory) for the
        # end of an empty file and goes on to apply it: for setconf, wiping
        # the interface. We stop instead.
        raise WgError(perror("getline", exc.errno or 0), path=path) from None
    return parse_config(data, append=append, path=path)


def parse_set_args(args: list[bytes]) -> DeviceUpdate:
    """The arguments of `wg set IFACE ...` after the interface name.

    Device settings are only taken before the first `peer`; each `peer KEY`
    starts a peer that the following peer settings apply to. Anything else
    is an "Invalid argument", as is a setting with its value missing.
    """
    update = DeviceUpdate()
    peer: PeerUpdate | None = None
    i = 0
    while i < len(args):
        arg, has_value = args[i], i + 1 < len(args)
        value = args[i + 1] if has_value else b""
        if arg == b"listen-port" and has_value and peer is None:
            update.listen_port = values.parse_port(value)
        elif arg == b"fwmark" and has_value and peer is None:
            update.fwmark = values.parse_fwmark(value)
        elif arg == b"private-key" and has_value and peer is None:
            update.private_key = values.read_key_file(value)
        elif arg == b"peer" and has_value:
            peer = PeerUpdate(public_key=values.parse_key(value))
            update.peers.append(peer)
        elif arg == b"remove" and peer is not None:
            peer.remove = True
            i += 1
            continue
        elif arg == b"endpoint" and has_value and peer is not None:
            peer.endpoint = values.parse_endpoint(value)
        elif arg == b"allowed-ips" and has_value and peer is not None:
            peer.replace_allowed_ips = True
            peer.allowed_ips += values.parse_allowed_ips(values.strip_spaces(value))
        elif arg == b"persistent-keepalive" and has_value and peer is not None:
            peer.persistent_keepalive = values.parse_persistent_keepalive(value)
        elif arg == b"preshared-key" and has_value and peer is not None:
            peer.preshared_key = values.read_key_file(value)
        else:
            raise WgError(f"Invalid argument: {text(arg)}")
        i += 2
    return update
