"""The per-peer path state machine: candidates in turn, handshakes, give-ups."""

from __future__ import annotations

import pytest

from meshnode.mesh.paths import (
    RETRY_INTERVAL,
    TRANSITIONS,
    TRY_TIMEOUT,
    LocalNetworks,
    Path,
    PathState,
    PathStateError,
    PathUpdate,
)

T = 1000.0
LOCAL = LocalNetworks.of([("192.168.1.10", 51820), ("2001:db8:1::10", 51820)])
A, B, C = ("198.51.100.7", 51820), ("192.168.1.20", 51820), ("203.0.113.9", 4500)


def test_local_networks_classify_and_order_candidates() -> None:
    assert LOCAL.classify("192.168.1.20") is PathState.LAN
    assert LOCAL.classify("10.9.9.9") is PathState.LAN  # private
    assert LOCAL.classify("fe80::1") is PathState.LAN
    assert LOCAL.classify("2001:db8:1::99") is PathState.LAN  # same /64 as ours
    assert LOCAL.classify("2001:db8:2::99") is PathState.DIRECT
    assert LOCAL.classify("198.51.100.7") is PathState.DIRECT
    assert LOCAL.classify("hub.example.net") is PathState.DIRECT
    assert LOCAL.order([A, B, C]) == (B, A, C)  # same subnet first, else as published
    assert LocalNetworks().order([A, B]) == (A, B)
    assert LocalNetworks.of([("name.example", 1)]).networks == ()


def test_candidates_are_tried_in_turn_once_something_was_sent() -> None:
    path = Path([A, B, C], T)
    assert path.state is PathState.TRYING and path.endpoint == A
    assert path.deadline() is None  # idle: nothing to time out
    assert path.on_timer(T + 100) is None
    assert path.note_send(T) is None and path.deadline() == T + TRY_TIMEOUT
    assert path.note_send(T + 1) is None and path.deadline() == T + TRY_TIMEOUT  # not re-armed
    assert path.on_timer(T + 4) is None
    assert path.on_timer(T + 5) == PathUpdate(endpoint=B)
    assert path.on_gave_up(T + 6) == PathUpdate(endpoint=C)  # a give-up moves on at once
    assert path.on_timer(T + 11) == PathUpdate(exhausted=True)
    assert path.state is PathState.UNREACHABLE and path.label == "none"
    assert path.note_send(T + 12) is None  # not before the retry interval
    assert path.note_send(T + 11 + RETRY_INTERVAL) == PathUpdate(endpoint=A)
    assert path.state is PathState.TRYING and path.deadline() is not None


def test_a_handshake_makes_the_path_work_and_says_how() -> None:
    path = Path([A, B], T)
    path.note_send(T)
    update = path.on_handshake(B, LOCAL, T + 1)
    assert update == PathUpdate(reachable=True)
    assert path.state is PathState.LAN and path.endpoint == B and path.label == "lan"
    assert path.deadline() is None and path.last_handshake == T + 1 and path.session
    assert path.on_handshake(B, LOCAL, T + 120) == PathUpdate()  # already reachable
    assert path.on_roamed(("203.0.113.50", 40000), LOCAL, T + 130) == PathUpdate()
    assert path.state is PathState.DIRECT and path.endpoint == ("203.0.113.50", 40000)
    path.on_keys_zeroed()
    assert not path.session and path.state is PathState.DIRECT
    # new candidates do not disturb a path that works
    assert path.set_candidates([C], T + 140) is None and path.endpoint[1] == 40000
    # until it fails: then the published candidates are tried again
    assert path.on_gave_up(T + 200) == PathUpdate(endpoint=C, reachable=False)
    assert path.state is PathState.TRYING and path.deadline() == T + 200 + TRY_TIMEOUT


def test_a_handshake_without_an_endpoint_keeps_the_one_in_use() -> None:
    path = Path([A], T)
    assert path.on_handshake(None, LOCAL, T) == PathUpdate(reachable=True)
    assert path.endpoint == A and path.state is PathState.DIRECT
    empty = Path([], T)
    assert empty.state is PathState.UNKNOWN and empty.endpoint is None
    assert empty.on_handshake(None, LOCAL, T).reachable is True
    assert empty.state is PathState.DIRECT
    assert empty.on_gave_up(T + 1) == PathUpdate(reachable=False)
    assert empty.state is PathState.UNKNOWN


def test_candidates_arriving_and_leaving() -> None:
    path = Path([], T)
    assert path.note_send(T) is None and path.on_gave_up(T) is None
    assert path.set_candidates([A], T) == PathUpdate(endpoint=A)
    assert path.deadline() is None
    path.note_send(T + 1)
    assert path.set_candidates([A, B], T + 2) is None  # same first: nothing to reconfigure
    assert path.deadline() == T + 2 + TRY_TIMEOUT  # still armed
    assert path.set_candidates([A, B], T + 2) is None
    assert path.set_candidates([], T + 3) is None and path.state is PathState.UNKNOWN
    path = Path([A], T)
    path.note_send(T)
    path.on_timer(T + TRY_TIMEOUT)
    assert path.state is PathState.UNREACHABLE
    assert path.set_candidates([B], T + 7) == PathUpdate(endpoint=B)  # fresh news: try now
    assert path.deadline() == T + 7 + TRY_TIMEOUT


def test_the_transition_table_is_enforced() -> None:
    path = Path([A], T)
    path._go(PathState.UNREACHABLE, T)
    with pytest.raises(PathStateError):
        path._go(PathState.UNREACHABLE, T)
    assert all(state in TRANSITIONS for state in PathState)
    assert PathState.UNREACHABLE not in TRANSITIONS[PathState.LAN]
