"""Strict msgpack for the mesh's signed and stored objects.

Records, invites and the roster all travel as msgpack lists (never maps: a
list has one encoding, so the same content always gives the same bytes, which
signatures and anti-entropy hashes rely on). Decoders take bytes from peers,
users and state files, so every one of them must turn *any* input into either
a valid object or its module's `ValueError` subclass. This module is the one
place that knows how msgpack fails, and `Checker` does the type, size and
range checks with the caller's exception class and wording.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NoReturn

import msgpack

# The last second `datetime` can show (9999-12-31T23:59:59Z): times beyond it
# could not be printed in an error message, and no real timestamp gets there.
MAX_TIME = 253_402_300_799
# Versions and counters: far above any real value, small enough for msgpack.
MAX_COUNT = 2**32 - 1

# DNS-label shaped names: member, admin and mesh names end up in host names.
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def valid_name(name: object) -> bool:
    """1-63 characters of [a-z0-9-], not starting with '-'."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def show(value: object) -> str:
    """A short repr for error messages: decoded values can be arbitrarily large."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def pack(obj: Any) -> bytes:
    """The one deterministic encoding (bin type for bytes, smallest int forms)."""
    return msgpack.packb(obj, use_bin_type=True)


class Checker:
    """Type-checked reads of decoded msgpack values for one kind of object.

    Every failure raises `error` with a message that names the object and the
    field, so callers never have to translate exceptions themselves.
    """

    def __init__(self, error: type[ValueError], what: str) -> None:
        self.error = error
        self.what = what

    def fail(self, problem: str) -> NoReturn:
        raise self.error(f"{self.what}: {problem}")

    def unpack(self, data: object, max_size: int) -> Any:
        """Decode one msgpack value of at most `max_size` bytes, nothing trailing."""
        if not isinstance(data, bytes | bytearray | memoryview):
            self.fail(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) > max_size:
            self.fail(f"{len(data)} bytes is more than the limit of {max_size}")
        try:
            # unpackb bounds every str, bin, array and map by len(data) itself
            return msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
        # msgpack reports bad input as ValueError (including UnicodeDecodeError
        # and its ExtraData, FormatError, StackError), as OutOfData (not a
        # ValueError) and, in its pure-Python fallback, possibly TypeError.
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            problem = f"not valid msgpack ({type(exc).__name__})"
        self.fail(problem)

    def canonical(self, data: bytes, encoding: bytes) -> None:
        """Refuse `data` unless it is the object's own `encoding`.

        One content, one byte string: msgpack allows several encodings of the
        same list (wider ints, unsorted or repeated roles), and hashes and
        signatures must not tell them apart.
        """
        if encoding != bytes(data):
            self.fail("not in canonical form")

    def fields(self, value: object, version: int, count: int) -> Sequence[Any]:
        """The `count` fields of a list encoding that starts with its format version.

        The version is checked first so that an object from a newer meshnode
        is reported as such rather than as some field being wrong.
        """
        items = self.seq(value, "encoding", (1, 255))
        found = self.integer(items[0], "format version", 0, MAX_COUNT)
        if found != version:
            self.fail(f"format version {found} is not supported (this meshnode reads {version})")
        return self.seq(items, "encoding", (count + 1, count + 1))[1:]

    def seq(self, value: object, field: str, lengths: tuple[int, int]) -> Sequence[Any]:
        lo, hi = lengths
        if not isinstance(value, list | tuple):  # msgpack gives lists; callers may pass tuples
            self.fail(f"{field} must be a list, got {type(value).__name__}")
        if not lo <= len(value) <= hi:
            want = str(lo) if lo == hi else f"{lo} to {hi}"
            self.fail(f"{field} must have {want} items, has {len(value)}")
        return value

    def blob(self, value: object, field: str, size: int) -> bytes:
        if not isinstance(value, bytes):
            self.fail(f"{field} must be bytes, got {type(value).__name__}")
        if len(value) != size:
            self.fail(f"{field} must be {size} bytes, is {len(value)}")
        return value

    def integer(self, value: object, field: str, lo: int, hi: int) -> int:
        # bool is an int subclass, and msgpack has a distinct type for it
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(f"{field} must be an integer, got {type(value).__name__}")
        if not lo <= value <= hi:
            self.fail(f"{field} {value} is outside {lo}..{hi}")
        return value

    def time(self, value: object, field: str) -> int:
        return self.integer(value, field, 0, MAX_TIME)

    def text(self, value: object, field: str, max_chars: int) -> str:
        if not isinstance(value, str):
            self.fail(f"{field} must be text, got {type(value).__name__}")
        if len(value) > max_chars:
            self.fail(f"{field} is {len(value)} characters, more than {max_chars}")
        # printed in status output and logs: no control or escape characters
        if not value.isprintable():
            self.fail(f"{field} contains unprintable characters")
        return value

    def name(self, value: object, field: str) -> str:
        if not valid_name(value):
            self.fail(f"{field} {show(value)} must be 1-63 of a-z, 0-9, '-', not starting with '-'")
        assert isinstance(value, str)
        return value

    def instance(self, value: object, field: str, cls: type | tuple[type, ...]) -> None:
        if not isinstance(value, cls):
            self.fail(f"{field} has the wrong type {type(value).__name__}")
