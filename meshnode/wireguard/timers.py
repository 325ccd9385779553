"""Deadlines for every peer's timers, with one "next deadline" for the device.

Each peer has five timers (as in wireguard-go's timers.go). Setting one is a
float store in the peer, cheap enough to do per packet; the device's heap
holds at most one entry per timer that is no later than its deadline, and is
corrected lazily when that entry comes up. The runtime asks `next_deadline()`
and sleeps exactly until then.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections.abc import Iterator
from typing import Protocol


class Timer(enum.IntEnum):
    RETRANSMIT_HANDSHAKE = 0
    SEND_KEEPALIVE = 1
    NEW_HANDSHAKE = 2
    ZERO_KEY_MATERIAL = 3
    PERSISTENT_KEEPALIVE = 4


TIMER_COUNT = len(Timer)


class HasTimers(Protocol):
    deadlines: list[float | None]
    queued: list[float | None]


class TimerQueue:
    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, HasTimers, int]] = []
        self._seq = itertools.count()

    def set(self, owner: HasTimers, timer: int, when: float) -> None:
        owner.deadlines[timer] = when
        queued = owner.queued[timer]
        if queued is None or queued > when:
            owner.queued[timer] = when
            heapq.heappush(self._heap, (when, next(self._seq), owner, timer))

    @staticmethod
    def cancel(owner: HasTimers, timer: int) -> None:
        owner.deadlines[timer] = None

    @staticmethod
    def pending(owner: HasTimers, timer: int) -> bool:
        return owner.deadlines[timer] is not None

    def _settle_top(self) -> tuple[float, int, HasTimers, int] | None:
        """Drop or move heap entries until the top one is a live, exact deadline."""
        heap = self._heap
        while heap:
            when, _, owner, timer = entry = heap[0]
            if owner.queued[timer] != when:
                heapq.heappop(heap)  # superseded by an earlier entry
                continue
            deadline = owner.deadlines[timer]
            if deadline is None:
                heapq.heappop(heap)
                owner.queued[timer] = None
                continue
            if deadline > when:
                owner.queued[timer] = deadline
                heapq.heapreplace(heap, (deadline, next(self._seq), owner, timer))
                continue
            return entry
        return None

    def next_deadline(self) -> float | None:
        top = self._settle_top()
        return None if top is None else top[0]

    def expired(self, now: float) -> Iterator[tuple[HasTimers, int]]:
        """Yield (owner, timer) for each deadline at or before now, clearing it first."""
        while True:
            top = self._settle_top()
            if top is None or top[0] > now:
                return
            _, _, owner, timer = heapq.heappop(self._heap)
            owner.queued[timer] = None
            owner.deadlines[timer] = None
            yield owner, timer
