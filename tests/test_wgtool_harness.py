"""The network-namespace harness (tests/netns.py) itself: what it creates
works, and nothing is left behind, whether a test passes, fails or its
process is killed."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import netns
import pytest

netns_lab = netns.netns_lab

UDP_ECHO = """
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(family, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 9999))
data, peer = s.recvfrom(100)
s.sendto(data.upper(), peer)
"""

UDP_ASK = """
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(family, socket.SOCK_DGRAM)
s.settimeout(0.2)
for _ in range(50):
    s.sendto(b"ping", (sys.argv[1], 9999))
    try:
        print(s.recvfrom(100)[0].decode())
        break
    except TimeoutError:
        pass
"""


def test_namespaces_veth_and_processes(netns_lab: netns.Lab) -> None:
    a, b = netns_lab.namespace("a"), netns_lab.namespace("b")
    assert a.name.startswith(f"mn{netns_lab.run_id}-") and a.name != b.name
    netns_lab.veth(a, b, ["10.77.0.1/24", "fd77::1/64"], ["10.77.0.2/24", "fd77::2/64"])
    for address in ("10.77.0.2", "fd77::2"):
        echo = b.spawn(sys.executable, "-c", UDP_ECHO, address)
        time.sleep(0.2)
        assert a.run(sys.executable, "-c", UDP_ASK, address).stdout == b"PING\n", echo.log()
    names = {netns_lab.ifname("wg") for _ in range(3)}
    assert len(names) == 3 and all(len(n) <= 15 for n in names)
    with pytest.raises(AssertionError, match="exited 1"):
        a.run("false")
    assert a.run("false", check=False).returncode == 1


def test_cleanup_when_the_test_fails() -> None:
    netns.require_netns()
    with pytest.raises(RuntimeError), netns.Lab() as lab:
        ns = lab.namespace()
        ifname = lab.ifname()
        sleeper = ns.spawn("sleep", "60")
        daemon = lab.start_userspace_wg(ns, ifname) if shutil.which("wireguard-go") else None
        raise RuntimeError("the test failed")
    assert lab.leftovers() == []
    assert not sleeper.running() and (daemon is None or not daemon.running())
    assert ns.name not in _namespaces()


def _gone(pid: int) -> bool:
    """Not running: no such process, or a zombie its new parent has not reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


CRASHING_RUN = """
import json, os, signal, sys
sys.path.insert(0, {tests!r})
import netns
lab = netns.Lab()
ns = lab.namespace("crash")
ifname = lab.ifname("c")
sleeper = ns.spawn("sleep", "300")
open(f"/var/run/wireguard/{{ifname}}.sock", "w").close()  # a leftover socket file
print(json.dumps({{"ns": ns.name, "pid": sleeper.pid, "ifname": ifname}}), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_sweep_after_a_killed_run() -> None:
    """A run killed with SIGKILL cleans nothing; the next Lab does it."""
    netns.require_netns()
    Path("/var/run/wireguard").mkdir(parents=True, exist_ok=True)
    script = CRASHING_RUN.format(tests=str(Path(__file__).parent))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = json.loads(proc.stdout)
    socket_file = Path(f"/var/run/wireguard/{left['ifname']}.sock")
    try:
        assert left["ns"] in _namespaces()
        assert socket_file.exists()
        os.kill(left["pid"], 0)  # the orphan still runs
        with netns.Lab():  # sweeps first
            pass
        assert left["ns"] not in _namespaces()
        assert not socket_file.exists()
        netns.wait_for(lambda: _gone(left["pid"]), 5, "the orphaned process to be killed")
    finally:  # should the sweep fail, don't leave the mess for others
        subprocess.run(["ip", "netns", "del", left["ns"]], capture_output=True)
        socket_file.unlink(missing_ok=True)
        with contextlib.suppress(ProcessLookupError):
            os.kill(left["pid"], signal.SIGKILL)


def test_concurrent_labs_get_distinct_names() -> None:
    netns.require_netns()
    with netns.Lab() as one, netns.Lab() as two:
        assert one.run_id != two.run_id
        assert one.ifname() != two.ifname()
