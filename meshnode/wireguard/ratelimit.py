"""Per-source-address token buckets for handshake messages under load."""

from __future__ import annotations

PACKETS_PER_SECOND = 20
PACKETS_BURSTABLE = 5
_GC_INTERVAL = 1.0


class RateLimiter:
    """Allows each source address 20 handshakes a second, with bursts of 5
    (or `rate` and `burst`)."""

    __slots__ = ("_buckets", "_burst", "_last_gc", "_rate")

    def __init__(self, rate: float = PACKETS_PER_SECOND, burst: float = PACKETS_BURSTABLE) -> None:
        # address -> (tokens, time of the last refill)
        self._buckets: dict[object, tuple[float, float]] = {}
        self._last_gc = 0.0
        self._rate = rate
        self._burst = burst

    def allow(self, address: object, now: float) -> bool:
        if now - self._last_gc > _GC_INTERVAL:
            self._collect(now)
        bucket = self._buckets.get(address)
        if bucket is None:
            tokens = self._burst - 1.0
        else:
            tokens, last = bucket
            tokens = min(self._burst, tokens + (now - last) * self._rate)
            if tokens < 1.0:
                self._buckets[address] = (tokens, now)
                return False
            tokens -= 1.0
        self._buckets[address] = (tokens, now)
        return True

    def _collect(self, now: float) -> None:
        """Forget sources idle long enough that their bucket would be full again."""
        self._last_gc = now
        idle = self._burst / self._rate
        self._buckets = {a: b for a, b in self._buckets.items() if now - b[1] <= idle}

    def __len__(self) -> int:
        return len(self._buckets)
