"""Resident memory per configured idle peer, from /proc/PID/status VmRSS.

For each daemon (meshnode, then each reference): start it, `wg setconf` a
config with no peers, bring the interface up, read VmRSS; then `wg setconf`
the same interface with N peers (each a /32 allowed IP and an endpoint), wait
for it to settle, read VmRSS again. KiB per peer = (RSS with N − RSS with 0) / N.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from subprocess import SubprocessError
from typing import Any

import netns

from meshnode.wireguard import keys

from . import procfs
from .config import MESHNODE, PORT, Impl, Options
from .console import say, tail

SETTLE_SECONDS = 2.0
SAMPLES = 3


def peer_lines(publics: list[bytes]) -> str:
    """[Peer] sections: peer i owns 10.128.0.0/9's i-th /32 and has an endpoint."""
    sections = []
    for i, public in enumerate(publics):
        host = f"{(i >> 16) & 0x7F | 0x80}.{(i >> 8) & 0xFF}.{i & 0xFF}"
        endpoint = f"172.{16 + (i >> 16)}.{(i >> 8) & 0xFF}.{i & 0xFF}:{PORT}"
        sections.append(
            f"\n[Peer]\nPublicKey = {keys.to_base64(public)}\n"
            f"AllowedIPs = 10.{host}/32\nEndpoint = {endpoint}\n"
        )
    return "".join(sections)


def settled_rss(pid: int) -> list[int]:
    """VmRSS samples (KiB) after letting the daemon settle; the last one counts."""
    time.sleep(SETTLE_SECONDS)
    samples = []
    for _ in range(SAMPLES):
        samples.append(procfs.rss_kib(pid))
        time.sleep(0.5)
    return samples


def measure_impl(
    lab: netns.Lab, ns: netns.Namespace, impl: Impl, publics: list[bytes], out_dir: Path
) -> dict[str, Any]:
    ifname = lab.ifname("m")
    daemon = lab.start_userspace_wg(ns, ifname, argv=impl.argv)
    try:
        head = f"[Interface]\nPrivateKey = {keys.to_base64(keys.generate_private_key())}\n"
        head += f"ListenPort = {PORT}\n"
        empty, full = lab.tmp_path / f"{ifname}-0.conf", lab.tmp_path / f"{ifname}-n.conf"
        empty.write_text(head)
        full.write_text(head + peer_lines(publics))
        ns.run("wg", "setconf", ifname, str(empty), timeout=60)
        ns.ip("addr", "add", "10.127.0.1/24", "dev", ifname)
        ns.ip("link", "set", ifname, "up")
        before = settled_rss(daemon.pid)
        started = time.monotonic()
        ns.run("wg", "setconf", ifname, str(full), timeout=600)
        setconf_seconds = time.monotonic() - started
        after = settled_rss(daemon.pid)
        peers = ns.run("wg", "show", ifname, "peers", timeout=120).stdout.decode().split()
        return {
            "command": impl.command(),
            "rss_kib_0_peers": before[-1], "rss_kib_n_peers": after[-1],
            "samples_0": before, "samples_n": after,
            "peers": len(peers), "setconf_seconds": round(setconf_seconds, 2),
            "kib_per_peer": round((after[-1] - before[-1]) / len(publics), 3),
            "vm_hwm_kib": procfs.status_kib(daemon.pid, "VmHWM"),
            "running": daemon.running(),
        }  # fmt: skip
    finally:
        daemon.stop()
        (out_dir / f"{impl.name}.log").write_text(daemon.log())


def per_peer_ratios(impls: dict[str, Any]) -> dict[str, float | None]:
    """meshnode's KiB per peer divided by each reference's."""
    mine = impls.get(MESHNODE, {}).get("kib_per_peer")
    return {
        name: round(mine / r["kib_per_peer"], 3) if mine is not None and r["kib_per_peer"] else None
        for name, r in impls.items()
        if name != MESHNODE
    }


def run(opts: Options, out_dir: Path, warnings: list[str]) -> dict[str, Any]:
    mem_dir = out_dir / "memory"
    mem_dir.mkdir(parents=True, exist_ok=True)
    publics = [keys.public_key(keys.generate_private_key()) for _ in range(opts.memory_peers)]
    impls = [opts.meshnode, *(opts.refs[:1] if opts.quick else opts.refs)]
    results: dict[str, Any] = {"peers": opts.memory_peers, "impls": {}}
    with netns.Lab() as lab:
        ns = lab.namespace("mem")
        for impl in impls:
            say(f"memory: {impl.name} with 0 and {opts.memory_peers} peers")
            try:
                result = measure_impl(lab, ns, impl, publics, mem_dir)
            except (RuntimeError, TimeoutError, AssertionError, OSError, SubprocessError) as exc:
                warnings.append(f"memory {impl.name}: {tail(str(exc))}")
                continue
            if result["peers"] != opts.memory_peers:
                warnings.append(f"memory {impl.name}: {result['peers']} peers configured, "
                                f"not {opts.memory_peers}")  # fmt: skip
            results["impls"][impl.name] = result
    warnings += [f"memory: left behind: {item}" for item in lab.leftovers()]
    results["ratios"] = per_peer_ratios(results["impls"])
    (mem_dir / "result.json").write_text(json.dumps(results, indent=2) + "\n")
    return results
