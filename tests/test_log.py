"""meshnode.log: lines never block the event loop while `drain()` runs in the
main trio task, and are written directly before and after it."""

from __future__ import annotations

import contextlib
import io
import os
import re
import threading
import time
from pathlib import Path

import pytest
import trio

from meshnode import log as logmod
from meshnode.log import VERBOSE, Logger, drain


def _is_trio_worker(thread: threading.Thread) -> bool:
    target = getattr(thread, "_target", None)
    return getattr(target, "__qualname__", "") == "WorkerThread._work"


def _stray_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    """Threads started since `before` that are not trio's worker threads."""
    return [t for t in threading.enumerate() if t not in before and not _is_trio_worker(t)]


def _fill(fd: int) -> None:
    """Fill a pipe until a write would block."""
    os.set_blocking(fd, False)
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(fd, b"#" * 65536)
    os.set_blocking(fd, True)


def _told(data: bytes) -> int:
    """How many dropped lines the notices in data tell of."""
    return sum(int(n) for n in re.findall(rb"\((\d+) log lines dropped: output stalled\)", data))


def _read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    data = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 1 << 20):
            data += chunk
    return data


def test_no_writer_thread_and_no_queue_without_a_drain(tmp_path: Path) -> None:
    """One-shot use (no trio): each line is in the file when the call returns,
    and no thread is started for it."""
    before = set(threading.enumerate())
    path = tmp_path / "log"
    with open(path, "w") as stream:
        log = Logger("wg0", VERBOSE, stream)
        for i in range(3):
            log.verbose(f"line {i}")
            assert path.read_text().count("line") == i + 1
    assert _stray_threads(before) == []
    assert not any(t.name == "log writer" for t in threading.enumerate())


def test_lines_before_during_and_after_trio_come_out_in_order(tmp_path: Path) -> None:
    path = tmp_path / "log"
    before = set(threading.enumerate())
    with open(path, "w") as stream:
        log = Logger("wg0", VERBOSE, stream)
        log.verbose("before trio")
        assert "before trio" in path.read_text()  # written at once

        async def main() -> None:
            log.verbose("in trio, before the drain")
            async with trio.open_nursery() as nursery:
                await nursery.start(drain)
                for i in range(2000):
                    log.verbose(f"drained {i}")
                    if i % 100 == 0:
                        await trio.sleep(0)
                nursery.cancel_scope.cancel()  # what is queued is written on the way out
            log.verbose("in trio, after the drain")

        trio.run(main)
        log.error("after trio")
    lines = path.read_text().splitlines()
    messages = [line.split(" ", 4)[-1] for line in lines]
    expected = ["before trio", "in trio, before the drain"]
    expected += [f"drained {i}" for i in range(2000)]
    expected += ["in trio, after the drain", "after trio"]
    assert messages == expected
    assert log.dropped == 0
    assert _stray_threads(before) == []


