"""Rounds of daemon pairs through a tunnel: iperf3, ping and CPU for each.

Each round runs every pair once (the order rotates from round to round, so
no pair always goes first); each pair run gets fresh daemons. The raw output
of every run is kept under OUT/throughput/rN-PAIR/.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import netns

from . import counters, measure, procfs
from .config import QUIET_MAX_WAIT, TUNNEL_MTU, Options, PairSpec
from .console import say, tail
from .tunnel import Tunnel, TunnelError, Underlay, close_tunnel, make_underlay, open_tunnel

IDLE_SECONDS = 2.0
OTHERS_LIMIT = 15.0  # % of one core used by processes not ours during a test
# What a failing test raises: timeouts, unreadable or incomplete iperf3 JSON, `ip` errors.
TEST_FAILURES = (subprocess.SubprocessError, OSError, ValueError, KeyError, TypeError,
                 AssertionError)  # fmt: skip


def pair_specs(opts: Options) -> list[PairSpec]:
    """meshnode↔meshnode, then for each reference: itself, and the two mixed pairs."""
    mn = opts.meshnode
    specs = [PairSpec(mn, mn)]
    for ref in opts.refs:
        specs += [PairSpec(ref, ref), PairSpec(mn, ref), PairSpec(ref, mn)]
    if opts.pairs:
        return [spec for spec in specs if spec.id in opts.pairs]
    if opts.quick:
        first = opts.refs[0]
        return [PairSpec(mn, mn), PairSpec(first, first), PairSpec(mn, first)]
    return specs


def rotated(specs: list[PairSpec], round_index: int) -> list[PairSpec]:
    shift = round_index % len(specs)
    return specs[shift:] + specs[:shift]


def run(opts: Options, out_dir: Path, warnings: list[str]) -> dict[str, list[dict[str, Any]]]:
    """All rounds; returns the per-run results of each pair id, in round order."""
    specs = pair_specs(opts)
    results: dict[str, list[dict[str, Any]]] = {spec.id: [] for spec in specs}
    with netns.Lab() as lab:
        underlay = make_underlay(lab)
        for round_index in range(opts.rounds):
            for spec in rotated(specs, round_index):
                run_dir = out_dir / "throughput" / f"r{round_index + 1}-{spec.id}"
                run_dir.mkdir(parents=True, exist_ok=True)
                result = run_pair(lab, underlay, spec, opts, run_dir)
                result["round"] = round_index + 1
                (run_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
                results[spec.id].append(result)
                say(f"round {round_index + 1}/{opts.rounds} {progress_line(result)}")
                warnings += [f"round {round_index + 1} {spec.id}: {e}" for e in result["errors"]]
    warnings += [f"throughput: left behind: {item}" for item in lab.leftovers()]
    return results


def run_pair(
    lab: netns.Lab, underlay: Underlay, spec: PairSpec, opts: Options, run_dir: Path
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "pair": spec.id, "client": spec.client.command(), "server": spec.server.command(),
        "figures": {}, "cpu": {}, "counters": {}, "errors": [], "crashed": [], "stalled": False,
    }  # fmt: skip
    started = time.monotonic()
    note_background_load(opts, result)
    try:
        tunnel = open_tunnel(lab, underlay, spec, opts.ipv6)
    except (TunnelError, RuntimeError, TimeoutError, AssertionError) as exc:
        result["errors"].append(f"tunnel set-up failed: {tail(str(exc))}")
        return result
    server = None
    try:
        result["links"] = {"client": tunnel.client.link_info(), "server": tunnel.server.link_info()}
        idle = measure_idle_cpu(tunnel)
        result["figures"].update(
            cpu_idle_client_pct=idle["client"], cpu_idle_server_pct=idle["server"]
        )
        server = measure.start_iperf_server(underlay.server)
        measure_tunnel(tunnel, opts, run_dir, result)
    finally:
        if server is not None:
            server.stop()
        close_tunnel(tunnel, run_dir)
        result["seconds"] = round(time.monotonic() - started, 1)
    return result


def note_background_load(opts: Options, result: dict[str, Any]) -> None:
    """Before the daemons start: wait for the machine to be quiet, note it if it is not."""
    busy = procfs.wait_for_quiet(opts.quiet_threshold, QUIET_MAX_WAIT)
    result["busy_before_pct"] = round(busy, 1)
    if busy >= opts.quiet_threshold:
        result["errors"].append(
            f"machine {busy:.0f}% busy before the daemons started "
            "(something else is running; figures may be low)"
        )


def measure_idle_cpu(tunnel: Tunnel) -> dict[str, float]:
    """The daemons' CPU with the tunnel up and no traffic, over IDLE_SECONDS."""
    time.sleep(0.5)
    before = procfs.sample_cpu(tunnel.daemon_pids())
    time.sleep(IDLE_SECONDS)
    return procfs.cpu_percent(before, procfs.sample_cpu(tunnel.daemon_pids()))


