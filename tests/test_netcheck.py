"""NetCheck against in-memory STUN servers and NATs, on a fake clock: no sockets, no sleeping."""

from __future__ import annotations

import dataclasses
import heapq
import ipaddress
import itertools
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshnode.nat.netcheck import (
    ADDRESS_AND_PORT_DEPENDENT,
    ADDRESS_DEPENDENT,
    ENDPOINT_DEPENDENT,
    ENDPOINT_INDEPENDENT,
    UNKNOWN,
    NetCheck,
    NetReport,
    ServerResult,
)
from meshnode.nat.stun import (
    Address,
    StunClass,
    StunError,
    StunMessage,
    binding_request,
    binding_response,
    error_response,
)

# -- the fake network -------------------------------------------------------------------------


@dataclass
class FakeStunServer:
    """A STUN server; with ``alt`` (second IP, second port) it is an RFC 5780 server and
    answers from any of its four endpoints."""

    primary: Address
    alt: Address | None = None
    delay: float = 0.010  # one-way, each way
    silent: bool = False
    honours_change_request: bool = True
    rejects_change_request: bool = False  # answers 420 Unknown Attribute instead
    received: list[tuple[float, Address, Address]] = field(default_factory=list)

    def endpoints(self) -> list[Address]:
        if self.alt is None:
            return [self.primary]
        (ip1, p1), (ip2, p2) = self.primary, self.alt
        return [(ip1, p1), (ip1, p2), (ip2, p1), (ip2, p2)]

    def handle(
        self, now: float, src: Address, dst: Address, data: bytes
    ) -> list[tuple[Address, Address, bytes]]:
        """(from, to, datagram) answers to one request."""
        self.received.append((now, src, dst))
        if self.silent:
            return []
        try:
            req = StunMessage.parse(data)
        except StunError:
            return []
        if req.msg_class != StunClass.REQUEST:
            return []
        change = req.change_request()
        reply_from = dst
        if change is not None and self.rejects_change_request:
            return [(dst, src, error_response(req.transaction_id, 420, "Unknown Attribute"))]
        if change is not None and self.alt is not None and self.honours_change_request:
            change_ip, change_port = change
            ip = (
                (self.alt[0] if dst[0] == self.primary[0] else self.primary[0])
                if change_ip
                else dst[0]
            )
            port = (
                (self.alt[1] if dst[1] == self.primary[1] else self.primary[1])
                if change_port
                else dst[1]
            )
            reply_from = (ip, port)
        other = None
        if self.alt is not None:
            # RFC 5780: OTHER-ADDRESS differs from the receiving endpoint in both IP and port.
            other = (
                self.alt[0] if dst[0] == self.primary[0] else self.primary[0],
                self.alt[1] if dst[1] == self.primary[1] else self.primary[1],
            )
        resp = binding_response(req.transaction_id, src, reply_from, other, software="fake")
        return [(reply_from, src, resp)]


@dataclass
class FakeNat:
    """A NAT in front of one local endpoint, with RFC 4787's mapping and filtering types."""

    public_ip: str
    mapping: str = ENDPOINT_INDEPENDENT  # or ENDPOINT_DEPENDENT (address-and-port)
    filtering: str = ENDPOINT_INDEPENDENT  # or ADDRESS_DEPENDENT, ADDRESS_AND_PORT_DEPENDENT
    ports: itertools.count = field(default_factory=lambda: itertools.count(40000, 7))
    _maps: dict[tuple[Address, Address | None], int] = field(default_factory=dict)
    _contacted: dict[int, set[Address]] = field(default_factory=dict)
    _inside: dict[int, Address] = field(default_factory=dict)

    def outbound(self, src: Address, dst: Address) -> Address:
        key = (src, dst if self.mapping == ENDPOINT_DEPENDENT else None)
        if key not in self._maps:
            port = next(self.ports)
            self._maps[key] = port
            self._inside[port] = src
        port = self._maps[key]
        self._contacted.setdefault(port, set()).add(dst)
        return (self.public_ip, port)

    def inbound(self, src: Address, dst: Address) -> Address | None:
        port = dst[1]
        if dst[0] != self.public_ip or port not in self._inside:
            return None
        contacted = self._contacted[port]
        if self.filtering == ADDRESS_DEPENDENT and src[0] not in {ip for ip, _ in contacted}:
            return None
        if self.filtering == ADDRESS_AND_PORT_DEPENDENT and src not in contacted:
            return None
        return self._inside[port]


