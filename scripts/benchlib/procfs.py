"""CPU time, resident memory and machine load, read from /proc."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 (state) on: index 1 is the ppid, 11 utime, 12 stime."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (so a wrapper that forks is still counted whole)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process tree, all threads, in seconds."""
    ticks = 0
    for member in process_tree(pid):
        if fields := _stat_fields(member):
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLOCK_TICKS


def status_kib(pid: int, key: str) -> int | None:
    """A "kB" line of /proc/PID/status (VmRSS, VmHWM, ...), in KiB."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return None


def rss_kib(pid: int) -> int:
    """VmRSS of a process tree, in KiB."""
    return sum(status_kib(member, "VmRSS") or 0 for member in process_tree(pid))


def netns_inode(path: str) -> int | None:
    """The inode naming a network namespace (/run/netns/NAME or /proc/PID/ns/net)."""
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def others_cpu_seconds(own_netns: set[int]) -> float:
    """CPU time of the processes that are not ours: not in our namespaces, not this
    process, not kernel threads (which do our packets' work too)."""
    me, ticks = os.getpid(), 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None or fields[1] in ("0", "2") or entry.name == "2":
            continue  # kernel threads are children of kthreadd (2)
        if netns_inode(f"/proc/{entry.name}/ns/net") in own_netns:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / CLOCK_TICKS


@dataclass(frozen=True)
class CpuSample:
    at: float
    seconds: dict[str, float]


def sample_cpu(pids: Mapping[str, int], own_netns: set[int] | None = None) -> CpuSample:
    """CPU time so far of each named process tree and, given our namespaces, of
    all other processes together ("others")."""
    seconds = {name: cpu_seconds(pid) for name, pid in pids.items()}
    if own_netns is not None:
        seconds["others"] = others_cpu_seconds(own_netns)
    return CpuSample(time.monotonic(), seconds)


def cpu_percent(before: CpuSample, after: CpuSample) -> dict[str, float]:
    """CPU used between two samples, as % of one core, per named process."""
    wall = after.at - before.at
    return {
        name: 100.0 * (after.seconds[name] - before.seconds[name]) / wall for name in before.seconds
    }


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already inside user
    return total - idle, total


def machine_busy_percent(interval: float = 1.0) -> float:
    """How busy all CPUs together were over interval, in % (100 = every core busy)."""
    busy0, total0 = _cpu_jiffies()
    time.sleep(interval)
    busy1, total1 = _cpu_jiffies()
    return 100.0 * (busy1 - busy0) / max(1, total1 - total0)


def wait_for_quiet(threshold: float, max_wait: float) -> float:
    """Wait (up to max_wait s) until the machine is less than threshold % busy;
    returns the last measured load, which the caller reports if still high."""
    deadline = time.monotonic() + max_wait
    busy = machine_busy_percent()
    while busy >= threshold and time.monotonic() < deadline:
        busy = machine_busy_percent()
    return busy
