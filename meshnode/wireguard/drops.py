"""Why a datagram or packet was not delivered: one enum for the core and the
runtime alike, so every counter key is a known member (a typo is an
AttributeError at import, never a new silent counter)."""

from __future__ import annotations

import enum


class Drop(enum.StrEnum):
    # -- counted by the protocol core (Device)
    MALFORMED = "malformed"  # wrong size for its type, or too short
    UNKNOWN_TYPE = "unknown_type"
    NO_PRIVATE_KEY = "no_private_key"
    INVALID_MAC1 = "invalid_mac1"
    COOKIE_SENT = "cookie_sent"  # under load without a valid mac2: answered with a cookie
    RATE_LIMITED = "rate_limited"
    COOKIE_RATE_LIMITED = "cookie_rate_limited"  # under load: no more cookie replies to that source
    HANDSHAKE_DECRYPT = "handshake_decrypt"
    UNKNOWN_PEER = "unknown_peer"
    BAD_PEER_KEY = "bad_peer_key"
    REPLAYED_INITIATION = "replayed_initiation"
    INITIATION_FLOOD = "initiation_flood"
    NO_HANDSHAKE = "no_handshake"  # a response or cookie reply for no initiation of ours
    INVALID_COOKIE = "invalid_cookie"
    UNKNOWN_INDEX = "unknown_index"
    EXPIRED_KEYPAIR = "expired_keypair"
    DECRYPT = "decrypt"
    REPLAYED = "replayed"
    INNER_MALFORMED = "inner_malformed"
    DISALLOWED_SOURCE = "disallowed_source"
    NO_ROUTE = "no_route"  # an outgoing packet towards an address no peer owns
    NO_ENDPOINT = "no_endpoint"
    STAGED_OVERFLOW = "staged_overflow"
    HANDSHAKE_GAVE_UP = "handshake_gave_up"
    COORDINATION_FROM_TUN = "coordination_from_tun"  # a local process wrote to the agent's port
    NOT_COORDINATION = "not_coordination"  # a coordination-only peer (an invite) sent other traffic
    # -- counted by the runtime (Interface, its sockets)
    UNKNOWN_DATAGRAM = "unknown_datagram"  # not WireGuard, and no handler took it
    HANDLER_FAILED = "handler_failed"  # a handler of other datagrams raised
    SEND_BUFFER_FULL = "send_buffer_full"
    SEND_FAILED = "send_failed"  # any other error of sendto/sendmsg
    NO_SOCKET_FOR_FAMILY = "no_socket_for_family"  # e.g. an IPv6 peer on a host without IPv6
    TUN_WRITE_FAILED = "tun_write_failed"
    NO_RELAY = "no_relay"  # a datagram for a relayed endpoint, and no relay path to carry it


class Fallback(enum.StrEnum):
    """Not drops: times the runtime stepped back to a slower way that works."""

    GSO_UNSUPPORTED = "gso_unsupported"  # the path cannot segment: datagrams sent one by one
    STALE_SOURCE = "stale_source"  # the sticky source address went away: routed instead
