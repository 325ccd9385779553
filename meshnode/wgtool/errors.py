"""Failures reported in wg's own words."""

from __future__ import annotations

import os


class WgError(Exception):
    """A failure whose message is printed to stderr as is, one line per entry.

    wg often prints two lines for one failure (the cause, then e.g.
    "Configuration parsing error"), so a message may hold several lines.
    `path` and `lineno` locate a configuration file error for callers that
    want to show them; wg itself never prints them, so the subcommands don't.
    """

    def __init__(self, message: str, *, path: str | None = None, lineno: int | None = None):
        super().__init__(message)
        self.message = message
        self.path = path
        self.lineno = lineno

    def located(self) -> str:
        """The message prefixed with "file:line: " where known."""
        if self.path is None:
            return self.message
        where = self.path if self.lineno is None else f"{self.path}:{self.lineno}"
        return f"{where}: {self.message}"


def perror(prefix: str, errno: int) -> str:
    """What C's perror(prefix) prints for errno (without the newline).

    os.strerror is glibc's strerror, so the texts match, including
    "Unknown error -22" for a daemon that answers a positive errno.
    """
    return f"{prefix}: {os.strerror(errno)}"
