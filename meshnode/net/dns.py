"""DNS servers for an interface, set as wg-quick sets them: through resolvconf."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable


class DnsError(OSError):
    pass


def set_dns(
    ifname: str,
    servers: list[str],
    search: list[str],
    on_undo: Callable[[Callable[[], None]], None],
) -> None:
    if not servers and not search:
        return
    if shutil.which("resolvconf") is None:
        raise DnsError(
            "DNS is set but resolvconf is not installed (as wg-quick, meshnode "
            "uses it; install openresolv or resolvconf)"
        )
    text = "".join(f"nameserver {s}\n" for s in servers)
    if search:
        text += f"search {' '.join(search)}\n"
    record = f"tun.{ifname}"
    result = subprocess.run(
        ["resolvconf", "-a", record, "-m", "0", "-x"], input=text, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise DnsError(f"resolvconf -a {record}: {result.stderr.strip()}")
    on_undo(lambda: subprocess.run(["resolvconf", "-d", record, "-f"], capture_output=True))
