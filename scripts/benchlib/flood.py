"""A handshake flood against one WireGuard daemon while a real peer connects.

Two namespaces over a veth: the server runs the daemon under test (meshnode-wg
or wireguard-go) pinned to core 0; the client runs a wireguard-go peer (the
legitimate one) and the flood generator, pinned to core 1. The generator
(`python -m benchlib.flood PARAMS.json`, run by `run_once` inside the client
namespace) sends handshake initiations with a valid mac1 (our key is public,
the rest is random, so no peer matches them) from many source addresses, one
UDP socket each, round-robin, paced at a rate (0: as fast as it can); it never
reads the cookie replies (its sockets' receive buffers are tiny).

One run (`run_once`): start the flood, let it settle for a second, then start
a ping from the legitimate peer through the tunnel and time its first reply
(its handshake has to get through the flood: read, answered with a cookie
reply, retried with mac2 5 s later, answered), ask the daemon `wg show`
during the flood, and read what the server's kernel counted meanwhile:

- share read: UDP datagrams the daemon's sockets handed it (InDatagrams,
  counted at recvmsg) over those the generator sent; the rest the kernel
  dropped at the socket (RcvbufErrors);
- responses/s and cookie replies/s: what the server sent from its port, by
  size (iptables counters on OUTPUT: 120-byte IP packets are handshake
  responses, 92-byte ones cookie replies);
- the daemon's CPU over the flood, in % of one core.

Used by tests/test_flood.py (one short run each) and scripts/flood (many
runs, alternating daemons).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshnode.wireguard import keys
from meshnode.wireguard import messages as m
from meshnode.wireguard.cookie import LABEL_MAC1
from meshnode.wireguard.crypto import hash_, mac

PORT = 51820
CLIENT, SERVER = "192.168.50.1", "192.168.50.2"
PEER_INNER, SERVER_INNER = "10.77.0.1", "10.77.0.2"
SOURCES_NET = "192.168.60.0/22"
_VARIANTS = 256  # distinct flood messages, cycled
_RESPONSE_IP_LEN = 20 + 8 + m.RESPONSE_SIZE  # 120
_COOKIE_IP_LEN = 20 + 8 + m.COOKIE_REPLY_SIZE  # 92


def source_addresses(count: int) -> list[str]:
    """count addresses in 192.168.60.0/22, from 192.168.60.1 on."""
    if not 1 <= count <= 1000:
        raise ValueError("between 1 and 1000 flood sources")
    return [f"192.168.{60 + (i + 1) // 256}.{(i + 1) % 256}" for i in range(count)]


# ---------------------------------------------------------------- the generator


def flood_messages(server_public: bytes, count: int = _VARIANTS) -> list[bytes]:
    """Initiations with random contents and a valid mac1 for server_public, mac2 zero."""
    key = hash_(LABEL_MAC1, server_public)
    at = m.mac1_offset(m.INITIATION_SIZE)
    found = []
    for _ in range(count):
        body = m.HEADER_INITIATION + os.urandom(at - 4)
        found.append(body + mac(key, body) + bytes(16))
    return found


def c_generator() -> Path | None:
    """floodgen.c built (once per version of it) with the system's C compiler, or None."""
    source = Path(__file__).with_name("floodgen.c")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    binary = Path(tempfile.gettempdir()) / f"meshnode-floodgen-{digest}"
    if binary.exists():
        return binary
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    partial = binary.with_suffix(f".{os.getpid()}")
    built = subprocess.run([compiler, "-O2", "-o", str(partial), str(source)],
                           capture_output=True, timeout=120)  # fmt: skip
    if built.returncode != 0:
        return None
    partial.replace(binary)
    return binary