LOCAL_V4: Address = ("10.0.0.2", 51820)
LOCAL_V6: Address = ("2001:db8:1::2", 51820)


@dataclass
class FakeNetwork:
    servers: list[FakeStunServer]
    nat_v4: FakeNat | None = None
    nat_v6: FakeNat | None = None
    udp_blocked: bool = False
    sent: list[tuple[float, Address]] = field(default_factory=list)

    def send(self, now: float, dst: Address, data: bytes) -> list[tuple[float, Address, bytes]]:
        """Our datagram to ``dst``; returns (arrival time, source, datagram) of what comes back."""
        self.sent.append((now, dst))
        v6 = ipaddress.ip_address(dst[0]).version == 6
        local = LOCAL_V6 if v6 else LOCAL_V4
        nat = self.nat_v6 if v6 else self.nat_v4
        if self.udp_blocked:
            return []
        src = nat.outbound(local, dst) if nat else local
        out = []
        for server in self.servers:
            if dst in server.endpoints():
                for frm, to, resp in server.handle(now + server.delay, src, dst, data):
                    inside = nat.inbound(frm, to) if nat else to
                    if inside is not None:
                        out.append((now + 2 * server.delay, frm, resp))
        return out


def run(
    check: NetCheck,
    net: FakeNetwork,
    start: float = 1000.0,
    extra: Callable[[NetCheck, float], None] | None = None,
) -> tuple[NetReport, float]:
    """The caller's event loop, on a fake clock; returns the report and how long it took."""
    now = start
    check.start(now)
    inbox: list[tuple[float, int, Address, bytes]] = []
    seq = itertools.count()
    for _ in range(10_000):
        if check.done:
            return check.report(), now - start
        for dst, data in check.datagrams_to_send(now):
            for t, src, resp in net.send(now, dst, data):
                heapq.heappush(inbox, (t, next(seq), src, resp))
        timer = check.get_timer()
        assert timer is not None or check.done
        if timer is not None:
            assert timer >= now - 10  # a real time, not a sentinel
        if timer is None and not inbox:
            continue  # done: the check at the top returns
        wake = min(t for t in [timer, inbox[0][0] if inbox else None] if t is not None)
        now = max(now, wake)
        while inbox and inbox[0][0] <= now:
            _, _, src, resp = heapq.heappop(inbox)
            assert check.handle_response(src, resp, now)
        if extra:
            extra(check, now)
    raise AssertionError("NetCheck never finished")


RFC5780_V4 = (("198.51.100.1", 3478), ("198.51.100.2", 3479))
PLAIN_V4 = ("192.0.2.10", 3478)
PLAIN_V4_B = ("192.0.2.20", 3478)
PLAIN_V6 = ("2001:db8:f::1", 3478)
PLAIN_V6_B = ("2001:db8:e::1", 3478)


def rfc5780_server(**kw: object) -> FakeStunServer:
    return FakeStunServer(RFC5780_V4[0], RFC5780_V4[1], **kw)  # type: ignore[arg-type]


def check_for(*servers: Address, seed: int = 1) -> NetCheck:
    return NetCheck(list(servers), random.Random(seed))


# -- NAT types --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mapping", "filtering"),
    [
        (ENDPOINT_INDEPENDENT, ENDPOINT_INDEPENDENT),  # "full cone"
        (ENDPOINT_INDEPENDENT, ADDRESS_DEPENDENT),  # "restricted cone"
        (ENDPOINT_INDEPENDENT, ADDRESS_AND_PORT_DEPENDENT),  # "port-restricted cone"
        (ENDPOINT_DEPENDENT, ADDRESS_AND_PORT_DEPENDENT),  # "symmetric"
        (ENDPOINT_DEPENDENT, ENDPOINT_INDEPENDENT),
        (ENDPOINT_DEPENDENT, ADDRESS_DEPENDENT),
    ],
)
def test_nat_behaviour_from_one_rfc5780_server(mapping: str, filtering: str) -> None:
    nat = FakeNat("203.0.113.1", mapping=mapping, filtering=filtering)
    net = FakeNetwork([rfc5780_server()], nat_v4=nat)
    report, took = run(check_for(RFC5780_V4[0]), net)
    assert report.udp
    assert report.ipv4 is not None and report.ipv4[0] == "203.0.113.1"
    assert report.ipv6 is None
    assert report.mapping == report.mapping_ipv4 == mapping
    assert report.filtering == report.filtering_ipv4 == filtering
    assert report.mapping_ipv6 == report.filtering_ipv6 == UNKNOWN
    (result,) = report.per_server
    assert result == ServerResult(RFC5780_V4[0], report.ipv4, pytest.approx(0.020), None)
    # Blocked filtering answers cost one timeout; nothing more.
    assert took < (3.2 if filtering == ENDPOINT_INDEPENDENT else 6.2)


