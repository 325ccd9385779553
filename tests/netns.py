"""Network namespaces, veth pairs and processes for tests, always cleaned up.

Usage (as root; the tests skip otherwise, and fail under CI=true, where they
must run):

    import netns

    netns_lab = netns.netns_lab           # the pytest fixture, function scope

    def test_something(netns_lab):
        a, b = netns_lab.namespace("a"), netns_lab.namespace("b")
        netns_lab.veth(a, b, "10.9.0.1/24", "10.9.0.2/24")
        ifname = netns_lab.ifname("wg")                  # unique, <= 15 chars
        wgd = netns_lab.start_userspace_wg(a, ifname)    # wireguard-go -f, socket ready
        a.run("wg", "show", ifname)                      # CompletedProcess, bytes, checked
        b.run(sys.executable, "-c", "...")              # anything, inside b

Other scopes: `with netns.Lab() as lab:` in a fixture of your own, after
`netns.require_netns()`.

A Lab owns what it creates: namespaces "mn<id>-<tag>", interface names
"mn<id><tag>", veths, processes started with `Namespace.spawn`, and the
UAPI sockets /var/run/wireguard/<ifname>.sock of its interface names (that
directory is shared by all namespaces, hence the unique names). Leaving the
with block, even on a failure, stops the processes by their own PIDs
(SIGTERM, then SIGKILL), deletes veths, namespaces and leftover sockets.
<id> is 4 hex digits claimed atomically in a ledger directory, so labs of
concurrent runs never share names; the ledger also lists every resource, and
a Lab first sweeps the ledgers of runs that died without cleaning up (killed
pytest, CI timeout).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PREFIX = "mn"
LEDGER_DIR = Path("/run/meshnode-test-labs")
WG_SOCKET_DIR = Path("/var/run/wireguard")
IFNAMSIZ = 16


def unavailable_reason() -> str | None:
    """Why namespaces can't be used here, or None if they can."""
    if os.geteuid() != 0:
        return "needs root for network namespaces, TUN devices and /var/run/wireguard"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed (scripts/setup installs it)"
    try:
        subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"`ip netns` does not work here: {exc}"
    return None


def require_netns() -> None:
    """Skip the calling test when namespaces are unavailable; under CI fail
    instead, since CI runs as root and these tests must not silently vanish."""
    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run the network tests)")
    pytest.skip(reason)


