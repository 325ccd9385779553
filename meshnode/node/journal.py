"""The crash journal: what an interface's bring-up is about to add to the
system, so that a node killed with SIGKILL (or by the OOM killer, or a power
cut of the process) can be cleaned up after by the next `meshnode up`.

One file per interface, MESHNODE_RUN_DIR/journal/IFNAME.json (0600, written
atomically), holding the node's PID and start time (a PID alone may have
been reused), its network namespace, and one entry per change, written
*before* the change is made and taken out once the change is undone:

    {"kind": "link", "name": IFNAME}                         the TUN
    {"kind": "socket", "path": "/var/run/wireguard/X.sock"}  the UAPI socket
    {"kind": "rule", "version": 4, "words": [...]}           `ip rule add WORDS`
    {"kind": "route", "dst": "0.0.0.0/0", "table": 51820, "dev": IFNAME}
    {"kind": "iptables", "version": 4, "table": "nat", "chain": "POSTROUTING",
     "rule": [...]}                                          the spec, comment included
    {"kind": "sysctl", "name": "net.ipv4.ip_forward", "old": "0", "new": "1"}
    {"kind": "dns", "record": "tun.IFNAME"}                  a resolvconf record

A clean teardown leaves no file. At start-up, `recover` undoes, newest
first, what the journals of nodes no longer running list (what is gone
already is fine), then removes them; `sweep_tagged_rules` then deletes any
iptables rule tagged `meshnode:IFNAME` whose interface does not exist here,
for rules no journal lists (a node of an older version, a lost journal).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..net import firewall
from . import control
from .statefiles import write_atomic

Entry = dict[str, Any]
_VERSION = 1
_TIMEOUT = 15  # s for each command run to undo an entry


class JournalError(OSError):
    """The journal cannot be written: the message names the file and why."""


def journal_dir(run_dir: Path | None = None) -> Path:
    return (run_dir or control.run_dir()) / "journal"


def process_start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (clock ticks after boot): with the PID it
    names one process, even once the PID is reused. None if there is none."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return data.rsplit(")", 1)[1].split()[19]


def netns_id() -> str | None:
    """The network namespace this process is in (device:inode)."""
    try:
        st = os.stat("/proc/self/ns/net")
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}"


def alive(pid: int, start_time: str | None) -> bool:
    return start_time is not None and process_start_time(pid) == start_time


class Journal:
    """The journal of one interface of this process."""

    def __init__(self, ifname: str, run_dir: Path | None = None) -> None:
        self.ifname = ifname
        self.path = journal_dir(run_dir) / f"{ifname}.json"
        self._entries: dict[int, Entry] = {}
        self._next = 0
        self._open = False

    def open(self) -> None:
        """Create the (empty) journal: JournalError if it cannot be written.
        A journal left there by a dead node was dealt with at start-up; one
        of a live node means this interface is hosted twice: refused."""
        data = _read(self.path)
        if data is not None:
            pid, start = data["pid"], data.get("start_time")
            if pid == os.getpid():
                # what an earlier teardown in this process could not undo: kept
                for entry in data["entries"]:
                    self._entries[self._next] = entry
                    self._next += 1
            elif alive(pid, start):
                raise JournalError(f"{self.path}: interface {self.ifname} belongs to the live "
                                   f"node with PID {pid}")  # fmt: skip
            else:
                _recover_file(self.path, data, lambda message: None)
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(f"cannot create {self.path.parent}: {exc.strerror}") from exc
        self._open = True
        self._write()

    def record(self, entry: Entry) -> Callable[[], None]:
        """Write entry to the journal (before the change it describes is made);
        returns what takes it out again (once the change is undone)."""
        if not self._open:
            return _nothing
        key = self._next
        self._next += 1
        self._entries[key] = entry
        try:
            self._write()
        except JournalError:
            del self._entries[key]
            raise

        def forget() -> None:
            if self._entries.pop(key, None) is not None and self._open:
                with contextlib.suppress(JournalError):
                    self._write()

        return forget

    def close(self) -> bool:
        """After a teardown: remove the file if every change was undone (True);
        otherwise keep it, so the next start tries again (False)."""
        if not self._open:
            return True
        self._open = False
        if self._entries:
            with contextlib.suppress(JournalError):
                self._write()
            return False
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        return True

    def _write(self) -> None:
        data = {
            "version": _VERSION,
            "interface": self.ifname,
            "pid": os.getpid(),
            "start_time": process_start_time(os.getpid()),
            "netns": netns_id(),
            "entries": list(self._entries.values()),
        }
        try:
            write_atomic(self.path, (json.dumps(data, indent=1) + "\n").encode())
        except OSError as exc:
            raise JournalError(f"cannot write the crash journal {self.path}: "
                               f"{exc.strerror or exc}") from exc  # fmt: skip


def _nothing() -> None:
    pass


# ---------------------------------------------------------------- recovery


def recover(run_dir: Path | None = None, log: Callable[[str], None] = print) -> list[str]:
    """Undo what the journals of dead nodes list, then remove them. Journals
    of live nodes (PID and start time), and of other network namespaces, are
    left as they are. Returns the interfaces cleaned up after."""
    directory = journal_dir(run_dir)
    try:
        paths = sorted(directory.glob("*.json"))
    except OSError:
        return []
    cleaned = []
    live = set()
    for path in paths:
        data = _read(path)
        if data is None:
            log(f"Ignoring the unreadable crash journal {path}")
            continue
        if alive(data["pid"], data.get("start_time")):
            live.add(path.name)
            continue  # a running node's: never touched
        if _recover_file(path, data, log):
            cleaned.append(str(data.get("interface", path.stem)))
    # a node killed while writing its journal leaves the temporary file (the
    # journal itself is the old one or the new one, never half of either)
    with contextlib.suppress(OSError):
        for temporary in directory.glob(".*.json.tmp"):
            if temporary.name[1:-4] not in live:
                with contextlib.suppress(FileNotFoundError):
                    temporary.unlink()
    return cleaned


def _read(path: Path) -> dict[str, Any] | None:
    """A journal's contents, None if there is none or it cannot be read."""
    try:
        data = json.loads(path.read_bytes())
        data["pid"] = int(data["pid"])
        data["entries"] = [entry for entry in data["entries"] if isinstance(entry, dict)]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return data if isinstance(data, dict) else None


