"""Logging in wireguard-go's format, levelled by LOG_LEVEL.

`LOG_LEVEL=verbose` (or `debug`) prints everything, `error` only errors (the
default), `silent` nothing: the levels wireguard-go users know.

Writing never blocks the event loop or the data path. The main trio task of a
daemon runs `drain()` in its nursery; while it runs, a line to a real file or
pipe goes into a bounded in-memory queue, and a task of the drain writes the
queue out with ordinary blocking writes in trio worker threads
(`trio.to_thread.run_sync`). When the output is stalled (journald under
pressure, a terminal on hold, a pipe nobody reads) and the queue is full,
further lines are dropped and counted; once the output moves again a line says
how many were lost, where they were lost. Cancelled with its nursery, the
drain writes what is queued, for at most a second: a stalled output cannot
hold up the exit (what is left goes out with the next line, or at exit).

Without a drain (before the trio loop starts, after it ends, one-shot commands)
lines are written directly. In-memory streams (StringIO) are always written at
once, as they cannot block.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
import time
from collections import deque
from typing import TextIO

import trio

SILENT, ERROR, VERBOSE = 0, 1, 2
LEVELS = {"silent": SILENT, "error": ERROR, "verbose": VERBOSE, "debug": VERBOSE}
QUEUE_LINES = 4096  # lines waiting (besides those being written) before new ones are dropped
_EXIT_FLUSH_SECONDS = 1.0


def level_from_env(default: int = ERROR) -> int:
    return LEVELS.get(os.environ.get("LOG_LEVEL", "").lower(), default)


class _Gap:
    """A place in the queue where lines were dropped, and how many."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 1

    def text(self) -> str:
        return f"({self.count} log lines dropped: output stalled)\n"


class _Drain:
    """A running `drain()`: the nursery its writers' tasks live in."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.token = trio.lowlevel.current_trio_token()
        self.thread = threading.get_ident()


_drains: list[_Drain] = []  # running, innermost last


def _current_drain() -> _Drain | None:
    """The drain running in this thread's trio run, if any."""
    if not _drains:
        return None
    ident = threading.get_ident()
    try:
        token = trio.lowlevel.current_trio_token()
    except RuntimeError:  # not in a trio run
        return None
    for running in reversed(_drains):
        if running.thread == ident and running.token is token:
            return running
    return None


class LineWriter:
    """The lines bound for one stream: written at once, or, while a drain
    serves the stream, queued for the drain's task (`run`)."""

    def __init__(self, stream: TextIO, capacity: int = QUEUE_LINES) -> None:
        self.stream = stream
        self.capacity = capacity
        self.dropped = 0  # lines lost to a full queue
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._items: deque[str | _Gap] = deque()
        self._queue_lock = threading.Lock()  # the queue, between callers and writes
        self._io_lock = threading.Lock()  # the stream: one write at a time, in order
        self._drain: _Drain | None = None  # while set, lines are queued for its task
        self._wake: trio.Event | None = None

    def put(self, line: str) -> None:
        """Write or queue a line; never blocks while a drain serves the stream."""
        if self._pid != os.getpid():  # a forked child: the parent's state is not its own
            self._reset()
        serving = self._drain
        if serving is None:
            serving = _current_drain()
            if serving is None or not self._adopt(serving):
                self._write_now(line)
                return
        if not self._enqueue(line):
            return
        if threading.get_ident() == serving.thread:
            if self._wake is not None:
                self._wake.set()
        else:
            with contextlib.suppress(trio.RunFinishedError):
                serving.token.run_sync_soon(self._poke)

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _adopt(self, serving: _Drain) -> bool:
        try:
            serving.nursery.start_soon(self.run, name=f"log writer for {self.stream!r}")
        except RuntimeError:  # the drain is over
            return False
        self._drain = serving
        self._wake = trio.Event()
        return True

    async def run(self) -> None:
        """The drain's task for this stream: write what is queued until
        cancelled, then what is left for at most _EXIT_FLUSH_SECONDS."""
        limiter = trio.CapacityLimiter(1)  # one write at a time, an abandoned one included
        try:
            while True:
                assert self._wake is not None
                await self._wake.wait()
                self._wake = trio.Event()
                await self._write_in_worker(limiter)
        finally:
            with trio.CancelScope(deadline=trio.current_time() + _EXIT_FLUSH_SECONDS,
                                  shield=True):  # fmt: skip
                while True:
                    await self._write_in_worker(limiter)  # waits for an abandoned one
                    if not self._items:
                        break
            self._drain = None
            self._wake = None

    async def _write_in_worker(self, limiter: trio.CapacityLimiter) -> None:
        # a write stuck on a stalled output is abandoned when cancelled: trio's
        # worker thread finishes it once the output moves (the limiter is held
        # until then)
        await trio.to_thread.run_sync(self._write_queued, abandon_on_cancel=True,
                                      limiter=limiter, thread_name="log writer")  # fmt: skip

    def _enqueue(self, line: str) -> bool:
        """Queue a line; False if it was dropped, the queue being full."""
        with self._queue_lock:
            items = self._items
            if len(items) < self.capacity:
                items.append(line)
                return True
            self.dropped += 1
            if items and isinstance(items[-1], _Gap):
                items[-1].count += 1
            else:
                items.append(_Gap())
            return False

    def _take(self) -> list[str | _Gap]:
        with self._queue_lock:
            items = list(self._items)
            self._items.clear()
        return items

    def _write_queued(self) -> None:
        """Write the queue until it is empty (blocking: in a worker thread)."""
        with self._io_lock:
            self._write_queued_locked()

    def _write_now(self, line: str) -> None:
        # in order after anything still queued; a write abandoned at the end of
        # a drain may still hold the stream (stalled): then queue the line for it
        if not self._io_lock.acquire(timeout=_EXIT_FLUSH_SECONDS):
            self._enqueue(line)
            return
        try:
            self._emit([*self._take(), line])
        finally:
            self._io_lock.release()

    def _emit(self, items: list[str | _Gap]) -> None:
        text = "".join(item if isinstance(item, str) else item.text() for item in items)
        # a closed or broken log stream must not stop anything
        with contextlib.suppress(OSError, ValueError):
            self.stream.write(text)
        with contextlib.suppress(OSError, ValueError):
            self.stream.flush()

    def flush(self, timeout: float) -> bool:
        """Wait up to timeout for the queue to be written; False if it was not.
        In the trio thread a drain writes from, this cannot wait (the drain
        needs the loop): it only says whether the queue is written."""
        if self._pid != os.getpid():
            return True
        serving = self._drain
        if serving is not None and serving.thread == threading.get_ident():
            return not self._items and not self._io_lock.locked()
        deadline = time.monotonic() + timeout
        if serving is not None:  # another thread's drain writes: wait for it
            while time.monotonic() < deadline:
                if not self._items and not self._io_lock.locked():
                    return True
                time.sleep(0.005)
            return False
        if not self._io_lock.acquire(timeout=timeout):
            return False
        try:
            self._write_queued_locked()
        finally:
            self._io_lock.release()
        return True

    def _write_queued_locked(self) -> None:
        while items := self._take():
            self._emit(items)


