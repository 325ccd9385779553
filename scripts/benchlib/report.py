"""Medians over rounds, meshnode/reference ratios, and the printed tables."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from .config import MESHNODE, PairSpec
from .handshakes import cpu_per_response

SPREAD_MARK = 0.25  # a median whose rounds differ by more than this fraction gets a "*"


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    digits: int
    compare: bool = True  # in the ratio table


FIGURES = (
    Figure("tcp_up_mbps", "TCP client→server", "Mbit/s", 0),
    Figure("tcp_up_retrans", "  retransmits", "count", 0),
    Figure("udp_rcvbuf_drops", "  underlay UDP rcvbuf drops", "count", 0),
    Figure("tun_tx_drops", "  TUN queue drops", "count", 0),
    Figure("tcp_down_mbps", "TCP server→client (-R)", "Mbit/s", 0),
    Figure("tcp_down_retrans", "  retransmits", "count", 0),
    Figure("tcp_p4_mbps", "TCP 4 streams", "Mbit/s", 0),
    Figure("tcp_p4_retrans", "  retransmits", "count", 0),
    Figure("udp300_mbps", "UDP 300 Mbit/s: received", "Mbit/s", 0),
    Figure("udp300_loss_pct", "  loss", "%", 2),
    Figure("udp1g_mbps", "UDP 1 Gbit/s: received", "Mbit/s", 0),
    Figure("udp1g_loss_pct", "  loss", "%", 2),
    Figure("ping_idle_median_ms", "ping idle: median", "ms", 3),
    Figure("ping_idle_avg_ms", "  mean", "ms", 3),
    Figure("ping_load_median_ms", "ping during TCP: median", "ms", 3),
    Figure("ping_load_avg_ms", "  mean", "ms", 3),
    Figure("ping_load_loss_pct", "  loss", "%", 1),
    Figure("cpu_client_pct", "CPU during TCP: client", "% core", 0),
    Figure("cpu_server_pct", "  server", "% core", 0),
    Figure("cpu_idle_client_pct", "CPU idle tunnel: client", "% core", 0, compare=False),
    Figure("cpu_idle_server_pct", "  server", "% core", 0, compare=False),
    Figure("cpu_others_pct", "CPU of other processes (max)", "% core", 0, compare=False),
)


# ------------------------------------------------------------------ numbers


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over the runs that produced it, and those values."""
    values: dict[str, list[float]] = {}
    for run in runs:
        for key, value in run["figures"].items():
            values.setdefault(key, []).append(value)
    return {
        "runs": len(runs),
        "runs_with_problems": sum(1 for run in runs if run["errors"]),
        "median": {k: statistics.median(v) for k, v in values.items()},
        "values": values,
    }


def ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference == 0:
        return None
    return value / reference


def compared_with(spec: PairSpec, ref: str) -> bool:
    """Whether a pair has meshnode in it and no daemon but meshnode and ref."""
    names = {spec.client.name, spec.server.name}
    return MESHNODE in names and names <= {MESHNODE, ref}


def ratios(
    summary: dict[str, dict[str, Any]], specs: list[PairSpec], refs: list[str]
) -> dict[str, dict[str, dict[str, float | None]]]:
    """For each reference R, every pair of meshnode with meshnode or with R: its
    medians divided by those of R↔R. {R: {pair id: {figure: ratio}}}."""
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for ref in refs:
        base = summary.get(f"{ref}-{ref}")
        if base is None:
            continue
        out[ref] = {}
        for spec in specs:
            if not compared_with(spec, ref) or spec.id not in summary:
                continue
            medians = summary[spec.id]["median"]
            out[ref][spec.id] = {
                f.key: ratio(medians.get(f.key), base["median"].get(f.key))
                for f in FIGURES
                if f.compare
            }
    return out


# ------------------------------------------------------------------ text


def fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def spread(summary: dict[str, Any], key: str) -> bool:
    median = summary["median"].get(key)
    if not median:
        return False
    values = summary["values"][key]
    return (max(values) - min(values)) > SPREAD_MARK * abs(median)


