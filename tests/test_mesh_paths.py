"""The per-peer path state machine: candidates, relays, probes, heartbeats, give-ups."""

from __future__ import annotations

import random

import pytest

from meshnode.mesh.paths import (
    BURST,
    DEAD_AFTER,
    HEARTBEAT,
    QUIET_GRACE,
    RETRY_INTERVAL,
    TRANSITIONS,
    TRY_TIMEOUT,
    LocalNetworks,
    Path,
    PathState,
    PathStateError,
    PathUpdate,
    Relay,
)

T = 1000.0
LOCAL = LocalNetworks.of([("192.168.1.10", 51820), ("2001:db8:1::10", 51820)])
A, B, C = ("198.51.100.7", 51820), ("192.168.1.20", 51820), ("203.0.113.9", 4500)
V6 = ("2001:db8:9::7", 51820)
R = b"r" * 32


def direct_after_relay() -> Path:
    """A session that began through the relay, then went direct to A (its probe
    answered at T + 0.1 in 20 ms)."""
    path = Path([A], LOCAL, T, relay=R)
    path.on_handshake(Relay(R), T)
    path.on_pong(A, 0.02, T + 0.1)
    return path


def test_local_networks_classify_order_and_rank_candidates() -> None:
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
    assert LOCAL.rank(B) < LOCAL.rank(V6) < LOCAL.rank(A)  # LAN, then IPv6, then IPv4


def test_without_a_relay_candidates_are_tried_in_turn_once_something_was_sent() -> None:
    path = Path([A, B, C], LOCAL, T, probing=False)
    assert path.state is PathState.TRYING and path.device == A
    assert path.deadline() is None  # idle: nothing to time out
    assert path.on_timer(T + 100) is None
    update = path.note_send(T)
    assert update is not None and update.probe == (A, B, C) and update.punch
    assert path.deadline() == T + BURST[1]
    path.on_timer(T + 0.2)
    assert path.note_send(T + 1) is None  # not re-armed
    for t in BURST[2:-1]:
        path.on_timer(T + t)
    assert BURST[-1] == TRY_TIMEOUT
    update = path.on_timer(T + TRY_TIMEOUT)  # the burst's last probes, and the next candidate
    assert update is not None and update.endpoint == B and update.probe == (A, B, C)
    assert path.on_gave_up(T + 6) == PathUpdate(endpoint=C)  # a give-up moves on at once
    assert path.on_timer(T + 11) == PathUpdate(exhausted=True)
    assert path.state is PathState.UNREACHABLE and path.label == "none"
    assert path.note_send(T + 12) is None  # not before the retry interval
    update = path.note_send(T + 11 + RETRY_INTERVAL)
    assert update is not None and update.endpoint == A and update.probe
    assert path.state is PathState.TRYING and path.deadline() is not None


def test_a_handshake_makes_the_path_work_and_says_how() -> None:
    path = Path([A, B], LOCAL, T)
    path.note_send(T)
    update = path.on_handshake(B, T + 1)
    assert update == PathUpdate(reachable=True)  # the device has that endpoint already
    assert path.state is PathState.LAN and path.endpoint == B and path.label == "lan"
    assert path.last_handshake == T + 1 and path.session
    assert path.next_heartbeat is None  # a LAN path holds no NAT mapping open
    assert path.on_handshake(B, T + 120) is None  # already reachable


def test_relay_from_the_start_then_direct_once_a_probe_answers() -> None:
    path = Path([B, A], LOCAL, T, relay=R)
    assert path.state is PathState.RELAYED and path.device == Relay(R)
    assert path.endpoint is None and path.label == "none"  # nothing went through it yet
    # the relayed handshake is the interest that starts punching
    update = path.on_handshake(Relay(R), T + 0.1)
    assert path.label == "relayed"
    assert update is not None and update.probe == (B, A) and update.punch
    assert path.on_pong(A, 0.030, T + 0.2) == PathUpdate(endpoint=A)
    assert path.state is PathState.DIRECT and path.rtt() == 0.030
    assert path.next_heartbeat == T + 0.2 + HEARTBEAT  # NAT-crossing: pinged in the session
    # a LAN path is preferred whatever its round-trip time
    assert path.on_pong(B, 0.050, T + 0.3) == PathUpdate(endpoint=B)
    assert path.state is PathState.LAN and path.next_heartbeat is None


