"""Bucketed summaries that let two rosters find their differences cheaply.

Built for ~1,000 members, where nothing in a message may grow with N and an
idle member may cost O(1): entries fall into 64 buckets by the top 6 bits of
the public key. Two nodes first compare a 16-byte digest; if it differs, the
64 bucket hashes (8 bytes each); for each differing bucket, its summary of
(public key, kind, version, body hash[:8]) entries, about N/64 of them; and
`diff` names the blobs to send each way. The entry order (`newer`) mirrors
the roster's own rules, so the exchange only ever moves winning blobs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

from .authority import KEY_LEN
from .codec import MAX_COUNT, Checker, pack, show
from .records import KIND_MEMBER, KIND_REVOKE

NUM_BUCKETS = 64
HASH8_LEN = 8
DIGEST_LEN = 16
MAX_SUMMARY = 4096  # entries of one bucket: a 250,000-member mesh still fits

SummaryEntry = tuple[bytes, str, int, bytes]  # (public key, kind, version, body hash[:8])


def bucket_of(public_key: bytes) -> int:
    return public_key[0] >> 2


def bucket_hash(summary: Sequence[SummaryEntry]) -> bytes:
    """BLAKE2s-64 (person "mn-bkt") of the packed, key-sorted summary."""
    return hashlib.blake2s(pack(summary), digest_size=HASH8_LEN, person=b"mn-bkt").digest()


def digest(count: int, bucket_hashes: Iterable[bytes]) -> bytes:
    """BLAKE2s-128 (person "mn-dgst") of the entry count and the 64 bucket hashes."""
    data = pack([count, b"".join(bucket_hashes)])
    return hashlib.blake2s(data, digest_size=DIGEST_LEN, person=b"mn-dgst").digest()


def newer(ours: SummaryEntry, theirs: SummaryEntry) -> bool:
    """Whether `ours` wins: tombstone over record, then higher version, then smaller hash."""
    if (ours[1] == KIND_REVOKE) != (theirs[1] == KIND_REVOKE):
        return ours[1] == KIND_REVOKE
    if ours[2] != theirs[2]:
        return ours[2] > theirs[2]
    return ours[3] < theirs[3]


def parse_summary(c: Checker, index: int, summary: object) -> dict[bytes, SummaryEntry]:
    """A peer's summary of bucket `index`, checked as strictly as any decoded message.

    Errors are raised through `c`, so they carry the caller's exception class.
    """
    entries: dict[bytes, SummaryEntry] = {}
    for item in c.seq(summary, "summary", (0, MAX_SUMMARY)):
        key, kind, version, hash8 = c.seq(item, "entry", (4, 4))
        if bucket_of(c.blob(key, "public key", KEY_LEN)) != index or key in entries:
            c.fail(f"key {key.hex()[:16]} is repeated or not of bucket {index}")
        if kind not in (KIND_MEMBER, KIND_REVOKE):
            c.fail(f"unknown kind {show(kind)}")
        low = 1 if kind == KIND_MEMBER else 0  # tombstones have no version: 0
        c.integer(version, "version", low, MAX_COUNT if low else 0)
        entries[key] = (key, kind, version, c.blob(hash8, "body hash", HASH8_LEN))
    return entries


def diff(
    ours: Mapping[bytes, SummaryEntry], theirs: Mapping[bytes, SummaryEntry]
) -> tuple[list[bytes], list[bytes]]:
    """(keys whose blob we should send, keys whose blob we should ask for), in key order."""
    to_send: list[bytes] = []
    to_fetch: list[bytes] = []
    for key in sorted(ours.keys() | theirs.keys()):
        mine, other = ours.get(key), theirs.get(key)
        if other is None:
            to_send.append(key)
        elif mine is None:
            to_fetch.append(key)
        elif mine != other:
            (to_send if newer(mine, other) else to_fetch).append(key)
    return to_send, to_fetch