def render_table(header: list[str], rows: list[list[str]], left: int = 2) -> str:
    """Columns padded to their widest cell: the first `left` ones aligned left."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for n, row in enumerate([header, *rows]):
        cells = [
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def values_table(summary: dict[str, dict[str, Any]], pair_ids: list[str]) -> str:
    header = ["figure", "unit", *pair_ids]
    rows = []
    for f in FIGURES:
        row = [f.label, f.unit]
        for pair in pair_ids:
            cell = fmt(summary[pair]["median"].get(f.key), f.digits)
            row.append(cell + ("*" if spread(summary[pair], f.key) else " "))
        rows.append(row)
    return render_table(header, rows)


def ratio_table(table: dict[str, dict[str, dict[str, float | None]]]) -> str:
    columns = [(ref, pair) for ref, pairs in table.items() for pair in pairs]
    header = ["figure", "unit", *[f"{pair} / {ref}-{ref}" for ref, pair in columns]]
    rows = []
    for f in FIGURES:
        if f.compare:
            cells = [fmt(table[ref][pair][f.key], 2) for ref, pair in columns]
            rows.append([f.label, f.unit, *cells])
    return render_table(header, rows)


def throughput_text(
    summary: dict[str, dict[str, Any]],
    ratio_by_ref: dict[str, dict[str, dict[str, float | None]]],
    rounds: int,
    duration: int,
) -> str:
    pair_ids = list(summary)
    legend = (
        f"Medians of {rounds} round(s), {duration} s tests. Columns are pairs CLIENT-SERVER "
        "(mn = meshnode-wg; the iperf3 client and ping run on the client side). "
        "* = the rounds differ by more than 25 % of the median."
    )
    ratio_legend = (
        "meshnode / reference: each pair's median divided by the reference↔itself median "
        "(> 1 = meshnode higher: better for throughput, worse for RTT, loss, CPU)."
    )
    parts = [legend, values_table(summary, pair_ids)]
    if ratio_by_ref:
        parts += ["", ratio_legend, ratio_table(ratio_by_ref)]
    return "\n".join(parts)


def handshakes_text(result: dict[str, Any]) -> str:
    lines = [
        f"Handshakes: one meshnode-wg on core 0, {result['peers']} peers, generator on core 1 "
        f"sending from {result['sources']} source addresses (pool of {result['pool']} "
        "initiations)",
    ]
    header = ["phase", "offered/s", "sent/s", "responses/s", "cookie replies/s", "responses",
              "cookie replies", "daemon CPU %", "CPU µs/response"]  # fmt: skip
    rows = []
    for p in result["phases"]:
        rows.append([
            p["name"],
            f"{p['offered_per_s']:.0f}", f"{p['sent_per_s']:.0f}", f"{p['responses_per_s']:.0f}",
            f"{p['cookie_replies_per_s']:.0f}", str(p["responses"]), str(p["cookie_replies"]),
            f"{p['daemon_cpu_pct']:.0f}", fmt(cpu_per_response(p), 0),
        ])  # fmt: skip
    table = render_table(header, rows, left=1)
    note = (
        "responses/s of with-mac2 (initiators that hold a cookie, as under load) is the "
        "capacity figure; no-mac2 shows the device going under load (cookie replies)"
    )
    return "\n".join([*lines, table, note])


def memory_text(result: dict[str, Any]) -> str:
    header = ["daemon", "RSS 0 peers KiB", f"RSS {result['peers']} peers KiB", "KiB/peer",
              "VmHWM KiB", "peers seen", "setconf s"]  # fmt: skip
    rows = []
    for name, r in result["impls"].items():
        rows.append([
            name, str(r["rss_kib_0_peers"]), str(r["rss_kib_n_peers"]),
            f"{r['kib_per_peer']:.2f}", str(r["vm_hwm_kib"]), str(r["peers"]),
            f"{r['setconf_seconds']:.1f}",
        ])  # fmt: skip
    title = f"Memory: VmRSS with 0 and {result['peers']} idle peers (/32 allowed IP, endpoint)"
    ratios = ", ".join(f"mn/{name} {fmt(value, 2)}" for name, value in result["ratios"].items())
    return "\n".join([title, render_table(header, rows, left=1), f"KiB per peer: {ratios}"])
