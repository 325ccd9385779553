"""The output formats of `wg show` and `wg showconf`, byte for byte, plus JSON.

Formats as wireguard-tools' show.c and showconf.c print them:

- pretty: the human format, coloured on a terminal. Peers sorted by latest
  handshake, newest first, peers that never shook hands last in the
  daemon's order; "(hidden)" private and preshared keys unless
  WG_HIDE_KEYS=never; times as "1 hour, 2 minutes, 3 seconds ago" with
  365-day years; byte counts in B, KiB, MiB, GiB, TiB with two decimals.
- dump and the single fields: tab-separated, peers in the daemon's order,
  prefixed with the interface name for `show all`.
- showconf: the INI format `setconf` reads.

Colour codes are always written into the text, and stripped afterwards when
colour is off, as wg's terminal.c does (so what is stripped is the same).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ..wireguard.keys import to_base64
from .model import Device, Peer

RESET = "\x1b[0m"
BOLD = "\x1b[1m"
RED = "\x1b[31m"
GREEN = "\x1b[32m"
YELLOW = "\x1b[33m"
CYAN = "\x1b[36m"

FIELDS = (
    "public-key",
    "private-key",
    "listen-port",
    "fwmark",
    "peers",
    "preshared-keys",
    "endpoints",
    "allowed-ips",
    "latest-handshakes",
    "transfer",
    "persistent-keepalive",
    "dump",
)

_YEAR = 365 * 24 * 60 * 60
_UNITS = (("year", _YEAR), ("day", 24 * 60 * 60), ("hour", 60 * 60), ("minute", 60), ("second", 1))


def _is_alpha(byte: int) -> bool:
    return 0x41 <= byte <= 0x5A or 0x61 <= byte <= 0x7A


def strip_ansi(text: str) -> str:
    """wg's filter_ansi: drop each ESC '[' and what follows up to and including
    the next letter. Like wg it scans all but the last two bytes for ESC '['."""
    buf = bytearray(text.encode("utf-8", "surrogateescape"))
    n = len(buf)
    for i in range(max(n - 2, 0)):
        if buf[i] == 0x1B and buf[i + 1] == ord("["):
            buf[i] = buf[i + 1] = 0
            j = i + 2
            while j < n and not _is_alpha(buf[j]):
                buf[j] = 0
                j += 1
            if j < n:
                buf[j] = 0
    return bytes(buf).replace(b"\0", b"").decode("utf-8", "surrogateescape")


def pretty_time(seconds: int) -> str:
    """Seconds as wg words them: "1 hour, 1 minute, 1 second" (zero parts left out)."""
    parts = []
    for unit, size in _UNITS:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {CYAN}{unit}{'' if count == 1 else 's'}{RESET}")
    return ", ".join(parts)


def ago(timestamp: int, now: int) -> str:
    if now == timestamp:
        return "Now"
    if now < timestamp:
        return f"({RED}System clock wound backward; connection problems may ensue.{RESET})"
    return pretty_time(now - timestamp) + " ago"


def every(seconds: int) -> str:
    return "every " + pretty_time(seconds)


def byte_count(count: int) -> str:
    """Bytes as "1023 B", "1.00 KiB"...: wg divides a C double, hence float()."""
    if count < 1024:
        return f"{count} {CYAN}B{RESET}"
    if count < 1024**2:
        return f"{float(count) / 1024:.2f} {CYAN}KiB{RESET}"
    if count < 1024**3:
        return f"{float(count) / (1024 * 1024):.2f} {CYAN}MiB{RESET}"
    if count < 1024**4:
        return f"{float(count) / (1024 * 1024 * 1024):.2f} {CYAN}GiB{RESET}"
    return f"{float(count) / (1024 * 1024 * 1024) / 1024:.2f} {CYAN}TiB{RESET}"


def _hidden(key: bytes) -> str:
    return to_base64(key) if os.environ.get("WG_HIDE_KEYS") == "never" else "(hidden)"


def _maybe_key(key: bytes | None) -> str:
    return "(none)" if key is None else to_base64(key)


def sorted_peers(peers: list[Peer]) -> list[Peer]:
    """Newest handshake first; peers without one last, in their order (wg's
    qsort here is glibc's stable merge sort)."""
    return sorted(
        peers,
        key=lambda p: (not p.has_handshake, -p.last_handshake_sec, -p.last_handshake_nsec),
    )


def pretty(device: Device, now: int, color: bool) -> str:
    """`wg show IFACE`. `now` is Unix time in whole seconds, as time(NULL)."""
    chunks = [RESET, f"{GREEN}{BOLD}interface{RESET}: {GREEN}{device.name}{RESET}\n"]
    if device.public_key is not None:
        chunks.append(f"  {BOLD}public key{RESET}: {to_base64(device.public_key)}\n")
    if device.private_key is not None:
        chunks.append(f"  {BOLD}private key{RESET}: {_hidden(device.private_key)}\n")
    if device.listen_port:
        chunks.append(f"  {BOLD}listening port{RESET}: {device.listen_port}\n")
    if device.fwmark:
        chunks.append(f"  {BOLD}fwmark{RESET}: 0x{device.fwmark:x}\n")
    peers = sorted_peers(device.peers)
    if peers:
        chunks.append("\n")
    for index, peer in enumerate(peers):
        chunks.append(f"{YELLOW}{BOLD}peer{RESET}: {YELLOW}{to_base64(peer.public_key)}{RESET}\n")
        if peer.preshared_key is not None:
            chunks.append(f"  {BOLD}preshared key{RESET}: {_hidden(peer.preshared_key)}\n")
        if peer.endpoint is not None:
            chunks.append(f"  {BOLD}endpoint{RESET}: {peer.endpoint.show_text()}\n")
        chunks.append(f"  {BOLD}allowed ips{RESET}: ")
        if peer.allowed_ips:
            last = len(peer.allowed_ips) - 1
            for i, allowed in enumerate(peer.allowed_ips):
                end = "\n" if i == last else ", "
                chunks.append(f"{allowed.ip}{CYAN}/{RESET}{allowed.cidr}{end}")
        else:
            chunks.append("(none)\n")
        if peer.last_handshake_sec:
            chunks.append(f"  {BOLD}latest handshake{RESET}: {ago(peer.last_handshake_sec, now)}\n")
        if peer.rx_bytes or peer.tx_bytes:
            chunks.append(f"  {BOLD}transfer{RESET}: ")
            chunks.append(f"{byte_count(peer.rx_bytes)} received, ")
            chunks.append(f"{byte_count(peer.tx_bytes)} sent\n")
        if peer.persistent_keepalive:
            chunks.append(
                f"  {BOLD}persistent keepalive{RESET}: {every(peer.persistent_keepalive)}\n"
            )
        if index < len(peers) - 1:
            chunks.append("\n")
    if not color:
        chunks = [strip_ansi(chunk) for chunk in chunks]
    return "".join(chunks)


def _endpoint(peer: Peer) -> str:
    return "(none)" if peer.endpoint is None else peer.endpoint.show_text()


def _fwmark(device: Device) -> str:
    return f"0x{device.fwmark:x}" if device.fwmark else "off"


def _keepalive(peer: Peer) -> str:
    return str(peer.persistent_keepalive) if peer.persistent_keepalive else "off"


def dump(device: Device, prefix: str = "") -> str:
    """`wg show IFACE dump`; prefix is "IFACE\\t" for `show all dump`."""
    lines = [
        f"{prefix}{_maybe_key(device.private_key)}\t{_maybe_key(device.public_key)}\t"
        f"{device.listen_port}\t{_fwmark(device)}\n"
    ]
    for peer in device.peers:
        allowed = ",".join(map(str, peer.allowed_ips)) or "(none)"
        lines.append(
            f"{prefix}{to_base64(peer.public_key)}\t{_maybe_key(peer.preshared_key)}\t"
            f"{_endpoint(peer)}\t{allowed}\t{peer.last_handshake_sec}\t"
            f"{peer.rx_bytes}\t{peer.tx_bytes}\t{_keepalive(peer)}\n"
        )
    return "".join(lines)


def _per_peer(device: Device, prefix: str, column: Callable[[Peer], str]) -> str:
    return "".join(f"{prefix}{to_base64(p.public_key)}\t{column(p)}\n" for p in device.peers)


def field(device: Device, name: str, prefix: str = "") -> str | None:
    """`wg show IFACE FIELD`; None for a field wg doesn't know."""
    if name == "public-key":
        return f"{prefix}{_maybe_key(device.public_key)}\n"
    if name == "private-key":
        return f"{prefix}{_maybe_key(device.private_key)}\n"
    if name == "listen-port":
        return f"{prefix}{device.listen_port}\n"
    if name == "fwmark":
        return f"{prefix}{_fwmark(device)}\n"
    if name == "endpoints":
        # wg 1.0.20210914 writes the interface name once, before the peers (a
        # slip fixed in later versions): "wg0\tPEER1\t...\nPEER2\t...\n", and
        # a bare "wg0\t" for an interface without peers
        return prefix + _per_peer(device, "", _endpoint)
    if name == "allowed-ips":
        return _per_peer(device, prefix, lambda p: " ".join(map(str, p.allowed_ips)) or "(none)")
    if name == "latest-handshakes":
        return _per_peer(device, prefix, lambda p: str(p.last_handshake_sec))
    if name == "transfer":
        return _per_peer(device, prefix, lambda p: f"{p.rx_bytes}\t{p.tx_bytes}")
    if name == "persistent-keepalive":
        return _per_peer(device, prefix, _keepalive)
    if name == "preshared-keys":
        return _per_peer(device, prefix, lambda p: _maybe_key(p.preshared_key))
    if name == "peers":
        return "".join(f"{prefix}{to_base64(p.public_key)}\n" for p in device.peers)
    if name == "dump":
        return dump(device, prefix)
    return None


def showconf(device: Device) -> str:
    """`wg showconf IFACE`: peers in the daemon's order."""
    lines = ["[Interface]\n"]
    if device.listen_port:
        lines.append(f"ListenPort = {device.listen_port}\n")
    if device.fwmark:
        lines.append(f"FwMark = 0x{device.fwmark:x}\n")
    if device.private_key is not None:
        lines.append(f"PrivateKey = {to_base64(device.private_key)}\n")
    lines.append("\n")
    for index, peer in enumerate(device.peers):
        lines.append(f"[Peer]\nPublicKey = {to_base64(peer.public_key)}\n")
        if peer.preshared_key is not None:
            lines.append(f"PresharedKey = {to_base64(peer.preshared_key)}\n")
        if peer.allowed_ips:
            lines.append(f"AllowedIPs = {', '.join(map(str, peer.allowed_ips))}\n")
        if peer.endpoint is not None and (endpoint := peer.endpoint.text()) is not None:
            lines.append(f"Endpoint = {endpoint}\n")
        if peer.persistent_keepalive:
            lines.append(f"PersistentKeepalive = {peer.persistent_keepalive}\n")
        if index < len(device.peers) - 1:
            lines.append("\n")
    return "".join(lines)


def json_object(device: Device) -> dict[str, object]:
    """`show --json`: every field; keys base64 (None when absent), numbers as
    the UAPI gives them (0 = off/never), times as Unix seconds."""
    return {
        "interface": device.name,
        "public_key": None if device.public_key is None else to_base64(device.public_key),
        "private_key": None if device.private_key is None else to_base64(device.private_key),
        "listen_port": device.listen_port,
        "fwmark": device.fwmark,
        "peers": [
            {
                "public_key": to_base64(peer.public_key),
                "preshared_key": (
                    None if peer.preshared_key is None else to_base64(peer.preshared_key)
                ),
                "endpoint": None if peer.endpoint is None else peer.endpoint.text(),
                "allowed_ips": [str(allowed) for allowed in peer.allowed_ips],
                "latest_handshake": peer.last_handshake_sec,
                "latest_handshake_nsec": peer.last_handshake_nsec,
                "transfer_rx": peer.rx_bytes,
                "transfer_tx": peer.tx_bytes,
                "persistent_keepalive": peer.persistent_keepalive,
            }
            for peer in device.peers
        ],
    }