def _run(
    argv: Sequence[str],
    input: bytes | None = None,
    timeout: float = 30,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(list(argv), input=input, capture_output=True, timeout=timeout, env=env)


def _quiet(argv: Sequence[str]) -> None:
    """Run a cleanup command; failures (already gone) don't matter."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        _run(argv, timeout=15)


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (/proc/PID/stat field 22): with
    the PID it names one process, even after the PID is reused."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return data.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, start_time: str | None) -> bool:
    return start_time is not None and _start_time(pid) == start_time


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def uapi_socket_ready(ifname: str) -> bool:
    """True once /var/run/wireguard/IFNAME.sock accepts connections."""
    path = WG_SOCKET_DIR / f"{ifname}.sock"
    try:
        if not stat.S_ISSOCK(path.stat().st_mode):
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(path))
    except OSError:
        return False
    return True


@dataclass
class Process:
    """A process started inside a namespace, its output in a log file."""

    popen: subprocess.Popen[bytes]
    argv: list[str]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def running(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 3.0) -> None:
        """SIGTERM, then SIGKILL if it lingers; signals go to this PID only."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                self.popen.wait(timeout)


@dataclass
class Namespace:
    name: str
    lab: Lab

    def argv(self, *cmd: str) -> list[str]:
        """cmd run inside this namespace (`ip netns exec` execs it: same PID)."""
        return ["ip", "netns", "exec", self.name, *cmd]

    def run(
        self,
        *cmd: str,
        check: bool = True,
        input: bytes | None = None,
        timeout: float = 30,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run to completion, output captured as bytes; check=True raises with
        the output in the message when it fails."""
        result = _run(self.argv(*cmd), input=input, timeout=timeout, env=env)
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} in {self.name} exited {result.returncode}\n"
                f"stdout: {result.stdout.decode(errors='replace')}\n"
                f"stderr: {result.stderr.decode(errors='replace')}"
            )
        return result

    def spawn(self, *cmd: str, env: dict[str, str] | None = None) -> Process:
        """Start cmd in the background, tracked by the lab, output to a log file."""
        return self.lab._spawn(self, list(cmd), env)

    def ip(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        """`ip -n NAME ...`: configure this namespace without entering it."""
        return self.lab._ip("-n", self.name, *args)


@dataclass
class Veth:
    a: Namespace
    a_ifname: str
    b: Namespace
    b_ifname: str


@dataclass
class _Ledger:
    """What a lab has created, on disk so a later lab can clean up after a crash."""

    path: Path
    owner_pid: int = field(default_factory=os.getpid)
    owner_start: str | None = None
    namespaces: list[str] = field(default_factory=list)
    ifnames: list[str] = field(default_factory=list)
    processes: list[tuple[int, str | None]] = field(default_factory=list)

    def save(self) -> None:
        data = {
            "owner_pid": self.owner_pid,
            "owner_start": self.owner_start,
            "namespaces": self.namespaces,
            "ifnames": self.ifnames,
            "processes": self.processes,
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.path)

    @classmethod
    def load(cls, path: Path) -> _Ledger:
        data = json.loads(path.read_text() or "{}")
        return cls(
            path=path,
            owner_pid=int(data.get("owner_pid", 0)),
            owner_start=data.get("owner_start"),
            namespaces=list(data.get("namespaces", [])),
            ifnames=list(data.get("ifnames", [])),
            processes=[(int(p), s) for p, s in data.get("processes", [])],
        )


def _claim_run_id() -> tuple[str, Path]:
    """A run id no live lab uses: claimed by creating its ledger exclusively."""
    LEDGER_DIR.mkdir(parents=True, exist_ok=True)
    for _ in range(1000):
        run_id = secrets.token_hex(2)
        path = LEDGER_DIR / f"{PREFIX}{run_id}.json"
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            continue
        os.close(fd)
        names_free = not any(WG_SOCKET_DIR.glob(f"{PREFIX}{run_id}*")) and not any(
            n.startswith(f"{PREFIX}{run_id}-") for n in _netns_names()
        )
        if names_free:
            return run_id, path
        path.unlink()
    raise RuntimeError("could not claim a free lab id")


def _netns_names() -> list[str]:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = _run(["ip", "netns", "list"]).stdout.decode()
        return [line.split()[0] for line in out.splitlines() if line.strip()]
    return []


def _release(ledger: _Ledger) -> list[str]:
    """Remove everything a ledger lists; returns what could not be removed."""
    problems = []
    for pid, start in reversed(ledger.processes):
        if _alive(pid, start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for name in reversed(ledger.namespaces):
        if name in _netns_names():
            _quiet(["ip", "netns", "del", name])
            if name in _netns_names():
                problems.append(f"namespace {name}")
    for ifname in ledger.ifnames:
        path = WG_SOCKET_DIR / f"{ifname}.sock"
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return problems


def sweep_stale_labs() -> None:
    """Clean up after labs whose test run died (its owner process is gone)."""
    if not LEDGER_DIR.is_dir():
        return
    for path in LEDGER_DIR.glob(f"{PREFIX}*.json"):
        try:
            ledger = _Ledger.load(path)
        except (OSError, ValueError):
            continue
        if ledger.owner_start is None or _alive(ledger.owner_pid, ledger.owner_start):
            continue  # alive, or a claim being written right now
        _release(ledger)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class Lab:
    """A set of namespaces, veths, interface names and processes of one test
    (or module); everything is removed on close, in reverse order."""

    def __init__(self) -> None:
        sweep_stale_labs()
        self.run_id, ledger_path = _claim_run_id()
        self._ledger = _Ledger(path=ledger_path, owner_start=_start_time(os.getpid()))
        self._ledger.save()
        self._tmp = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{self.run_id}-"))
        self._processes: list[Process] = []
        self._namespaces: list[Namespace] = []
        self._veths: list[Veth] = []
        self._counter = 0
        self._closed = False

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def tmp_path(self) -> Path:
        """A private directory for config files and logs, removed on close."""
        return self._tmp

    def _ip(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        result = _run(["ip", *args])
        if result.returncode != 0:
            raise AssertionError(f"ip {' '.join(args)}: {result.stderr.decode(errors='replace')}")
        return result

    def _next(self) -> int:
        self._counter += 1
        return self._counter

    def namespace(self, tag: str = "") -> Namespace:
        """A new network namespace with its loopback up."""
        name = f"{PREFIX}{self.run_id}-{tag or 'ns'}{self._next()}"
        self._ledger.namespaces.append(name)
        self._ledger.save()
        self._ip("netns", "add", name)
        ns = Namespace(name, self)
        self._namespaces.append(ns)
        ns.ip("link", "set", "lo", "up")
        return ns

    def ifname(self, tag: str = "") -> str:
        """An interface name unique to this lab (also names its UAPI socket)."""
        name = f"{PREFIX}{self.run_id}{tag}{self._next()}"
        if len(name.encode()) >= IFNAMSIZ:
            raise ValueError(f"interface name {name!r} is longer than 15 bytes")
        self._ledger.ifnames.append(name)
        self._ledger.save()
        return name

    def veth(
        self,
        a: Namespace,
        b: Namespace,
        a_addrs: str | Sequence[str] = (),
        b_addrs: str | Sequence[str] = (),
    ) -> Veth:
        """A veth pair between two namespaces, up, with addresses ("10.0.0.1/24",
        "fd00::1/64"; IPv6 without duplicate address detection, so usable at once)."""
        n = self._next()
        a_if, b_if = f"{PREFIX}{self.run_id}v{n}a", f"{PREFIX}{self.run_id}v{n}b"
        peer = ("peer", "name", b_if, "netns", b.name)
        self._ip("link", "add", a_if, "netns", a.name, "type", "veth", *peer)
        veth = Veth(a, a_if, b, b_if)
        self._veths.append(veth)
        for ns, ifname, addrs in ((a, a_if, a_addrs), (b, b_if, b_addrs)):
            for addr in [addrs] if isinstance(addrs, str) else addrs:
                extra = ["nodad"] if ":" in addr else []
                ns.ip("addr", "add", addr, "dev", ifname, *extra)
            ns.ip("link", "set", ifname, "up")
        return veth

    def _spawn(self, ns: Namespace, cmd: list[str], env: dict[str, str] | None) -> Process:
        log_path = self._tmp / f"{Path(cmd[0]).name}-{self._next()}.log"
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                ns.argv(*cmd), stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env
            )
        process = Process(popen, cmd, log_path)
        self._processes.append(process)
        self._ledger.processes.append((popen.pid, _start_time(popen.pid)))
        self._ledger.save()
        return process

    def start_userspace_wg(
        self,
        ns: Namespace,
        ifname: str,
        argv: Sequence[str] = ("wireguard-go", "-f"),
        timeout: float = 10.0,
    ) -> Process:
        """Start a userspace WireGuard daemon (wireguard-go, or meshnode-wg with
        the same arguments) for ifname in ns, and wait until its UAPI socket
        answers. Raises with the daemon's log if it exits first."""
        process = ns.spawn(*argv, ifname)

        def ready() -> bool:
            if not process.running():
                raise RuntimeError(f"{' '.join(argv)} {ifname} exited early:\n{process.log()}")
            return uapi_socket_ready(ifname)

        wait_for(ready, timeout, f"{ifname}'s UAPI socket")
        return process

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for process in reversed(self._processes):
            try:
                process.stop()
            except (OSError, subprocess.SubprocessError) as exc:
                warnings.warn(f"could not stop {process.argv}: {exc}", stacklevel=2)
        for veth in reversed(self._veths):  # usually gone with a namespace already
            _quiet(["ip", "-n", veth.a.name, "link", "del", veth.a_ifname])
        problems = _release(self._ledger)
        shutil.rmtree(self._tmp, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            self._ledger.path.unlink()
        if problems:
            warnings.warn(f"lab {self.run_id} left behind: {', '.join(problems)}", stacklevel=2)

    def leftovers(self) -> list[str]:
        """What of this lab still exists (for checking the cleanup itself)."""
        found = [n for n in _netns_names() if n.startswith(f"{PREFIX}{self.run_id}-")]
        found += [str(p) for p in WG_SOCKET_DIR.glob(f"{PREFIX}{self.run_id}*.sock") if p.exists()]
        found += [f"pid {p.pid}" for p in self._processes if p.running()]
        if self._ledger.path.exists():
            found.append(str(self._ledger.path))
        return found


@pytest.fixture
def netns_lab() -> Iterator[Lab]:
    """A Lab for one test; skips without root or `ip netns` (fails under CI)."""
    require_netns()
    with Lab() as lab:
        yield lab
