"""Spreading the roster: anti-entropy rounds and rumours, at O(1) idle cost per member.

- Every `hello_interval` (30 s, +-20 % jitter) a member sends one HELLO (its
  roster digest) to one random live member and to each rendezvous member.
  Equal digests end the exchange there; a differing one is answered with
  BUCKETS, the differing buckets with SUMMARY ranges, and those with RECORDS
  and WANT, so both sides converge in one exchange. Nothing in a message
  grows with the mesh: 64 bucket hashes, summaries and blobs in chunks.
- A new record or tombstone is pushed at once (PUSH) to `fanout` random live
  members; a receiver that learns something new from a PUSH forwards that
  part once, together with what it knows of a new member's candidates
  (PEERS), so they travel with the record. Infect-once push with fanout 3
  misses about 6 % of members, so everyone who learns news also runs
  ln(N) + 2 quick HELLO rounds a second apart (`boost`), and those find the
  misses within seconds.
- A member that starts, wakes from a sleep, or completes a handshake after a
  long silence calls HELLO with a reply wanted to a few members at once
  (`catch_up`) and retries with backoff until someone answers.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from .antientropy import diff
from .messages import (
    Buckets,
    Hello,
    HelloKind,
    Message,
    Push,
    Records,
    Summary,
    Want,
    chunk_blobs,
    chunk_keys,
    chunk_summary,
)
from .records import Signed
from .roster import Roster


@dataclass(frozen=True)
class GossipParams:
    hello_interval: float = 30.0
    jitter: float = 0.2  # rounds are hello_interval * (1 +- jitter) apart
    fanout: int = 3
    boost_interval: float = 1.0  # quick rounds after news, this far apart,
    boost_extra: int = 2  # ln(members) + this many of them
    start_fanout: int = 3
    catch_up_retry: float = 2.0  # first retry of an unanswered catch-up; doubles up to a round


class Membership:
    """The live members other than this node (not revoked, not left), with role lists.

    Rebuilt lazily after a change, so sampling a random member costs O(1).
    """

    def __init__(self, roster: Roster, own_key: bytes, left: dict[bytes, int]) -> None:
        self._roster = roster
        self._own = own_key
        self._left = left
        self._live: list[bytes] | None = None
        self._rendezvous: list[bytes] = []
        self._admins: list[bytes] = []

    def invalidate(self) -> None:
        self._live = None

    def _build(self) -> list[bytes]:
        if self._live is None:
            members = [
                m
                for m in self._roster.members()
                if m.public_key != self._own and m.public_key not in self._left
            ]
            self._live = [m.public_key for m in members]
            self._rendezvous = [m.public_key for m in members if "rendezvous" in m.roles]
            self._admins = [m.public_key for m in members if "admin" in m.roles]
        return self._live

    def live(self) -> list[bytes]:
        return self._build()

    def rendezvous(self) -> list[bytes]:
        self._build()
        return self._rendezvous

    def admins(self) -> list[bytes]:
        self._build()
        return self._admins

    def is_live(self, key: bytes) -> bool:
        return key != self._own and key not in self._left and self._roster.member(key) is not None

    def sample(self, rng: random.Random, k: int, exclude: Iterable[bytes] = ()) -> list[bytes]:
        live = self._build()
        skip = set(exclude)
        picks = rng.sample(live, min(len(live), k + len(skip)))
        return [key for key in picks if key not in skip][:k]


class GossipHost(Protocol):
    """What gossip needs from the agent it runs in."""

    def send(self, key: bytes, message: Message, now: float) -> None: ...
    def hello(self, kind: HelloKind) -> Hello: ...
    def apply_blob(self, signed: Signed, now: float) -> bool: ...
    def can_reach(self, key: bytes) -> bool: ...
    def synced_from(self, key: bytes, now: float) -> None: ...
    def rumour_company(self, blobs: Sequence[Signed], now: float) -> list[Message]: ...
    def round_sent(self, key: bytes, now: float) -> None: ...


class Gossip:
    def __init__(
        self,
        host: GossipHost,
        roster: Roster,
        members: Membership,
        rng: random.Random,
        params: GossipParams,
        now: float,
    ) -> None:
        self.host = host
        self.roster = roster
        self.members = members
        self.rng = rng
        self.params = params
        self.next_round = now + self._interval()
        self._boost_at: float | None = None
        self._boost_until = now
        self.catching_up = False
        self._catch_up_at: float | None = None
        self._catch_up_delay = params.catch_up_retry

    def _interval(self, base: float | None = None) -> float:
        base = self.params.hello_interval if base is None else base
        return base * (1 + self.rng.uniform(-self.params.jitter, self.params.jitter))

    # ------------------------------------------------------------ timers

    def deadline(self) -> float:
        times = [self.next_round]
        if self._boost_at is not None:
            times.append(self._boost_at)
        if self.catching_up and self._catch_up_at is not None:
            times.append(self._catch_up_at)
        return min(times)

    def on_timer(self, now: float) -> None:
        if now >= self.next_round:
            late = now - self.next_round
            self.next_round = now + self._interval()
            if late > self.params.hello_interval:  # the timer slept through rounds: a wake-up
                self.catch_up(now)
            else:
                self._round(now)
        if self._boost_at is not None and self._boost_at <= now:
            self._boost_at = None
            if now < self._boost_until:
                self._boost_at = now + self._interval(self.params.boost_interval)
            target = self.target()
            if target is not None:
                self.host.send(target, self.host.hello(HelloKind.ROUND), now)
        if self.catching_up and self._catch_up_at is not None and self._catch_up_at <= now:
            self._call(now, None)

    def target(self) -> bytes | None:
        """A random live member, preferring one this node knows how to reach."""
        picks = self.members.sample(self.rng, 3)
        for key in picks:
            if self.host.can_reach(key):
                return key
        return picks[0] if picks else None

    def _round(self, now: float) -> None:
        hello = self.host.hello(HelloKind.ROUND)
        target = self.target()
        targets = dict.fromkeys(([target] if target else []) + self.members.rendezvous())
        for key in targets:
            self.host.send(key, hello, now)
        if target is not None:
            self.host.round_sent(target, now)

    # ------------------------------------------------------------ catching up

    def catch_up(self, now: float, first: bytes | None = None) -> None:
        """Call a few members (and `first`) with a reply wanted, until one answers."""
        self.catching_up = True
        self._catch_up_delay = self.params.catch_up_retry
        self._call(now, first)

    def _call(self, now: float, first: bytes | None) -> None:
        anchors = self.members.rendezvous() + self.members.admins()
        targets = ([first] if first is not None and self.members.is_live(first) else []) + anchors
        targets += self.members.sample(self.rng, self.params.start_fanout, exclude=targets)
        hello = self.host.hello(HelloKind.CALL)
        for key in dict.fromkeys(targets):
            self.host.send(key, hello, now)
        self._catch_up_at = now + self._interval(self._catch_up_delay)
        self._catch_up_delay = min(2 * self._catch_up_delay, self.params.hello_interval)

    def answered(self) -> None:
        self.catching_up = False
        self._catch_up_at = None

    # ------------------------------------------------------------ anti-entropy

    def on_hello(self, sender: bytes, hello: Hello, now: float) -> None:
        if hello.kind is HelloKind.ANSWER:
            self.answered()
            return  # the answerer already started the exchange if the digests differ
        if hello.digest != self.roster.digest():
            self.host.send(sender, Buckets.of(len(self.roster), self.roster.bucket_hashes()), now)
        if hello.kind is HelloKind.CALL:
            self.host.send(sender, self.host.hello(HelloKind.ANSWER), now)

    def on_buckets(self, sender: bytes, message: Buckets, now: float) -> None:
        self.answered()
        theirs = message.bucket_hashes()
        for index, ours in enumerate(self.roster.bucket_hashes()):
            if ours != theirs[index]:
                for summary in chunk_summary(index, self.roster.bucket_summary(index)):
                    self.host.send(sender, summary, now)

    def on_summary(self, sender: bytes, message: Summary, now: float) -> None:
        self.answered()
        ours = {e[0]: e for e in self.roster.bucket_summary(message.bucket) if message.covers(e[0])}
        to_send, to_fetch = diff(ours, {e[0]: e for e in message.entries})
        self._send_blobs(sender, to_send, now)
        for want in chunk_keys(Want, to_fetch):
            self.host.send(sender, want, now)

    def on_want(self, sender: bytes, message: Want, now: float) -> None:
        self._send_blobs(sender, message.keys, now)

    def _send_blobs(self, key: bytes, wanted: Sequence[bytes], now: float) -> None:
        blobs = [b for b in map(self.roster.signed_for, wanted) if b is not None]
        for records in chunk_blobs(Records, blobs):
            self.host.send(key, records, now)

    def on_records(self, sender: bytes, message: Records, now: float) -> None:
        if sum(self.host.apply_blob(blob, now) for blob in message.blobs):
            self.host.synced_from(sender, now)

    # ------------------------------------------------------------ rumours

    def on_push(self, sender: bytes, message: Push, now: float) -> None:
        new = [blob for blob in message.blobs if self.host.apply_blob(blob, now)]
        if new:
            self.spread(new, now, exclude=(sender,))

    def spread(self, blobs: Sequence[Signed], now: float, exclude: Iterable[bytes] = ()) -> None:
        """Push `blobs` to `fanout` random live members, then boost the next rounds."""
        targets = self.members.sample(self.rng, self.params.fanout, exclude)
        messages = [*chunk_blobs(Push, blobs), *self.host.rumour_company(blobs, now)]
        for message in messages:
            for key in targets:
                self.host.send(key, message, now)
        self.boost(now)

    def boost(self, now: float) -> None:
        """Quick HELLO rounds for a while: about ln(members) + boost_extra of them.

        Every member that learned the news contacts one random member per
        quick round, so a member the push missed stays missed after k rounds
        with probability about e**-k: ln(N) + 2 rounds leave e**-2 / N each,
        about one straggler in seven changes, whatever the mesh's size.
        """
        rounds = math.ceil(math.log(len(self.members.live()) + 1)) + self.params.boost_extra
        self._boost_until = max(self._boost_until, now + rounds * self.params.boost_interval)
        if self._boost_at is None:
            self._boost_at = now + self._interval(self.params.boost_interval)
