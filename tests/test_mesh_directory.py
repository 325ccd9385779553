"""What a node knows of members' candidates: first-hand beats all, then higher versions."""

from __future__ import annotations

from meshnode.mesh.directory import MAX_AHEAD, Directory, PeerInfo
from meshnode.mesh.messages import PeerEntry

K = b"\x01" * 32
NOW = 1_700_000_000.0
OLD, NEW = (("192.0.2.1", 51820),), (("192.0.2.2", 51820),)


def test_second_hand_news_needs_a_higher_version() -> None:
    d = Directory()
    assert d.merge(PeerEntry(K, 5, OLD, 10), NOW) is True
    assert d.get(K) == PeerInfo(5, OLD, NOW - 10)
    assert d.merge(PeerEntry(K, 4, NEW, 0), NOW) is False and d.get(K).candidates == OLD
    assert d.merge(PeerEntry(K, 5, OLD, 2), NOW) is False  # same news, fresher
    assert d.get(K).heard == NOW - 2
    assert d.merge(PeerEntry(K, 5, OLD, 50), NOW) is False and d.get(K).heard == NOW - 2
    assert d.merge(PeerEntry(K, 6, OLD, None), NOW) is False  # newer, same list
    assert d.get(K) == PeerInfo(6, OLD, None)
    assert d.merge(PeerEntry(K, 7, NEW, None), NOW) is True
    assert d.entry(K, NOW) == PeerEntry(K, 7, NEW, None)
    assert d.merge(PeerEntry(K, int(NOW) + MAX_AHEAD + 1, OLD, 0), NOW) is False


def test_first_hand_news_always_wins() -> None:
    d = Directory({K: PeerInfo(9, OLD, None)})
    assert d.heard_directly(K, 1, NEW, NOW) is True  # its state was reset: still its word
    assert d.get(K) == PeerInfo(1, NEW, NOW)
    assert d.heard_directly(K, 1, NEW, NOW + 30) is False and d.get(K).heard == NOW + 30
    assert d.entry(K, NOW + 40).age == 10
    assert K in d and len(d) == 1 and dict(d.items()) == {K: PeerInfo(1, NEW, NOW + 30)}
    d.forget(K)
    assert d.get(K) is None and d.entry(K, NOW) is None