def test_alt_probe_waits_for_the_filtering_probes() -> None:
    """The request to OTHER-ADDRESS opens the NAT to it: sent before the CHANGE-REQUEST
    answers, it would make every NAT look endpoint-independent in filtering."""
    server = rfc5780_server()
    nat = FakeNat("203.0.113.1", filtering=ADDRESS_AND_PORT_DEPENDENT)
    net = FakeNetwork([server], nat_v4=nat)
    report, _ = run(check_for(RFC5780_V4[0]), net)
    alt_sends = [t for t, dst in net.sent if dst == RFC5780_V4[1]]
    change_sends = [t for t, dst in net.sent if dst == RFC5780_V4[0]]
    assert alt_sends and min(alt_sends) >= max(change_sends)
    assert report.filtering == ADDRESS_AND_PORT_DEPENDENT


def test_no_nat_at_all() -> None:
    net = FakeNetwork([rfc5780_server()])
    report, _ = run(check_for(RFC5780_V4[0]), net)
    assert report.ipv4 == LOCAL_V4
    assert (report.mapping, report.filtering) == (ENDPOINT_INDEPENDENT, ENDPOINT_INDEPENDENT)


@pytest.mark.parametrize("mapping", [ENDPOINT_INDEPENDENT, ENDPOINT_DEPENDENT])
def test_mapping_from_two_plain_servers(mapping: str) -> None:
    nat = FakeNat("203.0.113.1", mapping=mapping)
    net = FakeNetwork([FakeStunServer(PLAIN_V4), FakeStunServer(PLAIN_V4_B)], nat_v4=nat)
    report, took = run(check_for(PLAIN_V4, PLAIN_V4_B), net)
    assert report.mapping == mapping
    assert report.filtering == UNKNOWN  # needs an RFC 5780 server
    # The first server's view is the one reported.
    assert report.ipv4 == report.per_server[0].mapped
    ports = {r.mapped[1] for r in report.per_server if r.mapped}
    assert len(ports) == (1 if mapping == ENDPOINT_INDEPENDENT else 2)
    assert took == pytest.approx(0.020)


def test_one_plain_server_cannot_tell() -> None:
    net = FakeNetwork([FakeStunServer(PLAIN_V4)], nat_v4=FakeNat("203.0.113.1"))
    report, _ = run(check_for(PLAIN_V4), net)
    assert report.udp and report.ipv4 is not None
    assert (report.mapping, report.filtering) == (UNKNOWN, UNKNOWN)


def test_two_ports_of_one_ip_are_not_two_destinations() -> None:
    # Mapping "varies by destination IP" needs two IPs: same IP, other port proves nothing.
    servers = [FakeStunServer(PLAIN_V4), FakeStunServer((PLAIN_V4[0], 3479))]
    nat = FakeNat("203.0.113.1", mapping=ENDPOINT_DEPENDENT)
    report, _ = run(check_for(PLAIN_V4, (PLAIN_V4[0], 3479)), FakeNetwork(servers, nat_v4=nat))
    assert report.mapping == UNKNOWN


# -- failures ---------------------------------------------------------------------------------


def test_server_that_never_answers() -> None:
    silent = FakeStunServer(PLAIN_V4_B, silent=True)
    net = FakeNetwork([FakeStunServer(PLAIN_V4), silent], nat_v4=FakeNat("203.0.113.1"))
    report, took = run(check_for(PLAIN_V4, PLAIN_V4_B), net)
    assert report.udp
    ok, dead = report.per_server
    assert ok.mapped is not None and ok.error is None
    assert dead == ServerResult(PLAIN_V4_B, None, None, "timeout")
    assert report.mapping == UNKNOWN  # only one destination IP answered
    # Sent at 0, 0.5, 1 and 2 s, given up at 3 s.
    start = 1000.0
    assert [t - start for t, _, _ in silent.received] == pytest.approx([0.01, 0.51, 1.01, 2.01])
    assert took == pytest.approx(3.0)
    assert any("timeout" in line for line in report.describe())