def test_a_working_path_is_replaced_only_for_a_clear_gain() -> None:
    path = Path([A, C], LOCAL, T, relay=R)
    path.on_handshake(Relay(R), T)
    path.on_pong(A, 0.020, T + 0.1)
    assert path.on_pong(C, 0.018, T + 0.2) is None  # 10 % better: not enough
    assert path.on_pong(C, 0.010, T + 0.3) == PathUpdate(endpoint=C)  # half: switch
    assert path.on_pong(V6, 0.015, T + 0.4) == PathUpdate(endpoint=V6)  # IPv6 over IPv4


def test_a_first_handshake_through_the_relay_starts_the_direct_paths_heartbeats() -> None:
    # the member's PUNCH made its probes answer before any session: the path is
    # direct with no heartbeat; the session then starts through the relay
    path = Path([A], LOCAL, T, relay=R)
    path.on_pong(A, 0.02, T)
    assert path.state is PathState.DIRECT and path.next_heartbeat is None
    assert path.on_handshake(Relay(R), T + 0.5) == PathUpdate(endpoint=A)
    assert path.next_heartbeat == T + 0.5 + HEARTBEAT


def test_a_lan_path_is_kept_when_a_handshake_comes_through_the_relay() -> None:
    # LAN paths get no heartbeats: long after their last answer they are not
    # "quiet"; the member (restarted, say) wrote through the relay first
    path = Path([B, A], LOCAL, T, relay=R)
    path.on_handshake(B, T)
    assert path.state is PathState.LAN
    assert path.on_handshake(Relay(R), T + 200) == PathUpdate(endpoint=B)
    assert path.state is PathState.LAN and path.device == B


def test_a_quiet_path_gives_way_at_once_to_the_members_new_address() -> None:
    # the member's NAT came back on another address: its data arrives from there
    # (WireGuard roamed) while the old path has missed its heartbeat
    path = direct_after_relay()
    assert path.on_roamed(C, T + 3) == PathUpdate(endpoint=A)  # A answers: keep it
    path.on_timer(T + 0.1 + HEARTBEAT)  # a heartbeat goes to A, and is not answered
    later = T + 0.1 + HEARTBEAT + QUIET_GRACE + 0.5
    assert path.on_roamed(C, later) is None  # the device is on C already: stay there
    assert path.state is PathState.DIRECT and path.chosen == C and path.endpoint == C
    assert path.label == "direct"


def test_a_silent_direct_path_falls_back_to_the_relay_and_punches_again() -> None:
    path = direct_after_relay()
    t = T + 0.1
    while path.device != Relay(R):
        t = path.deadline() or t + 1
        update = path.on_timer(t)
        if path.device == A:
            assert update is None or update.probe == (A,)  # heartbeats to the path in use
        assert t < T + DEAD_AFTER + HEARTBEAT + 1
    assert update is not None and update.endpoint == Relay(R) and update.probe == (A,)
    assert update.punch and path.state is PathState.RELAYED
    # the member's NAT answers again (new mapping from its probes): direct again
    assert path.on_pong(A, 0.02, t + 1) == PathUpdate(endpoint=A)


def test_heartbeats_answered_cost_one_probe_a_period_and_silence_is_noticed_fast() -> None:
    path = Path([A], LOCAL, T, relay=R)
    path.on_handshake(Relay(R), T)
    path.on_pong(A, 0.02, T)
    # answered heartbeats: one probe every HEARTBEAT, nothing in between
    t = T
    for _ in range(3):
        assert path.deadline() == t + HEARTBEAT
        t += HEARTBEAT
        assert path.on_timer(t) == PathUpdate(probe=(A,))
        assert path.on_pong(A, 0.02, t + 0.02) is None
    # the path falls silent: asked again every QUIET_GRACE, then the relay
    last = t + 0.02
    sent = []
    while path.device == A:
        t = path.deadline()
        assert t is not None
        update = path.on_timer(t)
        sent.append(round(t - last, 2))
    assert update is not None and update.endpoint == Relay(R) and update.punch
    assert sent == [
        round(HEARTBEAT - 0.02, 2),
        round(HEARTBEAT - 0.02 + QUIET_GRACE, 2),
        round(HEARTBEAT - 0.02 + 2 * QUIET_GRACE, 2),
        round(HEARTBEAT - 0.02 + 3 * QUIET_GRACE, 2),
    ]
    assert t - last <= DEAD_AFTER + QUIET_GRACE


