"""The `meshnode` command line, modelled on wg(8).

Each subcommand is a function taking its own argv (argv[0] is the subcommand's
name, as in wireguard-tools) and returning the exit status. Adding a subcommand
is one entry in SUBCOMMANDS.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable
from typing import NamedTuple, TextIO

from . import __version__
from .node import command as node_command
from .node import meshcli
from .wgtool import commands as wgtool
from .wireguard.keys import (
    BASE64_LEN,
    KeyFormatError,
    from_base64,
    generate_preshared_key,
    generate_private_key,
    public_key,
    to_base64,
)

PROG_NAME = "meshnode"

# What wg pubkey tolerates after the 44 key characters: NUL and C's isspace().
_TRAILING_OK = frozenset(b"\0 \t\n\v\f\r")


class Subcommand(NamedTuple):
    function: Callable[[list[str]], int]
    description: str


def _write(stream: TextIO | None, text: str) -> None:
    """Write and flush, ignoring failures as wg's stdio does: `wg genkey >/dev/full`,
    into a closed pipe or with stdout closed still exits 0."""
    if stream is None:  # the file descriptor was closed when Python started
        return
    try:
        stream.write(text)
        stream.flush()
    except OSError:
        pass


def _fail(message: str) -> int:
    _write(sys.stderr, f"{PROG_NAME}: {message}\n")
    return 1


def _usage_error(argv: list[str]) -> int:
    _write(sys.stderr, f"Usage: {PROG_NAME} {argv[0]}\n")
    return 1


def _generate(argv: list[str], generate: Callable[[], bytes]) -> int:
    if len(argv) != 1:
        return _usage_error(argv)
    try:
        mode = os.fstat(1).st_mode
    except OSError:
        pass
    else:
        if stat.S_ISREG(mode) and mode & stat.S_IRWXO:
            _write(
                sys.stderr,
                "Warning: writing to world accessible file.\n"
                "Consider setting the umask to 077 and trying again.\n",
            )
    try:
        key = generate()
    except OSError as exc:
        _write(sys.stderr, f"getrandom: {exc.strerror}\n")
        return 1
    _write(sys.stdout, to_base64(key) + "\n")
    return 0


def genkey(argv: list[str]) -> int:
    return _generate(argv, generate_private_key)


def genpsk(argv: list[str]) -> int:
    return _generate(argv, generate_preshared_key)


def pubkey(argv: list[str]) -> int:
    if len(argv) != 1:
        return _usage_error(argv)
    if sys.stdin is None:  # stdin was closed: as for empty input
        return _fail("Key is not the correct length or format")
    stdin = sys.stdin.buffer
    try:
        text = stdin.read(BASE64_LEN)
    except OSError:  # a read error: wg's fread() just comes up short
        text = b""
    if len(text) != BASE64_LEN:
        return _fail("Key is not the correct length or format")
    try:
        # read1: like wg's getc() loop, stop at the first bad byte without waiting for EOF
        while chunk := stdin.read1(4096):
            if not _TRAILING_OK.issuperset(chunk):
                return _fail("Trailing characters found after key")
    except OSError:
        pass
    try:
        private = from_base64(text.decode("latin-1"))
    except KeyFormatError:
        return _fail("Key is not the correct length or format")
    _write(sys.stdout, to_base64(public_key(private)) + "\n")
    return 0


SUBCOMMANDS: dict[str, Subcommand] = {
    # wg's configuration commands, in wg's order (meshnode.wgtool)
    "show": Subcommand(wgtool.show_main, "Shows the current configuration and device information"),
    "showconf": Subcommand(
        wgtool.showconf_main,
        "Shows the current configuration of a given WireGuard interface, for use with `setconf'",
    ),
    "set": Subcommand(
        wgtool.set_main,
        "Change the current configuration, add peers, remove peers, or change peers",
    ),
    "setconf": Subcommand(
        wgtool.setconf_main, "Applies a configuration file to a WireGuard interface"
    ),
    "addconf": Subcommand(
        wgtool.setconf_main, "Appends a configuration file to a WireGuard interface"
    ),
    "syncconf": Subcommand(
        wgtool.setconf_main, "Synchronizes a configuration file to a WireGuard interface"
    ),
    "genkey": Subcommand(genkey, "Generates a new private key and writes it to stdout"),
    "genpsk": Subcommand(genpsk, "Generates a new preshared key and writes it to stdout"),
    "pubkey": Subcommand(
        pubkey, "Reads a private key from stdin and writes a public key to stdout"
    ),
    # the node (meshnode.node)
    "up": Subcommand(node_command.up_main, "Runs the node: every interface of a configuration"),
    "down": Subcommand(node_command.down_main, "Takes the running node and its interfaces down"),
    "reload": Subcommand(node_command.reload_main, "Applies the node's changed configuration"),
    "stats": Subcommand(node_command.stats_main, "Prints the running node's counters as JSON"),
    # meshes (meshnode.node.meshcli)
    "init": Subcommand(meshcli.init_main, "Creates a mesh, with this node as its admin"),
    "invite": Subcommand(meshcli.invite_main, "Prints a one-time invite to a mesh"),
    "invites": Subcommand(meshcli.invites_main, "Lists a mesh's pending invites"),
    "join": Subcommand(meshcli.join_main, "Joins a mesh with an invite"),
    "status": Subcommand(meshcli.status_main, "Shows each mesh member and how it is reached"),
    "members": Subcommand(meshcli.members_main, "Lists a mesh's members"),
    "revoke": Subcommand(meshcli.revoke_main, "Revokes a member from a mesh (admin)"),
    "roles": Subcommand(meshcli.roles_main, "Makes a member a rendezvous, or not (admin)"),
    "leave": Subcommand(meshcli.leave_main, "Leaves a mesh and takes its interface down"),
    "log": Subcommand(meshcli.log_main, "Shows a mesh's membership changes"),
    "netcheck": Subcommand(meshcli.netcheck_main, "Reports the NAT and public address of a mesh"),
    "ping": Subcommand(meshcli.ping_main, "Pings a member and says which path answered"),
}


def usage() -> str:
    lines = [f"Usage: {PROG_NAME} <cmd> [<args>]", "", "Available subcommands:"]
    lines += [f"  {name}: {sub.description}" for name, sub in SUBCOMMANDS.items()]
    lines.append("You may pass `--help' to any of these subcommands to view usage.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the command line; argv excludes the program name (default sys.argv[1:])."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        _write(sys.stdout, usage())
        return 1
    if len(args) == 1 and args[0] in ("-h", "--help", "help"):
        _write(sys.stdout, usage())
        return 0
    if len(args) == 1 and args[0] in ("-v", "--version", "version"):
        _write(sys.stdout, f"{PROG_NAME} v{__version__}\n")
        return 0
    sub = SUBCOMMANDS.get(args[0])
    if sub is None:
        _write(sys.stderr, f"Invalid subcommand: `{args[0]}'\n{usage()}")
        return 1
    return sub.function(args)


if __name__ == "__main__":
    raise SystemExit(main())
