"""A sans-IO "netcheck": what the NAT in front of this node does to UDP, found with STUN.

The caller owns the socket and the clock. It creates a :class:`NetCheck`, calls ``start(now)``,
then loops: send what ``datagrams_to_send(now)`` returns, feed every datagram that arrives to
``handle_response`` (which returns False for anything that is not an answer to us, so the
same socket can carry WireGuard), and wake up no later than ``get_timer()``. When ``done`` is
true, ``report()`` says what was learnt::

    check = NetCheck(servers, random.Random())
    check.start(now())
    while not check.done:
        for addr, data in check.datagrams_to_send(now()):
            sock.sendto(data, addr)
        wait for a datagram until check.get_timer(), then
        check.handle_response(source, data, now())

Tests, per server (RFC 5780 section 4, run in parallel rather than in sequence so the whole
check takes one timeout rather than several):

* a plain Binding request: UDP works, and our mapped (public) address as this server sees it;
* if the answer carries OTHER-ADDRESS (an RFC 5780 server with a second IP address):
  a request asking for the answer from the other IP and port (CHANGE-REQUEST ip+port),
  and one asking for it from the other port only (CHANGE-REQUEST port), in parallel. Which
  of those answers get through the NAT gives its filtering behaviour;
* once both have been answered or given up on: a plain Binding request to OTHER-ADDRESS,
  the mapping seen from a second destination IP. Not earlier: that request would open the
  NAT to the other address, and the CHANGE-REQUEST answer from there would get through
  whatever the filtering. For the same reason a filtering answer from an address some other
  probe has already sent to proves nothing and is not counted (two configured servers that
  are one RFC 5780 server's two addresses, say). WireGuard traffic on the same socket can do
  the same, which this module cannot see; it is unlikely to go to a STUN server's address.

Mapping is endpoint-dependent if two destination IPs of the same family (two servers, or one
RFC 5780 server's two addresses) see different mapped addresses.
"""

from __future__ import annotations

import enum
import ipaddress
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from meshnode.nat.stun import (
    Address,
    BindingResponse,
    StunError,
    binding_request,
    is_stun,
    parse_binding_response,
)

# When to (re)send a request, in seconds after its first transmission, and when to give up.
# RFC 8489's default starts at 500 ms and doubles; a netcheck wants an answer soon rather than
# certainly, so it stops after 3 s instead of 39.5 s.
DEFAULT_RETRANSMIT_SCHEDULE: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
DEFAULT_TIMEOUT = 3.0

ENDPOINT_INDEPENDENT = "endpoint-independent"
ENDPOINT_DEPENDENT = "endpoint-dependent"
ADDRESS_DEPENDENT = "address-dependent"
ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"
UNKNOWN = "unknown"


def _norm_host(host: str) -> str:
    """The canonical text of an IP, so that addresses from sockets and from STUN compare."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)  # a dual-stack socket's view of an IPv4 peer
    return str(ip)


def _norm_addr(addr: Sequence[Any]) -> Address:
    # IPv6 sockets report (host, port, flowinfo, scope_id): only the first two matter here.
    return _norm_host(str(addr[0])), int(addr[1])


def _family(host: str) -> int:
    return ipaddress.ip_address(host).version


def format_address(addr: Address) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ServerResult(NamedTuple):
    """What one server's plain Binding request gave. A tuple, so it is JSON-friendly as is."""

    server: Address
    mapped: Address | None
    latency: float | None  # seconds from the first transmission to the answer
    error: str | None