def test_udp_blocked_entirely() -> None:
    net = FakeNetwork(
        [rfc5780_server(), FakeStunServer(PLAIN_V4), FakeStunServer(PLAIN_V6)], udp_blocked=True
    )
    report, took = run(check_for(RFC5780_V4[0], PLAIN_V4, PLAIN_V6), net)
    assert not report.udp
    assert report.ipv4 is None and report.ipv6 is None
    assert (report.mapping, report.filtering) == (UNKNOWN, UNKNOWN)
    assert [r.error for r in report.per_server] == ["timeout"] * 3
    assert took == pytest.approx(3.0)
    assert len(net.sent) == 3 * 4  # four transmissions each, no follow-ups
    lines = report.describe()
    assert lines[0] == "UDP: false"
    assert "IPv4: no" in lines and "IPv6: no" in lines


def test_server_ignoring_change_request_gives_unknown_filtering() -> None:
    # Answering a CHANGE-REQUEST from the address it arrived at says nothing about the NAT.
    server = rfc5780_server(honours_change_request=False)
    nat = FakeNat("203.0.113.1", filtering=ADDRESS_AND_PORT_DEPENDENT)
    report, _ = run(check_for(RFC5780_V4[0]), FakeNetwork([server], nat_v4=nat))
    assert report.filtering == UNKNOWN
    assert report.mapping == ENDPOINT_INDEPENDENT  # the alternate address still answered


def test_server_rejecting_change_request_gives_unknown_filtering() -> None:
    server = rfc5780_server(rejects_change_request=True)
    report, _ = run(check_for(RFC5780_V4[0]), FakeNetwork([server]))
    assert report.filtering == UNKNOWN
    assert report.per_server[0].error is None  # the plain request still worked


def test_filtering_answer_from_an_address_we_contacted_is_not_counted() -> None:
    """Both of one RFC 5780 server's addresses configured as servers: the second server's
    request opens the NAT to the alternate IP, so its CHANGE-REQUEST answer proves nothing."""
    server = rfc5780_server()
    nat = FakeNat("203.0.113.1", filtering=ADDRESS_DEPENDENT)
    check = check_for(RFC5780_V4[0], RFC5780_V4[1])
    report, _ = run(check, FakeNetwork([server], nat_v4=nat))
    assert report.filtering in (UNKNOWN, ADDRESS_DEPENDENT)
    assert report.filtering != ENDPOINT_INDEPENDENT


def test_error_response_to_plain_request() -> None:
    class Grumpy(FakeStunServer):
        def handle(self, now, src, dst, data):  # type: ignore[no-untyped-def, override]
            txid = StunMessage.parse(data).transaction_id
            return [(dst, src, error_response(txid, 400, "Bad Request"))]

    net = FakeNetwork([Grumpy(PLAIN_V4)])
    report, _ = run(check_for(PLAIN_V4), net)
    assert report.udp  # an answer is an answer
    assert report.ipv4 is None
    assert report.per_server[0].error == "error 400 Bad Request"


# -- IPv6 -------------------------------------------------------------------------------------


def test_ipv6_without_nat_and_ipv4_behind_one() -> None:
    servers = [
        rfc5780_server(),
        FakeStunServer(PLAIN_V4),
        FakeStunServer(PLAIN_V6),
        FakeStunServer(PLAIN_V6_B),
    ]
    nat = FakeNat("203.0.113.1", mapping=ENDPOINT_DEPENDENT, filtering=ADDRESS_DEPENDENT)
    net = FakeNetwork(servers, nat_v4=nat)
    check = check_for(RFC5780_V4[0], PLAIN_V4, PLAIN_V6, PLAIN_V6_B)
    report, _ = run(check, net)
    assert report.ipv6 == LOCAL_V6
    assert report.mapping_ipv6 == ENDPOINT_INDEPENDENT
    assert report.filtering_ipv6 == UNKNOWN
    assert report.mapping_ipv4 == ENDPOINT_DEPENDENT
    assert report.filtering_ipv4 == ADDRESS_DEPENDENT
    assert report.mapping == ENDPOINT_DEPENDENT  # IPv4's verdict comes first
    lines = report.describe()
    assert "IPv6: yes, [2001:db8:1::2]:51820" in lines
    assert "IPv4 mapping varies by destination IP: true" in lines
    assert "IPv6 mapping varies by destination IP: false" in lines
    assert "IPv4 filtering: address-dependent" in lines


