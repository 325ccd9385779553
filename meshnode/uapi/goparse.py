"""Numbers and IP addresses read exactly as Go's strconv and net/netip read
them, since wireguard-go parses its UAPI with those: ASCII only, so a
Unicode digit that str.isdigit() and int() would take is refused, and
bounded, so no input makes int() raise. Each returns None for bad input.
"""

from __future__ import annotations

HEX_DIGITS = {c: int(c, 16) for c in "0123456789abcdefABCDEF"}


def parse_uint(text: str, bits: int) -> int | None:
    """strconv.ParseUint(text, 10, bits): ASCII digits only, no sign, no
    underscores, any number of leading zeros; None if not, or too big."""
    if not (text.isascii() and text.isdigit()):
        return None
    significant = text.lstrip("0")
    # past 20 digits it exceeds 64 bits; and int() would raise past 4,300
    if len(significant) > 20:
        return None
    value = int(significant or "0")
    return value if value < 1 << bits else None


def parse_ipv4(text: str) -> int | None:
    """netip's parseIPv4: four decimal fields 0-255, no leading zeros."""
    fields = text.split(".")
    if len(fields) != 4:
        return None
    value = 0
    for part in fields:
        if not (part.isascii() and part.isdigit()) or len(part) > 3:
            return None
        if len(part) > 1 and part[0] == "0":
            return None
        octet = int(part)
        if octet > 255:
            return None
        value = value << 8 | octet
    return value


def parse_ipv6(text: str) -> tuple[int, str] | None:
    """netip's parseIPv6 (Go 1.22 and later), as (address, zone): groups of
    one to four hex digits, one '::', an IPv4 address in the last 32 bits,
    and a zone after the first '%' that must not be empty."""
    s, percent, zone = text.partition("%")
    if percent and not zone:
        return None
    ip = bytearray(16)
    ellipsis = -1  # where '::' stands, in bytes
    if s.startswith("::"):
        ellipsis = 0
        s = s[2:]
        if not s:
            return 0, zone
    i = 0
    while i < 16:
        off, acc = 0, 0
        while off < len(s):
            digit = HEX_DIGITS.get(s[off])
            if digit is None:
                break
            if off > 3:  # a fifth digit
                return None
            acc = acc << 4 | digit
            off += 1
        if off == 0:
            return None
        if off < len(s) and s[off] == ".":
            # an embedded IPv4 address: the rest of the string, in the last 4 bytes
            if (ellipsis < 0 and i != 12) or i + 4 > 16:
                return None
            v4 = parse_ipv4(s)
            if v4 is None:
                return None
            ip[i : i + 4] = v4.to_bytes(4, "big")
            s = ""
            i += 4
            break
        ip[i : i + 2] = acc.to_bytes(2, "big")
        i += 2
        s = s[off:]
        if not s:
            break
        if s[0] != ":" or len(s) == 1:
            return None
        s = s[1:]
        if s[0] == ":":
            if ellipsis >= 0:
                return None
            ellipsis = i
            s = s[1:]
            if not s:
                break
    if s:
        return None
    if i < 16:
        if ellipsis < 0:
            return None
        ip = ip[:ellipsis] + bytes(16 - i) + ip[ellipsis:i]
    elif ellipsis >= 0:
        return None  # '::' must stand for at least one group of zeros
    return int.from_bytes(ip, "big"), zone


def parse_addr(text: str) -> tuple[int, int, str] | None:
    """netip.ParseAddr as (version, address, zone): the first '.', ':' or
    '%' decides how the rest is read."""
    for c in text:
        if c == ".":
            v4 = parse_ipv4(text)
            return None if v4 is None else (4, v4, "")
        if c == ":":
            v6 = parse_ipv6(text)
            return None if v6 is None else (6, *v6)
        if c == "%":
            return None
    return None
