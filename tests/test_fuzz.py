"""scripts/fuzz in the suite: a short run against two `meshnode up` nodes in
namespaces (root; skipped otherwise), the crash it found, and the fuzzer's own
safety rules (no root needed).

The long run is `scripts/fuzz` (10^6 datagrams, 10^5 UAPI and 10^5 control
requests, 40 joins)."""

from __future__ import annotations

import json
import random
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from meshlab import mesh_nodes
from netns import Lab, require_netns, wait_for
from nodelab import MESHNODE, Node, new_key, write_private

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import fuzzlib

from meshnode.wireguard import keys
from meshnode.wireguard import messages as m
from meshnode.wireguard.cookie import CookieChecker


@pytest.fixture
def lab() -> Iterator[Lab]:
    require_netns()
    with Lab() as created:
        yield created


# ---------------------------------------------------------------- the short run


def test_short_fuzz_run() -> None:
    """20,000 datagrams (15 % to the mesh interface's port: STUN, path probes,
    junk), 2,000 UAPI and 2,000 control requests, 4 joins: no traceback, both
    nodes up, memory and files flat, every datagram that reached node A
    counted (as a drop, or by the mesh's STUN and probe counters), binding
    requests and a member's pings answered, pings through the tunnel afterwards."""
    require_netns()
    lines: list[str] = []
    result = fuzzlib.run(count=20_000, requests=2_000, joins=4, rate=20_000, seed=20261207,
                         time_limit=60, rss_slack_kib=16384, out=lines.append)  # fmt: skip
    report = "\n".join(lines)
    assert not result.failures, f"{result.failures}\n{report}"
    datagrams = result.figures["datagrams"]
    assert datagrams["sent"] == 20_000
    mesh = result.figures["mesh_datagrams"]
    assert mesh["sent"] > 2_000, report
    counted = datagrams["counted_as_drops"] + sum(mesh["accounted_by_route"].values())
    assert counted >= 20_000 - datagrams["kernel_dropped_rcvbuf"], report
    assert mesh["accounted_by_route"]["stun"] >= mesh["stun_expected"]["request"] > 0, report
    assert mesh["answers_received"].get("stun-binding-answers", 0) > 0, report
    assert mesh["answers_received"].get("probe-pongs", 0) > 0, report  # a member's pings
    assert sum(result.figures["uapi"]["answers"].values()) == 2_000
    assert sum(result.figures["control"]["replies"].values()) == 2_000
    assert result.figures["coordination_in_process"]["outcome"]["messages"] == 2_000


# ---------------------------------------------------------------- what it found (fixed)


def test_back_to_back_listen_port_changes(lab: Lab) -> None:
    ns = lab.namespace("a")
    ifname = lab.ifname("z")
    private, _ = new_key()
    config = write_private(lab.tmp_path / "a.toml", f'[[interface]]\nname = "{ifname}"\n'
                           f'private_key = "{private}"\nlisten_port = 51821\n')  # fmt: skip
    node = Node(lab, ns, config, lab.tmp_path / "run")
    wg_dir = lab.tmp_path / "wg"
    wg_dir.mkdir()
    node.process = ns.spawn(*MESHNODE, "up", str(config),
                            env={**node.env, "WG_SOCKET_DIR": str(wg_dir)})  # fmt: skip
    wait_for(lambda: node.status() is not None, 20, "the node")
    path = wg_dir / f"{ifname}.sock"
    # one connection, the requests pipelined: the node applies them back to back
    answer = fuzzlib.unix_request(path, b"set=1\nlisten_port=0\n\n" * 50, until=b"\n\n" * 50)
    time.sleep(1)
    assert "Traceback" not in node.log(), node.log()[-3000:]
    assert node.process.running()
    assert answer.count(b"errno=0\n\n") == 50
    assert b"listen_port=" in fuzzlib.unix_request(path, b"get=1\n\n", until=b"\n\n")


