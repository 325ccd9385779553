"""iptables rules for gateway mode (forwarding the peers' traffic and
masquerading it out of the uplink, as in the WireGuard guide's server).

Every rule carries a comment naming the interface it belongs to, so what
meshnode added is easy to find (`iptables -S | grep meshnode`) and is
removed by exactly the rule that added it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

# writes a crash-journal entry before a change; returns what takes it out after the undo
Recorder = Callable[[dict[str, Any]], Callable[[], None]]


class FirewallError(OSError):
    pass


def comment_for(ifname: str) -> str:
    return f"meshnode:{ifname}"


def add_rule(
    version: int,
    table: str,
    chain: str,
    spec: list[str],
    ifname: str,
    on_undo: Callable[[Callable[[], None]], None],
    *,
    first: bool = False,
    record: Recorder | None = None,
) -> None:
    """Append one rule (`-t TABLE -A CHAIN SPEC`; with first, insert it at the
    top, `-I`) and register its deletion; record journals it first."""
    tool = "ip6tables" if version == 6 else "iptables"
    rule = [*spec, "-m", "comment", "--comment", comment_for(ifname)]
    forget = (record or _no_record)({"kind": "iptables", "version": version, "table": table,
                                     "chain": chain, "rule": rule})  # fmt: skip
    # -w 5: wait for the xtables lock a while, never for ever (the node's event
    # loop waits with it)
    try:
        _run(tool, "-w", "5", "-t", table, "-I" if first else "-A", chain, *rule)
    except FirewallError:
        forget()
        raise

    def undo() -> None:
        _run(tool, "-w", "5", "-t", table, "-D", chain, *rule, check=False)
        forget()

    on_undo(undo)


def _no_record(entry: dict[str, Any]) -> Callable[[], None]:
    return lambda: None


def _run(*argv: str, check: bool = True) -> None:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=15)
    except FileNotFoundError:
        raise FirewallError(f"{argv[0]} is not installed (gateway mode needs it)") from None
    except subprocess.TimeoutExpired:
        raise FirewallError(f"{' '.join(argv)}: no answer in 15 s") from None
    if check and result.returncode != 0:
        raise FirewallError(f"{' '.join(argv)}: {result.stderr.strip()}")