def _recover_file(path: Path, data: dict[str, Any], log: Callable[[str], None]) -> bool:
    """Undo a dead node's journal, newest entry first, then remove it."""
    if data.get("netns") != netns_id():
        log(f"Leaving the crash journal {path}: it belongs to another network namespace")
        return False
    name = str(data.get("interface", path.stem))
    log(f"Cleaning up after interface {name} of a node that is gone (PID {data['pid']})")
    for entry in reversed(data["entries"]):
        try:
            undo_entry(entry)
        except Exception as exc:  # report it, go on with the rest
            log(f"Could not undo {json.dumps(entry)}: {exc}")
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return True


def undo_entry(entry: Entry) -> None:
    """Undo one change; a change already gone is no error."""
    kind = entry.get("kind")
    if kind == "link":
        _delete_stale_link(str(entry["name"]))
    elif kind == "socket":
        _remove_stale_socket(Path(entry["path"]))
    elif kind == "rule":
        _run("ip", f"-{int(entry['version'])}", "rule", "del", *map(str, entry["words"]))
    elif kind == "route":
        # gone with its interface, unless the TUN outlived the node
        if _ip_link_exists(str(entry["dev"])):
            table = [] if entry.get("table") is None else ["table", str(entry["table"])]
            _run("ip", "route", "del", str(entry["dst"]), *table, "dev", str(entry["dev"]))
    elif kind == "iptables":
        tool = "ip6tables" if int(entry["version"]) == 6 else "iptables"
        rule = [str(word) for word in entry["rule"]]
        _run(tool, "-w", "5", "-t", str(entry["table"]), "-D", str(entry["chain"]), *rule)
    elif kind == "sysctl":
        _restore_sysctl(str(entry["name"]), str(entry["old"]), str(entry["new"]))
    elif kind == "dns":
        _run("resolvconf", "-d", str(entry["record"]), "-f")
    else:
        raise ValueError(f"unknown kind {kind!r}")


def _restore_sysctl(name: str, old: str, new: str) -> None:
    """Put the old value back, unless someone changed it since the node did."""
    path = Path("/proc/sys") / name.replace(".", "/")
    try:
        current = path.read_text().strip()
    except FileNotFoundError:
        return
    if current == new:
        path.write_text(old + "\n")


def _ip_link_exists(name: str) -> bool:
    result = subprocess.run(["ip", "link", "show", "dev", name], capture_output=True,
                            timeout=_TIMEOUT)  # fmt: skip
    return result.returncode == 0


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def _uapi_path(ifname: str) -> Path:
    from ..uapi.server import socket_path

    return socket_path(ifname)


def _delete_stale_link(name: str) -> None:
    """A TUN outlives its node only if another process holds it; one whose
    UAPI socket answers belongs to a live daemon and stays."""
    if _ip_link_exists(name) and not _answers(_uapi_path(name)):
        _run("ip", "link", "del", "dev", name)


def _remove_stale_socket(path: Path) -> None:
    if (path.exists() or path.is_symlink()) and not _answers(path):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _run(*argv: str) -> None:
    """Run an undo command; failing because the thing is gone is fine."""
    with contextlib.suppress(FileNotFoundError):  # no such tool: nothing of it to undo
        subprocess.run(argv, capture_output=True, timeout=_TIMEOUT)


# ---------------------------------------------------------------- tagged rules


def sweep_tagged_rules(log: Callable[[str], None] = print) -> int:
    """Delete iptables rules tagged `meshnode:IFNAME` (v4 and v6, every
    table) whose interface does not exist in this namespace: no live node
    has them (an interface's rules go before its TUN does). The count."""
    removed = 0
    exists: dict[str, bool] = {}
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle", "raw"):
            try:
                result = subprocess.run([tool, "-w", "5", "-t", table, "-S"], text=True,
                                        capture_output=True, timeout=_TIMEOUT)  # fmt: skip
            except (FileNotFoundError, subprocess.TimeoutExpired):
                continue
            if result.returncode != 0:
                continue
            for line in result.stdout.splitlines():
                words = _split(line)
                ifname = _tagged(words)
                if ifname is None or len(words) < 2 or words[0] != "-A":
                    continue
                if ifname not in exists:
                    exists[ifname] = _ip_link_exists(ifname)
                if exists[ifname]:
                    continue
                log(f"Removing a {tool} rule of interface {ifname}, which no node runs: {line}")
                subprocess.run([tool, "-w", "5", "-t", table, "-D", *words[1:]],
                               capture_output=True, timeout=_TIMEOUT)  # fmt: skip
                removed += 1
    return removed


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError:
        return []


def _tagged(words: list[str]) -> str | None:
    """The interface of a rule's `--comment meshnode:IFNAME`, if it has one."""
    prefix = firewall.comment_for("")
    for i, word in enumerate(words[:-1]):
        if word == "--comment" and words[i + 1].startswith(prefix):
            name = words[i + 1][len(prefix):]
            return name or None
    return None