def test_ipv6_only() -> None:
    net = FakeNetwork([FakeStunServer(PLAIN_V6), FakeStunServer(PLAIN_V6_B)])
    report, _ = run(check_for(PLAIN_V6, PLAIN_V6_B), net)
    assert report.ipv4 is None and report.ipv6 == LOCAL_V6
    assert report.mapping == ENDPOINT_INDEPENDENT  # falls back to IPv6's verdict


def test_socket_style_addresses_are_normalised() -> None:
    """IPv6 sockets give 4-tuples and may spell addresses differently; dual-stack sockets
    give IPv4 peers as ::ffff:a.b.c.d."""
    check = NetCheck([("2001:0db8:000f::1", 3478), ("192.0.2.10", 3478)], random.Random(3))
    check.start(0.0)
    sent = dict(check.datagrams_to_send(0.0))
    assert set(sent) == {PLAIN_V6, PLAIN_V4}
    for (host, port), data in sent.items():
        txid = StunMessage.parse(data).transaction_id
        src = ("2001:db8:f:0::1", port, 0, 0) if ":" in host else ("::ffff:" + host, port, 0, 0)
        mapped = ("2001:db8:1:0::2", 7) if ":" in host else ("::ffff:203.0.113.9", 7)
        assert check.handle_response(src, binding_response(txid, mapped), 0.1)
    report = check.report()
    assert report.ipv4 == ("203.0.113.9", 7)
    assert report.ipv6 == ("2001:db8:1::2", 7)
    assert [r.server for r in report.per_server] == [PLAIN_V6, PLAIN_V4]


def test_an_ipv4_answer_to_an_ipv6_request_is_not_ipv6() -> None:
    check = check_for(PLAIN_V6)
    check.start(0.0)
    ((dst, data),) = check.datagrams_to_send(0.0)
    txid = StunMessage.parse(data).transaction_id
    assert check.handle_response(dst, binding_response(txid, ("192.0.2.99", 7)), 0.1)
    report = check.report()
    assert report.ipv6 is None and report.ipv4 == ("192.0.2.99", 7)


# -- the sans-IO contract ---------------------------------------------------------------------


def test_handle_response_sorts_datagrams() -> None:
    check = check_for(PLAIN_V4)
    check.start(0.0)
    ((dst, data),) = check.datagrams_to_send(0.0)
    txid = StunMessage.parse(data).transaction_id
    wireguard = bytes([4, 0, 0, 0]) + b"\x21\x12\xa4\x42" + bytes(24)
    assert not check.handle_response(dst, wireguard, 0.1)
    assert not check.handle_response(dst, b"", 0.1)
    assert not check.handle_response(dst, binding_response(bytes(12), ("1.2.3.4", 5)), 0.1)
    assert not check.handle_response(dst, binding_request(txid), 0.1)  # a request, not an answer
    assert not check.done
    resp = binding_response(txid, ("203.0.113.1", 40000))
    assert check.handle_response(dst, resp, 0.1)
    assert check.done and check.get_timer() is None
    assert check.handle_response(dst, resp, 0.2)  # a duplicate: still ours, changes nothing
    assert check.report().per_server[0].latency == pytest.approx(0.1)
    assert check.datagrams_to_send(5.0) == []


def test_retransmissions_and_timer() -> None:
    check = check_for(PLAIN_V4)
    assert not check.done  # not started
    check.start(10.0)
    assert check.get_timer() == 10.0
    assert len(check.datagrams_to_send(10.0)) == 1
    assert check.datagrams_to_send(10.0) == []
    timers = []
    for _ in range(4):
        t = check.get_timer()
        assert t is not None
        timers.append(t - 10.0)
        out = check.datagrams_to_send(t)
        assert len(out) == (1 if t - 10.0 < 3.0 else 0)
    assert timers == [0.5, 1.0, 2.0, 3.0]
    assert check.done and check.get_timer() is None
    assert check.report().per_server[0].error == "timeout"