def measure_tunnel(tunnel: Tunnel, opts: Options, run_dir: Path, result: dict[str, Any]) -> None:
    """Idle ping, then each iperf3 test; stops early if a daemon dies or the tunnel stalls."""
    ns, target = tunnel.client.ns, tunnel.target()
    idle = measure.ping_idle(ns, target)
    (run_dir / "ping-idle.txt").write_text(idle)
    add_ping_figures(result["figures"], "ping_idle", measure.ping_figures(idle))
    for test in measure.TESTS:
        try:
            run_test(tunnel, test, opts, run_dir, result)
        except TEST_FAILURES as exc:  # noted; the health check decides whether to go on
            result["errors"].append(f"{test.key}: {type(exc).__name__}: {exc}")
        if not tunnel_healthy(tunnel, result):
            break
    others = result["figures"].get("cpu_others_pct", 0.0)
    if others >= OTHERS_LIMIT:
        result["errors"].append(
            f"other processes used up to {others:.0f}% of a core during the tests "
            "(figures disturbed)"
        )


def run_test(
    tunnel: Tunnel, test: measure.IperfTest, opts: Options, run_dir: Path, result: dict[str, Any]
) -> None:
    payload = measure.udp_payload(opts.ipv6, TUNNEL_MTU)
    argv = measure.iperf_argv(tunnel.target(), opts.duration, test, payload)
    ping_target = tunnel.target() if test.ping_under_load else None
    before = counters.snapshot(tunnel.counter_sides())
    run = measure.run_iperf(
        tunnel.client.ns, argv, opts.duration, run_dir / f"{test.key}.json",
        tunnel.daemon_pids(), tunnel.netns_inodes(), ping_target,
    )  # fmt: skip
    result["cpu"][test.key] = run.cpu
    drops = counters.delta(before, counters.snapshot(tunnel.counter_sides()))
    result["counters"][test.key] = drops
    if test.key == "tcp_up":
        result["figures"]["udp_rcvbuf_drops"] = counters.total(drops, "udp_RcvbufErrors")
        result["figures"]["tun_tx_drops"] = counters.total(drops, "tun_tx_dropped")
    others = max(run.cpu["others"], result["figures"].get("cpu_others_pct", 0.0))
    result["figures"]["cpu_others_pct"] = others
    if run.error:
        result["errors"].append(f"{test.key}: {run.error}")
        return
    result["figures"].update(measure.iperf_figures(test, run.data))
    if test.ping_under_load:
        result["figures"]["cpu_client_pct"] = run.cpu["client"]
        result["figures"]["cpu_server_pct"] = run.cpu["server"]
    if run.ping_output is not None:
        (run_dir / f"ping-{test.key}.txt").write_text(run.ping_output)
        add_ping_figures(result["figures"], "ping_load", measure.ping_figures(run.ping_output))


def add_ping_figures(figures: dict[str, float], prefix: str, ping: dict[str, Any]) -> None:
    for key in ("median_ms", "avg_ms", "loss_pct"):
        if ping[key] is not None:
            figures[f"{prefix}_{key}"] = ping[key]


def tunnel_healthy(tunnel: Tunnel, result: dict[str, Any]) -> bool:
    """False (with the reason and the daemon's log in result) if a daemon has exited
    or three pings in a row get no reply."""
    healthy = True
    for role, side in (("client", tunnel.client), ("server", tunnel.server)):
        if not side.daemon.running():
            healthy = False
            code = side.daemon.popen.returncode
            result["crashed"].append(role)
            result["errors"].append(
                f"{role} daemon {side.impl.name} exited ({code}); "
                f"log tail:\n{tail(side.daemon.log())}"
            )
    if not healthy:
        return False
    check = tunnel.client.ns.run(
        "ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", tunnel.target(), check=False, timeout=15
    )
    if check.returncode != 0:
        result["stalled"] = True
        result["errors"].append("tunnel stalled: no ping reply after the test")
        return False
    return True


def progress_line(result: dict[str, Any]) -> str:
    f = result["figures"]

    def num(key: str, fmt: str = "{:.0f}") -> str:
        return fmt.format(f[key]) if key in f else "-"

    line = (
        f"{result['pair']:<18} TCP up {num('tcp_up_mbps')} down {num('tcp_down_mbps')} "
        f"x4 {num('tcp_p4_mbps')} Mbit/s; UDP 1G {num('udp1g_mbps')} Mbit/s "
        f"loss {num('udp1g_loss_pct', '{:.1f}')}%; RTT {num('ping_idle_median_ms', '{:.3f}')}"
        f"/{num('ping_load_median_ms', '{:.3f}')} ms; CPU {num('cpu_client_pct')}"
        f"+{num('cpu_server_pct')}%"
    )
    if result["errors"]:
        line += f"  [{len(result['errors'])} problem(s), see result.json]"
    return line