def generate(params: dict[str, Any]) -> dict[str, Any]:
    server_public = keys.from_base64(params["server_public"])
    target = (params["target"], int(params["port"]))
    rate, duration = float(params["rate"]), float(params["duration"])
    messages = flood_messages(server_public)
    binary = c_generator() if params.get("c", True) else None
    if binary is not None:
        with tempfile.NamedTemporaryFile(suffix=".bin") as file:
            file.write(b"".join(messages))
            file.flush()
            argv = [str(binary), target[0], str(target[1]), str(rate), str(duration),
                    file.name, *params["sources"]]  # fmt: skip
            out = subprocess.run(argv, capture_output=True, check=True, timeout=duration + 60)
        return dict(json.loads(out.stdout), generator="c")
    sockets = []
    for address in params["sources"]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # replies: dropped
        sock.bind((address, 0))
        sockets.append(sock)
    sends = [sock.sendto for sock in sockets]
    count, variants = len(sends), len(messages)
    sent = errors = 0
    start = time.monotonic()
    end = start + duration
    while (now := time.monotonic()) < end:
        due = int((now - start) * rate) if rate > 0 else sent + 512
        if due <= sent:
            time.sleep(0.0005)
            continue
        for i in range(sent, min(due, sent + 2048)):
            try:
                sends[i % count](messages[i % variants], target)
            except OSError:
                errors += 1
        sent = min(due, sent + 2048)
    wall = time.monotonic() - start
    return {"sent": sent - errors, "send_errors": errors, "wall_s": wall,
            "sent_per_s": (sent - errors) / wall, "generator": "python"}  # fmt: skip


# ---------------------------------------------------------------- one run


@dataclass
class Options:
    rate: float = 100_000.0  # offered initiations/s (0: as fast as the generator can)
    sources: int = 64
    duration: float = 20.0  # seconds of flood
    settle: float = 1.0  # seconds of flood before the legitimate peer starts
    connect_timeout: float = 17.0  # from the peer's first ping


def udp_counters(ns: Any) -> dict[str, int]:
    """The namespace's Udp: line of /proc/net/snmp."""
    text = ns.run("cat", "/proc/net/snmp").stdout.decode()
    header, values = [line.split()[1:] for line in text.splitlines() if line.startswith("Udp:")]
    return dict(zip(header, map(int, values), strict=True))


