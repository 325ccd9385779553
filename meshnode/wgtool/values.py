"""Parsing single values as wg's config.c does, with its error messages.

Values arrive as bytes (a command-line argument or the rest of a config
line), since wg works on C strings: case-insensitivity and "is a digit" are
ASCII-only, and names and ports go to the C library's getaddrinfo unchanged
(Python would IDNA-encode a str host). Every parser raises WgError with wg's
message; warnings (nonzero host part, retried name resolution) are printed
at once, as wg prints them, through console.warn.
"""

from __future__ import annotations

import os
import re
import socket
import time

from ..wireguard.keys import KeyFormatError, from_base64
from . import console
from .errors import WgError
from .model import (
    ZERO_KEY,
    AllowedIP,
    Endpoint,
    EndpointSyntaxError,
    resolve_endpoint,
    split_endpoint,
)

BASE64_KEY_LEN = 44
_DIGITS = re.compile(rb"[0-9]+")
_HEX_DIGITS = re.compile(rb"[0-9a-fA-F]+")
_SPACE = b" \t\n\v\f\r"  # C's isspace() in the C locale, as wg's char_is_space
_ULONG_MAX = (1 << 64) - 1

# getaddrinfo results that will not change on a retry (glibc's NameResolver
# wiki, as quoted in config.c); everything else is retried.
_PERMANENT_GAI_ERRORS = frozenset(
    code
    for code in (
        getattr(socket, "EAI_NONAME", None),
        getattr(socket, "EAI_FAIL", None),
        getattr(socket, "EAI_NODATA", None),
    )
    if code is not None
)


def text(raw: bytes) -> str:
    return console.decode(raw)


def strip_spaces(raw: bytes) -> bytes:
    """Remove every whitespace byte, wherever it is (wg's strip_spaces)."""
    return raw.translate(None, _SPACE)


def _strtoul(digits: bytes) -> int:
    """strtoul on a string of decimal digits: saturates at ULONG_MAX."""
    return min(int(digits), _ULONG_MAX)


def _gai_message(exc: OSError) -> str:
    # socket.gaierror carries gai_strerror(); for EAI_SYSTEM Python raises a
    # plain OSError carrying strerror(errno): the two texts wg prints.
    return str(exc.strerror)


def parse_port(value: bytes) -> int:
    """A listen port: a number or a service name, resolved by getaddrinfo as wg
    does (so "domain" is 53 and, with glibc, "70000" wraps to 4464)."""
    if not value:
        raise WgError("Unable to parse empty port")
    try:
        results = socket.getaddrinfo(
            None,
            value,
            socket.AF_UNSPEC,
            socket.SOCK_DGRAM,
            socket.IPPROTO_UDP,
            socket.AI_PASSIVE,
        )
    except OSError as exc:
        raise WgError(f"{_gai_message(exc)}: `{text(value)}'") from None
    family, _, _, _, sockaddr = results[0]
    if family not in (socket.AF_INET, socket.AF_INET6):
        raise WgError(f"Neither IPv4 nor IPv6 address found: `{text(value)}'")
    return int(sockaddr[1])


def parse_fwmark(value: bytes) -> int:
    """ "off", decimal, or hexadecimal with a lowercase "0x" (strtoul's rules)."""
    if value.lower() == b"off":
        return 0
    number: int | None = None
    if value[:1].isdigit():
        if len(value) > 2 and value.startswith(b"0x"):
            if _HEX_DIGITS.fullmatch(value, 2):
                number = min(int(value[2:], 16), _ULONG_MAX)
        elif _DIGITS.fullmatch(value):
            number = _strtoul(value)
    if number is None or number > 0xFFFFFFFF:
        raise WgError(f"Fwmark is neither 0/off nor 0-0xffffffff: `{text(value)}'")
    return number


def parse_persistent_keepalive(value: bytes) -> int:
    if value.lower() == b"off":
        return 0
    if not _DIGITS.fullmatch(value) or _strtoul(value) > 65535:
        raise WgError(
            f"Persistent keepalive interval is neither 0/off nor 1-65535: `{text(value)}'"
        )
    return int(value)


def parse_key(value: bytes) -> bytes:
    """A base64 key exactly as wg accepts it (44 characters, canonical)."""
    try:
        return from_base64(value.decode("latin-1"))
    except KeyFormatError:
        raise WgError(f"Key is not the correct length or format: `{text(value)}'") from None


