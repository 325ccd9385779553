"""Why the mesh agent refused a coordination message or part of one.

One enum for every counter of the mesh layer, as `meshnode.wireguard.drops`
is for the core: a typo is an AttributeError at import, never a new silent
counter key. `MeshAgent.drops()` returns a count per member of this enum.
"""

from __future__ import annotations

import enum


class MeshDrop(enum.StrEnum):
    # -- the message itself (see `messages.decode`)
    OVERSIZED = "oversized"  # more than MAX_MESSAGE bytes
    BAD_VERSION = "bad_version"  # a protocol version this node does not speak
    UNKNOWN_TYPE = "unknown_type"
    MALFORMED = "malformed"  # not msgpack, wrong field types, sizes or counts
    # -- who sent it
    UNKNOWN_SENDER = "unknown_sender"  # neither a live member nor a pending invite's peer
    REVOKED_SENDER = "revoked_sender"  # a member whose key has a tombstone
    LEFT_SENDER = "left_sender"  # a member that said it left
    TEMP_PEER_NOT_JOIN = "temp_peer_not_join"  # an invite's temporary peer sent anything else
    UNEXPECTED = "unexpected"  # a type this node never takes from this sender
    NOT_ADMIN = "not_admin"  # a join request to a member without the authority key
    INACTIVE = "inactive"  # this node left the mesh or was revoked
    # -- signed blobs inside RECORDS and PUSH (the roster's refusal reasons)
    RECORD_MALFORMED = "record_malformed"
    RECORD_BAD_SIGNATURE = "record_bad_signature"
    RECORD_FOREIGN_MESH = "record_foreign_mesh"
    RECORD_REVOKED = "record_revoked"
    RECORD_STALE = "record_stale"
    RECORD_ADDRESS_CONFLICT = "record_address_conflict"
    # -- an invite's join request that was answered with JOIN_REJECT
    JOIN_REFUSED = "join_refused"
