"""What this node knows of how to reach each member: their published candidates.

Every member publishes its own endpoint candidates (its local addresses with
its listen port; STUN and port mappings add to them later) with a version
`seq` that it bumps on every change. Others learn them first-hand from the
member's HELLO, or second-hand from PEERS messages; of two lists for one
member the higher `seq` wins, so stale second-hand news never replaces fresh
first-hand news. `heard` is when someone last heard from the member directly
(this node's clock, from the age a PEERS entry carries).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .messages import Candidate, PeerEntry

MAX_AHEAD = 86_400  # a candidate version more than a day ahead of this clock is refused


@dataclass(frozen=True, slots=True)
class PeerInfo:
    seq: int
    candidates: tuple[Candidate, ...]
    heard: float | None  # when the member was last heard from directly; None if never


class Directory:
    """Candidates by member key. Methods report whether the candidate list changed."""

    def __init__(self, entries: dict[bytes, PeerInfo] | None = None) -> None:
        self._entries: dict[bytes, PeerInfo] = dict(entries or {})

    def get(self, key: bytes) -> PeerInfo | None:
        return self._entries.get(key)

    def __contains__(self, key: bytes) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> Iterator[tuple[bytes, PeerInfo]]:
        return iter(self._entries.items())

    def heard_directly(
        self, key: bytes, seq: int, candidates: tuple[Candidate, ...], now: float
    ) -> bool:
        """A HELLO from the member itself: taken whatever its seq (its state may be new)."""
        old = self._entries.get(key)
        if old is not None and old.seq == seq and old.candidates == candidates:
            if old.heard != now:
                self._entries[key] = PeerInfo(seq, candidates, now)
            return False
        self._entries[key] = PeerInfo(seq, candidates, now)
        return old is None or old.candidates != candidates

    def merge(self, entry: PeerEntry, now: float) -> bool:
        """Second-hand news: taken if newer (higher seq), or fresher for the same seq.

        Versions are times (a member publishes max(old + 1, now)), so one far in
        the future can only be a lie meant to pin stale candidates: ignored.
        """
        if entry.seq > now + MAX_AHEAD:
            return False
        heard = None if entry.age is None else now - entry.age
        old = self._entries.get(entry.public_key)
        if old is None or entry.seq > old.seq:
            self._entries[entry.public_key] = PeerInfo(entry.seq, entry.candidates, heard)
            return old is None or old.candidates != entry.candidates
        if entry.seq == old.seq and heard is not None and (old.heard is None or heard > old.heard):
            self._entries[entry.public_key] = PeerInfo(old.seq, old.candidates, heard)
        return False

    def entry(self, key: bytes, now: float) -> PeerEntry | None:
        info = self._entries.get(key)
        if info is None:
            return None
        age = None if info.heard is None else max(0, int(now - info.heard))
        return PeerEntry(key, info.seq, info.candidates, age)

    def forget(self, key: bytes) -> None:
        self._entries.pop(key, None)
