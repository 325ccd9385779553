"""meshnode: a userspace WireGuard mesh node on trio."""

__version__ = "0.1.0"
