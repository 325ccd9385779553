"""Interface settings over netlink (pyroute2), and a watch on link changes."""

from __future__ import annotations

import fcntl
import socket
import struct

from pyroute2 import IPRoute

SIOCGIFMTU = 0x8921
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_ROUTE = 0x400
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
_NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port


def configure(name: str, *, mtu: int | None = None, up: bool | None = None,
              txqueuelen: int | None = None) -> None:  # fmt: skip
    settings: dict[str, object] = {}
    if mtu is not None:
        settings["mtu"] = mtu
    if txqueuelen is not None:
        settings["txqlen"] = txqueuelen
    if up is not None:
        settings["state"] = "up" if up else "down"
    if not settings:
        return
    with IPRoute() as ipr:
        (index,) = ipr.link_lookup(ifname=name)
        ipr.link("set", index=index, **settings)


def delete(name: str) -> None:
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if found:
            ipr.link("del", index=found[0])


def mtu_of(name: str) -> int | None:
    """The interface's MTU, or None if it no longer exists (OSError if it
    cannot be asked: no socket to be had)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            result = fcntl.ioctl(s, SIOCGIFMTU, struct.pack("16si", name.encode(), 0))
        except OSError:
            return None
    return struct.unpack_from("16si", result)[1]


def drain(sock: socket.socket) -> set[int]:
    """Read every pending notification of a link events socket; the message
    types seen (the reader looks again at what it follows: the content does
    not matter, only whether links, addresses or routes changed)."""
    types: set[int] = set()
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return types
        offset = 0
        while offset + _NLMSG_HEADER.size <= len(data):
            length, kind, _, _, _ = _NLMSG_HEADER.unpack_from(data, offset)
            types.add(kind)
            if length < _NLMSG_HEADER.size:
                break
            offset += (length + 3) & ~3


def link_events_socket(routes: bool = False) -> socket.socket:
    """A non-blocking netlink socket that becomes readable on any change of a
    link or of a local address (and of a route, with `routes`)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, 0)
    groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
    if routes:
        groups |= RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE
    sock.bind((0, groups))
    return sock
