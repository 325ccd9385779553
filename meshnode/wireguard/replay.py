"""The sliding replay window for transport counters (RFC 6479 style).

A ring of 128 64-bit blocks; one block is always being cleared ahead of the
newest counter, so the window holds 127 * 64 = 8128 counters, exactly as
wireguard-go and the Linux kernel do.
"""

from __future__ import annotations

_BLOCK_BIT_LOG = 6
_BLOCK_BITS = 1 << _BLOCK_BIT_LOG
_RING_BLOCKS = 1 << 7
WINDOW_SIZE = (_RING_BLOCKS - 1) * _BLOCK_BITS
_BLOCK_MASK = _RING_BLOCKS - 1
_BIT_MASK = _BLOCK_BITS - 1


class ReplayWindow:
    __slots__ = ("_last", "_ring")

    def __init__(self) -> None:
        self._last = 0
        self._ring = [0] * _RING_BLOCKS

    def accept(self, counter: int, limit: int) -> bool:
        """Record counter and tell whether it is new, inside the window, and below limit."""
        if counter >= limit:
            return False
        ring = self._ring
        index_block = counter >> _BLOCK_BIT_LOG
        last = self._last
        if counter > last:
            # Moving forward: blocks between are cleared, so the bit is new.
            current = last >> _BLOCK_BIT_LOG
            if index_block != current:
                diff = min(index_block - current, _RING_BLOCKS)
                for i in range(current + 1, current + diff + 1):
                    ring[i & _BLOCK_MASK] = 0
            self._last = counter
            ring[index_block & _BLOCK_MASK] |= 1 << (counter & _BIT_MASK)
            return True
        if last - counter > WINDOW_SIZE:
            return False
        index_block &= _BLOCK_MASK
        bit = 1 << (counter & _BIT_MASK)
        old = ring[index_block]
        if old & bit:
            return False
        ring[index_block] = old | bit
        return True