def output_counters(ns: Any) -> dict[int, int]:
    """Packets counted by the iptables OUTPUT rules, by IP length."""
    text = ns.run("iptables", "-w", "-nvxL", "OUTPUT").stdout.decode()
    found = {}
    for line in text.splitlines():
        match = re.match(r"\s*(\d+)\s+\d+\s.*length (\d+)", line)
        if match:
            found[int(match.group(2))] = int(match.group(1))
    return found


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_once(lab: Any, impl_argv: list[str], opts: Options, scripts_dir: Path,
             peer_argv: tuple[str, ...] = ("wireguard-go", "-f"),
             on_flood: Any = None) -> dict[str, Any]:  # fmt: skip
    """One flood against a daemon started with impl_argv (pinned to core 0);
    on_flood, if given, is called with the daemon's pid once the flood runs."""
    client, server = lab.namespace("fc"), lab.namespace("fs")
    veth = lab.veth(client, server, f"{CLIENT}/24", f"{SERVER}/24")
    sources = source_addresses(opts.sources)
    batch = "".join(f"addr add {a}/32 dev {veth.a_ifname}\n" for a in sources)
    client.run("ip", "-batch", "-", input=batch.encode(), timeout=60)
    server.ip("route", "add", SOURCES_NET, "via", CLIENT)
    for length in (_RESPONSE_IP_LEN, _COOKIE_IP_LEN):
        server.run("iptables", "-w", "-A", "OUTPUT", "-p", "udp", "--sport", str(PORT),
                   "-m", "length", "--length", str(length))  # fmt: skip

    server_key, peer_key = keys.generate_private_key(), keys.generate_private_key()
    s_if, c_if = lab.ifname("fs"), lab.ifname("fc")
    daemon = lab.start_userspace_wg(server, s_if, argv=("taskset", "-c", "0", *impl_argv))
    lab.start_userspace_wg(client, c_if, argv=("taskset", "-c", "1", *peer_argv))
    for ns, ifname, own, other, inner, other_inner, endpoint in (
        (server, s_if, server_key, peer_key, SERVER_INNER, PEER_INNER, None),
        (client, c_if, peer_key, server_key, PEER_INNER, SERVER_INNER, f"{SERVER}:{PORT}"),
    ):
        key_file = lab.tmp_path / f"{ifname}.key"
        key_file.write_text(keys.to_base64(own) + "\n")
        args = ["wg", "set", ifname, "private-key", str(key_file), "listen-port", str(PORT),
                "peer", keys.to_base64(keys.public_key(other)),
                "allowed-ips", f"{other_inner}/32"]  # fmt: skip
        if endpoint:
            args += ["endpoint", endpoint]
        ns.run(*args)
        ns.ip("addr", "add", f"{inner}/24", "dev", ifname)
        ns.ip("link", "set", ifname, "up")

    params = {"server_public": keys.to_base64(keys.public_key(server_key)), "target": SERVER,
              "port": PORT, "sources": sources, "rate": opts.rate,
              "duration": opts.duration}  # fmt: skip
    params_path = lab.tmp_path / f"flood-{s_if}.json"
    result_path = lab.tmp_path / f"flood-{s_if}-result.json"
    params_path.write_text(json.dumps(params))
    env = dict(os.environ, PYTHONPATH=str(scripts_dir))
    udp_before, out_before = udp_counters(server), output_counters(server)
    cpu_before, started = cpu_seconds(daemon.pid), time.monotonic()
    generator = client.spawn("taskset", "-c", "1", sys.executable, "-m", "benchlib.flood",
                             str(params_path), str(result_path), env=env)  # fmt: skip
    time.sleep(opts.settle)
    if on_flood is not None:
        on_flood(daemon.pid)
    ping_started = time.time()
    ping = client.spawn("ping", "-n", "-D", "-i", "0.2", "-W", "1", SERVER_INNER)
    uapi_s = None
    connected_at = None
    deadline = time.monotonic() + opts.connect_timeout
    while time.monotonic() < deadline and connected_at is None:
        time.sleep(0.1)
        connected_at = _first_reply(ping.log())
    # the UAPI during the flood
    if generator.running():
        t = time.monotonic()
        result = server.run("wg", "show", s_if, check=False, timeout=30)
        if result.returncode == 0 and b"peer:" in result.stdout:
            uapi_s = time.monotonic() - t
    replies_during = None
    if connected_at is not None and generator.running():
        before = _replies(ping.log())
        time.sleep(1.0)
        replies_during = _replies(ping.log()) - before if generator.running() else None
    generator.popen.wait(timeout=opts.duration + 60)
    wall = time.monotonic() - started
    cpu = cpu_seconds(daemon.pid) - cpu_before
    udp_after, out_after = udp_counters(server), output_counters(server)
    ping.stop()
    gen = json.loads(result_path.read_text())
    read = udp_after["InDatagrams"] - udp_before["InDatagrams"]
    dropped = udp_after["RcvbufErrors"] - udp_before["RcvbufErrors"]
    responses = out_after.get(_RESPONSE_IP_LEN, 0) - out_before.get(_RESPONSE_IP_LEN, 0)
    cookies = out_after.get(_COOKIE_IP_LEN, 0) - out_before.get(_COOKIE_IP_LEN, 0)
    flood_wall = gen["wall_s"]
    return {
        "sent": gen["sent"], "sent_per_s": round(gen["sent_per_s"]),
        "read": read, "dropped_at_socket": dropped,
        "share_read": round(read / gen["sent"], 4) if gen["sent"] else None,
        "responses_per_s": round(responses / flood_wall, 1),
        "cookie_replies_per_s": round(cookies / flood_wall, 1),
        "daemon_cpu_pct": round(100 * cpu / wall, 1),
        "connect_s": None if connected_at is None else round(connected_at - ping_started, 2),
        "pings_during_flood_1s": replies_during,
        "uapi_s": None if uapi_s is None else round(uapi_s, 3),
        "daemon_running": daemon.running(),
        "daemon_log_tail": daemon.log()[-2000:] if not daemon.running() else "",
    }  # fmt: skip


def _first_reply(ping_log: str) -> float | None:
    match = re.search(r"^\[(\d+\.\d+)\] \d+ bytes from", ping_log, re.MULTILINE)
    return float(match.group(1)) if match else None


def _replies(ping_log: str) -> int:
    return len(re.findall(r"bytes from", ping_log))


def main(argv: list[str]) -> int:
    params = json.loads(Path(argv[0]).read_text())
    result = generate(params)
    Path(argv[1]).write_text(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
