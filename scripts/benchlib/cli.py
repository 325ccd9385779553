"""scripts/bench: arguments, checks, the sections in order, the printed report."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import handshakes, memory, report, throughput
from .config import (
    HS_DURATION,
    HS_PEERS,
    HS_RATE,
    HS_SOURCES,
    MEMORY_PEERS,
    MESHNODE,
    MESHNODE_WG,
    NAME_PATTERN,
    REPO,
    Impl,
    Options,
)
from .console import elapsed, say

DEFAULT_REFS = ["debian=wireguard-go -f"]
TOOLS = ("ip", "wg", "iperf3", "ping", "ss", "taskset")
SECTION_FAILURES = (RuntimeError, TimeoutError, AssertionError, OSError, ValueError,
                    KeyError, subprocess.SubprocessError)  # fmt: skip

EPILOG = """\
Pairs are CLIENT-SERVER, mn being meshnode-wg: mn-mn, and for each reference R:
R-R, mn-R (meshnode on the client side) and R-mn (meshnode on the server side).
The iperf3 client and ping run in the client's namespace.

examples:
  scripts/bench --quick
  scripts/bench --ref debian="wireguard-go -f" \\
      --ref current="/work/shared/tools/wireguard-go-modern/wireguard-go -f"
  scripts/bench --meshnode "env LOG_LEVEL=verbose .venv/bin/meshnode-wg -f" --pairs mn-mn
"""


def parse_ref(text: str) -> Impl:
    name, sep, command = text.partition("=")
    if not sep or not command.strip():
        raise argparse.ArgumentTypeError(f"--ref wants NAME=COMMAND, not {text!r}")
    if not NAME_PATTERN.fullmatch(name) or name == MESHNODE:
        raise argparse.ArgumentTypeError(
            f"reference name {name!r}: letters, digits and _ only (not {MESHNODE!r})"
        )
    return Impl(name, tuple(shlex.split(command)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="meshnode-wg against reference userspace WireGuard daemons "
        "(throughput, RTT, CPU, handshakes/s, memory per peer). Run as root.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--rounds", type=int, help="rounds of all pairs; medians are reported (default 3)")
    add("--duration", type=int, help="seconds per iperf3 test (default 10)")
    add("--ref", action="append", type=parse_ref, metavar="NAME=CMD",
        help="a reference daemon: CMD is its argv prefix, the interface name is appended "
             f"(repeatable; default: {DEFAULT_REFS[0]!r})")  # fmt: skip
    add(
        "--meshnode",
        metavar="CMD",
        default=f"{MESHNODE_WG} -f",
        help="meshnode's daemon command, interface name appended (default: %(default)s)",
    )
    add("--out", type=Path, help="directory for raw results (default bench-results/TIMESTAMP/)")
    add("--quick", action="store_true",
        help="smoke run: 1 round, 3 s, pairs mn-mn, R-R and mn-R of the first reference, "
             "shorter handshake phases")  # fmt: skip
    add("--pairs", help="comma-separated pair ids to run instead (e.g. mn-mn,debian-debian)")
    add("--ipv6", action="store_true", help="tunnel and underlay traffic over IPv6")
    add("--skip-throughput", action="store_true", help="no iperf3/ping/CPU pairs")
    add("--skip-handshakes", action="store_true", help="no handshake responses/s section")
    add("--skip-memory", action="store_true", help="no memory per peer section")
    add(
        "--hs-peers",
        type=int,
        default=HS_PEERS,
        help="peers configured for handshakes (%(default)s)",
    )
    add(
        "--hs-sources",
        type=int,
        default=HS_SOURCES,
        help="generator source addresses (%(default)s)",
    )
    add(
        "--hs-rate",
        type=int,
        default=HS_RATE,
        help="offered initiations/s under load (%(default)s)",
    )
    add(
        "--hs-duration",
        type=float,
        default=HS_DURATION,
        help="seconds of the with-mac2 phase (%(default)s)",
    )
    add(
        "--memory-peers", type=int, default=MEMORY_PEERS, help="idle peers for memory (%(default)s)"
    )
    return parser


def parse_args(argv: list[str]) -> Options:
    args = build_parser().parse_args(argv)
    refs = args.ref or [parse_ref(text) for text in DEFAULT_REFS]
    if len({ref.name for ref in refs}) != len(refs):
        raise SystemExit("scripts/bench: reference names must differ")
    timestamp = time.strftime("%Y%m%d-%H%M%S")
    return Options(
        meshnode=Impl(MESHNODE, tuple(shlex.split(args.meshnode))),
        refs=refs,
        rounds=args.rounds or (1 if args.quick else 3),
        duration=args.duration or (3 if args.quick else 10),
        quick=args.quick,
        ipv6=args.ipv6,
        pairs=[p for p in (args.pairs or "").split(",") if p],
        out=args.out or REPO / "bench-results" / timestamp,
        throughput=not args.skip_throughput,
        handshakes=not args.skip_handshakes,
        memory=not args.skip_memory,
        hs_peers=args.hs_peers,
        hs_sources=args.hs_sources,
        hs_rate=args.hs_rate,
        hs_duration=args.hs_duration,
        memory_peers=args.memory_peers,
    )


def preflight(opts: Options) -> list[str]:
    """What would make the run fail at once."""
    problems = []
    if os.geteuid() != 0:
        problems.append("run as root (network namespaces, TUN devices)")
    problems += [f"{tool} is not installed (scripts/setup installs it)"
                 for tool in TOOLS if shutil.which(tool) is None]  # fmt: skip
    for impl in [opts.meshnode, *opts.refs]:
        if not impl.argv or shutil.which(impl.argv[0]) is None:
            problems.append(f"{impl.name}: command not found: {impl.command()!r}")
    if (os.cpu_count() or 1) < 2 and opts.handshakes:
        problems.append("the handshake section needs 2 cores (use --skip-handshakes)")
    if opts.rounds < 1 or opts.duration < 2:
        problems.append("--rounds must be >= 1 and --duration >= 2")
    return problems


def on_signal(signum: int, _frame: object) -> None:
    """SIGTERM/SIGHUP: unwind like Ctrl-C so every lab cleans up after itself."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


