"""Handshake load generator: valid initiations from many peers and source addresses.

Run by benchlib.handshakes inside the client namespace, pinned to its own core:

    python -m benchlib.hsgen PARAMS.json RESULT.json

PARAMS: server_public (base64), peer_privates (base64 list), target [ip, port],
sources (IPv4 addresses to send from, one UDP socket each), daemon_pid (whose
CPU time is read per phase), phases [{name, rate, duration, mac2}].

All initiations are made first (meshnode's own noise.create_initiation and
cookie.CookieGenerator.add_macs, as the device makes them), then sent paced at
each phase's rate, round-robin over peers (so a peer's initiations are far more
than 20 ms apart) and over sources. Each peer's k-th initiation carries a
timestamp k seconds later than its first, so every one is fresh. Replies are
counted per second: 92-byte responses and 64-byte cookie replies. A cookie
reply is opened (its AD is the mac1 of the initiation it answers) and the
cookie kept for its source socket; in a phase with mac2, later initiations
from that socket carry mac2, as a real initiator's would.
"""

from __future__ import annotations

import contextlib
import json
import math
import resource
import select
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshnode.wireguard import keys
from meshnode.wireguard import messages as m
from meshnode.wireguard.cookie import LABEL_COOKIE, CookieGenerator
from meshnode.wireguard.crypto import CryptoFailure, hash_, mac, xaead_decrypt
from meshnode.wireguard.noise import (
    Handshake,
    StaticIdentity,
    create_initiation,
    precompute_static_static,
)

from .procfs import cpu_seconds

MAC1_AT = m.mac1_offset(m.INITIATION_SIZE)
MAC2_AT = MAC1_AT + 16
TAIL_SECONDS = 0.5  # replies still counted after a phase stops sending
MAX_BURST = 64  # sends in a row before the generator looks at replies
COOKIE_REFRESH = 5.0  # re-open a cookie reply for a socket at most this often


@dataclass
class Phase:
    name: str
    rate: float
    duration: float
    mac2: bool

    @property
    def messages(self) -> int:
        return math.ceil(self.rate * self.duration)


