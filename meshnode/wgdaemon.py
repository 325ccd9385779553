"""meshnode-wg: a userspace WireGuard daemon used exactly like wireguard-go.

    meshnode-wg [-f|--foreground] [--offloads=LIST] INTERFACE-NAME

LIST is `all` (the default), `none`, or a comma list of the offloads to use:
gso, gro, tun (UDP GSO sends, UDP GRO receives, coalesced TCP writes to the
TUN). `MESHNODE_OFFLOADS` sets the same when wg-quick starts the daemon.

Creates the TUN interface and the UAPI socket, then (unless -f) detaches and
returns, so `wg` and `wg-quick` can configure it at once. It exits, removing
both, on SIGTERM or SIGINT, when the interface is deleted, or when the socket
file is removed.
"""

from __future__ import annotations

import os
import signal
import socket
import sys

import trio

from . import __version__
from .interface import Interface, InterfaceGone, Offloads
from .log import SILENT, Logger, drain, level_from_env
from .net import link
from .net.tun import Tun, TunError
from .net.unixsock import close_unix
from .uapi import server as uapi
from .wireguard.constants import DEFAULT_MTU

USAGE = "Usage: meshnode-wg [-f/--foreground] [--offloads=all|none|gso,gro,tun] INTERFACE-NAME\n"
# wireguard-go's variable for "I am the detached child already"
FOREGROUND_ENV = "WG_PROCESS_FOREGROUND"


async def run_daemon(tun: Tun, listener: socket.socket, log: Logger, offloads: Offloads) -> None:
    path = uapi.socket_path(tun.name)
    interface = Interface(tun, log, offloads=offloads)
    log.verbose("Device started")
    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            # main() blocked SIGTERM until trio could take it: one that came
            # since (a stop right after a start) is delivered now
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
            async with trio.open_nursery() as nursery:
                await nursery.start(drain)  # log lines queue for it, never blocking the loop
                await nursery.start(interface.run)
                nursery.start_soon(uapi.serve, listener, interface, path, log)
                log.verbose("UAPI listener started")
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break
    except* InterfaceGone:
        log.verbose("Interface was removed")
    except* uapi.SocketRemoved:
        log.verbose("UAPI socket was removed")
    finally:
        log.verbose("Shutting down")


def _detach(log_to_stdio: bool) -> bool:
    """Fork; return True in the child, which goes on as the daemon."""
    if os.fork() > 0:
        return False
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    if not log_to_stdio:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
    os.close(devnull)
    return True


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args in (["--version"], ["-v"]):
        print(f"meshnode-wg v{__version__}\n\nUserspace WireGuard daemon for Linux.")
        return 0
    foreground = False
    offloads_text = os.environ.get("MESHNODE_OFFLOADS", "all")
    while args and args[0].startswith("-"):
        option = args.pop(0)
        if option in ("-f", "--foreground"):
            foreground = True
        elif option.startswith("--offloads="):
            offloads_text = option.partition("=")[2]
        elif option == "--offloads" and args:
            offloads_text = args.pop(0)
        else:
            sys.stderr.write(USAGE)
            return 2
    if len(args) != 1:
        sys.stderr.write(USAGE)
        return 2
    try:
        offloads = Offloads.parse(offloads_text)
    except ValueError as exc:
        sys.stderr.write(f"meshnode-wg: {exc}\n{USAGE}")
        return 2
    name = args[0]
    foreground = foreground or os.environ.get(FOREGROUND_ENV) == "1"
    level = level_from_env()
    log = Logger(name, level)

    try:
        tun = Tun(name, vnet_hdr=offloads.tun_vnet)
    except TunError as exc:
        log.error(f"Failed to create TUN device: {exc.strerror or exc}")
        return 1
    # the UAPI socket answers before trio's signal receiver is open: a SIGTERM
    # in between waits for it (run_daemon unblocks it) instead of killing us
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        link.configure(tun.name, mtu=DEFAULT_MTU)
        listener = uapi.listen(tun.name)
    except OSError as exc:
        log.error(f"Failed to set up interface {tun.name}: {exc.strerror or exc}")
        tun.close()
        return 1

    if not foreground:
        log_to_stdio = "LOG_LEVEL" in os.environ and level != SILENT
        if not _detach(log_to_stdio):
            # the parent: the interface and socket exist; the child serves them
            listener.close()
            tun.close()
            return 0

    path = uapi.socket_path(tun.name)
    inode = path.lstat().st_ino
    try:
        trio.run(run_daemon, tun, listener, log, offloads)
    except KeyboardInterrupt:
        pass
    finally:
        close_unix(listener, path, inode)
        tun.close()  # a TUN that is not persistent disappears with its last descriptor
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