async def test_stalled_output_blocks_nothing_drops_and_says_so() -> None:
    """A pipe nobody reads, full: a task logging bursts of lines keeps the
    event loop ticking, the lines that do not fit are dropped and counted, and
    once the pipe is read a line says how many, where they were lost."""
    before = set(threading.enumerate())
    r, w = os.pipe()
    _fill(w)
    stream = open(w, "w")  # noqa: SIM115 - closed below
    log = Logger("wg0", VERBOSE, stream)
    gaps: list[float] = []
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(drain)

            async def ticker() -> None:
                last = trio.current_time()
                while True:
                    await trio.sleep(0.001)
                    now = trio.current_time()
                    gaps.append(now - last)
                    last = now

            nursery.start_soon(ticker)
            started = time.monotonic()
            for i in range(3 * logmod.QUEUE_LINES):
                log.verbose(f"line {i} " + "x" * 100)
                if i % 50 == 0:
                    await trio.sleep(0)
            assert time.monotonic() - started < 2.0
            await trio.sleep(0.2)  # the output is still stalled: nothing moves
            assert len(gaps) > 50 and max(gaps) < 0.25  # the loop never waited on the log
            assert log.dropped >= logmod.QUEUE_LINES  # a batch in the write, a full queue
            dropped = log.dropped

            data = b""
            with trio.fail_after(10):  # every dropped line told of, in one or more notices
                while _told(data) != dropped or not log.flush(0):
                    data += _read_all(r)
                    await trio.sleep(0.01)
            log.verbose("after the stall")
            with trio.fail_after(10):
                while b"after the stall" not in data:
                    data += _read_all(r)
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        text = data.lstrip(b"#").decode()
        # the queued lines, then where the rest went, then the output again
        kept = [f"line {i} " for i in range(logmod.QUEUE_LINES)]
        positions = [text.index(k) for k in kept[:: logmod.QUEUE_LINES // 8]]
        assert positions == sorted(positions)
        # where the lines were lost: after the first queue's worth, before the output
        # moved again (a write that got a little room in between may split the gap)
        first = text.index("log lines dropped")
        assert text.index(kept[-1]) < first < text.index("after the stall")
        assert text.rindex("log lines dropped") < text.index("after the stall")
        assert log.dropped == dropped
    finally:
        os.close(r)
        with contextlib.suppress(OSError):
            stream.close()
    assert _stray_threads(before) == []


def test_exit_with_a_stalled_output_is_bounded() -> None:
    """Cancelled while its output is stalled, the drain gives up after a
    short while; the worker thread left in the blocked write is trio's and
    finishes once the output moves."""
    before = set(threading.enumerate())
    r, w = os.pipe()
    _fill(w)
    stream = open(w, "w")  # noqa: SIM115 - closed below
    log = Logger("wg0", VERBOSE, stream)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(drain)
            for i in range(100):
                log.verbose(f"line {i}")
            await trio.sleep(0.1)
            nursery.cancel_scope.cancel()

    started = time.monotonic()
    try:
        trio.run(main)
        assert time.monotonic() - started < 1.0 + 0.1 + 1.0
        assert _stray_threads(before) == []  # only trio's worker, still in its write
        _read_all(r)  # the output moves: the worker writes what it held, and returns
        deadline = time.monotonic() + 5
        while log.flush(0.05) is False and time.monotonic() < deadline:
            _read_all(r)
        assert log.flush(1.0)
    finally:
        os.close(r)
        with contextlib.suppress(OSError):
            stream.close()
    assert _stray_threads(before) == []


async def test_in_memory_streams_are_written_at_once() -> None:
    stream = io.StringIO()
    log = Logger("wg0", VERBOSE, stream)
    async with trio.open_nursery() as nursery:
        await nursery.start(drain)
        log.verbose("now")
        assert "now" in stream.getvalue()
        nursery.cancel_scope.cancel()


async def test_a_drain_ending_hands_its_streams_to_another(tmp_path: Path) -> None:
    """Two drains in one run (two nodes in a test): when the one serving a
    stream ends, the other takes it over; with none left, lines are written
    directly."""
    path = tmp_path / "log"
    with open(path, "w") as stream:
        log = Logger("wg0", VERBOSE, stream)
        async with trio.open_nursery() as outer:
            await outer.start(drain)
            async with trio.open_nursery() as inner:
                await inner.start(drain)
                log.verbose("one")
                inner.cancel_scope.cancel()
            assert "one" in path.read_text()
            log.verbose("two")
            await trio.sleep(0)
            with trio.fail_after(5):
                while "two" not in path.read_text():
                    await trio.sleep(0.01)
            outer.cancel_scope.cancel()
        log.verbose("three")
        assert [line.split(" ", 4)[-1] for line in path.read_text().splitlines()] == [
            "one",
            "two",
            "three",
        ]


@pytest.mark.parametrize("daemon", ["node", "wgdaemon"])
def test_the_daemons_start_the_drain(daemon: str) -> None:
    """The main trio task of `meshnode up` and of meshnode-wg runs it."""
    import inspect

    from meshnode import wgdaemon
    from meshnode.node import node

    source = inspect.getsource(node.Node.run if daemon == "node" else wgdaemon.run_daemon)
    assert "nursery.start(drain)" in source