async def drain(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Write the process's queued log lines while this task lives: start it in
    the nursery of the main trio task (`await nursery.start(drain)`); it stops
    when cancelled, having written what is queued (for at most a second).
    Every file or pipe logged to from this trio run is then served by a task
    of its own in the drain's nursery, whose blocking writes run in trio
    worker threads."""
    async with trio.open_nursery() as nursery:
        running = _Drain(nursery)
        _drains.append(running)
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            _drains.remove(running)


_writers: dict[int, LineWriter] = {}
_writers_lock = threading.Lock()


def writer_for(stream: TextIO) -> LineWriter | None:
    """The shared writer of a stream backed by a file descriptor (None for
    in-memory streams, which are written directly)."""
    try:
        stream.fileno()
    except (OSError, ValueError, AttributeError):
        return None
    with _writers_lock:
        writer = _writers.get(id(stream))
        if writer is None or writer.stream is not stream:
            writer = _writers[id(stream)] = LineWriter(stream)
    return writer


@atexit.register
def _flush_at_exit() -> None:
    """What a drain left queued (its output stalled), if the output moved since."""
    for writer in list(_writers.values()):
        writer.flush(_EXIT_FLUSH_SECONDS)


class Logger:
    def __init__(self, interface: str, level: int, stream: TextIO | None = None) -> None:
        self.prefix = f"({interface}) "
        self.level = level
        self.stream = stream or sys.stdout
        self._writer = writer_for(self.stream)

    @property
    def verbose_enabled(self) -> bool:
        return self.level >= VERBOSE

    @property
    def dropped(self) -> int:
        """Lines lost because the output was stalled (shared by the stream's loggers)."""
        return 0 if self._writer is None else self._writer.dropped

    def _write(self, tag: str, message: str) -> None:
        stamp = time.strftime("%Y/%m/%d %H:%M:%S")
        line = f"{tag}: {self.prefix}{stamp} {message}\n"
        if self._writer is not None:
            self._writer.put(line)
            return
        try:
            self.stream.write(line)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed or full log stream must not stop the tunnel

    def flush(self, timeout: float = 1.0) -> bool:
        """Wait up to timeout until every queued line is written."""
        return True if self._writer is None else self._writer.flush(timeout)

    def verbose(self, message: str) -> None:
        if self.level >= VERBOSE:
            self._write("DEBUG", message)

    def error(self, message: str) -> None:
        if self.level >= ERROR:
            self._write("ERROR", message)
