"""How this node reaches one other member: an explicit per-peer path state machine.

In the style of h11's `_state.py`: every state is named, every allowed
transition is listed in `TRANSITIONS`, and a move the table does not allow
raises `PathStateError` (a bug, never a peer's doing). The agent feeds a
`Path` what it sees (the member's published candidates, the relay it may
use, that it sent the member something, WireGuard's device events, probe
answers, the time) and gets back a `PathUpdate`: the device endpoint to
configure if it changed, the candidates to probe now, and whether the member
became reachable or unreachable.

    UNKNOWN      no candidate and no relay: nothing to try (the device may still
                 learn an endpoint when the member writes first)
    TRYING       no relay: the device's endpoint is one candidate; once the agent
                 sends the member something, a handshake must complete within
                 TRY_TIMEOUT or the next candidate is tried
    RELAYED      the device's endpoint is the relay member; probes look for a
                 direct path (a burst when there is interest, again every
                 RETRY_INTERVAL while a session lasts)
    LAN          a direct path to a private or same-subnet address answered
    DIRECT       a direct path to any other address answered
    UNREACHABLE  no relay, and every candidate was tried without an answer;
                 tried again after RETRY_INTERVAL, or at once on new candidates

A direct path is confirmed by an authenticated probe answer (a pong, with
its round-trip time) or by a WireGuard handshake from that address. While a
session lasts, a NAT-crossing direct path is pinged every HEARTBEAT seconds
(which also holds the NAT mappings open); without an answer for DEAD_AFTER
it is dropped for the relay and probing starts again. Among working direct
paths the choice prefers LAN, then IPv6, then the lowest round-trip time,
and moves only for a clear gain.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import NamedTuple

HostPort = tuple[str, int]

TRY_TIMEOUT = 5.0
RETRY_INTERVAL = 60.0
MAX_RETRY_INTERVAL = 1800.0  # unanswered retries back off, doubling, up to this
BURST = (0.0, 0.2, 0.5, 1.0, 2.0, 3.5, 5.0)  # probe times after a punch starts
RETRY_BURST = (0.0, 1.0, 3.0)  # the periodic retries of a relayed path: shorter
HEARTBEAT = 5.0
QUIET_GRACE = 1.5  # a heartbeat unanswered this long is asked again, as often
DEAD_AFTER = 9.0  # a heartbeat and two more probes unanswered: the relay takes over
MAX_REFLEXIVE = 4  # addresses the peer's probes came from, kept as extra candidates
MAX_ALIVE = 8  # answering addresses remembered per member
HINT_INTERVAL = 10.0  # a member's PUNCH starts a burst at most this often
CLEAR_GAIN = 0.7  # a new path must be this much faster (and 2 ms) to replace a working one


class Relay(NamedTuple):
    """A device endpoint through a relay member (its public key)."""

    key: bytes


Target = HostPort | Relay


class PathState(enum.Enum):
    UNKNOWN = "unknown"
    TRYING = "trying"
    RELAYED = "relayed"
    LAN = "lan"
    DIRECT = "direct"
    UNREACHABLE = "unreachable"


WORKING = frozenset({PathState.LAN, PathState.DIRECT, PathState.RELAYED})
_DIRECT = frozenset({PathState.LAN, PathState.DIRECT})
_ALL = frozenset(PathState)

TRANSITIONS: dict[PathState, frozenset[PathState]] = {
    PathState.UNKNOWN: _ALL - {PathState.UNREACHABLE},
    PathState.TRYING: _ALL,
    PathState.RELAYED: _ALL - {PathState.UNREACHABLE},
    PathState.LAN: _ALL - {PathState.UNREACHABLE},
    PathState.DIRECT: _ALL - {PathState.UNREACHABLE},
    PathState.UNREACHABLE: _ALL,  # a relay can appear for a member nothing reached
}


class PathStateError(RuntimeError):
    """A transition the table does not allow: a bug in the agent."""


class PathUpdate(NamedTuple):
    endpoint: Target | None = None  # configure the device's endpoint to this
    reachable: bool | None = None  # True: became reachable; False: stopped answering
    exhausted: bool = False  # every candidate failed: ask the mesh for fresher ones
    probe: tuple[HostPort, ...] = ()  # send a ping to each of these now
    punch: bool = False  # a burst started: ask the member to probe back (PUNCH)


# Addresses that only make sense inside a site: RFC 1918, loopback and link-local,
# unique local IPv6. (ipaddress's is_private also counts documentation ranges.)
_SITE = tuple(
    ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
        "::1/128",
    )
)


@lru_cache(maxsize=65536)
def _ip(host: str) -> IPv4Address | IPv6Address | None:
    """The address of a candidate host, None for a DNS name (cached: hosts repeat a lot)."""
    try:
        return ip_address(host)
    except ValueError:
        return None


@dataclass(frozen=True)
class LocalNetworks:
    """This node's own addresses, widened to /24 and /64: 'the same subnet' for LAN paths."""

    networks: tuple[IPv4Network | IPv6Network, ...] = ()

    @classmethod
    def of(cls, candidates: Iterable[HostPort]) -> LocalNetworks:
        nets = []
        for host, _port in candidates:
            ip = _ip(host)
            if ip is None:
                continue
            nets.append(ip_network(f"{ip}/{24 if ip.version == 4 else 64}", strict=False))
        return cls(tuple(dict.fromkeys(nets)))

    def same_subnet(self, host: str) -> bool:
        ip = _ip(host)
        if ip is None:
            return False
        return any(ip.version == net.version and ip in net for net in self.networks)

    def classify(self, host: str) -> PathState:
        """LAN for a site-local (RFC 1918, ULA, link-local) or same-subnet address, else DIRECT."""
        ip = _ip(host)
        if ip is None:  # a DNS name: configured public endpoints
            return PathState.DIRECT
        if any(ip.version == n.version and ip in n for n in _SITE) or self.same_subnet(host):
            return PathState.LAN
        return PathState.DIRECT

    def order(self, candidates: Sequence[HostPort]) -> tuple[HostPort, ...]:
        """Same-subnet candidates first, otherwise in the member's own order."""
        if not self.networks or len(candidates) < 2:
            return tuple(candidates)
        return tuple(sorted(candidates, key=lambda c: not self.same_subnet(c[0])))

    def rank(self, candidate: HostPort) -> int:
        """Preference among working paths, lower is better: LAN, IPv6, IPv4."""
        if self.classify(candidate[0]) is PathState.LAN:
            return 0
        return 1 if ":" in candidate[0] else 2