@dataclass(frozen=True)
class NetReport:
    """The result of a :class:`NetCheck`. Every field is plain data (see ``to_json``)."""

    udp: bool  # some STUN server answered at all
    ipv4: Address | None  # public (mapped) IPv4 address and port, first server's view
    ipv6: Address | None
    per_server: tuple[ServerResult, ...]
    mapping: str  # the IPv4 verdict if known, else the IPv6 one
    filtering: str
    mapping_ipv4: str = UNKNOWN
    mapping_ipv6: str = UNKNOWN
    filtering_ipv4: str = UNKNOWN
    filtering_ipv6: str = UNKNOWN

    def to_json(self) -> dict[str, Any]:
        """A dict of str/bool/float/None/list only, ready for ``json.dumps``."""

        def addr(a: Address | None) -> list[Any] | None:
            return None if a is None else [a[0], a[1]]

        return {
            "udp": self.udp,
            "ipv4": addr(self.ipv4),
            "ipv6": addr(self.ipv6),
            "per_server": [
                [addr(r.server), addr(r.mapped), r.latency, r.error] for r in self.per_server
            ],
            "mapping": self.mapping,
            "filtering": self.filtering,
            "mapping_ipv4": self.mapping_ipv4,
            "mapping_ipv6": self.mapping_ipv6,
            "filtering_ipv4": self.filtering_ipv4,
            "filtering_ipv6": self.filtering_ipv6,
        }

    def describe(self) -> list[str]:
        """Human-readable lines, in the spirit of ``tailscale netcheck``."""
        lines = [f"UDP: {str(self.udp).lower()}"]
        for name, mapped, mapping, filtering in (
            ("IPv4", self.ipv4, self.mapping_ipv4, self.filtering_ipv4),
            ("IPv6", self.ipv6, self.mapping_ipv6, self.filtering_ipv6),
        ):
            if mapped is None:
                lines.append(f"{name}: no")
                continue
            lines.append(f"{name}: yes, {format_address(mapped)}")
            lines.append(f"{name} mapping: {mapping}")
            if mapping != UNKNOWN:
                varies = mapping == ENDPOINT_DEPENDENT
                lines.append(f"{name} mapping varies by destination IP: {str(varies).lower()}")
            lines.append(f"{name} filtering: {filtering}")
        lines.append("Servers:")
        for r in self.per_server:
            if r.mapped is not None:
                latency = "" if r.latency is None else f" in {r.latency * 1000:.1f} ms"
                lines.append(f"  {format_address(r.server)}: {format_address(r.mapped)}{latency}")
            else:
                lines.append(f"  {format_address(r.server)}: {r.error or 'no answer'}")
        return lines


class _Kind(enum.Enum):
    PRIMARY = "primary"  # plain request to the server's configured address
    ALT = "alt"  # plain request to its OTHER-ADDRESS
    CHANGE_BOTH = "change-ip-and-port"  # answer please from the other IP and port
    CHANGE_PORT = "change-port"  # answer please from the same IP, other port


@dataclass
class _Probe:
    kind: _Kind
    server: Address  # the configured server this probe belongs to
    dest: Address
    txid: bytes
    datagram: bytes
    queued_at: float  # when it became due for its first transmission
    first_sent: float | None = None
    next_send_index: int = 0
    answer: BindingResponse | None = None
    answer_source: Address | None = None
    answered_at: float | None = None
    timed_out: bool = False

    @property
    def finished(self) -> bool:
        return self.answer is not None or self.timed_out


@dataclass
class _ServerState:
    server: Address
    probes: dict[_Kind, _Probe] = field(default_factory=dict)
    other: Address | None = None  # usable OTHER-ADDRESS, if the server has one


