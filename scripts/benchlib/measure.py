"""iperf3 and ping through a tunnel; daemon CPU sampled while a test runs."""

from __future__ import annotations

import contextlib
import json
import re
import statistics
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import netns

from . import procfs

PING_INTERVAL = 0.05
IDLE_PINGS = 20
IPERF_PORT = 5201


@dataclass(frozen=True)
class IperfTest:
    key: str  # figure prefix: tcp_up, udp1g, ...
    args: tuple[str, ...]
    udp: bool = False
    ping_under_load: bool = False  # ping during this run (and report its CPU in the table)


TESTS = (
    IperfTest("tcp_up", (), ping_under_load=True),
    IperfTest("tcp_down", ("-R",)),
    IperfTest("tcp_p4", ("-P", "4")),
    IperfTest("udp300", ("-u", "-b", "300M"), udp=True),
    IperfTest("udp1g", ("-u", "-b", "1G"), udp=True),
)


def udp_payload(ipv6: bool, mtu: int) -> int:
    """The largest UDP payload that fits the tunnel MTU unfragmented."""
    return mtu - (40 if ipv6 else 20) - 8


# ------------------------------------------------------------------ processes


@contextlib.contextmanager
def background(
    ns: netns.Namespace, argv: list[str], stdout: IO[bytes] | int = subprocess.PIPE
) -> Iterator[subprocess.Popen[bytes]]:
    """A short-lived measuring process in ns, killed if still running on exit."""
    popen = subprocess.Popen(
        ns.argv(*argv), stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.PIPE
    )
    try:
        yield popen
    finally:
        if popen.poll() is None:
            popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=5)
        for pipe in (popen.stdout, popen.stderr):
            if pipe is not None:
                pipe.close()


def sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def start_iperf_server(ns: netns.Namespace) -> netns.Process:
    """`iperf3 -s` in ns (the lab stops it), once it listens."""
    server = ns.spawn("iperf3", "-s", "-p", str(IPERF_PORT))

    def listening() -> bool:
        if not server.running():
            raise RuntimeError(f"iperf3 -s exited:\n{server.log()}")
        out = ns.run("ss", "-Hltn", f"sport = :{IPERF_PORT}", timeout=10).stdout
        return bool(out.strip())

    netns.wait_for(listening, 10, "iperf3 -s to listen")
    return server


# ------------------------------------------------------------------ ping


def ping_argv(target: str, count: int) -> list[str]:
    return ["ping", "-n", "-c", str(count), "-i", str(PING_INTERVAL), "-W", "1", target]


def ping_figures(output: str) -> dict[str, float | None]:
    """Median and mean RTT (ms) of the replies, and the loss in %."""
    times = [float(t) for t in re.findall(r"time=([\d.]+) ms", output)]
    loss = re.search(r"([\d.]+)% packet loss", output)
    return {
        "median_ms": statistics.median(times) if times else None,
        "avg_ms": statistics.fmean(times) if times else None,
        "max_ms": max(times) if times else None,
        "replies": len(times),
        "loss_pct": float(loss.group(1)) if loss else None,
    }


def ping_idle(ns: netns.Namespace, target: str) -> str:
    result = ns.run(*ping_argv(target, IDLE_PINGS), check=False, timeout=IDLE_PINGS + 15)
    return result.stdout.decode(errors="replace")


# ------------------------------------------------------------------ iperf3


@dataclass
class IperfRun:
    """One iperf3 client run: its JSON, the daemons' CPU and the ping taken during it."""

    data: dict[str, Any]
    returncode: int | None
    stderr: str
    cpu: dict[str, float] = field(default_factory=dict)
    ping_output: str | None = None

    @property
    def error(self) -> str | None:
        if "error" in self.data:
            return str(self.data["error"])
        if self.returncode != 0:
            return f"iperf3 exited {self.returncode}: {self.stderr.strip()[-500:]}"
        return None


def iperf_argv(target: str, duration: int, test: IperfTest, payload: int) -> list[str]:
    argv = ["iperf3", "-c", target, "-p", str(IPERF_PORT), "-t", str(duration), "-J"]
    argv += ["--connect-timeout", "3000", *test.args]
    if test.udp:
        argv += ["-l", str(payload)]
    return argv


def cpu_window(duration: int) -> tuple[float, float]:
    """Seconds after the client starts between which CPU (and loaded ping) is
    measured: past the connection set-up and slow start, before the end."""
    begin = min(1.0, duration * 0.25)
    return begin, max(begin + 0.5, duration - 0.5)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text() or "{}")
    except ValueError as exc:
        return {"error": f"iperf3 output is not JSON: {exc}"}
    return data if isinstance(data, dict) else {"error": "iperf3 output is not an object"}


def run_iperf(
    ns: netns.Namespace,
    argv: list[str],
    duration: int,
    raw_path: Path,
    pids: Mapping[str, int],
    own_netns: set[int],
    ping_target: str | None = None,
) -> IperfRun:
    """Run an iperf3 client, sampling the CPU of the daemons and of all processes
    outside own_netns ("others") over the middle of the run, and (with ping_target)
    pinging over the same window; iperf3's output is kept in raw_path."""
    begin, end = cpu_window(duration)
    pings = max(1, int((end - begin) / PING_INTERVAL))
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(raw_path, "wb"))
        client = stack.enter_context(background(ns, argv, out))
        start = time.monotonic()
        sleep_until(start + begin)
        before = procfs.sample_cpu(pids, own_netns)
        pinger = None
        if ping_target is not None:
            pinger = stack.enter_context(background(ns, ping_argv(ping_target, pings)))
        sleep_until(start + end)
        after = procfs.sample_cpu(pids, own_netns)
        try:
            _, stderr = client.communicate(timeout=duration + 30)
        except subprocess.TimeoutExpired:
            client.kill()
            _, stderr = client.communicate(timeout=5)
            stderr += b"\n(timed out: killed)"
        ping_output = None
        if pinger is not None:
            ping_out, _ = pinger.communicate(timeout=pings * PING_INTERVAL + 15)
            ping_output = ping_out.decode(errors="replace")
    run = IperfRun(_read_json(raw_path), client.returncode, stderr.decode(errors="replace"))
    run.cpu = procfs.cpu_percent(before, after)
    run.ping_output = ping_output
    return run


def iperf_figures(test: IperfTest, data: dict[str, Any]) -> dict[str, float]:
    """The figures of one run: receiver Mbit/s, and retransmits (TCP) or loss % (UDP)."""
    end = data["end"]
    received = end["sum_received"]
    figures = {f"{test.key}_mbps": received["bits_per_second"] / 1e6}
    if test.udp:
        figures[f"{test.key}_loss_pct"] = float(received.get("lost_percent", 0.0))
    else:
        figures[f"{test.key}_retrans"] = float(end["sum_sent"].get("retransmits", 0))
    return figures
