"""The fuzzer behind scripts/fuzz: hostile input to two `meshnode up` nodes in
namespaces of its own, and the checks that nothing broke.

Layout (all inside a tests/netns.py Lab, removed on every path):

    ns b  10.77.0.2 --veth-- 10.77.0.1  ns a  10.78.0.1 --veth-- 10.78.0.2  ns f
    node B: tunnel t (10.99.0.2)       node A: tunnel t (10.99.0.1), spare
                                       interface z (the UAPI fuzz target),
                                       mesh "fz" (meshnode init)

Phases, each bounded in count and time:
1. datagrams: a sender process in ns f (this module's `send` command) sends
   `--count` datagrams to A's WireGuard port, paced: random bytes, random
   bodies behind WireGuard headers, real messages of the A-B tunnel (captured
   with tcpdump) replayed and mutated, handshake messages built with
   meshnode.wireguard for A's key (valid mac1, unknown peer) and mutated,
   cookie replies and transport messages with A's live receiver index;
   and a share (`--mesh-share`, 15 %) to the mesh interface's port instead
   (MeshCorpus): STUN (binding requests with random txids, which must be
   answered, mutated, truncated, random attributes, a wrong cookie, responses
   nobody asked for), path probes (the magic and random bytes, the admin's own
   key as the sender, a live member's key with forged boxes, probes sealed
   with that member's private key: pings, replays, pongs, bad plaintexts, and
   mutations) and junk. The member is a third `meshnode up` in ns b that joins
   the mesh and is stopped (offline, still in the roster). The sender reads
   what comes back: binding responses (txid and mapped address checked) and
   pongs (opened, txid and observed address checked);
   pings go through the tunnel meanwhile;
2. UAPI: `--requests` mutated requests; sets go to the spare interface z
   (reset now and then), gets to the tunnel's and the mesh's sockets too;
3. control: `--requests` mutated JSON lines to A's control socket (never
   "down", "leave", nor a revoke of a real member or an init of a new mesh);
4. invites and the mesh: mutated invites parsed in-process, mutated
   coordination messages handed to the agents of an in-memory mesh
   (tests/mesh_memnet.py; each that does not decode must be counted), and
   `--joins` invites given to `meshnode join --timeout 2` on B, each to end
   with a clean error: half mutations of a real invite of A's, half invites
   signed by an authority of their own with odd bootstrap peers.

Coordination messages are not sent over the wire: that takes a WireGuard
session with a member's key (a transport message the fuzzer would have to
encrypt itself); the agents get them in memory instead.

`--avoid-known` leaves out the inputs of the bugs tests/test_fuzz.py marks
xfail, so that a run can show what else holds.

Checks: no traceback in either node's log, both nodes up, resident memory and
open files flat, every datagram that reached A's sockets counted as a drop
(kernel: /proc/PID/net/snmp InDatagrams; node: `meshnode stats`), and pings
through the tunnel afterwards. For the mesh port, exactly: each datagram sent
there is counted by the part of the node its own sorting sends it to (the
mesh interface's receive drops in `meshnode stats`; `traversal.stun`;
`traversal.dropped_probes` and `traversal.probes` in `meshnode status --json`)
or dropped by the kernel at that socket (/proc/PID/net/udp's drops column);
every answered binding request and member ping answered back to the sender;
no mesh agent failure or datagram handler failure counted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

MESHNODE = (sys.executable, "-m", "meshnode.cli")
A_UNDERLAY, B_UNDERLAY, F_UNDERLAY = "10.77.0.1", "10.77.0.2", "10.78.0.2"
A_FUZZ_SIDE = "10.78.0.1"
A_INNER, B_INNER = "10.99.0.1", "10.99.0.2"
PORT, SPARE_PORT, MESH_PORT = 51820, 51821, 51830
MESH_NAME = "fz"

# drops of packets from the TUN or of sends: not datagrams received
SEND_SIDE = {
    "no_route", "no_endpoint", "staged_overflow", "handshake_gave_up",
    "coordination_from_tun", "send_buffer_full", "send_failed",
    "no_socket_for_family", "tun_write_failed",
}  # fmt: skip


# ---------------------------------------------------------------- mutations


def mutate(rng: random.Random, data: bytes, rounds: int | None = None) -> bytes:
    """A few random byte-level changes: bit flips, byte sets, truncation,
    extension, insertion, deletion, duplication of a slice."""
    buf = bytearray(data)
    for _ in range(rounds or rng.choice((1, 1, 1, 2, 3, 5))):
        op = rng.randrange(8)
        if op == 0 and buf:  # flip a bit
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:  # set a byte
            buf[rng.randrange(len(buf))] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))
        elif op == 2 and buf:  # truncate
            del buf[rng.randrange(len(buf)) :]
        elif op == 3:  # extend
            buf += os.urandom(rng.choice((1, 2, 15, 16, 17, rng.randrange(200))))
        elif op == 4:  # insert
            i = rng.randrange(len(buf) + 1)
            buf[i:i] = os.urandom(rng.randrange(1, 9))
        elif op == 5 and buf:  # delete
            i = rng.randrange(len(buf))
            del buf[i : i + rng.randrange(1, 9)]
        elif op == 6 and buf:  # duplicate a slice
            i = rng.randrange(len(buf))
            j = min(len(buf), i + rng.randrange(1, 64))
            buf[j:j] = buf[i:j]
        elif op == 7 and buf:  # overwrite a run
            i = rng.randrange(len(buf))
            n = rng.randrange(1, 17)
            buf[i : i + n] = os.urandom(min(n, len(buf) - i))
    return bytes(buf)


# ---------------------------------------------------------------- datagrams


def read_pcap(path: Path) -> list[bytes]:
    """UDP payloads of an Ethernet/IPv4 pcap file (tcpdump -w)."""
    data = path.read_bytes()
    if len(data) < 24:
        return []
    endian = "<" if data[:4] == b"\xd4\xc3\xb2\xa1" else ">"
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    offset, found = 24, []
    while offset + 16 <= len(data):
        incl = struct.unpack(endian + "I", data[offset + 8 : offset + 12])[0]
        frame = data[offset + 16 : offset + 16 + incl]
        offset += 16 + incl
        link = 14 if linktype == 1 else 16 if linktype == 113 else 0
        ip = frame[link:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 15) * 4
        found.append(bytes(ip[ihl + 8 :]))
    return found


class DatagramCorpus:
    """Makes the datagrams of the flood, each a mutation of something real."""

    def __init__(self, rng: random.Random, target_public: bytes, captured: list[bytes]) -> None:
        from meshnode.wireguard import messages as m

        self.m = m
        self.rng = rng
        self.captured = [d for d in captured if m.is_wireguard(d)] or [bytes(32)]
        self.by_type: dict[int, list[bytes]] = {}
        for datagram in self.captured:
            self.by_type.setdefault(datagram[0], []).append(datagram)
        # receiver indices A listens on: in B->A transports and A's responses' sender field
        self.indices = {d[4:8] for d in self.by_type.get(4, [])}
        self.indices |= {d[4:8] for d in self.by_type.get(2, [])}
        self.indices |= {d[8:12] for d in self.by_type.get(2, [])}
        self.indices |= {d[4:8] for d in self.by_type.get(1, [])}
        self.index_list = sorted(self.indices) or [bytes(4)]
        self.initiations = self._initiations(target_public, 24)
        self.made: dict[str, int] = {}

    def _initiations(self, target_public: bytes, count: int) -> list[bytes]:
        """Initiations to the target from keys it does not know: valid mac1."""
        from meshnode.wireguard import keys
        from meshnode.wireguard.allowedips import parse_network
        from meshnode.wireguard.device import Device
        from meshnode.wireguard.endpoint import Endpoint

        found = []
        for i in range(count):
            device = Device(keys.generate_private_key(), epoch=time.time(),
                            rng=random.Random(i))  # fmt: skip
            peer = device.add_peer(target_public)
            device.set_endpoint(peer, Endpoint((A_FUZZ_SIDE, PORT)))
            device.add_allowed_ip(peer, parse_network("10.99.0.0/24"))
            packet = bytes([0x45]) + bytes(11) + bytes([10, 99, 0, 3, 10, 99, 0, 1])
            device.send(packet, 0.0)
            found += [d for d, _ in device.datagrams_to_send() if d[0] == 1]
        return found

    def next(self) -> bytes:
        kind, datagram = self._make()
        self.made[kind] = self.made.get(kind, 0) + 1
        return datagram

    def _make(self) -> tuple[str, bytes]:
        m, rng = self.m, self.rng
        roll = rng.random()
        if roll < 0.10:
            return "random", os.urandom(rng.choice((0, 1, 3, 4, 5, 16, 31, 32, 148,
                                                    rng.randrange(1500))))  # fmt: skip
        if roll < 0.20:  # a WireGuard header over a body of some size
            kind = rng.choice((0, 1, 2, 3, 4, 5, 255))
            size = rng.choice((4, 16, 31, 32, 63, 64, 65, 91, 92, 93, 147, 148, 149,
                               rng.randrange(1500)))  # fmt: skip
            return "typed", bytes([kind, 0, 0, 0]) + os.urandom(max(0, size - 4))
        if roll < 0.35:  # a real message of the tunnel, replayed as it was
            return "replay", rng.choice(self.captured)
        if roll < 0.60:  # a real message, mutated
            return "real-mutated", mutate(rng, rng.choice(self.captured))
        if roll < 0.72:  # a transport with A's live receiver index and a bad tag
            counter = rng.choice((0, 1, 2**64 - 1, rng.randrange(2**64), rng.randrange(10**4)))
            body = os.urandom(rng.choice((16, 32, 100, 1000)))
            index = rng.choice(self.index_list)
            if rng.random() < 0.3:
                index = os.urandom(4)
            return "transport", m.HEADER_TRANSPORT + index + struct.pack("<Q", counter) + body
        if roll < 0.82:  # a cookie reply for a live index, a random one, or mutated
            index = rng.choice((*self.index_list[:4], os.urandom(4)))
            reply = m.HEADER_COOKIE_REPLY + index + os.urandom(56)
            return "cookie", mutate(rng, reply) if rng.random() < 0.3 else reply
        if roll < 0.87:  # a response to an index of A's
            response = (
                m.HEADER_RESPONSE + os.urandom(4) + rng.choice(self.index_list) + os.urandom(80)
            )
            return "response", response
        initiation = rng.choice(self.initiations)  # valid mac1, unknown key
        if rng.random() < 0.3:
            return "initiation", initiation  # replayed as it is: unknown peer
        if rng.random() < 0.3:  # only mac2 changed: still a valid mac1
            tail = bytearray(initiation)
            tail[-1 - rng.randrange(16)] ^= 1 << rng.randrange(8)
            return "initiation", bytes(tail)
        return "initiation", mutate(rng, initiation)


# ---------------------------------------------------------------- datagrams to a mesh port


def mesh_route(datagram: bytes) -> str:
    """Where a datagram to a mesh interface's socket goes, by the node's own
    sorting (interface.py, meshhost.py, meshnat.py): "wireguard" (the device:
    a drop, for anything the fuzzer makes), "probe" (meshhost's _on_probe),
    "stun" (meshnat's on_datagram) or "unknown" (a drop, unknown_datagram)."""
    from meshnode.mesh.probe import is_probe
    from meshnode.nat.stun import is_stun
    from meshnode.wireguard.messages import is_wireguard

    if is_wireguard(datagram):
        return "wireguard"
    if is_probe(datagram):
        return "probe"
    if is_stun(datagram):
        return "stun"
    return "unknown"


def stun_outcome(datagram: bytes) -> str:
    """What meshnat should count for a STUN-shaped datagram (before its rate
    limit): "request" (to be answered), "malformed", "not_binding", "response"
    (no netcheck of the node's matches it: "unmatched")."""
    from meshnode.nat.stun import METHOD_BINDING, StunClass, StunError, StunMessage

    try:
        message = StunMessage.parse(datagram)
    except StunError:
        return "malformed"
    if message.method != METHOD_BINDING:
        return "not_binding"
    return "request" if message.msg_class is StunClass.REQUEST else "response"


class MeshCorpus:
    """Datagrams for a mesh interface's WireGuard socket: STUN (binding
    requests that must be answered, mutated, truncated, with random
    attributes, a wrong cookie, other classes and methods), path probes (the
    magic with random bytes; the admin's own key as the sender; a live
    member's key: forged boxes, and probes sealed with the member's private key
    -- pings to be answered, replays, pongs nobody asked for, bad plaintexts --
    and mutations of those), WireGuard-shaped and random junk.

    `expect` keeps, per datagram made, where the node's own sorting sends it
    (mesh_route) and for STUN what it should count (stun_outcome)."""

    def __init__(self, rng: random.Random, target_public: bytes,
                 member_private: bytes | None) -> None:  # fmt: skip
        from meshnode.mesh import probe
        from meshnode.nat import stun

        self.rng, self.stun, self.probe = rng, stun, probe
        self.target = target_public
        self.codec = None
        self.member_public = os.urandom(32)
        if member_private is not None:
            self.codec = probe.ProbeCodec(member_private, random.Random(rng.randrange(2**32)))
            self.member_public = self.codec.public_key
        self.made: dict[str, int] = {}
        self.expect: dict[str, int] = {}
        self.binding_txids: set[bytes] = set()  # well-formed binding requests sent
        self.ping_txids: set[bytes] = set()  # sealed pings sent
        self.pings: list[bytes] = []  # some sealed pings, for replays

    def next(self) -> bytes:
        kind, datagram = self._make()
        self.made[kind] = self.made.get(kind, 0) + 1
        route = mesh_route(datagram)
        if route == "stun":
            route = f"stun-{stun_outcome(datagram)}"
            if route == "stun-request":
                self.binding_txids.add(datagram[8:20])
        self.expect[route] = self.expect.get(route, 0) + 1
        return datagram

    def _binding(self) -> bytes:
        rng, stun = self.rng, self.stun
        return stun.binding_request(os.urandom(12), change_ip=rng.random() < 0.2,
                                    change_port=rng.random() < 0.2,
                                    software=rng.choice((None, "fuzz", "é" * 200)),
                                    fingerprint=rng.random() < 0.7)  # fmt: skip

    def _attributes(self) -> bytes:
        """A well-formed message of a random class and (mostly binding) method
        with random attributes: unknown comprehension-required ones, address
        attributes with odd families, MESSAGE-INTEGRITY, FINGERPRINT."""
        rng, stun = self.rng, self.stun
        attrs = []
        for _ in range(rng.randrange(6)):
            kind = rng.choice((stun.ATTR_XOR_MAPPED_ADDRESS, stun.ATTR_MAPPED_ADDRESS,
                               stun.ATTR_ERROR_CODE, stun.ATTR_CHANGE_REQUEST,
                               stun.ATTR_USERNAME, stun.ATTR_OTHER_ADDRESS, stun.ATTR_SOFTWARE,
                               stun.ATTR_UNKNOWN_ATTRIBUTES, stun.ATTR_RESPONSE_PORT,
                               rng.randrange(0x8000), rng.randrange(0x10000)))  # fmt: skip
            value = os.urandom(rng.choice((0, 1, 4, 8, 20, rng.randrange(300))))
            if rng.random() < 0.3:
                value = bytes([0, rng.choice((1, 2, 0, 3))]) + value[2:]
            attrs.append((kind, value))
        method = rng.choice((stun.METHOD_BINDING,) * 3 + (0, 3, rng.randrange(0x1000)))
        msg_class = rng.choice(list(stun.StunClass))
        message = stun.StunMessage(method, msg_class, os.urandom(12), tuple(attrs))
        key = os.urandom(16) if rng.random() < 0.3 else None
        return message.encode(integrity_key=key, fingerprint=rng.random() < 0.5,
                              pad=rng.choice((0, 0x20, 0xFF)))  # fmt: skip

    def _make(self) -> tuple[str, bytes]:
        rng, stun, probe = self.rng, self.stun, self.probe
        roll = rng.random()
        if roll < 0.15:  # well-formed binding requests, random txids: answered
            return "stun-binding", self._binding()
        if roll < 0.25:
            data = bytearray(mutate(rng, self._binding()))
            if rng.random() < 0.5 and len(data) >= 20:  # the length field fixed up: parsed
                data += bytes(-len(data) % 4)
                data[2:4] = struct.pack("!H", min(0xFFFF, len(data) - 20))
            return "stun-mutated", bytes(data)
        if roll < 0.30:  # truncated (the length field left as it was, or fixed up)
            data = bytearray(self._binding()[: rng.randrange(0, 40)])
            if len(data) >= 4 and rng.random() < 0.5:
                data[2:4] = struct.pack("!H", max(0, len(data) - 20))
            return "stun-truncated", bytes(data)
        if roll < 0.40:
            return "stun-attributes", self._attributes()
        if roll < 0.44:
            return "stun-attributes-mutated", mutate(rng, self._attributes())
        if roll < 0.47:  # a wrong magic cookie
            data = bytearray(self._binding())
            data[4 + rng.randrange(4)] ^= 1 << rng.randrange(8)
            return "stun-cookie", bytes(data)
        if roll < 0.50:  # responses nobody asked for (no netcheck of the node's)
            response = stun.binding_response(os.urandom(12), (F_UNDERLAY, rng.randrange(65536)))
            return "stun-response", response
        # ---- probes
        header_kind = rng.choice((probe.PING, probe.PONG, probe.PING, 0, 3, 255))
        if roll < 0.56:  # the magic and random bytes, some shorter than a probe
            size = rng.choice((0, 1, 20, 40, probe.MIN_SIZE - 1, probe.MIN_SIZE, 100, 1400,
                               rng.randrange(200)))  # fmt: skip
            return "probe-random", probe.MAGIC + os.urandom(size)
        if roll < 0.60:  # the admin's own key as the sender: not a live member
            return "probe-own-key", (
                probe.MAGIC
                + bytes([header_kind])
                + self.target
                + os.urandom(rng.choice((12 + 28, 12 + 35, 12 + 47, 100)))
            )
        if roll < 0.65:  # a member's key (random if no member), a box of random bytes
            return "probe-member-forged", (
                probe.MAGIC
                + bytes([header_kind])
                + self.member_public
                + os.urandom(rng.choice((12 + 28, 12 + 35, 12 + 47, 12 + 16, 12, 300)))
            )
        if self.codec is not None and roll < 0.80:
            return self._sealed()
        if roll < 0.86:  # a probe (sealed by the member if there is one), mutated
            base = (
                self._sealed()[1]
                if self.codec is not None
                else (probe.MAGIC + bytes([probe.PING]) + self.member_public + os.urandom(40))
            )
            return "probe-mutated", mutate(rng, base)
        if roll < 0.93:  # WireGuard-shaped junk: the mesh device's drops
            kind = rng.choice((1, 2, 3, 4))
            size = rng.choice((4, 32, 92, 148, 64, rng.randrange(300)))
            return "wireguard-junk", bytes([kind, 0, 0, 0]) + os.urandom(max(0, size - 4))
        return "random", os.urandom(rng.choice((0, 1, 4, 19, 20, 21, 24, 48,
                                                rng.randrange(1500))))  # fmt: skip

    def _sealed(self) -> tuple[str, bytes]:
        """Probes sealed with the member's private key for the admin."""
        rng, probe, codec = self.rng, self.probe, self.codec
        assert codec is not None
        roll = rng.random()
        txid = os.urandom(12)
        if roll < 0.5 or not self.pings:  # a ping: answered with a pong (rate limit aside)
            ping = codec.ping(self.target, txid)
            self.ping_txids.add(txid)
            if len(self.pings) < 64:
                self.pings.append(ping)
            return "probe-sealed-ping", ping
        if roll < 0.65:  # a replay: counted as such (or answered, if the first was dropped)
            return "probe-sealed-replay", rng.choice(self.pings)
        if roll < 0.8:  # a pong for no ping of ours
            observed = rng.choice(((F_UNDERLAY, 1), ("::1", 65535), ("10.99.0.1", 51830)))
            return "probe-sealed-pong", codec.pong(self.target, txid, observed)
        # bad plaintexts in a good box: a ping with a tail, a pong with a bad address,
        # an unknown kind
        kind = rng.choice((probe.PING, probe.PONG, 3))
        plain = txid + rng.choice((b"", b"\x04", b"\x04" + bytes(6), b"\x06" + bytes(18),
                                   b"\x05" + bytes(6), os.urandom(rng.randrange(40))))  # fmt: skip
        if kind == probe.PING:  # an empty tail makes it a good ping after all
            self.ping_txids.add(txid)
        header = probe.MAGIC + bytes([kind]) + codec.public_key
        nonce = os.urandom(12)
        box = codec._derive(self.target).encrypt(nonce, plain, header)
        return "probe-sealed-bad", header + nonce + box

    def take_answer(self, datagram: bytes, port: int, answers: dict[str, int]) -> None:
        """Sort a datagram the node sent back to one of the fuzzer's sockets."""
        stun, probe = self.stun, self.probe

        def count(key: str) -> None:
            answers[key] = answers.get(key, 0) + 1

        if stun.is_stun(datagram):
            try:
                response = stun.parse_binding_response(datagram)
            except stun.StunError:
                return count("stun-unparsable")
            if response.transaction_id not in self.binding_txids:
                return count("stun-unknown-txid")
            if response.mapped != (F_UNDERLAY, port):
                return count("stun-wrong-mapped-address")
            return count("stun-binding-answers")
        if probe.is_probe(datagram) and self.codec is not None:
            try:
                pong = self.codec.open(datagram)
            except probe.ProbeError:
                return count("probe-unopenable")
            if pong.sender != self.target:
                return count("probe-not-from-the-admin")
            if pong.kind == probe.PING:  # the admin probes the path the member's pings came by
                return count("probe-pings-from-the-admin")
            if pong.txid not in self.ping_txids:
                return count("probe-pong-unknown-txid")
            if pong.observed != (F_UNDERLAY, port):
                return count("probe-pong-wrong-observed")
            return count("probe-pongs")
        count("other")


def send_main(argv: list[str]) -> int:
    """The sender (runs inside the fuzzer's namespace): prints one JSON line."""
    p = argparse.ArgumentParser(prog="fuzzlib.py send")
    p.add_argument("--target", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--pcap", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--time-limit", type=float, default=600)
    p.add_argument("--mesh-target", help="HOST:PORT of a mesh interface's WireGuard socket")
    p.add_argument("--mesh-key", help="the mesh interface's public key (base64)")
    p.add_argument("--member-key", help="a live member's private key (base64), for probes")
    p.add_argument("--mesh-share", type=float, default=0.0,
                   help="the share of the datagrams that go to --mesh-target")  # fmt: skip
    args = p.parse_args(argv)
    from meshnode.wireguard import keys

    rng = random.Random(args.seed)
    host, port = args.target.rsplit(":", 1)
    corpus = DatagramCorpus(rng, keys.from_base64(args.key), read_pcap(Path(args.pcap)))
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(8)]
    for sock in sockets:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    target = (host, int(port))
    share = args.mesh_share if args.mesh_target else 0.0
    mesh_corpus = mesh_target = None
    mesh_sockets: list[socket.socket] = []
    mesh = {"sent": 0, "errors": 0, "answers": {}}
    if share:
        mesh_host, mesh_port = args.mesh_target.rsplit(":", 1)
        mesh_target = (mesh_host, int(mesh_port))
        member = keys.from_base64(args.member_key) if args.member_key else None
        mesh_corpus = MeshCorpus(random.Random(args.seed + 1), keys.from_base64(args.mesh_key),
                                 member)  # fmt: skip
        # their own sockets, bound, so that the node's answers can be read and counted
        for _ in range(4):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
            sock.bind(("0.0.0.0", 0))
            sock.setblocking(False)
            mesh_sockets.append(sock)

    def read_answers() -> int:
        got = 0
        for sock in mesh_sockets:
            while True:
                try:
                    datagram = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # an ICMP error reported on the socket
                    mesh["answers"]["icmp_errors"] = mesh["answers"].get("icmp_errors", 0) + 1
                    continue
                got += 1
                assert mesh_corpus is not None
                mesh_corpus.take_answer(datagram, sock.getsockname()[1], mesh["answers"])
        return got

    sent = errors = oversize = 0
    started = time.monotonic()
    burst = 64
    deadline = started + args.time_limit
    while sent + errors + oversize < args.count and time.monotonic() < deadline:
        sock = sockets[(sent // burst) % len(sockets)]  # several source ports
        for _ in range(min(burst, args.count - sent - errors - oversize)):
            to_mesh = share and rng.random() < share
            if to_mesh:
                assert mesh_corpus is not None and mesh_target is not None
                datagram = mesh_corpus.next()
                mesh_sock = mesh_sockets[mesh["sent"] % len(mesh_sockets)]
                try:
                    mesh_sock.sendto(datagram, mesh_target)
                    sent += 1
                    mesh["sent"] += 1
                except OSError:
                    errors += 1
                    mesh["errors"] += 1
                continue
            datagram = corpus.next()
            if len(datagram) > 65507:
                oversize += 1
                continue
            try:
                sock.sendto(datagram, target)
                sent += 1
            except OSError:
                errors += 1
        read_answers()
        ahead = started + (sent + errors) / args.rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    elapsed = time.monotonic() - started
    if mesh_corpus is not None:  # the last answers
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 1.0:
            if read_answers():
                quiet_since = time.monotonic()
            time.sleep(0.05)
        mesh.update(kinds=mesh_corpus.made, expect=mesh_corpus.expect,
                    binding_requests=len(mesh_corpus.binding_txids),
                    sealed_pings=len(mesh_corpus.ping_txids),
                    ports=[s.getsockname()[1] for s in mesh_sockets])  # fmt: skip
    print(json.dumps({"sent": sent, "errors": errors, "oversize": oversize,
                      "elapsed": elapsed, "kinds": corpus.made,
                      "captured": len(corpus.captured), "mesh": mesh}))  # fmt: skip
    return 0


# ---------------------------------------------------------------- UAPI requests


def uapi_corpus(rng: random.Random) -> list[bytes]:
    """Valid-looking requests wireguard-go and wg send, to be mutated."""
    from meshnode.wireguard import keys

    def key() -> str:
        return keys.to_hex(keys.public_key(keys.generate_private_key()))

    private = keys.to_hex(keys.generate_private_key())
    peer = key()
    return [
        b"get=1\n\n",
        f"set=1\nprivate_key={private}\nlisten_port={SPARE_PORT}\nfwmark=0\n\n".encode(),
        f"set=1\nreplace_peers=true\npublic_key={peer}\nendpoint=192.0.2.1:51820\n"
        f"allowed_ip=10.200.0.0/16\nallowed_ip=fd00:200::/64\n"
        f"persistent_keepalive_interval=25\n\n".encode(),
        f"set=1\npublic_key={peer}\npreshared_key={key()}\nprotocol_version=1\n"
        f"replace_allowed_ips=true\nallowed_ip=10.201.0.1/32\n\n".encode(),
        f"set=1\npublic_key={peer}\nendpoint=[fd00::1%lo]:1\nupdate_only=true\n\n".encode(),
        f"set=1\npublic_key={peer}\nremove=true\n\n".encode(),
        b"set=1\nfwmark=4294967295\nlisten_port=0\n\n",
        f"set=1\npublic_key={key()}\nendpoint=192.0.2.7:65535\nallowed_ip=0.0.0.0/0\n"
        f"allowed_ip=::/0\n\n".encode(),
        b"get=1\n\nget=1\n\n",
        b"set=1\n\n",
    ]


SPICE = [b"\xc2\xb2", b"\xd9\xa3", "１".encode(), b"-1", b"+1", b"0x10", b"9" * 5000,
         b"%", b"[", b"]", b"=", b"\r", b"\n", b"\x00", b"/", b"/129", b"::", b"%lo",
         b"\xff"]  # fmt: skip


def mutate_text(rng: random.Random, data: bytes) -> bytes:
    """Byte mutations plus line-aware ones: a value replaced with a spicy one,
    lines duplicated, dropped or swapped."""
    if rng.random() < 0.5:
        lines = data.split(b"\n")
        for _ in range(rng.randrange(1, 4)):
            i = rng.randrange(len(lines))
            op = rng.randrange(5)
            if op == 0 and b"=" in lines[i]:
                k, _, v = lines[i].partition(b"=")
                cut = rng.randrange(len(v) + 1)
                lines[i] = k + b"=" + v[:cut] + rng.choice(SPICE) + v[cut:]
            elif op == 1:
                lines.insert(i, lines[i])
            elif op == 2 and len(lines) > 2:
                del lines[i]
            elif op == 3:
                j = rng.randrange(len(lines))
                lines[i], lines[j] = lines[j], lines[i]
            else:
                lines[i] = lines[i] + rng.choice(SPICE)
        data = b"\n".join(lines)
    if rng.random() < 0.6:
        data = mutate(rng, data)
    return data


def unix_request(path: Path, data: bytes, timeout: float = 5.0, until: bytes = b"\n") -> bytes:
    """Send data on a fresh connection, half-close, read the answer until
    `until` ends it or the peer closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        while not answer.endswith(until):
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            answer += chunk
    return answer


# ---------------------------------------------------------------- control requests


CONTROL_COMMANDS = ["status", "stats", "reload", "mesh-status", "invites", "invite-revoke",
                    "mesh-log", "invite", "revoke", "mesh-init", "mesh-load", "members",
                    "show", "", "STATUS", "status ", "up", "join"]  # fmt: skip
FORBIDDEN = {"down", "leave"}


def random_json_value(rng: random.Random, depth: int = 0) -> object:
    roll = rng.randrange(12 if depth < 3 else 8)
    if roll == 0:
        return None
    if roll == 1:
        return rng.choice((True, False))
    if roll == 2:
        return rng.choice((0, -1, 1, 65536, 2**63, -(2**70), 10**400, rng.randrange(-9, 10**6)))
    if roll == 3:
        return rng.choice((0.5, 1e308, -0.0, 3.0))
    if roll in (4, 5, 6, 7):
        return rng.choice(("", "fz", "FZ", "x" * rng.randrange(300), "../../etc", "a\x00b",
                           "\u00b2", "no-such", "fz-2", "1.2.3.4:5", "mn1", "deadbeef",
                           os.urandom(4).hex(), "é"))  # fmt: skip
    if roll in (8, 9):
        return [random_json_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(("mesh", "name", "ttl", "uses", "id", "member", "endpoints")):
            random_json_value(rng, depth + 1) for _ in range(rng.randrange(3))}  # fmt: skip


ARG_NAMES = ["mesh", "name", "ttl", "uses", "id", "member", "reason", "endpoints", "cidr",
             "port", "interface", "json", "x"]  # fmt: skip


class ControlCorpus:
    def __init__(self, rng: random.Random, safe_members: set[str], max_invites: int,
                 avoid_known: bool = False) -> None:  # fmt: skip
        self.rng = rng
        self.avoid_known = avoid_known  # no mesh-load of names over 255 bytes
        self.safe_members = safe_members  # real members: never revoked
        self.invites_left = max_invites

    def next(self) -> bytes:
        rng = self.rng
        command = rng.choice(CONTROL_COMMANDS)
        args = {name: random_json_value(rng) for name in rng.sample(ARG_NAMES, rng.randrange(4))}
        if command == "invite":
            if self.invites_left <= 0:
                command = "invites"
            else:
                self.invites_left -= 1
        if command == "mesh-init":  # never a new mesh: an existing name or a bad one
            args["name"] = rng.choice((MESH_NAME, "Bad Name", "", 7, None, "x" * 64))
        if command == "revoke" and str(args.get("member")) in self.safe_members:
            args["member"] = "no-such"
        request: dict[str, object] = {"command": command}
        if args or rng.random() < 0.5:
            request["args"] = args if rng.random() < 0.9 else random_json_value(rng)
        line = json.dumps(request).encode()
        if rng.random() < 0.4:
            line = mutate_text(rng, line)
        if rng.random() < 0.05:
            line = b"[" * rng.randrange(1, 100000)
        if not self.safe(line):
            line = b'{"command": "status"}'
        return line + (b"\n" if rng.random() < 0.9 else b"")

    def safe(self, line: bytes) -> bool:
        """False for anything the node might read as down, leave, a new mesh or
        a revocation of a real member."""
        for part in line.split(b"\n")[:1]:
            try:
                request = json.loads(part.decode("utf-8"))
            except (ValueError, RecursionError):
                continue
            if not isinstance(request, dict):
                continue
            command = request.get("command")
            if command in FORBIDDEN:
                return False
            args = request.get("args", {})
            args = args if isinstance(args, dict) else {}
            if command == "mesh-init" and args.get("name") not in (MESH_NAME, None) and \
                    isinstance(args.get("name"), str) and re.fullmatch(r"[a-z0-9-]{1,63}",
                                                                     args["name"]):  # fmt: skip
                return False
            if command == "revoke" and str(args.get("member")) in self.safe_members:
                return False
            if self.avoid_known and command == "mesh-load" and len(str(args.get("mesh"))) > 200:
                return False
            if command == "invite":
                return self.invites_left >= 0
        return True


# ---------------------------------------------------------------- invites


def mutated_invites(rng: random.Random, invite_text: str, count: int) -> list[str]:
    """Text mutations (typos, cuts), and payload mutations checksummed again
    (so they reach the decoder and the signature check)."""
    from meshnode.mesh import invite as inv

    text = invite_text
    payload = inv._payload(text)
    found = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.4:
            chars = list(text)
            for _ in range(rng.randrange(1, 4)):
                if len(chars) <= len(inv.PREFIX):
                    break
                i = rng.randrange(len(inv.PREFIX), len(chars))
                op = rng.randrange(4)
                if op == 0:
                    chars[i] = rng.choice("abcdefghijklmnopqrstuvwxyz234567018=é ")
                elif op == 1:
                    del chars[i:]
                elif op == 2:
                    chars.insert(i, rng.choice("a7 \n"))
                else:
                    del chars[i]
            found.append("".join(chars))
        else:
            body = mutate(rng, payload)
            data = body + inv._checksum(body)
            found.append(inv.PREFIX + __import__("base64").b32encode(data).decode()
                         .rstrip("=").lower())  # fmt: skip
    return found


def odd_signed_invites(rng: random.Random, count: int, names: bool = True) -> list[str]:
    """Invites that parse (signed by an authority of their own) but lead nowhere
    good: bootstrap peers with low-order or random keys, odd overlay addresses,
    endpoints that are closed, ours, loopback or a name, short lifetimes."""
    from ipaddress import IPv6Address

    from meshnode.mesh.authority import Authority
    from meshnode.mesh.bootstrap import BootstrapPeer
    from meshnode.mesh.invite import Invite, format_invite

    found = []
    for _ in range(count):
        key = rng.choice((bytes(32), b"\x01" + bytes(31), os.urandom(32), b"\xff" * 32))
        overlay = IPv6Address(rng.choice(("fd00::1", "::1", "ff02::1", "::", "fe80::1",
                                          str(IPv6Address(os.urandom(16))))))  # fmt: skip
        host = rng.choice(("192.0.2.1", A_UNDERLAY, B_UNDERLAY, "127.0.0.1", "::1",
                           *(("localhost", "no-such-host.invalid") if names else ()),
                           "fd80::1"))  # fmt: skip
        port = rng.choice((1, MESH_PORT, PORT, 65535))
        peers = tuple(BootstrapPeer(key, overlay, ((host, port),))
                      for _ in range(rng.choice((1, 1, 8))))  # fmt: skip
        invite = Invite.create(
            Authority.generate(),
            mesh_id=os.urandom(16),
            mesh_name=rng.choice((MESH_NAME, "other", "z" * 63, "a-b")),
            bootstrap=peers,
            now=int(time.time()),
            lifetime=rng.choice((2, 3600)),
            member_name=rng.choice((None, "adm", "b", "x" * 63)),
        )
        found.append(format_invite(invite))
    return found


def fuzz_invites_in_process(rng: random.Random, invite_text: str, count: int) -> dict:
    """parse_invite on mutated invites: InviteError (or a valid invite) only."""
    from meshnode.mesh.invite import InviteError, parse_invite

    outcome: dict[str, int] = {}
    crashes: list[str] = []
    for text in mutated_invites(rng, invite_text, count):
        try:
            parse_invite(text, int(time.time()))
            key = "valid"
        except InviteError as exc:
            key = type(exc).__name__
        except Exception as exc:
            key = "CRASH " + type(exc).__name__
            crashes.append(f"{type(exc).__name__}: {exc} for {text[:80]}...")
        outcome[key] = outcome.get(key, 0) + 1
    return {"outcome": outcome, "crashes": crashes[:5]}


# ---------------------------------------------------------------- coordination messages


def fuzz_coordination_in_process(rng: random.Random, count: int) -> dict:
    """Mutated coordination messages handed to the mesh agents of an in-memory
    mesh (tests/mesh_memnet.py: an admin and two members), from members' keys,
    a joiner's and unknown ones: nothing may raise out of handle_message, and
    each message that does not decode must be counted as a drop."""
    from mesh_memnet import MemNet as MeshNet

    from meshnode.mesh.messages import MessageError, decode

    net = MeshNet(seed=rng.randrange(2**31))
    admin = net.found("admin")
    captured: list[tuple[bytes, bytes, bytes]] = []
    deliver = net._deliver

    def recording(src: bytes, dst: bytes, payload: bytes) -> None:
        captured.append((src, dst, payload))
        deliver(src, dst, payload)

    net._deliver = recording  # type: ignore[method-assign]
    net.join(admin, "b")
    net.join(admin, "c")
    net.run(90)
    members = [n for n in net.members() if n.agent is not None]
    keys_seen = sorted({src for src, _, _ in captured})
    outcome = {"messages": 0, "undecodable": 0, "uncounted": 0, "raised": 0}
    crashes: list[str] = []
    for _ in range(count):
        if not captured:
            break
        _, _, payload = rng.choice(captured)
        target = rng.choice(members)
        sender = rng.choice((*keys_seen, os.urandom(32)))
        data = mutate(rng, payload) if rng.random() < 0.9 else os.urandom(rng.randrange(200))
        try:
            decode(data)
            bad = False
        except MessageError:
            bad = True
        except Exception as exc:
            bad = True
            crashes.append(f"decode: {type(exc).__name__}: {exc}")
        assert target.agent is not None
        before = sum(target.agent.drops().values())
        try:
            net.inject(target, sender, data)
        except Exception as exc:
            outcome["raised"] += 1
            crashes.append(f"handle_message: {type(exc).__name__}: {exc}")
        outcome["messages"] += 1
        if bad:
            outcome["undecodable"] += 1
            if sum(target.agent.drops().values()) == before:
                outcome["uncounted"] += 1
        if rng.random() < 0.01:
            net.run(1)
    net.run(30)
    return {"outcome": outcome, "crashes": crashes[:5]}


# ---------------------------------------------------------------- the run


def proc_figures(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return {"rss_kib": rss, "fds": fds}


def udp_snmp(pid: int) -> dict[str, int]:
    """The Udp: line of /proc/net/snmp in the namespace of a process."""
    lines = [ln.split() for ln in Path(f"/proc/{pid}/net/snmp").read_text().splitlines()
             if ln.startswith("Udp:")]  # fmt: skip
    return dict(zip(lines[0][1:], map(int, lines[1][1:]), strict=True))


def recv_drops(stats: dict, exclude: str | None = None) -> tuple[int, dict[str, int]]:
    """The sum of receive-side drops of every interface (but `exclude`), and by reason."""
    by_reason: dict[str, int] = {}
    for name, iface in stats.items():
        if name == exclude:
            continue
        for reason, count in iface.get("drops", {}).items():
            if reason not in SEND_SIDE:
                by_reason[reason] = by_reason.get(reason, 0) + count
    return sum(by_reason.values()), by_reason


def udp_socket_drops(pid: int, port: int) -> int:
    """The kernel's receive drops (full buffer) of the UDP sockets bound to a
    port, from /proc/PID/net/udp and udp6 (the last column)."""
    total = 0
    for name in ("udp", "udp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]:
                parts = line.split()
                if len(parts) > 12 and int(parts[1].rsplit(":", 1)[1], 16) == port:
                    total += int(parts[-1])
    return total


# what the mesh host and its agent count for datagrams on the mesh socket
STUN_COUNTERS = ("answered", "malformed", "not_binding", "unmatched", "rate_limited", "responses")
PROBE_COUNTERS = ("bad", "not_member", "replayed", "bad_source", "pings_answered",
                  "pong_unmatched", "pongs")  # fmt: skip


def mesh_counters(status: list[dict], stats: dict, ifname: str, pid: int, port: int) -> dict:
    """Everything that counts a datagram read from (or dropped at) the mesh
    interface's socket, flat: device drops by reason, traversal.stun,
    dropped_probes, traversal.probes, the agent's failures, socket drops."""
    entry = next((e for e in status if e.get("interface") == ifname), None)
    traversal = (entry or {}).get("traversal") or {}
    found = {f"drops.{k}": v for k, v in (stats.get(ifname) or {}).get("drops", {}).items()
             if k not in SEND_SIDE}  # fmt: skip
    found |= {f"stun.{k}": v for k, v in (traversal.get("stun") or {}).items()}
    found |= {f"probes.{k}": v for k, v in (traversal.get("probes") or {}).items()}
    found["dropped_probes"] = traversal.get("dropped_probes", 0)
    found["agent_errors"] = traversal.get("agent_errors", 0)
    found["socket_drops"] = udp_socket_drops(pid, port)
    return found


def mesh_accounting(before: dict, after: dict) -> dict[str, int]:
    """The change of each counter, and the datagrams each part of the node says
    it took: "device" (the mesh interface's receive drops: WireGuard-shaped and
    unknown datagrams), "stun", "probe" (dropped before the agent, or counted
    by it), "kernel" (the socket's buffer was full)."""
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after)}
    delta = {k: v for k, v in delta.items() if v}
    return {
        "device": sum(v for k, v in delta.items() if k.startswith("drops.")),
        "stun": sum(delta.get(f"stun.{k}", 0) for k in STUN_COUNTERS),
        "probe": delta.get("dropped_probes", 0)
        + sum(delta.get(f"probes.{k}", 0) for k in PROBE_COUNTERS),
        "kernel": delta.get("socket_drops", 0),
        "delta": delta,  # type: ignore[dict-item]
    }


def make_member(lab, ns, invite: str) -> tuple[bytes | None, str, list[str]]:
    """A live member's private key: a second `meshnode up` in `ns` joins the
    mesh with `invite` and is stopped (it stays in the roster: a member
    that is offline). None, and why, if it did not work; the tracebacks the
    member node logged."""
    from netns import wait_for

    from meshnode.wireguard import keys

    root = lab.tmp_path / "node-member"
    (root / "wg").mkdir(parents=True)
    env = {**os.environ, "MESHNODE_RUN_DIR": str(root / "run"),
           "MESHNODE_STATE_DIR": str(root / "state"), "WG_SOCKET_DIR": str(root / "wg"),
           "LOG_LEVEL": "verbose", "MESHNODE_CONFIG": str(root / "no-config.toml")}  # fmt: skip
    process = ns.spawn(*MESHNODE, "up", env=env)
    try:

        def answers() -> bool:
            if not process.running():
                raise AssertionError(f"the member's meshnode up exited:\n{process.log()}")
            return ns.run(*MESHNODE, "stats", env=env, check=False, timeout=10).returncode == 0

        wait_for(answers, 30, "the member node")
        r = ns.run(*MESHNODE, "join", invite, "--name", "member", "--timeout", "20", env=env,
                   check=False, timeout=60)  # fmt: skip
        output = (r.stdout + r.stderr).decode(errors="replace")
        if r.returncode != 0:
            key, note = None, f"join failed: {output.strip()[-500:]}"
        else:
            key_file = root / "state" / "meshes" / MESH_NAME / "private.key"
            key, note = keys.from_base64(key_file.read_text().strip()), output.strip()
    finally:
        process.stop(10)
    return key, note.splitlines()[-1] if key else note, tracebacks(process.log())


@dataclass
class Result:
    figures: dict = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.failures.append(what)


def check_mesh_datagrams(result: Result, mesh: dict, accounted: dict, out=print) -> None:
    """Every datagram the sender put on the mesh port counted by the part of the
    node its sorting sends it to (exactly, unless the socket's buffer overflowed:
    then within the socket's drops), the binding requests answered (but for the
    rate limit) with the right address, the member's pings answered with pongs."""
    sent, expect = mesh.get("sent", 0), mesh.get("expect", {})
    answers, delta = mesh.get("answers", {}), accounted.get("delta", {})
    kernel = accounted.get("kernel", 0)
    want = {"device": expect.get("wireguard", 0) + expect.get("unknown", 0),
            "stun": sum(v for k, v in expect.items() if k.startswith("stun-")),
            "probe": expect.get("probe", 0)}  # fmt: skip
    got = {k: accounted.get(k, 0) for k in want}
    stun_want = {"request": expect.get("stun-request", 0),
                 "malformed": expect.get("stun-malformed", 0),
                 "not_binding": expect.get("stun-not_binding", 0),
                 "response": expect.get("stun-response", 0)}  # fmt: skip
    stun_got = {
        "request": delta.get("stun.answered", 0) + delta.get("stun.rate_limited", 0),
        "malformed": delta.get("stun.malformed", 0),
        "not_binding": delta.get("stun.not_binding", 0),
        "response": delta.get("stun.unmatched", 0) + delta.get("stun.responses", 0),
    }
    answered = delta.get("stun.answered", 0)
    pings_answered = delta.get("probes.pings_answered", 0)
    result.figures["mesh_datagrams"] = {
        "sent": sent, "send_errors": mesh.get("errors", 0), "kinds": mesh.get("kinds"),
        "expected_by_route": want, "accounted_by_route": got, "socket_drops": kernel,
        "stun_expected": stun_want, "stun_counted": stun_got, "counters": delta,
        "answers_received": answers, "binding_requests": mesh.get("binding_requests"),
        "sealed_pings": mesh.get("sealed_pings"),
    }  # fmt: skip
    out(f"mesh port: {sent} datagrams sent, kinds {json.dumps(mesh.get('kinds'), sort_keys=True)}")
    out(
        f"  by route expected {json.dumps(want, sort_keys=True)}, counted "
        f"{json.dumps(got, sort_keys=True)}, {kernel} dropped by the kernel (socket buffer)"
    )
    out(f"  STUN expected {json.dumps(stun_want, sort_keys=True)}, counted "
        f"{json.dumps(stun_got, sort_keys=True)}")  # fmt: skip
    out(f"  node counters: {json.dumps(delta, sort_keys=True)}")
    out(f"  answers received: {json.dumps(answers, sort_keys=True)}")
    taken = sum(got.values())
    result.check(taken + kernel == sent,
                 f"mesh port: {sent} datagrams sent, {taken} counted by the node and {kernel} "
                 f"dropped by the kernel")  # fmt: skip
    for part, expected in [*want.items(), *((f"stun {k}", v) for k, v in stun_want.items())]:
        counted = got[part] if part in got else stun_got[part.split()[1]]
        result.check(expected - kernel <= counted <= expected,
                     f"mesh port: {expected} datagrams for {part} but {counted} counted "
                     f"({kernel} kernel drops)")  # fmt: skip
    if stun_want["request"]:
        result.check(answered > 0, "mesh port: no binding request answered")
    result.check(answered * 0.95 <= answers.get("stun-binding-answers", 0) <= answered,
                 f"mesh port: {answered} binding requests answered, "
                 f"{answers.get('stun-binding-answers', 0)} answers received")  # fmt: skip
    result.check(pings_answered * 0.95 <= answers.get("probe-pongs", 0) <= pings_answered,
                 f"mesh port: {pings_answered} pings answered, "
                 f"{answers.get('probe-pongs', 0)} pongs received")  # fmt: skip
    if mesh.get("sealed_pings"):
        result.check(pings_answered > 0, "mesh port: no ping of the member answered")
    wrong = {
        k: v
        for k, v in answers.items()
        if k not in ("stun-binding-answers", "probe-pongs", "probe-pings-from-the-admin")
    }
    result.check(not wrong, f"mesh port: unexpected answers {wrong}")
    result.check(answers.get("probe-pings-from-the-admin", 0) <= delta.get("probes.pings_sent", 0),
                 "mesh port: more pings from the admin than it says it sent")  # fmt: skip
    result.check(not delta.get("agent_errors"), f"the mesh agent failed "
                 f"{delta.get('agent_errors')} times (see the node's log)")  # fmt: skip
    result.check(
        not delta.get("drops.handler_failed"),
        f"a datagram handler failed {delta.get('drops.handler_failed')} times",
    )


def tracebacks(log: str) -> list[str]:
    """Each traceback in a log, with the line before it (who logged it)."""
    found = []
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if "Traceback (most recent call last)" in line:
            tail = [ln for ln in lines[i + 1 : i + 40] if ln and not ln.startswith(" ")]
            found.append(f"{line.strip()[:120]} ... {tail[0] if tail else ''}")
    return found


def toml_config(
    name: str,
    private: str,
    address: str,
    port: int,
    peer_public: str,
    peer_endpoint: str,
    peer_inner: str,
    spare: tuple[str, str] | None,
) -> str:
    text = f"""[[interface]]
name = "{name}"
private_key = "{private}"
listen_port = {port}
address = ["{address}/24"]

[[interface.peer]]
public_key = "{peer_public}"
endpoint = "{peer_endpoint}"
allowed_ips = ["{peer_inner}/32"]
"""
    if spare:
        text += f"""
[[interface]]
name = "{spare[0]}"
private_key = "{spare[1]}"
listen_port = {SPARE_PORT}
table = "off"
"""
    return text


def run(count: int, requests: int, joins: int, rate: float, seed: int, time_limit: float,
        rss_slack_kib: int, out=print, logs_dir: str | None = None,
        avoid_known: bool = False, mesh_share: float = 0.15) -> Result:  # fmt: skip
    from netns import Lab, require_netns, wait_for
    from nodelab import Node, new_key, write_private

    del require_netns  # the script checks root itself; the test skips without it
    result = Result()
    fig = result.figures
    rng = random.Random(seed)
    started = time.monotonic()
    with Lab() as lab:
        a, b, f = lab.namespace("a"), lab.namespace("b"), lab.namespace("f")
        ab = lab.veth(a, b, f"{A_UNDERLAY}/24", f"{B_UNDERLAY}/24")
        lab.veth(a, f, f"{A_FUZZ_SIDE}/24", f"{F_UNDERLAY}/24")
        t_a, t_b, spare = lab.ifname("t"), lab.ifname("t"), lab.ifname("z")
        a_priv, a_pub = new_key()
        b_priv, b_pub = new_key()
        z_priv, _ = new_key()
        nodes = {}
        for tag, ns, cfg in (
            ("a", a, toml_config(t_a, a_priv, A_INNER, PORT, b_pub, f"{B_UNDERLAY}:{PORT}",
                                 B_INNER, (spare, z_priv))),
            ("b", b, toml_config(t_b, b_priv, B_INNER, PORT, a_pub, f"{A_UNDERLAY}:{PORT}",
                                 A_INNER, None)),
        ):  # fmt: skip
            root = lab.tmp_path / f"node-{tag}"
            (root / "wg").mkdir(parents=True)
            config = write_private(lab.tmp_path / f"{tag}.toml", cfg)
            node = Node(lab, ns, config, root / "run")
            nodes[tag] = node
        wg_dirs = {tag: lab.tmp_path / f"node-{tag}" / "wg" for tag in nodes}
        # each node its own UAPI socket directory (meshes are named mn-NAME everywhere)
        envs = {tag: {**node.env, "WG_SOCKET_DIR": str(wg_dirs[tag])}
                for tag, node in nodes.items()}  # fmt: skip
        for tag, node in nodes.items():
            node.process = node.ns.spawn(*MESHNODE, "up", str(node.config), env=envs[tag])
        for tag, node in nodes.items():
            wait_for(lambda n=node: _answers(n), 30, f"node {tag}")

        def cli(tag: str, *args: str, check: bool = True, timeout: float = 60) -> tuple[int, str]:
            node = nodes[tag]
            r = node.ns.run(*MESHNODE, *args, env=envs[tag], check=check, timeout=timeout)
            return r.returncode, (r.stdout + r.stderr).decode(errors="replace")

        def stats(tag: str) -> dict:
            return json.loads(cli(tag, "stats")[1])

        def ping(count_: int = 3) -> bool:
            r = b.run("ping", "-n", "-c", str(count_), "-i", "0.2", "-W", "2", A_INNER,
                      check=False, timeout=60)  # fmt: skip
            return r.returncode == 0

        # capture the tunnel's first messages (handshake, transports) while it comes up
        pcap = lab.tmp_path / "tunnel.pcap"
        dump = a.spawn("tcpdump", "-n", "-U", "-i", ab.a_ifname, "-w", str(pcap), "udp", "port",
                       str(PORT))  # fmt: skip
        wait_for(lambda: "listening on" in dump.log(), 10, "tcpdump")
        tunnel_up = ping(5)
        time.sleep(0.3)
        dump.stop()
        result.check(tunnel_up, "the tunnel did not carry pings before the fuzz")
        captured = read_pcap(pcap)
        fig["captured"] = len(captured)
        # make A a mesh admin: coordination and invites to fuzz
        cli("a", "init", MESH_NAME, "--member", "adm", "--port", str(MESH_PORT),
            "--endpoint", f"{A_UNDERLAY}:{MESH_PORT}")  # fmt: skip
        pid_a, pid_b = nodes["a"].process.pid, nodes["b"].process.pid  # type: ignore[union-attr]
        # the mesh interface as the node shows it, and a live member's key for the probes
        mesh_if, mesh_port, mesh_public, member_private = None, 0, "", None
        if mesh_share and count:
            from meshnode.wireguard import keys

            status_a = json.loads(cli("a", "status", "--json")[1])
            entry = next(e for e in status_a if e.get("mesh_name") == MESH_NAME)
            mesh_if = entry["interface"]
            mesh_port = stats("a").get(mesh_if, {}).get("listen_port") or MESH_PORT
            key_file = nodes["a"].run_dir / "state" / "meshes" / MESH_NAME / "private.key"
            mesh_public = keys.to_base64(keys.public_key(keys.from_base64(
                key_file.read_text().strip())))  # fmt: skip
            made = a.run(*MESHNODE, "invite", "--name", "member", "--ttl", "1h", env=envs["a"],
                         timeout=60)  # fmt: skip
            t0 = time.monotonic()
            member_private, note, member_tracebacks = make_member(
                lab, b, made.stdout.decode().strip().splitlines()[-1]
            )
            fig["mesh_member"] = {"note": note, "seconds": round(time.monotonic() - t0, 1),
                                  "tracebacks": member_tracebacks}  # fmt: skip
            out(f"mesh {MESH_NAME}: interface {mesh_if}, port {mesh_port}; a member for the "
                f"probes: {note} ({fig['mesh_member']['seconds']} s)")  # fmt: skip
            result.check(member_private is not None, f"no member for the probes: {note}")
            result.check(not member_tracebacks, f"the member node logged {member_tracebacks}")
        ping(2)
        time.sleep(1)
        base = {"a": proc_figures(pid_a), "b": proc_figures(pid_b)}
        fig["before"] = base
        out(f"setup done in {time.monotonic() - started:.1f} s; node A pid {pid_a}, "
            f"node B pid {pid_b}; {len(captured)} tunnel datagrams captured")  # fmt: skip

        try:
            # ---------------- 1. datagrams
            if count:

                def mesh_now() -> dict:
                    if mesh_if is None:
                        return {}
                    status = json.loads(cli("a", "status", "--json")[1])
                    return mesh_counters(status, stats("a"), mesh_if, pid_a, mesh_port)

                mesh0 = mesh_now()
                stats0 = stats("a")
                snmp0, (drops0, _) = udp_snmp(pid_a), recv_drops(stats0, exclude=mesh_if)
                mesh_args = []
                if mesh_if is not None:
                    mesh_args = [
                        "--mesh-target",
                        f"{A_FUZZ_SIDE}:{mesh_port}",
                        "--mesh-key",
                        mesh_public,
                        "--mesh-share",
                        str(mesh_share),
                    ]
                    if member_private is not None:
                        mesh_args += ["--member-key", keys.to_base64(member_private)]
                sender = f.spawn(sys.executable, str(Path(__file__).resolve()), "send",
                                 "--target", f"{A_FUZZ_SIDE}:{PORT}", "--key", a_pub,
                                 "--pcap", str(pcap), "--count", str(count), "--rate", str(rate),
                                 "--seed", str(seed), "--time-limit", str(time_limit),
                                 *mesh_args)  # fmt: skip
                pings = 0
                rss_mid = None
                while sender.running():
                    ping(1)
                    pings += 1
                    if rss_mid is None and time.monotonic() > started:
                        rss_mid = None
                    time.sleep(0.5)
                time.sleep(2)  # let A drain its socket
                send_out = sender.log().strip().splitlines()
                try:
                    sent = json.loads(send_out[-1])
                except (ValueError, IndexError):
                    result.failures.append(f"the sender failed:\n{sender.log()[-2000:]}")
                    sent = {"sent": 0}
                snmp1 = udp_snmp(pid_a)
                st1 = stats("a")
                mesh1 = mesh_now()
                drops1, by_reason1 = recv_drops(st1, exclude=mesh_if)
                _, by_reason0 = recv_drops(stats0, exclude=mesh_if)
                arrived = snmp1["InDatagrams"] - snmp0["InDatagrams"]
                kernel_dropped = snmp1["RcvbufErrors"] - snmp0["RcvbufErrors"]
                counted = drops1 - drops0  # by the static interfaces
                mesh_sent = (sent.get("mesh") or {}).get("sent", 0)
                accounted = mesh_accounting(mesh0, mesh1) if mesh_if else {}
                mesh_taken = sum(accounted.get(k, 0) for k in ("device", "stun", "probe"))
                legit = pings * 2 + 20  # B's echo requests, keepalives, handshakes, stats
                delta = {k: v - by_reason0.get(k, 0) for k, v in by_reason1.items()
                         if v != by_reason0.get(k, 0)}  # fmt: skip
                fig["datagrams"] = {"sent": sent.get("sent"), "send_errors": sent.get("errors"),
                                    "rate": round(sent.get("sent", 0) / max(sent.get("elapsed", 1),
                                                                            1e-9)),
                                    "arrived_at_A_sockets": arrived,
                                    "kernel_dropped_rcvbuf": kernel_dropped,
                                    "counted_as_drops": counted, "pings_during": pings,
                                    "by_reason": delta, "kinds": sent.get("kinds"),
                                    "to_mesh_port": mesh_sent}  # fmt: skip
                d = fig["datagrams"]
                out(f"datagrams: {d['sent']} sent at {d['rate']}/s, {arrived} read by A's "
                    f"sockets, {kernel_dropped} dropped by the kernel (receive buffer), "
                    f"{counted} counted as drops by A ({pings} pings meanwhile)")  # fmt: skip
                out(f"  by reason: {json.dumps(delta, sort_keys=True)}")
                result.check(sent.get("sent", 0) >= count * 0.99, f"only {sent.get('sent')} sent")
                result.check(arrived + kernel_dropped >= sent.get("sent", 0) * 0.99,
                             "datagrams went missing before A's socket")  # fmt: skip
                result.check(arrived - legit <= counted + mesh_taken <= arrived,
                             f"{arrived} datagrams read but {counted} counted as drops and "
                             f"{mesh_taken} by the mesh interface "
                             f"(allowing {legit} legitimate ones)")  # fmt: skip
                if mesh_if is not None:
                    check_mesh_datagrams(result, sent.get("mesh") or {}, accounted, out)
                result.check(ping(3), "the tunnel stopped carrying pings after the datagrams")

            fig.setdefault("rss_trace_a", []).append(proc_figures(pid_a)["rss_kib"])
            # ---------------- 2. UAPI
            if requests:
                sockets = {"spare": wg_dirs["a"] / f"{spare}.sock",
                           "tunnel": wg_dirs["a"] / f"{t_a}.sock",
                           "mesh": wg_dirs["a"] / f"mn-{MESH_NAME}.sock"}  # fmt: skip
                corpus = uapi_corpus(rng)
                out(f"UAPI sockets: {sorted(os.listdir(wg_dirs['a']))}")
                answers: dict[str, int] = {}
                failed_conn = 0
                t0 = time.monotonic()
                for i in range(requests):
                    request = mutate_text(rng, rng.choice(corpus))
                    if avoid_known:  # no listen-port changes (see --avoid-known)
                        request = b"\n".join(ln for ln in request.split(b"\n")
                                             if ln.split(b"=")[0] != b"listen_port")  # fmt: skip
                    first = request.split(b"\n", 1)[0].rstrip(b"\r")
                    target = "spare" if first == b"set=1" or not first.startswith(b"get") else \
                        rng.choice(("spare", "tunnel", "mesh"))  # fmt: skip
                    if first.startswith(b"set") or b"set=1" in request:
                        target = "spare"  # a set never reaches the tunnel or the mesh
                    try:
                        answer = unix_request(sockets[target], request, until=b"\n\n")
                    except OSError:
                        failed_conn += 1
                        if not nodes["a"].process.running():  # type: ignore[union-attr]
                            result.failures.append(f"node A died at UAPI request {i}: {request!r}")
                            break
                        if not sockets[target].exists():
                            result.failures.append(
                                f"interface {target}'s UAPI socket went away "
                                f"at request {i}: {request[:300]!r}"
                            )
                            break
                        continue
                    found = re.findall(rb"errno=(-?\d+)", answer)
                    key = found[-1].decode() if found else "closed"
                    answers[key] = answers.get(key, 0) + 1
                    if i % 500 == 499:  # the spare interface back to no peers
                        with contextlib.suppress(OSError):
                            unix_request(sockets["spare"], b"set=1\nreplace_peers=true\n\n",
                                         until=b"\n\n")  # fmt: skip
                    if time.monotonic() - t0 > time_limit:
                        result.failures.append(f"UAPI phase hit its time limit after {i} requests")
                        break
                with contextlib.suppress(OSError):
                    unix_request(sockets["spare"], b"set=1\nreplace_peers=true\n\n", until=b"\n\n")
                fig["uapi"] = {"requests": requests, "answers": answers,
                               "connection_errors": failed_conn,
                               "seconds": round(time.monotonic() - t0, 1)}  # fmt: skip
                out(
                    f"UAPI: {requests} requests in {fig['uapi']['seconds']} s, answers by errno "
                    f"{json.dumps(answers, sort_keys=True)}, {failed_conn} connection errors"
                )
                result.check(failed_conn <= requests // 100,
                             f"{failed_conn} UAPI connections failed")  # fmt: skip

            fig.setdefault("rss_trace_a", []).append(proc_figures(pid_a)["rss_kib"])
            # ---------------- 3. control socket
            if requests:
                control_path = nodes["a"].run_dir / "control.sock"
                ccorpus = ControlCorpus(rng, {"adm"}, max_invites=max(5, requests // 1000),
                                        avoid_known=avoid_known)  # fmt: skip
                replies: dict[str, int] = {}
                failed_conn = internal = 0
                t0 = time.monotonic()
                for i in range(requests):
                    line = ccorpus.next()
                    try:
                        answer = unix_request(control_path, line, timeout=15)
                    except OSError:
                        failed_conn += 1
                        if not nodes["a"].process.running():  # type: ignore[union-attr]
                            result.failures.append(f"node A died at control request {i}: {line!r}")
                            break
                        continue
                    try:
                        reply = json.loads(answer)
                        key = "ok" if reply.get("ok") else "error"
                        if reply.get("error") == "internal error":
                            key, internal = "internal error", internal + 1
                            fig.setdefault("internal_errors", []).append(line[:200].decode(
                                errors="replace"))  # fmt: skip
                    except (ValueError, AttributeError):
                        key = "no JSON answer"
                    replies[key] = replies.get(key, 0) + 1
                    if time.monotonic() - t0 > time_limit:
                        result.failures.append(f"control phase hit its time limit after {i}")
                        break
                fig["control"] = {"requests": requests, "replies": replies,
                                  "connection_errors": failed_conn,
                                  "seconds": round(time.monotonic() - t0, 1)}  # fmt: skip
                out(
                    f"control: {requests} requests in {fig['control']['seconds']} s, replies "
                    f"{json.dumps(replies, sort_keys=True)}, {failed_conn} connection errors"
                )
                result.check(internal == 0, f"{internal} control requests failed inside the node")
                result.check(replies.get("no JSON answer", 0) == 0, "control answers not JSON")
                result.check(failed_conn <= requests // 100,
                             f"{failed_conn} control connections failed")  # fmt: skip

            fig.setdefault("rss_trace_a", []).append(proc_figures(pid_a)["rss_kib"])
            # ---------------- 4. invites and coordination messages
            made = nodes["a"].ns.run(*MESHNODE, "invite", "--name", "joiner", "--ttl", "1h",
                                     env=envs["a"], timeout=60)  # fmt: skip
            invite = made.stdout.decode().strip().splitlines()[-1]
            parsed = fuzz_invites_in_process(rng, invite, max(1000, requests))
            fig["invites_parsed"] = parsed
            out(f"invites parsed in-process: {json.dumps(parsed['outcome'], sort_keys=True)}")
            result.check(not parsed["crashes"], f"parse_invite raised: {parsed['crashes']}")
            coordination = fuzz_coordination_in_process(rng, max(1000, requests))
            fig["coordination_in_process"] = coordination
            out(f"coordination messages to in-memory mesh agents: "
                f"{json.dumps(coordination['outcome'], sort_keys=True)}")  # fmt: skip
            result.check(not coordination["crashes"],
                         f"a mesh agent raised: {coordination['crashes']}")  # fmt: skip
            result.check(not coordination["outcome"]["uncounted"],
                         "undecodable coordination messages not counted")  # fmt: skip
            join_outcomes: dict[str, int] = {}
            from meshnode.mesh.invite import InviteError, parse_invite

            candidates = []
            for text in mutated_invites(rng, invite, joins * 20):
                try:
                    parse_invite(text, int(time.time()))
                    continue  # still a valid invite: it would join for real
                except InviteError:
                    candidates.append(text)
                except Exception:
                    candidates.append(text)
            # the forged ones (payload mutated) reach the deepest: take those first
            candidates.sort(key=lambda t: not t.startswith("mn1") or len(t) != len(invite))
            odd = odd_signed_invites(rng, joins - joins // 2, names=not avoid_known)
            for text in [*candidates[: joins // 2], *odd]:
                rc, output = cli("b", "join", text, "--timeout", "2", check=False, timeout=60)
                if "Traceback" in output:
                    key = "TRACEBACK"
                    fig.setdefault("join_tracebacks", []).append(output[-1500:])
                elif rc == 0:
                    key = "joined"
                else:
                    last = output.strip().splitlines()[-1] if output.strip() else f"exit {rc}"
                    key = last.removeprefix("meshnode: ").split(":")[0][:60]
                join_outcomes[key] = join_outcomes.get(key, 0) + 1
            fig["joins"] = join_outcomes
            out(f"joins: {joins} mutated invites to `meshnode join --timeout 2`: "
                f"{json.dumps(join_outcomes, sort_keys=True)}")  # fmt: skip
            result.check("TRACEBACK" not in join_outcomes, "meshnode join printed a traceback")
            result.check("joined" not in join_outcomes, "a mutated invite joined")

            # ---------------- the end: checks
            time.sleep(1)
            for tag, node in nodes.items():
                result.check(node.process.running(), f"node {tag.upper()} is down")  # type: ignore
            result.check(ping(3), "the tunnel does not carry pings at the end")
            if mesh_if is not None:  # the mesh still there, its interface still listening
                rc, text = cli("a", "status", "--json", check=False)
                listed = rc == 0 and any(e.get("interface") == mesh_if for e in json.loads(text))
                result.check(listed, f"mesh {MESH_NAME} is gone from `meshnode status`")
                result.check(
                    stats("a").get(mesh_if, {}).get("listen_port") == mesh_port,
                    f"the mesh interface {mesh_if} no longer listens on {mesh_port}",
                )
            after = {"a": proc_figures(pid_a), "b": proc_figures(pid_b)}
            fig["after"] = after
            for tag in ("a", "b"):
                grew = after[tag]["rss_kib"] - base[tag]["rss_kib"]
                out(f"node {tag.upper()}: VmRSS {base[tag]['rss_kib']} -> {after[tag]['rss_kib']} "
                    f"KiB, open files {base[tag]['fds']} -> {after[tag]['fds']}")  # fmt: skip
                result.check(grew <= rss_slack_kib,
                             f"node {tag.upper()}'s memory grew by {grew} KiB")  # fmt: skip
                result.check(after[tag]["fds"] <= base[tag]["fds"] + 4,
                             f"node {tag.upper()} leaks file descriptors")  # fmt: skip
            for tag, node in nodes.items():
                found = tracebacks(node.log())
                fig[f"tracebacks_{tag}"] = found
                for item in found[:10]:
                    out(f"node {tag.upper()} logged: {item}")
                result.check(not found, f"node {tag.upper()} logged {len(found)} tracebacks")
        except Exception as exc:  # the harness met something unexpected: report, clean up
            import traceback

            result.failures.append(f"the fuzzer stopped: {type(exc).__name__}: {exc}")
            out(traceback.format_exc())
            for tag, node in nodes.items():
                found = tracebacks(node.log())
                for item in found[:10]:
                    out(f"node {tag.upper()} logged: {item}")
                if not node.process.running():  # type: ignore[union-attr]
                    out(
                        f"node {tag.upper()} is down; the end of its log:\n"
                        + "\n".join(node.log().splitlines()[-40:])
                    )
        finally:
            if logs_dir:
                Path(logs_dir).mkdir(parents=True, exist_ok=True)
                for tag, node in nodes.items():
                    (Path(logs_dir) / f"node-{tag}.log").write_text(node.log())
        fig["log_lines_a"] = nodes["a"].log().count("\n")
        cli("a", "leave", check=False, timeout=20)
        for node in nodes.values():
            node.terminate()
    fig["seconds"] = round(time.monotonic() - started, 1)
    fig["crashes_found"] = len(result.failures)
    return result


def _answers(node) -> bool:
    if not node.process.running():
        raise AssertionError(f"meshnode up exited early:\n{node.process.log()}")
    return node.status() is not None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["send"]:
        return send_main(argv[1:])
    p = argparse.ArgumentParser(prog="scripts/fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=float, default=1e6, help="datagrams (1e6)")
    p.add_argument("--requests", type=float, default=1e5,
                   help="UAPI requests, and as many control requests (1e5)")  # fmt: skip
    p.add_argument("--joins", type=int, default=40, help="`meshnode join` runs (40)")
    p.add_argument("--rate", type=float, default=20000, help="datagrams per second (20000)")
    p.add_argument("--seed", type=int, default=int(time.time()))
    p.add_argument("--time-limit", type=float, default=900, help="seconds per phase (900)")
    p.add_argument("--rss-slack", type=int, default=16384, help="KiB of growth allowed")
    p.add_argument(
        "--mesh-share",
        type=float,
        default=0.15,
        help="the share of the datagrams sent to the mesh interface's port (0.15)",
    )
    p.add_argument("--json", help="write the figures to this file")
    p.add_argument("--logs", help="copy the nodes' logs into this directory")
    p.add_argument(
        "--avoid-known",
        action="store_true",
        help="leave out the inputs of the bugs tests/test_fuzz.py marks xfail: listen-port "
        "changes over the UAPI, mesh-load with names over 255 bytes, host names in invites",
    )
    args = p.parse_args(argv)
    # SIGTERM unwinds like an exception, so the Lab removes what it made
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if os.geteuid() != 0:
        print("scripts/fuzz needs root (namespaces, TUN devices)", file=sys.stderr)
        return 2
    print(f"seed {args.seed}")
    result = run(int(args.count), int(args.requests), args.joins, args.rate, args.seed,
                 args.time_limit, args.rss_slack, logs_dir=args.logs,
                 avoid_known=args.avoid_known, mesh_share=args.mesh_share)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result.figures, indent=1, default=str))
    for failure in result.failures:
        print(f"FAIL: {failure}")
    print(f"{'FAIL' if result.failures else 'PASS'}: {len(result.failures)} problems found "
          f"in {result.figures.get('seconds')} s")  # fmt: skip
    return 1 if result.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
