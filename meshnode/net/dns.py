"""DNS servers for an interface, set as wg-quick sets them: through resolvconf."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from .firewall import Recorder

_INTERFACE_ORDER = Path("/etc/resolvconf/interface-order")
_TIMEOUT = 15  # seconds; resolvconf may wait on a D-Bus service


class DnsError(OSError):
    pass


def record_name(ifname: str) -> str:
    """wg-quick's resolvconf_iface_prefix: Debian's resolvconf orders records by
    a prefix it knows ("tun."); other resolvconfs (systemd's, openresolv
    without that file) take the bare interface name."""
    try:
        lines = _INTERFACE_ORDER.read_text().splitlines()
    except OSError:
        return ifname
    for line in lines:
        if found := re.fullmatch(r"([A-Za-z0-9-]+)\*", line.strip()):
            return f"{found.group(1)}.{ifname}"
    return ifname


def set_dns(ifname: str, servers: list[str], search: list[str],
            on_undo: Callable[[Callable[[], None]], None],
            record: Recorder | None = None) -> None:  # fmt: skip
    if not servers:  # as wg-quick: search domains alone change nothing
        return
    if shutil.which("resolvconf") is None:
        raise DnsError("DNS is set but resolvconf is not installed (as wg-quick, meshnode "
                       "uses it; install openresolv or resolvconf)")  # fmt: skip
    text = "".join(f"nameserver {s}\n" for s in servers)
    if search:
        text += f"search {' '.join(search)}\n"
    name = record_name(ifname)
    forget = record({"kind": "dns", "record": name}) if record else (lambda: None)
    try:
        _resolvconf(["-a", name, "-m", "0", "-x"], text)
    except DnsError:
        forget()
        raise

    def undo() -> None:
        _resolvconf(["-d", name, "-f"], None, check=False)
        forget()

    on_undo(undo)


def _resolvconf(args: list[str], text: str | None, check: bool = True) -> None:
    try:
        result = subprocess.run(["resolvconf", *args], input=text, capture_output=True,
                                text=True, timeout=_TIMEOUT)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise DnsError(f"resolvconf {' '.join(args)}: no answer in {_TIMEOUT} s") from None
    if check and result.returncode != 0:
        raise DnsError(f"resolvconf {' '.join(args)}: {result.stderr.strip()}")
