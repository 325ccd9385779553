"""Logging in wireguard-go's format, levelled by LOG_LEVEL.

`LOG_LEVEL=verbose` (or `debug`) prints everything, `error` only errors (the
default), `silent` nothing: the levels wireguard-go users know.

Writing never blocks the caller (the event loop, the data path): a line to a
real file or pipe goes into a bounded in-memory queue that a writer thread
drains with ordinary blocking writes. When the output is stalled (journald
under pressure, a terminal on hold, a pipe nobody reads) and the queue is
full, further lines are dropped and counted; once the output moves again the
writer says how many were lost. In-memory streams (StringIO) are written at
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

SILENT, ERROR, VERBOSE = 0, 1, 2
LEVELS = {"silent": SILENT, "error": ERROR, "verbose": VERBOSE, "debug": VERBOSE}
QUEUE_LINES = 4096  # lines waiting for a stalled output before new ones are dropped
_EXIT_FLUSH_SECONDS = 1.0


def level_from_env(default: int = ERROR) -> int:
    return LEVELS.get(os.environ.get("LOG_LEVEL", "").lower(), default)


class LineWriter:
    """A bounded queue of lines and the thread that writes them to one stream."""

    def __init__(self, stream: TextIO, capacity: int = QUEUE_LINES) -> None:
        self.stream = stream
        self.capacity = capacity
        self.dropped = 0  # lines lost to a full queue (written by the callers only)
        self._reported = 0  # of those, how many the writer has told about
        self._lines: deque[str] = deque()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._pid = -1
        self._thread: threading.Thread | None = None

    def put(self, line: str) -> None:
        """Queue a line; never blocks (drops and counts it when the queue is full)."""
        if self._pid != os.getpid():  # first use, or a forked child: threads do not survive
            self._start()
        if len(self._lines) >= self.capacity:
            self.dropped += 1
            return
        self._idle.clear()
        self._lines.append(line)
        self._wake.set()

    def _start(self) -> None:
        self._pid = os.getpid()
        self._lines.clear()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._run, name="log writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        lines, wake, idle = self._lines, self._wake, self._idle
        while True:
            wake.wait()
            wake.clear()
            while lines:
                dropped = self.dropped
                if dropped != self._reported:
                    self._emit(f"({dropped - self._reported} log lines dropped: output stalled)\n")
                    self._reported = dropped
                self._emit(lines.popleft())
            with contextlib.suppress(OSError, ValueError):
                self.stream.flush()
            if not lines:
                idle.set()
                if lines:  # a line came in between: go on
                    idle.clear()
                    wake.set()

    def _emit(self, text: str) -> None:
        # a closed or broken log stream must not stop anything
        with contextlib.suppress(OSError, ValueError):
            self.stream.write(text)

    def flush(self, timeout: float) -> bool:
        """Wait up to timeout for the queue to be written; False if it was not."""
        if self._thread is None or self._pid != os.getpid():
            return True
        return self._idle.wait(timeout)


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