def test_a_late_caller_gets_one_copy_not_the_backlog() -> None:
    check = check_for(PLAIN_V4)
    check.start(0.0)
    check.datagrams_to_send(0.0)
    assert len(check.datagrams_to_send(1.9)) == 1  # 0.5 and 1.0 were both missed
    assert check.get_timer() == 2.0
    assert check.datagrams_to_send(3.5) == []
    assert check.done


def test_transaction_ids_come_from_the_injected_rng() -> None:
    def ids(seed: int) -> list[bytes]:
        check = check_for(PLAIN_V4, PLAIN_V4_B, seed=seed)
        check.start(0.0)
        return [StunMessage.parse(d).transaction_id for _, d in check.datagrams_to_send(0.0)]

    assert ids(7) == ids(7)
    assert ids(7) != ids(8)
    assert len(set(ids(7))) == 2


def test_report_is_frozen_and_json_friendly() -> None:
    net = FakeNetwork([rfc5780_server(), FakeStunServer(PLAIN_V6)])
    report, _ = run(check_for(RFC5780_V4[0], PLAIN_V6), net)
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.udp = False  # type: ignore[misc]
    text = json.dumps(report.to_json())
    back = json.loads(text)
    assert back["udp"] is True
    assert back["ipv4"] == list(LOCAL_V4)
    assert back["per_server"][0][0] == list(RFC5780_V4[0])
    assert back["filtering"] == ENDPOINT_INDEPENDENT
    json.dumps(dataclasses.asdict(report))  # plain dataclass/tuple data all the way down
    assert hash(report) == hash(dataclasses.replace(report))


def test_constructor_checks() -> None:
    with pytest.raises(ValueError):
        NetCheck([], random.Random())
    with pytest.raises(ValueError):
        NetCheck([("stun.example.com", 3478)], random.Random())
    with pytest.raises(ValueError):
        NetCheck([PLAIN_V4], random.Random(), retransmit_schedule=(0.0, 1.0), timeout=1.0)
    check = NetCheck([PLAIN_V4, PLAIN_V4], random.Random())
    check.start(0.0)
    assert len(check.datagrams_to_send(0.0)) == 1  # duplicates collapse
    with pytest.raises(RuntimeError):
        check.start(0.0)


def test_describe_reads_well() -> None:
    nat = FakeNat("203.0.113.1", filtering=ADDRESS_AND_PORT_DEPENDENT)
    net = FakeNetwork([rfc5780_server(), FakeStunServer(PLAIN_V4_B, silent=True)], nat_v4=nat)
    report, _ = run(check_for(RFC5780_V4[0], PLAIN_V4_B), net)
    assert report.describe() == [
        "UDP: true",
        f"IPv4: yes, 203.0.113.1:{report.ipv4[1]}",  # type: ignore[index]
        "IPv4 mapping: endpoint-independent",
        "IPv4 mapping varies by destination IP: false",
        "IPv4 filtering: address-and-port-dependent",
        "IPv6: no",
        "Servers:",
        f"  198.51.100.1:3478: 203.0.113.1:{report.ipv4[1]} in 20.0 ms",  # type: ignore[index]
        "  192.0.2.20:3478: timeout",
    ]


def test_an_answer_after_giving_up_is_ours_but_ignored() -> None:
    check = check_for(PLAIN_V4)
    check.start(0.0)
    ((dst, data),) = check.datagrams_to_send(0.0)
    check.datagrams_to_send(3.0)
    assert check.done
    txid = StunMessage.parse(data).transaction_id
    assert check.handle_response(dst, binding_response(txid, ("203.0.113.1", 1)), 3.1)
    report = check.report()
    assert not report.udp and report.per_server[0].error == "timeout"


@given(data=st.binary(max_size=200), source=st.sampled_from([PLAIN_V4, ("::1", 1, 0, 0)]))
def test_garbage_never_raises(data: bytes, source: tuple) -> None:  # type: ignore[type-arg]
    check = check_for(PLAIN_V4)
    check.start(0.0)
    check.datagrams_to_send(0.0)
    # A valid-looking header too, so that garbage reaches the attribute decoding.
    body = data[: len(data) // 4 * 4]
    framed = bytes([1, 1]) + len(body).to_bytes(2, "big") + b"\x21\x12\xa4\x42" + bytes(12) + body
    for datagram in (data, framed):
        assert check.handle_response(source, datagram, 0.1) is False
    assert not check.done
