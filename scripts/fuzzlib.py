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
through the tunnel afterwards.
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
    args = p.parse_args(argv)
    from meshnode.wireguard import keys

    host, port = args.target.rsplit(":", 1)
    corpus = DatagramCorpus(random.Random(args.seed), keys.from_base64(args.key),
                            read_pcap(Path(args.pcap)))  # fmt: skip
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(8)]
    for sock in sockets:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    target = (host, int(port))
    sent = errors = oversize = 0
    started = time.monotonic()
    burst = 64
    deadline = started + args.time_limit
    while sent + errors + oversize < args.count and time.monotonic() < deadline:
        sock = sockets[(sent // burst) % len(sockets)]  # several source ports
        for _ in range(min(burst, args.count - sent - errors - oversize)):
            datagram = corpus.next()
            if len(datagram) > 65507:
                oversize += 1
                continue
            try:
                sock.sendto(datagram, target)
                sent += 1
            except OSError:
                errors += 1
        ahead = started + (sent + errors) / args.rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    elapsed = time.monotonic() - started
    print(json.dumps({"sent": sent, "errors": errors, "oversize": oversize,
                      "elapsed": elapsed, "kinds": corpus.made,
                      "captured": len(corpus.captured)}))  # fmt: skip
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


def recv_drops(stats: dict) -> tuple[int, dict[str, int]]:
    """The sum of receive-side drops of every interface, and by reason."""
    by_reason: dict[str, int] = {}
    for iface in stats.values():
        for reason, count in iface.get("drops", {}).items():
            if reason not in SEND_SIDE:
                by_reason[reason] = by_reason.get(reason, 0) + count
    return sum(by_reason.values()), by_reason


@dataclass
class Result:
    figures: dict = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.failures.append(what)


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
        avoid_known: bool = False) -> Result:  # fmt: skip
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
        ping(2)
        time.sleep(1)
        base = {"a": proc_figures(pid_a), "b": proc_figures(pid_b)}
        fig["before"] = base
        out(f"setup done in {time.monotonic() - started:.1f} s; node A pid {pid_a}, "
            f"node B pid {pid_b}; {len(captured)} tunnel datagrams captured")  # fmt: skip

        try:
            # ---------------- 1. datagrams
            if count:
                snmp0, (drops0, _) = udp_snmp(pid_a), recv_drops(stats("a"))
                stats0 = stats("a")
                sender = f.spawn(sys.executable, str(Path(__file__).resolve()), "send",
                                 "--target", f"{A_FUZZ_SIDE}:{PORT}", "--key", a_pub,
                                 "--pcap", str(pcap), "--count", str(count), "--rate", str(rate),
                                 "--seed", str(seed), "--time-limit", str(time_limit))  # fmt: skip
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
                drops1, by_reason1 = recv_drops(st1)
                _, by_reason0 = recv_drops(stats0)
                arrived = snmp1["InDatagrams"] - snmp0["InDatagrams"]
                kernel_dropped = snmp1["RcvbufErrors"] - snmp0["RcvbufErrors"]
                counted = drops1 - drops0
                legit = pings * 2 + 20  # B's echo requests, keepalives, handshakes, stats
                delta = {k: v - by_reason0.get(k, 0) for k, v in by_reason1.items()
                         if v != by_reason0.get(k, 0)}  # fmt: skip
                fig["datagrams"] = {"sent": sent.get("sent"), "send_errors": sent.get("errors"),
                                    "rate": round(sent.get("sent", 0) / max(sent.get("elapsed", 1),
                                                                            1e-9)),
                                    "arrived_at_A_sockets": arrived,
                                    "kernel_dropped_rcvbuf": kernel_dropped,
                                    "counted_as_drops": counted, "pings_during": pings,
                                    "by_reason": delta, "kinds": sent.get("kinds")}  # fmt: skip
                d = fig["datagrams"]
                out(f"datagrams: {d['sent']} sent at {d['rate']}/s, {arrived} read by A's "
                    f"sockets, {kernel_dropped} dropped by the kernel (receive buffer), "
                    f"{counted} counted as drops by A ({pings} pings meanwhile)")  # fmt: skip
                out(f"  by reason: {json.dumps(delta, sort_keys=True)}")
                result.check(sent.get("sent", 0) >= count * 0.99, f"only {sent.get('sent')} sent")
                result.check(arrived + kernel_dropped >= sent.get("sent", 0) * 0.99,
                             "datagrams went missing before A's socket")  # fmt: skip
                result.check(arrived - legit <= counted <= arrived,
                             f"{arrived} datagrams read but {counted} counted as drops "
                             f"(allowing {legit} legitimate ones)")  # fmt: skip
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
                 avoid_known=args.avoid_known)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result.figures, indent=1, default=str))
    for failure in result.failures:
        print(f"FAIL: {failure}")
    print(f"{'FAIL' if result.failures else 'PASS'}: {len(result.failures)} problems found "
          f"in {result.figures.get('seconds')} s")  # fmt: skip
    return 1 if result.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
