"""Nothing a local client sends ends a daemon: meshnode-wg's UAPI socket and
`meshnode up`'s control socket, each driven with requests that used to raise
out of a handler, in network namespaces (root; skipped otherwise).

The UAPI answers are also compared with wireguard-go's, request by request."""

from __future__ import annotations

import json
import resource
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from netns import Lab, Process, require_netns, wait_for
from nodelab import make_node, new_key
from wgpair import MESHNODE_WG

from meshnode.wireguard import keys

SOCKET_DIR = Path("/var/run/wireguard")
PEER_HEX = keys.to_hex(keys.public_key(keys.generate_private_key()))
PEER = f"public_key={PEER_HEX}\n"


@pytest.fixture
def lab() -> Iterator[Lab]:
    """Namespaces for one test; skips without root (fails under CI)."""
    require_netns()
    with Lab() as created:
        yield created


def request(path: Path, data: bytes, done: Callable[[bytes], bool], timeout: float) -> bytes:
    """Send data on a new connection, then read until done(answer) or the
    server closes the connection."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed on us while we sent: what came back is the answer
        answer = b""
        while not done(answer):
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            answer += chunk
    return answer


def uapi(ifname: str, data: bytes, timeout: float = 5.0) -> bytes:
    """One request on its own connection: the answer up to its blank line, or
    what came before the daemon closed the connection."""
    def done(answer: bytes) -> bool:
        return answer.endswith(b"\n\n") and b"errno=" in answer

    return request(SOCKET_DIR / f"{ifname}.sock", data, done, timeout)


def get(ifname: str) -> bytes:
    answer = uapi(ifname, b"get=1\n\n")
    assert answer.endswith(b"errno=0\n\n"), answer
    return answer


# Each was answered by an exception out of the UAPI handler, which ended the
# daemon (or, for the last ones, was taken when wireguard-go refuses it).
KILLERS = [
    "fwmark=²", "listen_port=1²", "listen_port=٣", "fwmark=" + "1" * 5000,
    "listen_port=" + "1" * 70_000,  # also past bufio.Scanner's line limit: EIO
    PEER + "persistent_keepalive_interval=²", PEER + "endpoint=1.2.3.4:²",
    PEER + "endpoint=1.2.3.4:" + "1" * 5000, PEER + "endpoint=[fe80::1%²]:1",
    PEER + "allowed_ip=1.2.3.4", PEER + "allowed_ip=fd00::1", PEER + "endpoint=[fe80::1%]:1",
    PEER + "endpoint=[fe80::1%99999999999]:1", "private_key=" + "٣" * 64,
]  # fmt: skip


def test_killer_requests_leave_meshnode_wg_serving(lab: Lab) -> None:
    ns = lab.namespace("k")
    ifname = lab.ifname("k")
    daemon = lab.start_userspace_wg(ns, ifname, argv=MESHNODE_WG)
    private = keys.to_hex(keys.generate_private_key())
    setup = f"set=1\nprivate_key={private}\n{PEER}allowed_ip=10.9.0.0/24\n\n".encode()
    assert uapi(ifname, setup) == b"errno=0\n\n"
    before = get(ifname)
    for body in KILLERS:
        answer = uapi(ifname, f"set=1\n{body}\n\n".encode())
        expected = b"errno=-5\n\n" if len(body) > 65535 else b"errno=-22\n\n"
        assert answer == expected, (body[:60], answer)
        assert daemon.running(), daemon.log()
        assert get(ifname) == before  # still answering, and nothing changed
    # framing: junk, bytes that are not UTF-8, an unfinished request, a huge first
    # line; and a mark past 2**31, which udp.py's setsockopt raised TypeError for
    for data in (b"\xff\xfe\x00\n", b"set=1\nfwmark=1", b"x" * 200_000, b"get=1\nxx",
                 b"set=1\nfwmark=4294967295\n\n"):  # fmt: skip
        uapi(ifname, data)
        assert daemon.running(), daemon.log()
    assert get(ifname).replace(b"fwmark=4294967295\n", b"") == before


def test_a_32_bit_fwmark_is_taken(lab: Lab) -> None:
    ns = lab.namespace("w")
    ifname = lab.ifname("w")
    lab.start_userspace_wg(ns, ifname, argv=MESHNODE_WG)
    assert uapi(ifname, b"set=1\nfwmark=4294967295\n\n") == b"errno=0\n\n"
    assert b"fwmark=4294967295\n" in get(ifname)


def test_running_out_of_descriptors_does_not_end_meshnode_wg(lab: Lab) -> None:
    """Clients holding connections until accept() fails with EMFILE: the daemon
    waits until descriptors are free again instead of exiting."""
    ns = lab.namespace("f")
    ifname = lab.ifname("f")
    daemon = lab.start_userspace_wg(ns, ifname, argv=MESHNODE_WG)
    path = SOCKET_DIR / f"{ifname}.sock"
    hold_descriptors(daemon, path, lambda: b"errno=0" in get_quietly(ifname))
    assert b"errno=0" in get(ifname)


def hold_descriptors(daemon: Process, path: Path, answers: Callable[[], bool]) -> None:
    """Lower the daemon's descriptor limit to 2 above what it uses, hold more
    connections to path open than that, then let them go and restore the
    limit: the daemon must still run, and answer again."""
    soft, hard = resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE)
    in_use = len(list(Path(f"/proc/{daemon.pid}/fd").iterdir()))
    resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, (in_use + 2, hard))
    held: list[socket.socket] = []
    try:
        for _ in range(8):  # within the listen backlog (16), so connect() does not block
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            held.append(sock)
            sock.connect(str(path))
        time.sleep(0.5)  # accept() has failed with EMFILE by now, repeatedly
        assert daemon.running(), daemon.log()
        assert "Cannot accept a connection" in daemon.log()
    finally:
        for sock in held:
            sock.close()
        if daemon.running():
            resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, (soft, hard))
    wait_for(answers, 5, "the daemon to answer again")
    assert daemon.running(), daemon.log()


def get_quietly(ifname: str) -> bytes:
    try:
        return uapi(ifname, b"get=1\n\n", timeout=1)
    except OSError:
        return b""


# Requests that Debian's wireguard-go 0.0.20220316 (Go 1.19) answers as current
# wireguard-go does, with one exception: an IPv6 zone that names no interface
# and is no 32-bit number (Debian's Linux bind refuses it, as meshnode must:
# its endpoints hold an interface index; current wireguard-go keeps any zone
# string). Left out: "/024", "/+8" and five-digit IPv6 groups, which Go 1.19's
# netip takes and Go 1.22's, like meshnode, refuses.
LOW_ORDER = "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"
PARITY = [
    *(f"set=1\n{body}\n\n" for body in KILLERS),
    "set=1\nlisten_port=0051820\n\n", "set=1\nlisten_port=+1\n\n", "set=1\nlisten_port=-0\n\n",
    "set=1\nlisten_port=" + "0" * 5000 + "1\n\n", "set=1\nfwmark=2147483647\n\n",
    "set=1\nfwmark=4294967296\n\n", "set=1\nfwmark=0x10\n\n", "set=1\nfwmark= 1\n\n",
    "set=1\nfwmark=1_0\n\n", "set=1\nfwmark=\n\n", "set=1\nfwmark=1\r\n\n", "set=1\n\r\n",
    "set=1\nprivate_key=" + "AB" * 32 + "\n\n", "set=1\nprivate_key=" + "ab" * 31 + "a\n\n",
    "set=1\nprivate_key=" + "ab" * 31 + "é\n\n", "set=1\nprivate_key=" + "ff" * 32 + "\n\n",
    f"set=1\npublic_key={LOW_ORDER}\n\n", "set=1\npublic_key=" + PEER_HEX.upper() + "\n\n",
    PEER.join(["set=1\n", "persistent_keepalive_interval=007\n\n"]),
    PEER.join(["set=1\n", "persistent_keepalive_interval=65536\n\n"]),
    *(f"set=1\n{PEER}endpoint={e}\n\n" for e in [
        "1.2.3.4:0", "1.2.3.4:065535", "1.2.3.4:65536", "1.2.3.4:+1", "1.2.3.4:",
        "[fe80::1%lo]:1", "[fe80::1%1]:1", "[1.2.3.4]:1", "::1:1", "[::ffff:1.2.3.4]:1",
        "01.2.3.4:1", "1.2.3:1", "[fd00::1]:00001", "1.2.3.4%lo:1", "[FD00::ABCD]:1",
        "[fd00::1.2.3.4]:1", "[::]:1", "[fe80::1%lo%x]:1", "localhost:1", " 1.2.3.4:1",
    ]),
    *(f"set=1\n{PEER}allowed_ip={a}\n\n" for a in [
        "1.2.3.4/033", "1.2.3.4/0", "10.0.0.1/24", "01.2.3.4/32", "fe80::%lo/64",
        "1.2.3.4/255.255.255.0", "1.2.3.4/٣", "::ffff:1.2.3.4/128", "FD00::/8", "1.2.3.4/32 ",
        "-1.2.3.4/32", "1.2.3.4/", "/32", "1.2.3.4//32", "1.2.3.4/32\r", "1::1.2.3.4/128",
        "1.2.3.4::/128", "1:2:3:4:5:6:7::/128", "1::2::3/128",
    ]),
    PEER.join(["set=1\n", "protocol_version=01\n\n"]),
    PEER.join(["set=1\n", "update_only=TRUE\n\n"]),
    "set=1\nfwmark=" + "0" * (65535 - 7) + "\n\n", "set=1\nfwmark=" + "0" * (65536 - 7) + "\n\n",
    "get=1\n\r\n", "get=1\nx", "set=1\r\n\n", "bogus\n", "set=1\nfwmark=2\n\r\nfwmark=3\n\n",
]  # fmt: skip


@pytest.mark.skipif(shutil.which("wireguard-go") is None, reason="needs wireguard-go")
def test_uapi_answers_match_wireguard_go(lab: Lab) -> None:
    ours, theirs = lab.ifname("m"), lab.ifname("g")
    # a namespace each: both bind the same listen ports
    lab.start_userspace_wg(lab.namespace("m"), ours, argv=MESHNODE_WG)
    lab.start_userspace_wg(lab.namespace("g"), theirs)
    mismatches = []
    for request in PARITY:
        data = request.encode()
        answers = uapi(ours, data), uapi(theirs, data)
        if answers[0] != answers[1]:
            mismatches.append((request[:70], *answers))
    assert mismatches == []
    # both store the last private key set (all ff) clamped
    clamped = b"private_key=f8" + b"ff" * 30 + b"7f\n"
    assert get(ours).startswith(clamped) and get(theirs).startswith(clamped)


# ------------------------------------------------------------------ meshnode up

CONTROL_MALFORMED = [
    b"[" * 60_000 + b"\n",  # json.loads raised RecursionError, which ended the node
    b'{"a":' * 30_000 + b"\n", b'{"command": "st\xffatus"}\n', b'["status"]\n', b'"status"\n',
    b"1\n", b"1" * 5000 + b"\n", b"null\n", b'{"command": 1}\n', b'{"command": ["down"]}\n',
    b'{"cmd": "down"}\n', b"\n", b"\x00" * 100 + b"\n", b"x" * 100_000 + b"\n",
    b'{"command": "' + b"s" * 100_000,
]  # fmt: skip


def control(path: Path, data: bytes) -> bytes:
    return request(path, data, lambda answer: answer.endswith(b"\n"), 15)


def test_malformed_control_requests_leave_meshnode_up_serving(lab: Lab) -> None:
    ns = lab.namespace("c")
    ifname = lab.ifname("c")
    private, _ = new_key()
    node = make_node(lab, ns, f"{ifname}.conf",
                     f"[Interface]\nPrivateKey = {private}\nAddress = 10.71.0.1/24\n")  # fmt: skip
    node.start(ifname)
    assert node.process is not None
    path = node.run_dir / "control.sock"
    for data in CONTROL_MALFORMED:
        answer = control(path, data)
        reply = json.loads(answer)
        assert reply["ok"] is False and reply["error"].startswith("bad request"), data[:40]
        assert node.process.running(), node.log()
    status = node.status()
    assert status is not None and status["interfaces"] == [ifname]
    # the node's interfaces serve the UAPI with the same server
    for body in KILLERS[:4]:
        assert uapi(ifname, f"set=1\n{body}\n\n".encode()) == b"errno=-22\n\n"
    assert b"errno=0" in get(ifname)
    # and a node out of descriptors waits instead of exiting
    hold_descriptors(node.process, path, lambda: node.status() is not None)
    assert node.status() is not None
    assert node.terminate() == 0, node.log()