def test_control_mesh_load_with_a_long_name(lab: Lab) -> None:
    node = mesh_nodes(lab, 1)[0].start()
    node.cli("init", "m")  # the state directory's meshes/ exists from now on
    line = json.dumps({"command": "mesh-load", "args": {"mesh": "x" * 300}}).encode() + b"\n"
    reply = json.loads(fuzzlib.unix_request(node.root / "run" / "control.sock", line))
    assert node.process is not None
    assert "Traceback" not in node.process.log(), node.process.log()[-2000:]
    assert reply["ok"] is False
    assert reply["error"] != "internal error"


def test_join_with_an_invite_naming_its_bootstrap_host(lab: Lab) -> None:
    from ipaddress import IPv6Address

    from meshnode.mesh.authority import Authority
    from meshnode.mesh.bootstrap import BootstrapPeer
    from meshnode.mesh.invite import Invite, format_invite

    node = mesh_nodes(lab, 1)[0].start()
    peer = BootstrapPeer(keys.public_key(keys.generate_private_key()), IPv6Address("fd00::1"),
                         (("localhost", 51900),))  # fmt: skip
    invite = Invite.create(Authority.generate(), mesh_id=bytes(range(16)), mesh_name="named",
                           bootstrap=(peer,), now=int(time.time()), lifetime=3600)  # fmt: skip
    rc, output = node.cli("join", format_invite(invite), "--timeout", "2", check=False)
    assert "Traceback" not in output, output
    assert rc == 1
    assert "join failed" in output


# ---------------------------------------------------------------- the fuzzer itself


def test_control_corpus_never_sends_what_would_end_the_run() -> None:
    """Never down or leave, never a new mesh, never a revocation of the real member."""
    corpus = fuzzlib.ControlCorpus(random.Random(5), {"adm"}, max_invites=20)
    invites = 0
    for _ in range(20_000):
        line = corpus.next()
        try:
            request = json.loads(line.split(b"\n")[0])
        except (ValueError, RecursionError):
            continue
        if not isinstance(request, dict):
            continue
        command = request.get("command")
        args = request.get("args") if isinstance(request.get("args"), dict) else {}
        assert command not in ("down", "leave"), line
        if command == "mesh-init":
            name = args.get("name")
            assert not isinstance(name, str) or name == fuzzlib.MESH_NAME or not \
                fuzzlib.re.fullmatch(r"[a-z0-9-]{1,63}", name), line  # fmt: skip
        if command == "revoke":
            assert args.get("member") != "adm", line
        invites += command == "invite"
    assert invites <= 21


def test_datagram_corpus_handshakes_carry_a_valid_mac1() -> None:
    """The initiations it builds are ones the target checks deeply (mac1 valid)."""
    target = keys.generate_private_key()
    corpus = fuzzlib.DatagramCorpus(random.Random(1), keys.public_key(target), [])
    checker = CookieChecker(keys.public_key(target))
    assert corpus.initiations
    for initiation in corpus.initiations:
        assert len(initiation) == m.INITIATION_SIZE
        assert checker.check_mac1(initiation)
    made = [corpus.next() for _ in range(5000)]
    assert any(d[:4] == m.HEADER_TRANSPORT for d in made)
    assert any(not m.is_wireguard(d) for d in made)


def test_read_pcap_takes_udp_payloads(tmp_path: Path) -> None:
    import struct

    payload = b"\x04\x00\x00\x00" + bytes(28)
    ip = bytearray(20)
    ip[0], ip[9] = 0x45, 17
    frame = bytes(14) + bytes(ip) + bytes(8) + payload
    pcap = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    pcap += struct.pack("<IIII", 0, 0, len(frame), len(frame)) + frame
    path = tmp_path / "x.pcap"
    path.write_bytes(pcap)
    assert fuzzlib.read_pcap(path) == [payload]


def test_mutations_stay_bounded() -> None:
    rng = random.Random(3)
    data = bytes(148)
    for _ in range(2000):
        mutated = fuzzlib.mutate(rng, data)
        assert len(mutated) < 148 + 5 * 400
    assert socket.AF_UNIX  # the fuzzer talks to the sockets as files
