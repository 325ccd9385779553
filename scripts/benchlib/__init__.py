"""The parts of scripts/bench.

- config: addresses, daemon commands (Impl), pairs, run options.
- procfs: CPU time, resident memory and machine load from /proc.
- tunnel: two daemons joined by a WireGuard tunnel over a veth (tests/netns.py labs).
- measure: iperf3 and ping through a tunnel, CPU sampled while they run.
- counters: kernel drop counters (UDP buffers, TUN queue) around each test.
- throughput: the rounds of pairs and their per-run results.
- handshakes, hsgen: handshake responses per second (hsgen is the load generator process).
- memory: resident memory per configured peer.
- report: medians, ratios, the table and the JSON line.
- cli: arguments and the order of sections.
"""
