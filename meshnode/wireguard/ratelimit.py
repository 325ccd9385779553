"""Per-source-address token buckets for handshake messages under load."""

from __future__ import annotations

PACKETS_PER_SECOND = 20
PACKETS_BURSTABLE = 5
_GC_INTERVAL = 1.0


class RateLimiter:
    """Allows each source address 20 handshakes a second, with bursts of 5."""

    __slots__ = ("_buckets", "_last_gc")

    def __init__(self) -> None:
        # address -> (tokens, time of the last refill)
        self._buckets: dict[object, tuple[float, float]] = {}
        self._last_gc = 0.0

    def allow(self, address: object, now: float) -> bool:
        if now - self._last_gc > _GC_INTERVAL:
            self._collect(now)
        bucket = self._buckets.get(address)
        if bucket is None:
            tokens = PACKETS_BURSTABLE - 1.0
        else:
            tokens, last = bucket
            tokens = min(PACKETS_BURSTABLE, tokens + (now - last) * PACKETS_PER_SECOND)
            if tokens < 1.0:
                self._buckets[address] = (tokens, now)
                return False
            tokens -= 1.0
        self._buckets[address] = (tokens, now)
        return True

    def _collect(self, now: float) -> None:
        """Forget sources idle long enough that their bucket would be full again."""
        self._last_gc = now
        idle = PACKETS_BURSTABLE / PACKETS_PER_SECOND
        self._buckets = {a: b for a, b in self._buckets.items() if now - b[1] <= idle}

    def __len__(self) -> int:
        return len(self._buckets)