def test_an_unanswered_burst_waits_a_minute_while_the_session_lasts() -> None:
    path = Path([A], LOCAL, T, relay=R)
    path.on_handshake(Relay(R), T)
    t = T
    for offset in BURST[1:]:
        t = T + offset
        assert path.on_timer(t) == PathUpdate(probe=(A,))
    assert path.deadline() == t + RETRY_INTERVAL  # the next try, a minute on
    assert path.note_send(t + 1) is None  # not before a minute
    update = path.note_send(t + RETRY_INTERVAL)
    assert update is not None and update.probe == (A,) and update.punch
    assert path.failed_since == T  # since when direct attempts go unanswered


def test_the_member_probing_from_a_new_address_is_probed_back() -> None:
    path = Path([A], LOCAL, T, relay=R)
    assert path.on_ping_from(C, T) == PathUpdate(probe=(C,))
    assert path.on_ping_from(C, T + 1) is None  # known already
    assert path.probe_targets() == (A, C)
    update = path.hint([V6, A], T + 2)  # a PUNCH: probe everything, no PUNCH back
    assert update is not None and set(update.probe) == {A, C, V6} and not update.punch


def test_keys_zeroed_sends_a_nat_path_back_to_the_relay_but_keeps_a_lan_one() -> None:
    path = Path([A], LOCAL, T, relay=R)
    path.on_handshake(A, T)
    assert path.state is PathState.DIRECT
    assert path.on_keys_zeroed(T + 600) == PathUpdate(endpoint=Relay(R))
    lan = Path([B], LOCAL, T, relay=R)
    lan.on_handshake(B, T)
    assert lan.on_keys_zeroed(T + 600) is None and lan.state is PathState.LAN


def test_relay_coming_and_going() -> None:
    path = Path([A], LOCAL, T)
    assert path.state is PathState.TRYING
    assert path.set_relay(R, T) == PathUpdate(endpoint=Relay(R))
    assert path.state is PathState.RELAYED
    assert path.set_relay(None, T + 1) == PathUpdate(endpoint=A)
    assert path.state is PathState.TRYING
    path.on_handshake(A, T + 2)
    assert path.set_relay(R, T + 3) is None  # a direct path is kept


def test_candidates_arriving_and_leaving() -> None:
    path = Path([], LOCAL, T)
    assert path.state is PathState.UNKNOWN and path.device is None
    assert path.on_gave_up(T) is None
    assert path.set_candidates([A], T) == PathUpdate(endpoint=A)  # no probes: nothing sent yet
    assert path.state is PathState.TRYING and path.device == A
    assert path.set_candidates([], T + 1) is None
    assert path.state is PathState.UNKNOWN


def test_a_give_up_on_a_relayed_path_keeps_the_relay() -> None:
    path = Path([A], LOCAL, T, relay=R)
    path.on_handshake(Relay(R), T)
    assert path.on_gave_up(T + 90) == PathUpdate(reachable=False)
    assert path.state is PathState.RELAYED and path.device == Relay(R)


def test_the_transition_table_is_enforced() -> None:
    path = Path([A], LOCAL, T, relay=R)
    assert PathState.UNREACHABLE not in TRANSITIONS[PathState.RELAYED]
    with pytest.raises(PathStateError):
        path._go(PathState.UNREACHABLE, T)


def test_a_member_writing_through_the_relay_does_not_move_a_direct_path() -> None:
    path = direct_after_relay()
    assert path.on_roamed(Relay(R), T + 0.2) == PathUpdate(endpoint=A)
    assert path.state is PathState.DIRECT and path.device == A


