"""Handshake responses per second that one meshnode-wg completes on one core.

meshnode-wg runs pinned to core 0 (`taskset -c 0`) with N configured peers;
the generator (benchlib.hsgen) runs pinned to core 1 in the other namespace
and sends from S source addresses (a /17 routed to the client namespace), so
the per-source rate limit that applies under load (20/s per address) is far
above what one core can answer. Phases, each at a paced offered rate:

- below-threshold: a light load (300/s), under the "under load" threshold;
  every initiation should get a response;
- no-mac2: the full offered rate, initiations without mac2, as a flood (or
  initiators that ignore cookie replies) would send them: once the device
  is under load it answers with cookie replies instead;
- with-mac2: the full offered rate, initiations carrying mac2 made with the
  cookie each source received, as real initiators do under load: the
  responses/s of this phase is the headline figure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import netns

from meshnode.wireguard import keys

from . import procfs
from .config import PORT, QUIET_MAX_WAIT, SCRIPTS, Options
from .console import say, tail

CLIENT_ADDR, SERVER_ADDR = "192.168.70.1", "192.168.70.2"
SOURCES_NET = "192.168.128.0/17"
LIGHT_RATE = 300


def source_addresses(count: int) -> list[str]:
    """count addresses in 192.168.128.0/17, from 192.168.128.1 on."""
    if not 1 <= count < 32767:
        raise ValueError("--hs-sources must be between 1 and 32766")
    return [f"192.168.{128 + (i + 1) // 256}.{(i + 1) % 256}" for i in range(count)]


def phases(opts: Options) -> list[dict[str, Any]]:
    scale = 0.3 if opts.quick else 1.0
    return [
        {"name": "below-threshold", "rate": LIGHT_RATE, "duration": 2.0 * scale, "mac2": False},
        {"name": "no-mac2", "rate": opts.hs_rate, "duration": 3.0 * scale, "mac2": False},
        {"name": "with-mac2", "rate": opts.hs_rate, "duration": opts.hs_duration * scale,
         "mac2": True},
    ]  # fmt: skip


def peer_config(server_private: bytes, peer_publics: list[bytes]) -> str:
    lines = ["[Interface]", f"PrivateKey = {keys.to_base64(server_private)}"]
    lines.append(f"ListenPort = {PORT}")
    for public in peer_publics:
        lines += ["", "[Peer]", f"PublicKey = {keys.to_base64(public)}"]
    return "\n".join(lines) + "\n"


def add_sources(
    client: netns.Namespace, server: netns.Namespace, veth: str, sources: list[str]
) -> None:
    """The source addresses on the client's veth; the server routes them back to it."""
    batch = "".join(f"addr add {address}/32 dev {veth}\n" for address in sources)
    client.run("ip", "-batch", "-", input=batch.encode(), timeout=60)
    server.ip("route", "add", SOURCES_NET, "via", CLIENT_ADDR)


