"""Where userspace WireGuard interfaces are: UAPI sockets named IFNAME.sock.

wg has the directory compiled in (RUNSTATEDIR "/wireguard/", i.e.
/var/run/wireguard on Debian) and reads no environment variable for it;
wireguard-go has the same path compiled in. We use the same default and, as
an extension for tests and unusual setups, honour WG_SOCKET_DIR (or a change
to SOCKET_DIR).

On Linux wg also lists and talks to kernel WireGuard interfaces over netlink
first; meshnode speaks only the UAPI. For a name without a live socket wg
falls back to the kernel, and what that says is what the user sees, so
`missing_interface_errno` reproduces that answer without the rest.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import struct

SOCKET_DIR = "/var/run/wireguard"
SOCKET_SUFFIX = ".sock"
_SUN_PATH_MAX = 107  # sizeof(sun_path) - 1: wg's snprintf cuts longer paths there


def socket_dir() -> str:
    return os.environ.get("WG_SOCKET_DIR") or SOCKET_DIR


def socket_path(name: str) -> bytes:
    path = os.fsencode(os.path.join(socket_dir(), name + SOCKET_SUFFIX))
    return path[:_SUN_PATH_MAX]


class Absent(Exception):
    """No userspace interface of that name (no socket, or its daemon is gone)."""


def connect(name: str) -> socket.socket:
    """A connection to the interface's UAPI socket.

    Raises Absent where wg would turn to the kernel: a name with '/', no such
    file, not a socket, or a socket nobody listens on (ECONNREFUSED: the
    daemon died; wg deletes such a leftover, and so do we). Other failures
    (EACCES when not root, ...) are OSError with their errno, as in wg.
    """
    if "/" in name:
        raise Absent(name)
    path = socket_path(name)
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            raise Absent(name)
    except OSError:
        raise Absent(name) from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except ConnectionRefusedError:
        sock.close()
        _unlink_quietly(path)
        raise Absent(name) from None
    except OSError:
        sock.close()
        raise
    return sock


def _unlink_quietly(path: bytes) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def is_live(name: str) -> bool:
    """wg's userspace_has_wireguard_interface: a socket that does not refuse."""
    try:
        connect(name).close()
    except Absent:
        return False
    except OSError:
        return True  # e.g. EACCES: it is there, we just may not use it
    return True


def list_interfaces() -> list[str]:
    """Interface names in directory order (as wg, which does not sort).

    Raises OSError if the directory exists but cannot be read.
    """
    try:
        entries = os.listdir(socket_dir())
    except FileNotFoundError:
        return []
    names = []
    for entry in entries:
        if len(entry) <= len(SOCKET_SUFFIX) or not entry.endswith(SOCKET_SUFFIX):
            continue
        name = entry[: -len(SOCKET_SUFFIX)]
        if is_live(name):
            names.append(name)
    return names


# Generic netlink: is the kernel's "wireguard" family there?
_NETLINK_GENERIC = 16
_GENL_ID_CTRL = 0x10
_CTRL_CMD_GETFAMILY = 3
_CTRL_ATTR_FAMILY_NAME = 2
_NLM_F_REQUEST, _NLM_F_ACK = 0x1, 0x4
_NLMSG_ERROR = 0x2


def _wireguard_family_errno() -> int:
    """0 if the kernel has the WireGuard netlink family, else the errno that
    wg's netlink library reports (EPROTONOSUPPORT when it is missing)."""
    name = b"wireguard\0"
    attr = struct.pack("=HH", 4 + len(name), _CTRL_ATTR_FAMILY_NAME) + name
    attr += b"\0" * (-len(attr) % 4)
    genl = struct.pack("=BBH", _CTRL_CMD_GETFAMILY, 1, 0)
    header = struct.pack(
        "=IHHII", 16 + len(genl) + len(attr), _GENL_ID_CTRL, _NLM_F_REQUEST | _NLM_F_ACK, 1, 0
    )
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_GENERIC) as sock:
            sock.settimeout(5)
            sock.bind((0, 0))
            sock.send(header + genl + attr)
            reply = sock.recv(65536)
    except OSError as exc:
        return exc.errno or errno.EPROTONOSUPPORT
    if len(reply) >= 20 and struct.unpack_from("=H", reply, 4)[0] == _NLMSG_ERROR:
        code = -struct.unpack_from("=i", reply, 16)[0]
        if code == errno.ENOENT:
            return errno.EPROTONOSUPPORT
        return code
    return 0


def missing_interface_errno(name: str) -> int:
    """The errno wg reports for an interface with no userspace socket.

    Without the kernel module (the usual case for a userspace WireGuard, and
    every test machine here) that is EPROTONOSUPPORT, "Protocol not
    supported". With it, the kernel answers ENODEV for no such link and
    EOPNOTSUPP for a link that isn't WireGuard; a kernel WireGuard link we
    also answer EOPNOTSUPP for, as meshnode does not speak the kernel's
    netlink interface.
    """
    family_errno = _wireguard_family_errno()
    if family_errno:
        return family_errno
    try:
        socket.if_nametoindex(name)
    except OSError:
        return errno.ENODEV
    return errno.EOPNOTSUPP