class Path:
    """One member's path. Methods return a PathUpdate, or None when nothing changed."""

    __slots__ = (
        "_burst",
        "_deadline",
        "_punching",
        "alive",
        "candidates",
        "chosen",
        "device",
        "failed_since",
        "heartbeat_sent",
        "hopeless",
        "index",
        "last_burst",
        "last_handshake",
        "local",
        "misses",
        "next_heartbeat",
        "probing",
        "reflexive",
        "relay",
        "relay_failed",
        "relay_only",
        "retry_at",
        "session",
        "since",
        "state",
    )

    def __init__(self, candidates: Sequence[HostPort], local: LocalNetworks, now: float,
                 relay: bytes | None = None, probing: bool = True,
                 relay_only: bool = False) -> None:  # fmt: skip
        """`candidates` already in preference order (`LocalNetworks.order`);
        `probing` False when no probes can be sent (then no heartbeats either);
        `relay_only` (this node's policy "only") keeps the relay whenever there is one.

        The device was configured with `target()`.
        """
        self.candidates = tuple(candidates)
        self.probing = probing and not relay_only
        self.relay_only = relay_only
        self.relay_failed = False  # a session through the relay gave up
        self.misses = 0  # bursts in a row that went unanswered
        self.hopeless = False  # both NATs endpoint-dependent: no retries until news
        self.last_burst = -1e9
        self.local = local
        self.relay = relay
        self.reflexive: tuple[HostPort, ...] = ()
        self.alive: dict[HostPort, tuple[float | None, float]] = {}  # -> (rtt, last answer)
        self.chosen: HostPort | None = None  # the direct path in use
        self.index = 0
        self._deadline: float | None = None  # TRYING's handshake timeout
        self._burst: list[float] = []  # the probe times still to come
        self._punching = False  # a burst started since the last update
        self.next_heartbeat: float | None = None
        self.heartbeat_sent: float | None = None  # the last heartbeat, until answered
        self.retry_at = 0.0
        self.failed_since: float | None = None  # direct attempts unanswered since
        self.since = now
        self.last_handshake: float | None = None
        self.session = False
        if relay is not None:
            self.state = PathState.RELAYED
        elif self.candidates:
            self.state = PathState.TRYING
        else:
            self.state = PathState.UNKNOWN
        self.device: Target | None = self.target()

    # ------------------------------------------------------------ internals

    def target(self) -> Target | None:
        """Where the device should send: the chosen direct path, else the relay,
        else the candidate being tried."""
        if self.chosen is not None:
            return self.chosen
        if self.relay is not None:
            return Relay(self.relay)
        if self.state in (PathState.TRYING, PathState.UNREACHABLE) and self.candidates:
            return self.candidates[min(self.index, len(self.candidates) - 1)]
        return None

    def _go(self, new: PathState, now: float) -> None:
        if new not in TRANSITIONS[self.state]:
            raise PathStateError(f"path cannot go from {self.state.name} to {new.name}")
        if new is not self.state:
            self.since = now
        self.state = new

    def _configure(self, reachable: bool | None = None, probe: tuple[HostPort, ...] = (),
                   exhausted: bool = False) -> PathUpdate | None:  # fmt: skip
        target = self.target()
        endpoint = None
        if target is not None and target != self.device:
            self.device = endpoint = target
        punch, self._punching = self._punching, False
        if endpoint is None and reachable is None and not probe and not exhausted:
            return None
        return PathUpdate(endpoint, reachable, exhausted, probe, punch)

    def _fallback(self, now: float) -> None:
        """No direct path: the relay if there is one, else try the candidates."""
        self.chosen = None
        self.next_heartbeat = self.heartbeat_sent = None
        if self.relay is not None:
            self._go(PathState.RELAYED, now)
        elif self.candidates:
            self._go(PathState.TRYING, now)
            self.index = 0
            self._deadline = now + TRY_TIMEOUT
        else:
            self._go(PathState.UNKNOWN, now)

    def probe_targets(self) -> tuple[HostPort, ...]:
        return tuple(dict.fromkeys((*self.candidates, *self.reflexive)))

    def _start_burst(self, now: float, schedule: tuple[float, ...] = BURST) -> tuple[HostPort, ...]:
        """Probe every candidate now and on the schedule after."""
        targets = self.probe_targets()
        if not targets:
            return ()
        self._burst = [now + offset for offset in schedule[1:]]
        self.last_burst = now
        self._punching = True
        if self.failed_since is None:
            self.failed_since = now
        return targets

    def _arm_heartbeat(self, now: float) -> None:
        """NAT-crossing direct paths in a session are pinged (LAN ones need no
        mapping held open, and WireGuard's own retries notice them failing)."""
        if self.state is PathState.DIRECT and self.session and self.probing:
            if self.next_heartbeat is None:
                self.next_heartbeat = now + HEARTBEAT
        else:
            self.next_heartbeat = self.heartbeat_sent = None

    def _quiet(self, now: float) -> bool:
        """The direct path in use has not answered for longer than a heartbeat."""
        chosen = self.chosen
        last = self.alive.get(chosen, (None, -1e9))[1] if chosen is not None else -1e9
        return now - last > HEARTBEAT + QUIET_GRACE

    def _better(self, candidate: HostPort, now: float) -> bool:
        current = self.chosen
        if current is None or current not in self.alive:
            return True
        if self.next_heartbeat is not None and self._quiet(now):
            # the path in use missed its heartbeat and this one just answered (the
            # member's NAT gave it a new address, say): no waiting for DEAD_AFTER
            return True
        rank_new, rank_old = self.local.rank(candidate), self.local.rank(current)
        if rank_new != rank_old:
            return rank_new < rank_old
        new_rtt, old_rtt = self.alive[candidate][0], self.alive[current][0]
        if new_rtt is None or old_rtt is None:
            return False
        return new_rtt < old_rtt * CLEAR_GAIN and old_rtt - new_rtt > 0.002

    def _confirm(self, candidate: HostPort, rtt: float | None, now: float) -> PathUpdate | None:
        """`candidate` answered (a pong or a handshake from it)."""
        was_working = self.working
        old_rtt = self.alive.get(candidate, (None, 0.0))[0]
        self.alive[candidate] = (rtt if rtt is not None else old_rtt, now)
        if len(self.alive) > MAX_ALIVE:  # forget the longest silent
            oldest = min(self.alive, key=lambda c: self.alive[c][1])
            del self.alive[oldest]
        if self.relay_only and self.relay is not None:
            return self._configure()  # policy "only": the relay stays the path
        if candidate == self.chosen and self.heartbeat_sent is not None:
            # answered: the next heartbeat a period after the one that was
            self.next_heartbeat = self.heartbeat_sent + HEARTBEAT
            self.heartbeat_sent = None
        if candidate == self.chosen or self._better(candidate, now):
            if candidate != self.chosen:  # the old path's heartbeat is not this one's
                self.next_heartbeat = self.heartbeat_sent = None
            self.chosen = candidate
            self._go(self.local.classify(candidate[0]), now)
            self._deadline = None
            self._burst = []
            self.failed_since = None
            self.misses = 0
            self._arm_heartbeat(now)
        return self._configure(reachable=None if was_working else True)

    # ------------------------------------------------------------ inputs

    @property
    def working(self) -> bool:
        return self.state in WORKING

    @property
    def direct(self) -> bool:
        return self.state in _DIRECT

    @property
    def endpoint(self) -> HostPort | None:
        """The direct address in use, or the candidate being tried (None if relayed)."""
        device = self.device
        return device if device is not None and not isinstance(device, Relay) else None

    def deadline(self) -> float | None:
        times = [t for t in (self.next_heartbeat, self._burst[0] if self._burst else None)
                 if t is not None]  # fmt: skip
        if self.state is PathState.TRYING and self._deadline is not None:
            times.append(self._deadline)
        if self.state is PathState.RELAYED and self.session and not self._burst \
                and self.retry_at and self.probing and not self.hopeless:  # fmt: skip
            times.append(self.retry_at)  # the retry of direct, a minute on and backing off
        return min(times, default=None)

    def set_candidates(self, candidates: Sequence[HostPort], now: float) -> PathUpdate | None:
        candidates = tuple(candidates)
        if candidates == self.candidates:
            return None
        self.candidates = candidates
        if self.direct:
            return None  # a path that works is kept; the new list waits until it fails
        if self.state is PathState.RELAYED:
            # new candidates (a member's new public address): punch at once
            return self._configure(probe=self._start_burst(now) if self.session else ())
        if not candidates:
            if self.state is not PathState.UNKNOWN:
                self._go(PathState.UNKNOWN, now)
            self._deadline = None
            return self._configure()
        armed = self._deadline is not None or self.state is PathState.UNREACHABLE
        self._go(PathState.TRYING, now)
        self.index = 0
        self._deadline = now + TRY_TIMEOUT if armed else None
        return self._configure(probe=self._start_burst(now) if armed else ())

    def set_relay(self, relay: bytes | None, now: float) -> PathUpdate | None:
        """The relay member this path may fall back to (None: none may)."""
        if relay == self.relay:
            return None
        self.relay = relay
        if self.direct:
            return None
        if relay is not None:
            self._go(PathState.RELAYED, now)
            self._deadline = None
            return self._configure(reachable=None)
        self._fallback(now)
        return self._configure()

    def punch(self, now: float) -> PathUpdate | None:
        """Interest in a direct path (traffic, or the member asked): probe now,
        unless a direct path works or a burst is under way."""
        if self.direct or self._burst:
            return None
        return self._configure(probe=self._start_burst(now))

    def note_send(self, now: float) -> PathUpdate | None:
        """The agent sent the member a message: interest in a path that works."""
        if self.state is PathState.TRYING and self._deadline is None:
            self._deadline = now + TRY_TIMEOUT
            return self._configure(probe=self._start_burst(now))
        if self.state is PathState.UNREACHABLE and now >= self.retry_at:
            self._go(PathState.TRYING, now)
            self.index = 0
            self._deadline = now + TRY_TIMEOUT
            return self._configure(probe=self._start_burst(now))
        if self.state is PathState.RELAYED and not self._burst and now >= self.retry_at:
            return self.punch(now)
        return None

    def on_timer(self, now: float) -> PathUpdate | None:
        probe: tuple[HostPort, ...] = ()
        if self._burst and self._burst[0] <= now:
            while self._burst and self._burst[0] <= now:
                self._burst.pop(0)
            probe = self.probe_targets()
            if not self._burst and not self.direct:
                # the burst went unanswered: try again later, less often each time
                self.misses += 1
                backoff = RETRY_INTERVAL * 2 ** min(self.misses - 1, 10)
                self.retry_at = now + min(backoff, MAX_RETRY_INTERVAL)
        if self.next_heartbeat is not None and self.next_heartbeat <= now:
            chosen = self.chosen
            last = self.alive.get(chosen, (None, -1e9))[1] if chosen else -1e9
            if chosen is None or not self.session or self.state is not PathState.DIRECT:
                self.next_heartbeat = self.heartbeat_sent = None
            elif now - last > DEAD_AFTER:  # the NAT forgot us, or the member moved
                self.alive.pop(chosen, None)
                self._fallback(now)
                update = self._configure(probe=self._start_burst(now))
                return update if update is not None else None
            else:
                # a heartbeat is due, or the last one is unanswered: (again) now,
                # and look for its answer QUIET_GRACE on (an answer re-arms it)
                self.heartbeat_sent = now
                self.next_heartbeat = now + QUIET_GRACE
                probe = (*probe, chosen) if chosen not in probe else probe
        if self.state is PathState.TRYING and self._deadline is not None and self._deadline <= now:
            return self._next(now, probe)
        if self.state is PathState.RELAYED and self.session and not self._burst \
                and now >= self.retry_at and self.retry_at and self.probing \
                and not self.hopeless:  # fmt: skip
            self.retry_at = 0.0
            probe = self._start_burst(now, RETRY_BURST) or probe  # retry direct, backing off
        return self._configure(probe=probe)

    def _next(self, now: float, probe: tuple[HostPort, ...]) -> PathUpdate | None:
        if self.index + 1 < len(self.candidates):
            self.index += 1
            self._deadline = now + TRY_TIMEOUT
            return self._configure(probe=probe)
        self._go(PathState.UNREACHABLE, now)
        self._deadline = None
        self.retry_at = now + RETRY_INTERVAL
        return self._configure(probe=probe, exhausted=True)

    def on_pong(self, candidate: HostPort, rtt: float, now: float) -> PathUpdate | None:
        return self._confirm(candidate, rtt, now)

    def on_ping_from(self, source: HostPort, now: float) -> PathUpdate | None:
        """The member's authenticated probe came from `source`: another address to
        probe (its NAT's mapping towards this node), probed at once."""
        if source in self.candidates or source in self.reflexive:
            return None
        self.reflexive = (source, *self.reflexive)[:MAX_REFLEXIVE]
        # probed even while another path works: after a NAT flush the member's new
        # mapping answers long before the old path is declared dead
        return self._configure(probe=(source,))

    def hint(self, candidates: Sequence[HostPort], now: float) -> PathUpdate | None:
        """The member asked this node to probe (PUNCH) these addresses of its own."""
        new = [c for c in candidates if c not in self.candidates and c not in self.reflexive]
        self.reflexive = (*new, *self.reflexive)[: MAX_REFLEXIVE * 2]
        if self.direct and self.chosen in self.alive:
            return None
        if not self._burst and now - self.last_burst >= HINT_INTERVAL:
            update = self._configure(probe=self._start_burst(now))
            self._punching = False  # answering a PUNCH: no PUNCH back
            return update._replace(punch=False) if update else None
        return self._configure(probe=tuple(new))

    def on_handshake(self, endpoint: Target | None, now: float) -> PathUpdate | None:
        self.last_handshake = now
        had_session, self.session = self.session, True
        if endpoint is None or isinstance(endpoint, Relay):
            if endpoint is not None:
                self.device = endpoint
                if self.relay is None:
                    self.relay = endpoint.key  # the member came through one: keep it
            if self.direct:
                return self._relayed_handshake_while_direct(now)
            self.relay_failed = False
            probe: tuple[HostPort, ...] = ()
            if not self._burst and self.probing:  # a relayed session: look for direct
                probe = self._start_burst(now)
            if self.relay is not None and self.state is not PathState.RELAYED:
                self._go(PathState.RELAYED, now)
            reachable = True if not had_session and self.relay is not None else None
            return self._configure(reachable=reachable, probe=probe)
        self.device = endpoint
        return self._confirm(endpoint, None, now)

    def _relayed_handshake_while_direct(self, now: float) -> PathUpdate | None:
        """The member's handshake came through the relay, so the device roamed
        there. If the direct path answered lately, or gets no heartbeats to tell
        (a LAN path), the member only had not found it yet: take the device back,
        and start the heartbeats of the session this handshake began. Otherwise
        the member's own path fell back (its address changed, say): follow it to
        the relay, and punch again."""
        if self.next_heartbeat is None or not self._quiet(now):
            self._arm_heartbeat(now)
            return self._configure()
        if self.chosen is not None:
            self.alive.pop(self.chosen, None)
        self._fallback(now)
        return self._configure(probe=self._start_burst(now) if self.probing else ())

    def on_roamed(self, endpoint: Target, now: float) -> PathUpdate | None:
        """EndpointChanged: an authenticated datagram came from `endpoint`."""
        self.device = endpoint
        if isinstance(endpoint, Relay):
            # the member wrote through the relay before its probes found the direct
            # path this node uses: keep sending direct (it roams to it on receipt)
            return self._configure() if self.direct else None
        return self._confirm(endpoint, None, now)

    def on_gave_up(self, now: float) -> PathUpdate | None:
        self.session = False
        if self.state is PathState.TRYING:
            return self._next(now, ())
        if not self.working:
            return None
        if self.chosen is not None:
            self.alive.pop(self.chosen, None)
        was_relayed = self.state is PathState.RELAYED
        self.relay_failed = was_relayed
        self._fallback(now)
        return self._configure(reachable=None if self.relay and not was_relayed else False)

    def on_keys_zeroed(self, now: float) -> PathUpdate | None:
        """The session lapsed for want of traffic. A NAT-crossing direct path goes
        back to the relay (its mapping may be gone when traffic comes back);
        a LAN path is kept."""
        self.session = False
        self.next_heartbeat = self.heartbeat_sent = None
        if self.state is PathState.DIRECT and self.relay is not None:
            self._fallback(now)
            return self._configure()
        return None

    @property
    def label(self) -> str:
        """What `meshnode status` shows: lan, direct, relayed (once a handshake
        went through the relay, until one fails), or none."""
        if self.state is PathState.RELAYED:
            return "relayed" if self.session else "none"
        return self.state.value if self.working else "none"

    def rtt(self) -> float | None:
        if self.chosen is None:
            return None
        return self.alive.get(self.chosen, (None, 0.0))[0]
