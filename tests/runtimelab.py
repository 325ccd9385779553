"""Interfaces for tests that run without root: a DetachedTun (socket pair) as
the TUN, UDP on a kernel-chosen port, peers over loopback, no link watch."""

from __future__ import annotations

import io

from meshnode.interface import Interface, Offloads
from meshnode.log import ERROR, Logger
from meshnode.net.tun import DetachedTun
from meshnode.wireguard import keys


def make_interface(name: str) -> tuple[Interface, DetachedTun, bytes]:
    """An interface with a new private key; (interface, its TUN, its public key)."""
    tun = DetachedTun(name)
    offloads = Offloads(gso=False, gro=False, tun_vnet=False)
    interface = Interface(tun, Logger(name, ERROR, io.StringIO()),  # type: ignore[arg-type]
                          offloads=offloads, watch_link=False)  # fmt: skip
    private = keys.generate_private_key()
    interface.uapi_set([f"private_key={private.hex()}"])
    return interface, tun, keys.public_key(private)


def link(a: Interface, b: Interface, b_key: bytes, b_inner: str) -> None:
    """Make b a peer of a, reached over loopback, owning b_inner/32."""
    a.uapi_set([
        f"public_key={b_key.hex()}",
        f"endpoint=127.0.0.1:{b.udp.port}",
        f"allowed_ip={b_inner}/32",
    ])  # fmt: skip