def make_pool(server_public: bytes, privates: list[bytes], count: int) -> list[bytes]:
    """count initiations, index i+1 from peer i % len(privates), mac1 set, mac2 zero."""
    peers = []
    for private in privates:
        identity = StaticIdentity.from_private_bytes(private)
        shared = precompute_static_static(identity, server_public)
        peers.append((identity, Handshake(server_public, shared)))
    macs = CookieGenerator(server_public)
    base = time.time()
    pool = []
    for i in range(count):
        identity, handshake = peers[i % len(peers)]
        message = create_initiation(identity, handshake, i + 1, base + i // len(peers))
        macs.add_macs(message, 0.0)
        pool.append(bytes(message))
    return pool


def open_sockets(sources: list[str]) -> list[socket.socket]:
    """One non-blocking UDP socket per source address (file limit raised to fit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = len(sources) + 64
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    sockets = []
    for address in sources:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((address, 0))
        sock.setblocking(False)
        sockets.append(sock)
    return sockets


@dataclass
class Generator:
    pool: list[bytes]
    sockets: list[socket.socket]
    target: tuple[str, int]
    cookie_key: bytes
    daemon_pid: int
    next_message: int = 0
    cookies: dict[int, tuple[bytes, float]] = field(default_factory=dict)  # socket -> cookie
    poller: select.epoll = field(default_factory=select.epoll)

    def __post_init__(self) -> None:
        self.by_fd = {sock.fileno(): i for i, sock in enumerate(self.sockets)}
        for sock in self.sockets:
            self.poller.register(sock.fileno(), select.EPOLLIN)

    def send_one(self, with_mac2: bool) -> bool:
        """Send the next initiation; False when the pool is used up."""
        if self.next_message >= len(self.pool):
            return False
        message = self.pool[self.next_message]
        index = self.next_message % len(self.sockets)
        self.next_message += 1
        cookie = self.cookies.get(index)
        if with_mac2 and cookie is not None:
            message = message[:MAC2_AT] + mac(cookie[0], message[:MAC2_AT])
        with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
            self.sockets[index].sendto(message, self.target)
        return True

    def learn_cookie(self, reply: bytes, index: int, now: float) -> None:
        known = self.cookies.get(index)
        if known is not None and now - known[1] < COOKIE_REFRESH:
            return
        _, receiver, nonce, sealed = m.COOKIE_REPLY.unpack(reply)
        if not 1 <= receiver <= len(self.pool):
            return
        mac1 = self.pool[receiver - 1][MAC1_AT:MAC2_AT]
        with contextlib.suppress(CryptoFailure):
            self.cookies[index] = (xaead_decrypt(self.cookie_key, nonce, sealed, mac1), now)

    def drain(self, timeout: float, counts: Counter[str]) -> None:
        """Wait up to timeout for replies, then read every one that is there."""
        for fd, _ in self.poller.poll(max(0.0, timeout)):
            index = self.by_fd[fd]
            sock = self.sockets[index]
            while True:
                try:
                    reply = sock.recv(2048)
                except (BlockingIOError, ConnectionRefusedError):
                    break
                self.count(reply, index, counts)

    def count(self, reply: bytes, index: int, counts: Counter[str]) -> None:
        if len(reply) == m.RESPONSE_SIZE and reply[:4] == m.HEADER_RESPONSE:
            counts["responses"] += 1
        elif len(reply) == m.COOKIE_REPLY_SIZE and reply[:4] == m.HEADER_COOKIE_REPLY:
            counts["cookie_replies"] += 1
            self.learn_cookie(reply, index, time.monotonic())
        else:
            counts["other"] += 1

    def run_phase(self, phase: Phase) -> dict[str, Any]:
        seconds = [Counter[str]() for _ in range(math.ceil(phase.duration))]
        interval = 1.0 / phase.rate
        cpu_before, own_before = cpu_seconds(self.daemon_pid), time.process_time()
        start = time.monotonic()
        end = start + phase.duration
        next_send, sent, lagged, exhausted = start, 0, 0.0, False
        while (now := time.monotonic()) < end:
            bucket = seconds[min(int(now - start), len(seconds) - 1)]
            burst = 0
            while next_send <= now and burst < MAX_BURST and not exhausted:
                exhausted = not self.send_one(phase.mac2)
                sent += 0 if exhausted else 1
                next_send += interval
                burst += 1
            if now - next_send > 0.05:  # the generator cannot keep up: don't build a backlog
                lagged += now - next_send
                next_send = now
            self.drain(min(next_send, end) - time.monotonic(), bucket)
        cpu_after, own_after = cpu_seconds(self.daemon_pid), time.process_time()
        wall = time.monotonic() - start
        tail_end = time.monotonic() + TAIL_SECONDS
        while (left := tail_end - time.monotonic()) > 0:
            self.drain(left, seconds[-1])
        return summarize(phase, seconds, sent, wall, cpu_after - cpu_before,
                         own_after - own_before, lagged, exhausted, len(self.cookies))  # fmt: skip


def summarize(
    phase: Phase, seconds: list[Counter[str]], sent: int, wall: float, daemon_cpu: float,
    own_cpu: float, lagged: float, exhausted: bool, cookies_known: int,
) -> dict[str, Any]:  # fmt: skip
    """Totals, per-second series, and steady rates (the first second left out when
    the phase is long enough: it holds the switch from the previous phase)."""
    total = sum(seconds, Counter[str]())
    steady = seconds[1:] if len(seconds) >= 3 else seconds
    steady_total = sum(steady, Counter[str]())
    span = len(steady) if len(seconds) >= 3 else phase.duration
    return {
        "name": phase.name, "offered_per_s": phase.rate, "duration_s": phase.duration,
        "with_mac2": phase.mac2, "sent": sent,
        "sent_per_s": sent / wall,
        "responses": total["responses"], "cookie_replies": total["cookie_replies"],
        "other_replies": total["other"],
        "responses_per_s": steady_total["responses"] / span,
        "cookie_replies_per_s": steady_total["cookie_replies"] / span,
        "per_second": [dict(c) for c in seconds],
        "daemon_cpu_pct": 100.0 * daemon_cpu / wall,
        "generator_cpu_pct": 100.0 * own_cpu / wall,
        "generator_lag_s": round(lagged, 3),
        "pool_exhausted": exhausted,
        "sources_with_cookie": cookies_known,
    }  # fmt: skip


def main(argv: list[str]) -> int:
    params_path, result_path = Path(argv[0]), Path(argv[1])
    params = json.loads(params_path.read_text())
    server_public = keys.from_base64(params["server_public"])
    privates = [keys.from_base64(k) for k in params["peer_privates"]]
    phases = [Phase(**p) for p in params["phases"]]
    started = time.monotonic()
    pool = make_pool(server_public, privates, sum(p.messages for p in phases))
    pool_seconds = time.monotonic() - started
    generator = Generator(
        pool, open_sockets(params["sources"]), (params["target"][0], int(params["target"][1])),
        hash_(LABEL_COOKIE, server_public), int(params["daemon_pid"]),
    )  # fmt: skip
    results = [generator.run_phase(phase) for phase in phases]
    result = {"pool": len(pool), "pool_seconds": round(pool_seconds, 2), "phases": results}
    result_path.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