def run(opts: Options, out_dir: Path, warnings: list[str]) -> dict[str, Any]:
    hs_dir = out_dir / "handshakes"
    hs_dir.mkdir(parents=True, exist_ok=True)
    with netns.Lab() as lab:
        client, server = lab.namespace("hc"), lab.namespace("hs")
        veth = lab.veth(client, server, f"{CLIENT_ADDR}/24", f"{SERVER_ADDR}/24")
        sources = source_addresses(opts.hs_sources)
        add_sources(client, server, veth.a_ifname, sources)
        busy = procfs.wait_for_quiet(opts.quiet_threshold, QUIET_MAX_WAIT)
        if busy >= opts.quiet_threshold:
            warnings.append(f"handshakes: machine {busy:.0f}% busy before starting")
        ifname = lab.ifname("h")
        pinned = ("taskset", "-c", "0", *opts.meshnode.argv)
        daemon = lab.start_userspace_wg(server, ifname, argv=pinned)
        try:
            result = load_daemon(lab, client, server, ifname, daemon, sources, opts, hs_dir)
            if not daemon.running():
                warnings.append(f"handshakes: meshnode-wg exited:\n{tail(daemon.log())}")
        finally:
            daemon.stop()
            (hs_dir / "daemon.log").write_text(daemon.log())
    warnings += [f"handshakes: left behind: {item}" for item in lab.leftovers()]
    (hs_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    check(result, opts, warnings)
    return result


def load_daemon(
    lab: netns.Lab, client: netns.Namespace, server: netns.Namespace, ifname: str,
    daemon: netns.Process, sources: list[str], opts: Options, hs_dir: Path,
) -> dict[str, Any]:  # fmt: skip
    """Configure the peers, run the generator against the daemon, return its counts."""
    privates = [keys.generate_private_key() for _ in range(opts.hs_peers)]
    configure(lab, server, ifname, [keys.public_key(k) for k in privates])
    params = {
        "server_public": keys.to_base64(read_public_key(server, ifname)),
        "peer_privates": [keys.to_base64(k) for k in privates],
        "target": [SERVER_ADDR, PORT], "sources": sources, "daemon_pid": daemon.pid,
        "phases": phases(opts),
    }  # fmt: skip
    result = run_generator(lab, client, params, hs_dir)
    result.update(peers=opts.hs_peers, sources=opts.hs_sources, daemon_core=0, generator_core=1)
    result["daemon_running_after"] = daemon.running()
    return result


def configure(lab: netns.Lab, ns: netns.Namespace, ifname: str, peers: list[bytes]) -> None:
    config = lab.tmp_path / f"{ifname}.conf"
    config.write_text(peer_config(keys.generate_private_key(), peers))
    ns.run("wg", "setconf", ifname, str(config), timeout=120)
    ns.ip("addr", "add", "10.70.0.2/24", "dev", ifname)
    ns.ip("link", "set", ifname, "up")


def read_public_key(ns: netns.Namespace, ifname: str) -> bytes:
    out = ns.run("wg", "show", ifname, "public-key").stdout.decode().strip()
    return keys.from_base64(out)


def run_generator(
    lab: netns.Lab, client: netns.Namespace, params: dict[str, Any], hs_dir: Path
) -> dict[str, Any]:
    params_path, result_path = lab.tmp_path / "hsgen.json", hs_dir / "generator.json"
    params_path.write_text(json.dumps(params))
    env = dict(os.environ, PYTHONPATH=str(SCRIPTS))
    argv = ["taskset", "-c", "1", sys.executable, "-m", "benchlib.hsgen"]
    total = sum(p["duration"] for p in params["phases"])
    pool_estimate = sum(p["rate"] * p["duration"] for p in params["phases"]) * 200e-6
    say(f"handshakes: generator making ~{pool_estimate / 200e-6:.0f} initiations, then "
        f"{total:.0f} s of load")  # fmt: skip
    generator = client.spawn(*argv, str(params_path), str(result_path), env=env)
    try:
        generator.popen.wait(timeout=pool_estimate + total + 120)
    except subprocess.TimeoutExpired:
        generator.stop()
        raise RuntimeError(f"handshake generator timed out:\n{tail(generator.log())}") from None
    if generator.popen.returncode != 0 or not result_path.exists():
        raise RuntimeError(f"handshake generator failed:\n{tail(generator.log())}")
    return json.loads(result_path.read_text())


def check(result: dict[str, Any], opts: Options, warnings: list[str]) -> None:
    """Warn when the figure does not mean what it says."""
    for phase in result["phases"]:
        if phase["generator_lag_s"] > 0.2 or phase["pool_exhausted"]:
            warnings.append(f"handshakes {phase['name']}: the generator could not keep its rate")
    light, _, loaded = result["phases"]
    if light["responses"] < 0.95 * light["sent"]:
        warnings.append(
            f"handshakes below-threshold: only {light['responses']} responses "
            f"to {light['sent']} initiations"
        )
    if loaded["responses_per_s"] > 0.9 * opts.hs_rate:
        warnings.append("handshakes with-mac2: responses near the offered rate, the daemon was "
                        "not saturated: raise --hs-rate")  # fmt: skip


def cpu_per_response(phase: dict[str, Any]) -> float | None:
    """Daemon CPU microseconds per response sent (cookie replies and idle work included)."""
    if not phase["responses_per_s"]:
        return None
    return round(phase["daemon_cpu_pct"] / 100 * 1e6 / phase["responses_per_s"], 1)


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The headline figures, then the phases without their per-second series."""
    by_name = {phase["name"]: phase for phase in result["phases"]}
    loaded, flood = by_name["with-mac2"], by_name["no-mac2"]
    return {
        "responses_per_s": round(loaded["responses_per_s"], 1),
        "cookie_replies_per_s": round(loaded["cookie_replies_per_s"], 1),
        "daemon_cpu_pct": round(loaded["daemon_cpu_pct"], 1),
        "daemon_cpu_us_per_response": cpu_per_response(loaded),
        "no_mac2_responses_per_s": round(flood["responses_per_s"], 1),
        "no_mac2_cookie_replies_per_s": round(flood["cookie_replies_per_s"], 1),
        "no_mac2_responses": flood["responses"],
        "no_mac2_cookie_replies": flood["cookie_replies"],
        "below_threshold_answered": f"{by_name['below-threshold']['responses']}"
                                    f"/{by_name['below-threshold']['sent']}",
        "peers": result["peers"], "sources": result["sources"],
        "phases": [{k: v for k, v in p.items() if k != "per_second"} for p in result["phases"]],
    }  # fmt: skip
