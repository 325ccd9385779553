"""The subcommands show, showconf, set, setconf, addconf and syncconf.

Each takes its argv (argv[0] is the subcommand's name) and returns the exit
status, as meshnode.cli expects. Arguments, messages and exit statuses are
those of wg(8) 1.0.20210914 with "meshnode" for "wg"; the one addition is
`show --json`.
"""

from __future__ import annotations

import json
import os
import time

from . import console, discovery, show, sync, uapi_client
from .config import parse_set_args, read_config_file
from .errors import WgError, perror
from .model import Device

# meshnode.cli's PROG_NAME; repeated here because cli imports this module
PROG_NAME = "meshnode"

SHOW_USAGE = (
    "{prog} {cmd} {{ <interface> | all | interfaces }} [public-key | private-key | listen-port"
    " | fwmark | peers | preshared-keys | endpoints | allowed-ips | latest-handshakes | transfer"
    " | persistent-keepalive | dump]"
)
SET_USAGE = (
    "{prog} {cmd} <interface> [listen-port <port>] [fwmark <mark>] [private-key <file path>]"
    " [peer <base64 public key> [remove] [preshared-key <file path>] [endpoint <ip>:<port>]"
    " [persistent-keepalive <interval seconds>] [allowed-ips <ip1>/<cidr1>[,<ip2>/<cidr2>]...] ]..."
)


def _usage(template: str, argv: list[str]) -> int:
    console.err("Usage: " + template.format(prog=PROG_NAME, cmd=argv[0]) + "\n")
    return 1


def _fail(message: str) -> int:
    console.err(message + "\n")
    return 1


def _json(value: object) -> None:
    console.out(json.dumps(value, indent=2) + "\n")


# --- show ------------------------------------------------------------------


def show_main(argv: list[str]) -> int:
    """`show [{ IFACE | all | interfaces } [FIELD]]`, and `--json` anywhere after show."""
    args = [arg for arg in argv[1:] if arg != "--json"]
    as_json = len(args) < len(argv) - 1
    if len(args) > 2 or (as_json and len(args) == 2):
        return _usage(SHOW_USAGE, argv)
    if not args or args[0] == "all":
        return _show_all(argv, args[1] if len(args) == 2 else None, as_json)
    if args[0] == "interfaces":
        if len(args) > 1:
            return _usage(SHOW_USAGE, argv)
        return _show_interfaces(as_json)
    if len(args) == 1 and args[0] in ("-h", "--help", "help"):
        _usage(SHOW_USAGE, argv)
        return 0
    try:
        device = uapi_client.get_device(args[0])
    except OSError as exc:
        return _fail(perror("Unable to access interface", exc.errno or 0))
    if as_json:
        _json(show.json_object(device))
        return 0
    if len(args) == 2:
        return _show_field(argv, device, args[1], prefix="")
    console.out(show.pretty(device, int(time.time()), console.color_enabled()))
    return 0


def _show_field(argv: list[str], device: Device, name: str, prefix: str) -> int:
    text = show.field(device, name, prefix)
    if text is None:
        console.err(f"Invalid parameter: `{name}'\n")
        return _usage(SHOW_USAGE, argv)
    console.out(text)
    return 0


def _list_interfaces() -> list[str] | None:
    try:
        return discovery.list_interfaces()
    except OSError as exc:
        console.err(perror("Unable to list interfaces", exc.errno or 0) + "\n")
        return None


def _show_interfaces(as_json: bool) -> int:
    names = _list_interfaces()
    if names is None:
        return 1
    if as_json:
        _json(names)
    elif names:
        console.out(" ".join(names) + "\n")
    return 0


def _show_all(argv: list[str], field: str | None, as_json: bool) -> int:
    names = _list_interfaces()
    if names is None:
        return 1
    # as wg: 1 if every interface failed, 0 once one was shown (or none exist)
    status = 1 if names else 0
    objects = []
    for index, name in enumerate(names):
        try:
            device = uapi_client.get_device(name)
        except OSError as exc:
            console.err(f"Unable to access interface {name}: {os.strerror(exc.errno or 0)}\n")
            continue
        if as_json:
            objects.append(show.json_object(device))
        elif field is not None:
            if _show_field(argv, device, field, prefix=f"{device.name}\t"):
                return 1
        else:
            text = show.pretty(device, int(time.time()), console.color_enabled())
            console.out(text + ("\n" if index < len(names) - 1 else ""))
        status = 0
    if as_json:
        _json(objects)
    return status


# --- showconf --------------------------------------------------------------


def showconf_main(argv: list[str]) -> int:
    if len(argv) != 2:
        return _usage("{prog} {cmd} <interface>", argv)
    try:
        device = uapi_client.get_device(argv[1])
    except OSError as exc:
        return _fail(perror("Unable to access interface", exc.errno or 0))
    console.out(show.showconf(device))
    return 0


# --- set, setconf, addconf, syncconf ---------------------------------------


def set_main(argv: list[str]) -> int:
    if len(argv) < 3:
        return _usage(SET_USAGE, argv)
    try:
        update = parse_set_args([os.fsencode(arg) for arg in argv[2:]])
    except WgError as exc:
        return _fail(exc.message)
    try:
        uapi_client.set_device(argv[1], update)
    except OSError as exc:
        return _fail(perror("Unable to modify interface", exc.errno or 0))
    return 0


def setconf_main(argv: list[str]) -> int:
    """setconf, addconf and syncconf, told apart by argv[0] as in wg."""
    if len(argv) != 3:
        return _usage("{prog} {cmd} <interface> <configuration filename>", argv)
    name = uapi_client.interface_name(argv[1])
    try:
        update = read_config_file(argv[2], append=argv[0] == "addconf")
    except WgError as exc:
        return _fail(exc.message)
    if argv[0] == "syncconf" and update.peers:
        try:
            runtime = uapi_client.get_device(name)
        except OSError as exc:
            return _fail(
                perror("Unable to retrieve current interface configuration", exc.errno or 0)
            )
        update = sync.plan(update, runtime)
    try:
        uapi_client.set_device(name, update)
    except OSError as exc:
        return _fail(perror("Unable to modify interface", exc.errno or 0))
    return 0