def test_a_handshake_through_the_relay_does_not_move_a_direct_path() -> None:
    # the member's own path fell back to the relay (its address changed): the
    # device roamed to the relay on the handshake, and the direct path must take
    # it back, or status says direct while the traffic goes relayed
    path = direct_after_relay()
    assert path.on_handshake(Relay(R), T + 0.2) == PathUpdate(endpoint=A)
    assert path.state is PathState.DIRECT and path.device == A and path.endpoint == A
    # long after the direct path last answered, the member's handshake through
    # the relay means the direct path is gone: the relay carries, punching starts
    later = T + 0.1 + HEARTBEAT + 2
    update = path.on_handshake(Relay(R), later)
    assert update is not None and A in update.probe and update.punch  # device: already there
    assert path.state is PathState.RELAYED and path.device == Relay(R)
    assert path.label == "relayed"


def test_a_relay_appearing_for_an_unreachable_member_is_taken() -> None:
    path = Path([A], LOCAL, T, probing=False)
    path.note_send(T)
    for t in (*BURST[1:], TRY_TIMEOUT):
        path.on_timer(T + t)
    assert path.state is PathState.UNREACHABLE
    assert path.set_relay(R, T + 10) == PathUpdate(endpoint=Relay(R))
    assert path.state is PathState.RELAYED


def test_a_relayed_session_retries_direct_by_its_own_timer() -> None:
    path = Path([A], LOCAL, T, relay=R)
    path.on_handshake(Relay(R), T)
    t = T
    while (due := path.deadline()) is not None and due < T + RETRY_INTERVAL:
        t = due
        path.on_timer(t)
    assert due is not None and due >= T + RETRY_INTERVAL  # the retry is a timer of its own
    update = path.on_timer(due)
    assert update is not None and update.probe == (A,) and update.punch


def test_a_punch_starts_a_burst_at_most_every_few_seconds() -> None:
    path = Path([A], LOCAL, T, relay=R)
    assert path.hint([C], T) is not None
    for t in BURST[1:]:
        path.on_timer(T + t)
    assert path.hint([C], T + 6) is None  # a member asking again and again gets one burst
    assert path.hint([C], T + 20) is not None


def test_policy_only_keeps_the_relay() -> None:
    path = Path([A], LOCAL, T, relay=R, relay_only=True)
    path.on_handshake(Relay(R), T)
    assert path.on_pong(A, 0.01, T + 1) is None and path.state is PathState.RELAYED
    assert path.on_roamed(A, T + 2) == PathUpdate(endpoint=Relay(R))


def test_any_sequence_of_inputs_keeps_the_machine_consistent() -> None:
    """A random walk over every input from every state: no PathStateError, and
    the endpoint the device was told is always where the path says to send."""
    rng = random.Random(7)
    hosts = [A, B, C, V6]
    for walk in range(300):
        path = Path(rng.sample(hosts, rng.randint(0, 3)), LOCAL, T, relay=rng.choice([None, R]))
        now = T
        for _ in range(60):
            now += rng.choice([0.1, 1, 5, 17, 61])
            op = rng.randrange(12)
            host = rng.choice(hosts)
            if op == 0:
                path.set_candidates(rng.sample(hosts, rng.randint(0, 4)), now)
            elif op == 1:
                path.set_relay(rng.choice([None, R, b"s" * 32]), now)
            elif op == 2:
                path.note_send(now)
            elif op == 3:
                path.on_timer(now)
            elif op == 4:
                path.on_pong(host, rng.random() / 10, now)
            elif op == 5:
                path.on_ping_from(host, now)
            elif op == 6:
                path.hint([host], now)
            elif op == 7:
                path.on_handshake(rng.choice([None, host, Relay(R)]), now)
            elif op == 8:
                path.on_roamed(rng.choice([host, Relay(R)]), now)
            elif op == 9:
                path.on_gave_up(now)
            elif op == 10:
                path.on_keys_zeroed(now)
            else:
                path.punch(now)
            path.on_timer(now)  # what is due is done: no deadline stays in the past
            due = path.deadline()
            assert due is None or due > now, (walk, path.state, due, now)
            if path.chosen is not None:
                assert path.direct or path.relay_only, (walk, path.state)
