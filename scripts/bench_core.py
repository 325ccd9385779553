#!/usr/bin/env python3
"""Micro-benchmark of the protocol core, on one core, no I/O.

Prints microseconds for one full handshake (initiation and response, created
and consumed on both sides, keys derived) and for sealing and opening one
1420-byte transport packet through the device (routing, padding, counters,
replay window, inner-source check included). Run: python scripts/bench_core.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from memnet import MemNet, ip_packet


def per_op_us(fn, n: int) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        fn(n)
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


def bench_handshake(n: int) -> None:
    net = MemNet()
    a, b = net.a.device, net.b.device
    for i in range(n):
        now = 10.0 * i  # past the 5 s initiation limit and the 20 ms flood limit
        net.a.peer.last_sent_handshake = None
        a._send_initiation(net.a.peer, now, is_retry=False)
        ((init, _),) = a.datagrams_to_send()
        b.receive(init, net.a.address, now)
        ((resp, _),) = b.datagrams_to_send()
        a.receive(resp, net.b.address, now)
        a.datagrams_to_send()  # the keepalive that confirms the session


def transport_pair():
    net = MemNet()
    net.send(net.a)
    packet = ip_packet("10.0.0.1", "10.0.0.2", bytes(1420 - 20))
    return net, packet


def bench_seal(n: int) -> None:
    net, packet = transport_pair()
    send, drain = net.a.device.send, net.a.device.datagrams_to_send
    for _ in range(n):
        send(packet, 1.0)
    drain()


def bench_open(n: int) -> None:
    net, packet = transport_pair()
    for _ in range(n):
        net.a.device.send(packet, 1.0)
    datagrams = [d for d, _ in net.a.device.datagrams_to_send()]
    receive, source = net.b.device.receive, net.a.address
    start = time.perf_counter()
    for d in datagrams:
        receive(d, source, 1.0)
    bench_open.elapsed = time.perf_counter() - start  # type: ignore[attr-defined]


def open_us(n: int) -> float:
    best = float("inf")
    for _ in range(3):
        bench_open(n)
        best = min(best, bench_open.elapsed / n)  # type: ignore[attr-defined]
    return best * 1e6


def batch_us(batch: int = 44, rounds: int = 500) -> tuple[float, float]:
    """Per packet through the data path's batch entry points (as the runtime calls them)."""
    net, packet = transport_pair()
    a, b = net.a.device, net.b.device
    arena = bytearray(batch * 1500)
    slots = [memoryview(arena)[i * 1500 : (i + 1) * 1500] for i in range(batch)]
    for slot in slots:
        slot[: len(packet)] = packet
    lengths = [len(packet)] * batch
    runs = []
    start = time.perf_counter()
    for _ in range(rounds):
        a.send_batch(slots, lengths, batch, 1.0)
        runs.append(bytes(a.outbox.view[: a.outbox.used]))
        a.outbox.clear()
        a.settle()
    seal = (time.perf_counter() - start) / (rounds * batch)
    segment = len(runs[0]) // batch
    start = time.perf_counter()
    for run in runs:
        b.receive_batch(memoryview(run), len(run), segment, net.a.address, 1.0)
        b.inbox.clear()
        b.settle()
    opened = (time.perf_counter() - start) / (rounds * batch)
    return seal * 1e6, opened * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handshakes", type=int, default=300)
    parser.add_argument("--packets", type=int, default=20000)
    args = parser.parse_args()
    results = {
        "handshake_us": round(per_op_us(bench_handshake, args.handshakes), 1),
        "seal_1420_us": round(per_op_us(bench_seal, args.packets), 2),
        "open_1420_us": round(open_us(args.packets), 2),
    }
    results["batch_seal_1420_us"], results["batch_open_1420_us"] = (round(x, 2) for x in batch_us())
    print(f"full handshake (both sides):    {results['handshake_us']:8.1f} us")
    print(f"seal one 1420-byte packet:      {results['seal_1420_us']:8.2f} us")
    print(f"open one 1420-byte packet:      {results['open_1420_us']:8.2f} us")
    print(f"seal, in batches of 44:         {results['batch_seal_1420_us']:8.2f} us a packet")
    print(f"open, in batches of 44:         {results['batch_open_1420_us']:8.2f} us a packet")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
