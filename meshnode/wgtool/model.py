"""What wg knows of an interface: the state a UAPI get returns (`Device`,
`Peer`) and the changes a UAPI set carries (`DeviceUpdate`, `PeerUpdate`).

wg uses one C struct with flag bits for both; here "leave it alone" is None
and the two directions are separate types. Addresses are kept in the form the
C library works with (packed bytes, getaddrinfo socket addresses), and are
printed with the C library's inet_ntop/getnameinfo, so the text is wg's:
"::ffff:1.2.3.4" (not Python 3.11's "::ffff:102:304"), "fe80::1%eth0".
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

KEY_LEN = 32
ZERO_KEY = bytes(KEY_LEN)

# How wg prints endpoints: numeric host and port, as for a datagram socket.
_NAMEINFO_FLAGS = socket.NI_DGRAM | socket.NI_NUMERICSERV | socket.NI_NUMERICHOST


@dataclass(frozen=True)
class AllowedIP:
    family: int  # socket.AF_INET or socket.AF_INET6
    address: bytes  # packed, 4 or 16 bytes
    cidr: int

    @property
    def ip(self) -> str:
        return socket.inet_ntop(self.family, self.address)

    def __str__(self) -> str:
        return f"{self.ip}/{self.cidr}"

    @property
    def _bits(self) -> int:
        return 8 * len(self.address)

    def has_host_bits(self) -> bool:
        host = (1 << (self._bits - self.cidr)) - 1
        return bool(int.from_bytes(self.address, "big") & host)

    def masked(self) -> AllowedIP:
        """The prefix as a daemon stores it (kernel and wireguard-go both mask)."""
        host = (1 << (self._bits - self.cidr)) - 1
        value = int.from_bytes(self.address, "big") & ~host
        return AllowedIP(self.family, value.to_bytes(len(self.address), "big"), self.cidr)


@dataclass(frozen=True)
class Endpoint:
    """A resolved UDP endpoint: a family and socket address from getaddrinfo."""

    family: int
    sockaddr: tuple

    def _nameinfo(self) -> tuple[str, str] | OSError:
        try:
            return socket.getnameinfo(self.sockaddr, _NAMEINFO_FLAGS)
        except OSError as exc:
            return exc

    def text(self) -> str | None:
        """As wg writes it, "host:port" or "[v6host]:port"; None if getnameinfo fails."""
        info = self._nameinfo()
        if isinstance(info, OSError):
            return None
        host, port = info
        if self.family == socket.AF_INET6 and ":" in host:
            return f"[{host}]:{port}"
        return f"{host}:{port}"

    def show_text(self) -> str:
        """As `wg show` prints it: on failure, getnameinfo's error text instead."""
        info = self._nameinfo()
        if isinstance(info, OSError):
            return str(info.strerror)
        return self.text() or ""


class EndpointSyntaxError(ValueError):
    """An endpoint string without a closing brace ("brace") or a port ("port")."""


def split_endpoint(value: bytes) -> tuple[bytes, bytes]:
    """Host and port of "host:port" or "[host]:port", split where wg splits:
    at the first ']' for brackets, else at the last ':'."""
    if value.startswith(b"["):
        host, bracket, rest = value[1:].partition(b"]")
        if not bracket:
            raise EndpointSyntaxError("brace")
        if not rest.startswith(b":") or len(rest) == 1:
            raise EndpointSyntaxError("port")
        return host, rest[1:]
    host, colon, port = value.rpartition(b":")
    if not colon or not port:
        raise EndpointSyntaxError("port")
    return host, port


def resolve_endpoint(host: bytes, port: bytes) -> Endpoint | None:
    """getaddrinfo's first answer for a UDP endpoint, as wg takes it (bytes go
    to the C library as they are); None if that is neither IPv4 nor IPv6.
    Resolution failures raise OSError (socket.gaierror)."""
    family, _, _, _, sockaddr = socket.getaddrinfo(
        host, port, socket.AF_UNSPEC, socket.SOCK_DGRAM, socket.IPPROTO_UDP
    )[0]
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    return Endpoint(int(family), tuple(sockaddr))


@dataclass
class Peer:
    public_key: bytes
    preshared_key: bytes | None = None  # None: no preshared key (the daemon said all zeros)
    endpoint: Endpoint | None = None
    allowed_ips: list[AllowedIP] = field(default_factory=list)
    last_handshake_sec: int = 0
    last_handshake_nsec: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0
    persistent_keepalive: int = 0  # seconds, 0 = off

    @property
    def has_handshake(self) -> bool:
        return bool(self.last_handshake_sec or self.last_handshake_nsec)


@dataclass
class Device:
    name: str
    private_key: bytes | None = None
    public_key: bytes | None = None  # derived from the private key, as wg does
    listen_port: int = 0
    fwmark: int = 0  # 0 = off
    peers: list[Peer] = field(default_factory=list)


@dataclass
class PeerUpdate:
    public_key: bytes | None  # None only while a config file's [Peer] still lacks it
    remove: bool = False
    preshared_key: bytes | None = None  # None: leave alone; all zeros: remove
    endpoint: Endpoint | None = None
    persistent_keepalive: int | None = None  # None: leave alone; 0: off
    replace_allowed_ips: bool = False
    allowed_ips: list[AllowedIP] = field(default_factory=list)


@dataclass
class DeviceUpdate:
    private_key: bytes | None = None  # None: leave alone; all zeros: remove
    listen_port: int | None = None
    fwmark: int | None = None
    replace_peers: bool = False
    peers: list[PeerUpdate] = field(default_factory=list)