def read_key_file(path: bytes) -> bytes:
    """A key from a file, as `wg set ... private-key FILE` reads it.

    An empty file (or /dev/null) gives the all-zero key, which removes the
    key. Low-level reads, because wg's fopen() also "opens" a directory and
    only its read fails (so the error is about the length, not the open).
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise WgError(f"fopen: {os.strerror(exc.errno or 0)}") from None
    try:
        head, read_failed = _read_up_to(fd, BASE64_KEY_LEN)
        if len(head) != BASE64_KEY_LEN:
            if not read_failed and not head:
                return ZERO_KEY
            raise WgError("Invalid length key in key file")
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError as exc:
                raise WgError(f"getc: {os.strerror(exc.errno or 0)}") from None
            if not chunk:
                break
            stray = chunk.translate(None, _SPACE)
            if stray:
                raise WgError(f"Found trailing character in key file: `{text(stray[:1])}'")
    finally:
        os.close(fd)
    # a C string: a NUL inside the 44 characters ends it there
    return parse_key(head.split(b"\0", 1)[0])


def _read_up_to(fd: int, size: int) -> tuple[bytes, bool]:
    """fread(): up to size bytes, stopping at EOF; and whether a read failed."""
    data = b""
    while len(data) < size:
        try:
            chunk = os.read(fd, size - len(data))
        except OSError:
            return data, True
        if not chunk:
            break
        data += chunk
    return data, False


def parse_ip(value: bytes) -> tuple[int, bytes]:
    """An address for inet_pton: IPv6 if it has a colon, else dotted-quad IPv4."""
    family = socket.AF_INET6 if b":" in value else socket.AF_INET
    try:
        return family, socket.inet_pton(family, value.decode("ascii"))
    except (OSError, UnicodeDecodeError, ValueError):
        raise WgError(f"Unable to parse IP address: `{text(value)}'") from None


def parse_allowed_ips(value: bytes) -> list[AllowedIP]:
    """A comma-separated list of ip[/cidr]; an empty value is an empty list."""
    if not value:
        return []
    result = []
    for entry in value.split(b","):
        ip, slash, mask = entry.partition(b"/")
        family, address = parse_ip(ip)
        full = 8 * len(address)
        if slash:
            if not _DIGITS.fullmatch(mask) or _strtoul(mask) > full:
                raise WgError(f"AllowedIP is not in the correct format: `{text(entry)}'")
            cidr = int(mask)
        else:
            cidr = full
        allowed = AllowedIP(family, address, cidr)
        if allowed.has_host_bits():
            console.warn(f"Warning: AllowedIP has nonzero host part: {text(ip)}/{text(mask)}")
        result.append(allowed)
    return result


def _resolution_retries() -> int:
    """WG_ENDPOINT_RESOLUTION_RETRIES: a count, "infinity" (-1), default 15."""
    raw = os.environb.get(b"WG_ENDPOINT_RESOLUTION_RETRIES")
    if raw is None:
        return 15
    if raw == b"infinity":
        return -1
    # strtoul would also take leading blanks and a sign; no one writes those
    if not _DIGITS.fullmatch(raw) or _strtoul(raw) > 0x7FFFFFFF:
        raise WgError(f"Unable to parse WG_ENDPOINT_RESOLUTION_RETRIES: `{text(raw)}'")
    return int(raw)


def parse_endpoint(value: bytes) -> Endpoint:
    """host:port or [host]:port, the host resolved now (a name is retried while
    the failure may be transient, as wg does for boot-time DNS)."""
    retries = _resolution_retries()  # wg reads it first, so its error comes first
    if not value:
        raise WgError("Unable to parse empty endpoint")
    try:
        host, port = split_endpoint(value)
    except EndpointSyntaxError as exc:
        what = "matching brace" if str(exc) == "brace" else "port"
        raise WgError(f"Unable to find {what} of endpoint: `{text(value)}'") from None
    timeout_us = 1_000_000
    while True:
        try:
            endpoint = resolve_endpoint(host, port)
            break
        except OSError as exc:
            permanent = isinstance(exc, socket.gaierror) and exc.errno in _PERMANENT_GAI_ERRORS
            if permanent or retries == 0:
                raise WgError(f"{_gai_message(exc)}: `{text(value)}'") from None
            if retries > 0:
                retries -= 1
            console.warn(
                f"{_gai_message(exc)}: `{text(value)}'. "
                f"Trying again in {timeout_us / 1_000_000:.2f} seconds..."
            )
            time.sleep(timeout_us / 1_000_000)
            timeout_us = min(20_000_000, timeout_us * 6 // 5)
    if endpoint is None:
        raise WgError(f"Neither IPv4 nor IPv6 address found: `{text(value)}'")
    return endpoint