def run_section(
    name: str, fn: Callable[[Options, Path, list[str]], Any], opts: Options, out: Path,
    warnings: list[str],
) -> Any:  # fmt: skip
    say(f"{name}: starting")
    started = time.monotonic()
    try:
        result = fn(opts, out, warnings)
    except SECTION_FAILURES as exc:
        warnings.append(f"{name} section failed: {type(exc).__name__}: {exc}")
        say(f"{name}: FAILED: {exc}")
        return {"error": f"{type(exc).__name__}: {exc}"}
    say(f"{name}: done in {time.monotonic() - started:.0f} s")
    return result


def rounded(value: Any) -> Any:
    """Floats to 3 decimals, all the way down (a shorter JSON line)."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def summarize_throughput(
    runs: dict[str, list[dict[str, Any]]], opts: Options
) -> tuple[dict[str, Any], str]:
    specs = throughput.pair_specs(opts)
    summary = {pair: report.aggregate(pair_runs) for pair, pair_runs in runs.items()}
    for spec in specs:
        summary[spec.id].update(client=spec.client.name, server=spec.server.name)
    ratio_by_ref = report.ratios(summary, specs, [ref.name for ref in opts.refs])
    text = report.throughput_text(summary, ratio_by_ref, opts.rounds, opts.duration)
    return {"pairs": summary, "ratios": ratio_by_ref}, text


def main(argv: list[str]) -> int:
    opts = parse_args(argv)
    if problems := preflight(opts):
        sys.stderr.write("".join(f"scripts/bench: {p}\n" for p in problems))
        return 2
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    opts.out.mkdir(parents=True, exist_ok=True)
    say(f"raw results in {opts.out}")
    warnings: list[str] = []
    result: dict[str, Any] = {
        "bench": "meshnode-wg", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {"cpus": os.cpu_count(), "kernel": platform.release(),
                 "python": platform.python_version()},
        "options": {"rounds": opts.rounds, "duration_s": opts.duration, "quick": opts.quick,
                    "ipv6": opts.ipv6, "argv": argv},
        "impls": {impl.name: impl.command() for impl in [opts.meshnode, *opts.refs]},
    }  # fmt: skip
    texts: list[str] = []
    try:
        run_all(opts, result, texts, warnings)
    except KeyboardInterrupt:
        say("interrupted; namespaces and processes were cleaned up")
        return 130
    result.update(seconds=round(elapsed(), 1), warnings=warnings, out=str(opts.out))
    finish(result, texts, warnings, opts.out)
    return 1 if warnings else 0


def run_all(opts: Options, result: dict[str, Any], texts: list[str], warnings: list[str]) -> None:
    """The sections asked for, in order; each adds its figures and its text."""
    if opts.throughput:
        runs = run_section("throughput", throughput.run, opts, opts.out, warnings)
        if "error" in runs:
            result["throughput"] = runs
        else:
            result["throughput"], text = summarize_throughput(runs, opts)
            texts.append(text)
    if opts.handshakes:
        hs = run_section("handshakes", handshakes.run, opts, opts.out, warnings)
        result["handshakes"] = hs if "error" in hs else handshakes.summary(hs)
        if "error" not in hs:
            texts.append(report.handshakes_text(hs))
    if opts.memory:
        result["memory"] = run_section("memory", memory.run, opts, opts.out, warnings)
        if "error" not in result["memory"]:
            texts.append(report.memory_text(result["memory"]))


def finish(result: dict[str, Any], texts: list[str], warnings: list[str], out: Path) -> None:
    """Print the tables, the warnings and the JSON line; keep copies in out."""
    if warnings:
        texts.append("Problems:\n" + "\n".join(f"- {w}" for w in warnings))
    texts.append(f"Total time: {result['seconds']:.0f} s. Raw results: {out}")
    text = "\n\n".join(texts)
    line = json.dumps(rounded(result), separators=(",", ":"), ensure_ascii=False)
    (out / "report.txt").write_text(text + "\n")
    (out / "summary.json").write_text(line + "\n")
    print(text)
    print(line)
