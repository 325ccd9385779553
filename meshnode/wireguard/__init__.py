"""The WireGuard protocol core: bytes and time only (sans-IO).

Nothing in this package opens sockets, reads clocks, sleeps or logs; time is
always an argument, and every outcome is returned to the caller.
"""