class NetCheck:
    """Drive STUN probes against ``servers`` and work out the NAT's behaviour.

    ``servers`` are (IP literal, port) pairs, IPv4 and/or IPv6; ``rng`` makes the
    transaction ids (inject a seeded one in tests; use ``random.SystemRandom()`` or
    ``random.Random()`` in production: ids need to be unguessable only as much as a
    netcheck's answers need to be unforgeable by off-path hosts).
    """

    def __init__(
        self,
        servers: Sequence[Address],
        rng: random.Random,
        *,
        retransmit_schedule: Sequence[float] = DEFAULT_RETRANSMIT_SCHEDULE,
        timeout: float = DEFAULT_TIMEOUT,
        software: str | None = None,
    ) -> None:
        if not servers:
            raise ValueError("NetCheck needs at least one STUN server")
        schedule = tuple(retransmit_schedule)
        if not schedule or schedule[0] != 0 or list(schedule) != sorted(schedule):
            raise ValueError("retransmit_schedule must start at 0 and not decrease")
        if timeout <= schedule[-1]:
            raise ValueError("timeout must come after the last retransmission")
        self._servers: list[_ServerState] = []
        seen: set[Address] = set()
        for s in servers:
            addr = _norm_addr(s)
            ipaddress.ip_address(addr[0])  # ValueError for a hostname: resolve it first
            if addr not in seen:  # the same server twice would prove nothing twice
                seen.add(addr)
                self._servers.append(_ServerState(addr))
        self._rng = rng
        self._schedule = schedule
        self._timeout = timeout
        self._software = software
        self._by_txid: dict[bytes, _Probe] = {}
        # When each destination first got a request from us: the NAT lets its answers in.
        self._contacted: dict[Address, float] = {}
        self._started = False

    # -- driving ----------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Queue the first request to every server; they go out at the next
        ``datagrams_to_send(now)``."""
        if self._started:
            raise RuntimeError("NetCheck already started")
        self._started = True
        for st in self._servers:
            self._add_probe(st, _Kind.PRIMARY, st.server, now)

    def _add_probe(self, st: _ServerState, kind: _Kind, dest: Address, now: float) -> None:
        txid = self._rng.randbytes(12)
        while txid in self._by_txid:  # only a broken rng repeats itself
            txid = self._rng.randbytes(12)
        change_ip = kind is _Kind.CHANGE_BOTH
        change_port = kind in (_Kind.CHANGE_BOTH, _Kind.CHANGE_PORT)
        data = binding_request(txid, change_ip, change_port, software=self._software)
        probe = _Probe(kind, st.server, dest, txid, data, queued_at=now)
        st.probes[kind] = probe
        self._by_txid[txid] = probe

    def _probes(self) -> list[_Probe]:
        return [p for st in self._servers for p in st.probes.values()]

    def datagrams_to_send(self, now: float) -> list[tuple[Address, bytes]]:
        """Requests (and retransmissions) due at ``now``, as (destination, datagram).

        Also expires probes whose time is up, so call it whenever ``get_timer()`` has passed.
        A caller that wakes up late gets one copy per probe, not the backlog.
        """
        for p in self._probes():
            if not p.finished and p.first_sent is not None and now >= p.first_sent + self._timeout:
                p.timed_out = True
        self._start_alt_probes(now)
        out: list[tuple[Address, bytes]] = []
        for p in self._probes():
            if p.finished:
                continue
            if p.first_sent is None:
                p.first_sent = now
                p.next_send_index = 1
                self._contacted.setdefault(p.dest, now)
                out.append((p.dest, p.datagram))
                continue
            due = False
            while (
                p.next_send_index < len(self._schedule)
                and now >= p.first_sent + self._schedule[p.next_send_index]
            ):
                p.next_send_index += 1
                due = True
            if due:
                out.append((p.dest, p.datagram))
        return out

    def get_timer(self) -> float | None:
        """When ``datagrams_to_send`` next has something to do, or None when done."""
        deadlines: list[float] = []
        for p in self._probes():
            if p.finished:
                continue
            if p.first_sent is None:
                deadlines.append(p.queued_at)  # queued: due right away
                continue
            if p.next_send_index < len(self._schedule):
                deadlines.append(p.first_sent + self._schedule[p.next_send_index])
            deadlines.append(p.first_sent + self._timeout)
        return min(deadlines) if deadlines else None

    @property
    def done(self) -> bool:
        return self._started and all(p.finished for p in self._probes())

    def handle_response(self, source_addr: Sequence[Any], data: bytes, now: float) -> bool:
        """Take a datagram that arrived; True if it answers (or re-answers) one of our
        requests, False if it is anybody else's business (WireGuard, a stranger's STUN)."""
        if not is_stun(data):
            return False
        try:
            resp = parse_binding_response(data)
        except StunError:
            return False
        probe = self._by_txid.get(resp.transaction_id)
        if probe is None:
            return False
        if probe.finished:
            return True  # a duplicate, or an answer after we gave up: ours, but too late
        probe.answer = resp
        probe.answer_source = _norm_addr(source_addr)
        probe.answered_at = now
        if probe.kind is _Kind.PRIMARY and resp.success:
            self._maybe_start_filtering(probe, resp, now)
        self._start_alt_probes(now)
        return True

    def _maybe_start_filtering(self, probe: _Probe, resp: BindingResponse, now: float) -> None:
        st = next(s for s in self._servers if s.server == probe.server)
        if resp.other_address is None:
            return
        other = _norm_addr(resp.other_address)
        server_host, server_port = st.server
        # The tests need a second IP *and* port of the same family; a server with one
        # address (coturn on a lone ::1 advertises its alternate port only) cannot tell
        # address-dependent from endpoint-independent behaviour.
        if (
            _family(other[0]) != _family(server_host)
            or other[0] == server_host
            or other[1] == server_port
        ):
            return
        st.other = other
        self._add_probe(st, _Kind.CHANGE_BOTH, st.server, now)
        self._add_probe(st, _Kind.CHANGE_PORT, st.server, now)

    def _start_alt_probes(self, now: float) -> None:
        for st in self._servers:
            if st.other is None or _Kind.ALT in st.probes:
                continue
            if all(st.probes[k].finished for k in (_Kind.CHANGE_BOTH, _Kind.CHANGE_PORT)):
                self._add_probe(st, _Kind.ALT, st.other, now)

    # -- conclusions ------------------------------------------------------------------------

    def report(self) -> NetReport:
        """What was learnt so far (complete once ``done``)."""
        per_server: list[ServerResult] = []
        udp = False
        public: dict[int, Address] = {}
        # (destination IP, mapped address) per family, for the mapping verdict.
        seen_from: dict[int, list[tuple[str, Address]]] = {4: [], 6: []}
        filtering: dict[int, str] = {4: UNKNOWN, 6: UNKNOWN}
        for st in self._servers:
            family = _family(st.server[0])
            if any(p.answer is not None for p in st.probes.values()):
                udp = True
            primary = st.probes.get(_Kind.PRIMARY)
            per_server.append(self._server_result(st.server, primary))
            for kind in (_Kind.PRIMARY, _Kind.ALT):
                p = st.probes.get(kind)
                if p is not None and p.answer is not None and p.answer.mapped is not None:
                    mapped = _norm_addr(p.answer.mapped)
                    seen_from[family].append((p.dest[0], mapped))
                    # Keyed by the mapped address's own family: a NAT64 could map an IPv6
                    # request to an IPv4 address, which is no IPv6 connectivity.
                    public.setdefault(_family(mapped[0]), mapped)
            if filtering[family] == UNKNOWN:
                filtering[family] = self._filtering(st)
        mapping = {f: self._mapping(seen_from[f]) for f in (4, 6)}
        return NetReport(
            udp=udp,
            ipv4=public.get(4),
            ipv6=public.get(6),
            per_server=tuple(per_server),
            mapping=mapping[4] if mapping[4] != UNKNOWN else mapping[6],
            filtering=filtering[4] if filtering[4] != UNKNOWN else filtering[6],
            mapping_ipv4=mapping[4],
            mapping_ipv6=mapping[6],
            filtering_ipv4=filtering[4],
            filtering_ipv6=filtering[6],
        )

    def _server_result(self, server: Address, p: _Probe | None) -> ServerResult:
        if p is None or (p.first_sent is None and not p.finished):
            return ServerResult(server, None, None, "not tried")
        if p.answer is None:
            return ServerResult(server, None, None, "timeout" if p.timed_out else "pending")
        assert p.first_sent is not None and p.answered_at is not None
        # From the first transmission: with retransmissions sharing one transaction id we
        # cannot know which copy was answered, so this is an upper bound.
        latency = max(0.0, p.answered_at - p.first_sent)
        if not p.answer.success:
            code, reason = p.answer.error or (0, "")
            return ServerResult(server, None, latency, f"error {code} {reason}".rstrip())
        mapped = _norm_addr(p.answer.mapped) if p.answer.mapped else None
        return ServerResult(server, mapped, latency, None)

    @staticmethod
    def _mapping(seen: list[tuple[str, Address]]) -> str:
        if len({dest_ip for dest_ip, _ in seen}) < 2:
            return UNKNOWN  # one destination IP cannot show variation by destination IP
        if len({mapped for _, mapped in seen}) == 1:
            return ENDPOINT_INDEPENDENT
        return ENDPOINT_DEPENDENT

    def _filtering(self, st: _ServerState) -> str:
        """RFC 5780 section 4.4, from one server's CHANGE-REQUEST probes."""
        both = st.probes.get(_Kind.CHANGE_BOTH)
        port = st.probes.get(_Kind.CHANGE_PORT)
        if st.other is None or both is None or port is None:
            return UNKNOWN
        server_ip, server_port = st.server

        def honoured(p: _Probe, ip_changed: bool) -> bool | None:
            """True: answered from the asked-for address; False: no answer; None: no
            verdict (an error response, or the server answered from the wrong address,
            ignoring CHANGE-REQUEST, which proves nothing about our filtering)."""
            if p.answer is None:
                return False if p.timed_out else None
            if not p.answer.success or p.answer_source is None:
                return None
            src_ip, src_port = p.answer_source
            if (src_ip != server_ip) != ip_changed or src_port == server_port:
                return None
            assert p.answered_at is not None
            for (ip, port), when in self._contacted.items():
                if when < p.answered_at and ip == src_ip and (ip_changed or port == src_port):
                    return None  # we had opened the NAT to that sender ourselves
            return True

        got_both = honoured(both, ip_changed=True)
        got_port = honoured(port, ip_changed=False)
        if got_both is True:
            return ENDPOINT_INDEPENDENT
        if got_both is None:
            return UNKNOWN
        if got_port is True:
            return ADDRESS_DEPENDENT
        if got_port is False:
            return ADDRESS_AND_PORT_DEPENDENT
        return UNKNOWN
