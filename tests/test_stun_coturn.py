"""The STUN codec and NetCheck against a real coturn, over real UDP sockets on loopback.

coturn runs as a plain STUN server (``--stun-only``) listening on 127.0.0.1 and 127.0.0.2 with
an alternate port, which makes it an RFC 5780 server (OTHER-ADDRESS, RESPONSE-ORIGIN,
CHANGE-REQUEST), and on ::1 when the machine has IPv6. Loopback has no NAT, so every mapped
address must be the socket's own address and every behaviour endpoint-independent.

Skipped when coturn is not installed or we are not root; with CI=true those are failures,
so that CI cannot silently stop testing against a real server.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshnode.nat.netcheck import ENDPOINT_INDEPENDENT, UNKNOWN, NetCheck, NetReport
from meshnode.nat.stun import (
    Address,
    StunMessage,
    binding_request,
    is_stun,
    parse_binding_response,
)

V4_PRIMARY = "127.0.0.1"
V4_OTHER = "127.0.0.2"  # all of 127/8 is local on Linux loopback: no setup needed
V6 = "::1"
STARTUP_TIMEOUT = 10.0


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true, so this must run: {reason}")
    pytest.skip(reason)


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind((V6, 0))
    except OSError:
        return False
    return True


def _free_udp_port(hosts: list[str], avoid: set[int]) -> int:
    """A port that is free on every one of ``hosts`` right now (the kernel picks it)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((hosts[0], 0))
            port = s.getsockname()[1]
        if port in avoid:
            continue
        try:
            for host in hosts:
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                with socket.socket(family, socket.SOCK_DGRAM) as s:
                    s.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free UDP port")


def _udp_socket(host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    return sock


def _exchange(
    sock: socket.socket, dest: Address, request: bytes, timeout: float = 1.0
) -> tuple[Address, bytes]:
    """Send ``request`` (retrying, since it is UDP) and return (source, answer)."""
    txid = StunMessage.parse(request).transaction_id
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.sendto(request, dest)
        sock.settimeout(0.2)
        try:
            while True:
                data, src = sock.recvfrom(2048)
                if is_stun(data) and StunMessage.parse(data).transaction_id == txid:
                    return (src[0], src[1]), data
        except TimeoutError:
            continue
    raise TimeoutError(f"no STUN answer from {dest}")


@dataclass
class Coturn:
    port: int
    alt_port: int
    ipv6: bool
    log: Path


@pytest.fixture(scope="module")
def coturn() -> Iterator[Coturn]:
    exe = shutil.which("turnserver")
    if exe is None:
        _skip_or_fail("coturn's turnserver is not installed (apt-get install coturn)")
    if os.geteuid() != 0:
        _skip_or_fail("the coturn test runs only as root")
    assert exe is not None
    ipv6 = _ipv6_loopback()
    hosts = [V4_PRIMARY, V4_OTHER] + ([V6] if ipv6 else [])
    port = _free_udp_port(hosts, set())
    alt_port = _free_udp_port(hosts, {port})
    with tempfile.TemporaryDirectory(prefix="meshnode-coturn-") as tmp:
        tmpdir = Path(tmp)
        log = tmpdir / "turnserver.log"
        cmd = [
            exe,
            "-n",  # no configuration file: everything is on this command line
            "--stun-only",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--no-tcp",
            "--fingerprint",
            "--log-file",
            "stdout",
            "--simple-log",
            "--pidfile",
            str(tmpdir / "turnserver.pid"),
            # Otherwise it opens (and may create) the system's /var/lib/turn/turndb.
            "--userdb",
            str(tmpdir / "turndb"),
            "--listening-port",
            str(port),
            "--alt-listening-port",
            str(alt_port),
        ]
        for host in hosts:
            cmd += ["-L", host]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tmpdir,
                start_new_session=True,  # our signals only, not the terminal's
            )
        try:
            _wait_until_answering(proc, port, log)
            yield Coturn(port, alt_port, ipv6, log)
        finally:
            _stop(proc)


