"""A UDP relay that reorders and duplicates datagrams, for the lossy-link tests.

Run in a middle namespace between two WireGuard peers, each of which has the
relay's address on its own side as the other's endpoint:

    python udprelay.py --a 192.168.70.254:51820=192.168.70.1:51820 \
                       --b 192.168.71.254:51820=192.168.71.2:51820 \
                       --hold 0.1 --dup 0.1 --delay 0.03 --seed 1 --duration 40 --stats FILE

A datagram arriving on the A socket goes out of the B socket to B's address,
and the other way round. Each datagram is, at random (seeded):
- held back (probability --hold) and sent --delay seconds later, so that the
  datagrams that arrive meanwhile overtake it;
- duplicated (probability --dup): the copy is sent right after the original
  or, half of the time, --delay seconds later.

Nothing is lost: held datagrams and late copies are all sent, at the latest
when the relay stops. It stops by itself after --duration seconds, or on
SIGTERM/SIGINT, then writes its counters to --stats as JSON: per direction
("a2b", "b2a") and per WireGuard message type (the first byte: 1-4), how many
datagrams it forwarded (first copies), their bytes, how many it held back and
how many it duplicated. Once it is listening it writes the file once with
"ready": true, so a test can wait for that.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import random
import selectors
import signal
import socket
import time
from collections import Counter
from pathlib import Path


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", required=True, help="LISTEN=PEER on A's side")
    parser.add_argument("--b", required=True, help="LISTEN=PEER on B's side")
    parser.add_argument("--hold", type=float, default=0.1)
    parser.add_argument("--dup", type=float, default=0.1)
    parser.add_argument("--delay", type=float, default=0.03)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--stats", required=True)
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    sides = {}
    for name, spec in (("a", args.a), ("b", args.b)):
        listen, _, peer = spec.partition("=")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind(_addr(listen))
        sock.setblocking(False)
        sides[name] = (sock, _addr(peer))
    route = {"a": ("a2b", sides["b"]), "b": ("b2a", sides["a"])}

    forwarded: Counter[str] = Counter()
    forwarded_bytes: Counter[str] = Counter()
    held: Counter[str] = Counter()
    duplicated: Counter[str] = Counter()
    unexpected = 0
    late: list[tuple[float, int, bytes, socket.socket, tuple[str, int]]] = []
    order = itertools.count()
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def write_stats(ready: bool) -> None:
        data = {
            "ready": ready,
            "forwarded": dict(forwarded),
            "forwarded_bytes": dict(forwarded_bytes),
            "held": dict(held),
            "duplicated": dict(duplicated),
            "unexpected": unexpected,
        }
        tmp = Path(args.stats + ".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(args.stats)

    def send(sock: socket.socket, to: tuple[str, int], data: bytes) -> None:
        try:
            sock.sendto(data, to)
        except BlockingIOError:
            time.sleep(0.001)
            sock.sendto(data, to)

    selector = selectors.DefaultSelector()
    for name, (sock, _) in sides.items():
        selector.register(sock, selectors.EVENT_READ, name)
    write_stats(ready=True)
    end = time.monotonic() + args.duration
    while not stopping and time.monotonic() < end:
        now = time.monotonic()
        while late and late[0][0] <= now:
            _, _, data, sock, to = heapq.heappop(late)
            send(sock, to, data)
        timeout = min(0.05, max(0.0, late[0][0] - now)) if late else 0.05
        for key, _ in selector.select(timeout):
            name = key.data
            sock, peer = sides[name]
            direction, (out_sock, out_to) = route[name]
            while True:
                try:
                    data, source = sock.recvfrom(65536)
                except BlockingIOError:
                    break
                if source != peer:
                    unexpected += 1
                    continue
                kind = f"{direction}/{data[0] if data else 0}"
                forwarded[kind] += 1
                forwarded_bytes[kind] += len(data)
                now = time.monotonic()
                if rng.random() < args.hold:
                    held[kind] += 1
                    heapq.heappush(late, (now + args.delay, next(order), data, out_sock, out_to))
                else:
                    send(out_sock, out_to, data)
                if rng.random() < args.dup:
                    duplicated[kind] += 1
                    if rng.random() < 0.5:
                        send(out_sock, out_to, data)
                    else:
                        heapq.heappush(
                            late, (now + args.delay, next(order), data, out_sock, out_to)
                        )
    for _, _, data, sock, to in sorted(late):
        send(sock, to, data)
    write_stats(ready=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
