"""Reusable buffers the device writes into, so the data path allocates nothing
per packet: an Outbox of datagrams to send and an Inbox of inner packets to
deliver, each packed one after another in one bytearray.

The runtime drains them after each batch and clears them. Views of the buffer
must not be kept past `clear()`: a full buffer is replaced by a larger one.
"""

from __future__ import annotations

from .endpoint import Endpoint


class _Arena:
    __slots__ = ("buffer", "records", "used", "view")

    def __init__(self, capacity: int = 1 << 18) -> None:
        self.buffer = bytearray(capacity)
        self.view = memoryview(self.buffer)
        self.records: list = []
        self.used = 0

    def reserve(self, size: int) -> int:
        """An offset with room for size bytes (the caller then records them)."""
        if self.used + size > len(self.buffer):
            capacity = max(self.used + size, 2 * len(self.buffer))
            bigger = bytearray(capacity)
            bigger[: self.used] = self.buffer[: self.used]
            self.buffer = bigger
            self.view = memoryview(bigger)
        return self.used

    def clear(self) -> None:
        self.records.clear()
        self.used = 0

    def __len__(self) -> int:
        return len(self.records)


class Outbox(_Arena):
    """Datagrams to send: records of (offset, size, endpoint) into `buffer`."""

    __slots__ = ()

    def commit(self, offset: int, size: int, endpoint: Endpoint) -> None:
        self.records.append((offset, size, endpoint))
        self.used = offset + size

    def add(self, datagram: bytes, endpoint: Endpoint) -> None:
        size = len(datagram)
        offset = self.reserve(size)
        self.buffer[offset : offset + size] = datagram
        self.commit(offset, size, endpoint)

    def take(self) -> list[tuple[bytes, Endpoint]]:
        """Copies of the datagrams, then clear (for tests and slow paths)."""
        view = self.view
        out = [(bytes(view[o : o + n]), ep) for o, n, ep in self.records]
        self.clear()
        return out


class Inbox(_Arena):
    """Inner packets to deliver: records of (offset, length) into `buffer`."""

    __slots__ = ()

    def add(self, packet: bytes) -> None:
        size = len(packet)
        offset = self.reserve(size)
        self.buffer[offset : offset + size] = packet
        self.records.append((offset, size))
        self.used = offset + size

    def take(self) -> list[bytes]:
        view = self.view
        out = [bytes(view[o : o + n]) for o, n in self.records]
        self.clear()
        return out