def _wait_until_answering(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    with _udp_socket(V4_PRIMARY) as sock:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"turnserver exited with {proc.returncode}:\n{log.read_text()}")
            try:
                _exchange(sock, (V4_PRIMARY, port), binding_request(os.urandom(12)), 0.3)
                return
            except TimeoutError:
                continue
    pytest.fail(f"turnserver did not answer within {STARTUP_TIMEOUT} s:\n{log.read_text()}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL: by the PID we started, nothing broader."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def _run_netcheck(sock: socket.socket, servers: list[Address], limit: float = 20.0) -> NetReport:
    """The caller's side of NetCheck: a plain blocking loop with socket timeouts."""
    check = NetCheck(servers, random.Random())
    start = time.monotonic()
    check.start(start)
    while not check.done:
        now = time.monotonic()
        assert now - start < limit, "NetCheck did not finish"
        for dest, data in check.datagrams_to_send(now):
            sock.sendto(data, dest)
        timer = check.get_timer()
        if timer is None:
            continue
        # settimeout(0) would mean non-blocking, not "return at once": keep it positive.
        sock.settimeout(max(timer - time.monotonic(), 0.001))
        try:
            data, src = sock.recvfrom(2048)
        except TimeoutError:
            continue
        assert check.handle_response(src, data, time.monotonic()), data
    return check.report()


# -- raw codec against coturn -----------------------------------------------------------------


def test_binding_request_ipv4(coturn: Coturn) -> None:
    with _udp_socket(V4_PRIMARY) as sock:
        me = sock.getsockname()
        server = (V4_PRIMARY, coturn.port)
        src, data = _exchange(sock, server, binding_request(os.urandom(12), software="meshnode"))
        assert src == server
        msg = StunMessage.parse(data)
        assert msg.fingerprint  # a real CRC-32 from another implementation, checked
        r = parse_binding_response(data)
        assert r.success and r.error is None
        assert r.mapped == me
        assert msg.xor_mapped_address() == me
        assert r.response_origin == server
        assert r.other_address == (V4_OTHER, coturn.alt_port)
        assert r.software and "Coturn" in r.software


def test_alternate_address_and_change_request(coturn: Coturn) -> None:
    with _udp_socket(V4_PRIMARY) as sock:
        me = sock.getsockname()
        server = (V4_PRIMARY, coturn.port)
        other = (V4_OTHER, coturn.alt_port)
        src, data = _exchange(sock, other, binding_request(os.urandom(12)))
        assert src == other and parse_binding_response(data).mapped == me
        # CHANGE-REQUEST: the answer comes from the other IP and/or port, as asked.
        for change_ip, change_port, want in [
            (True, True, other),
            (False, True, (V4_PRIMARY, coturn.alt_port)),
            (True, False, (V4_OTHER, coturn.port)),
        ]:
            req = binding_request(os.urandom(12), change_ip=change_ip, change_port=change_port)
            src, data = _exchange(sock, server, req)
            r = parse_binding_response(data)
            assert src == want
            assert r.response_origin == want
            assert r.mapped == me


def test_netcheck_ipv4(coturn: Coturn) -> None:
    with _udp_socket(V4_PRIMARY) as sock:
        me = sock.getsockname()
        t0 = time.monotonic()
        report = _run_netcheck(sock, [(V4_PRIMARY, coturn.port)])
        took = time.monotonic() - t0
    print("\n".join(report.describe()))
    assert report.udp
    assert report.ipv4 == me
    assert report.ipv6 is None
    (result,) = report.per_server
    assert result.error is None and result.mapped == me
    assert result.latency is not None and 0 <= result.latency < 1
    # Loopback: no NAT. The mapping is compared between 127.0.0.1 and 127.0.0.2 (coturn's
    # OTHER-ADDRESS), the filtering from its CHANGE-REQUEST answers.
    assert report.mapping == report.mapping_ipv4 == ENDPOINT_INDEPENDENT
    assert report.filtering == report.filtering_ipv4 == ENDPOINT_INDEPENDENT
    assert took < 2.5, "every probe is answered: no timeout should have been waited for"


def test_ipv6(coturn: Coturn) -> None:
    if not coturn.ipv6:
        pytest.skip("no IPv6 loopback (::1) on this machine, so coturn does not listen there")
    with _udp_socket(V6) as sock:
        me = sock.getsockname()[:2]
        server = (V6, coturn.port)
        try:
            src, data = _exchange(sock, server, binding_request(os.urandom(12)))
        except TimeoutError:
            pytest.skip("coturn does not answer on ::1")
        r = parse_binding_response(data)
        assert src == server
        assert r.mapped == me
        assert r.response_origin == server
        assert r.other_address is not None  # coturn gives its alternate port here
        report = _run_netcheck(sock, [server])
    print("\n".join(report.describe()))
    assert report.udp
    assert report.ipv6 == me and report.ipv4 is None
    # ::1 is coturn's only IPv6 address: one destination IP can show no mapping variation,
    # and no other IP to filter from.
    assert report.mapping_ipv6 == UNKNOWN
    assert report.filtering_ipv6 == UNKNOWN
