"""The mesh commands of `meshnode`: init, invite, invites, join, status,
members, revoke, leave, log. All but join ask the running node over its
control socket; join runs the invite's exchange itself, then hands the new
mesh to the node (starting one in the background if none runs)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

import trio

from ..mesh.invite import InviteError, parse_invite
from ..mesh.join import DEFAULT_TIMEOUT, Joiner, JoinError
from ..wireguard import keys
from . import control, overlayping
from .joining import run_join
from .meshcommands import DEFAULT_TTL, _default_member_name
from .meshhost import interface_name
from .meshstore import MeshSettings, MeshStore, StoredMesh, StoreError

_NODE_START_TIMEOUT = 60


def _fail(message: str) -> int:
    sys.stderr.write(f"meshnode: {message}\n")
    return 1


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # usage errors exit 1, as the rest of meshnode
        self.print_usage(sys.stderr)
        sys.stderr.write(f"meshnode {self.prog.split()[-1]}: {message}\n")
        raise SystemExit(1)


def _parse(argv: list[str], build: Any) -> argparse.Namespace:
    parser = _Parser(prog=f"meshnode {argv[0]}")
    build(parser)
    return parser.parse_args(argv[1:])


def _ask(command: str, **args: Any) -> dict[str, Any]:
    """The node's answer; SystemExit with a clear message if none runs."""
    args = {k: v for k, v in args.items() if v is not None}
    try:
        reply = control.request(command, **args)
    except TimeoutError:
        raise SystemExit(_fail(f"the node did not answer {command!r} in time")) from None
    except OSError:
        raise SystemExit(_fail(
            f"no node is running (no answer at {control.socket_path()}): "
            "start it with `meshnode up` (or `systemctl start meshnode`)"
        )) from None  # fmt: skip
    if not reply.get("ok"):
        raise SystemExit(_fail(str(reply.get("error", f"{command} failed"))))
    return reply


def _duration(text: str) -> int:
    """'3600', '90s', '30m', '24h', '7d' as seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    if not (number.isascii() and number.isdigit()) or int(number) <= 0:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (e.g. 90s, 30m, 24h, 7d)")
    return int(number) * units[unit]


def _ensure_node() -> dict[str, Any]:
    """The running node's status; starts `meshnode up --daemon` if none answers."""
    try:
        return control.request("status", timeout=10)
    except OSError:
        pass
    print("Starting a node in the background (meshnode up --daemon)", file=sys.stderr)
    result = subprocess.run([sys.executable, "-m", "meshnode.cli", "up", "--daemon"],
                            timeout=_NODE_START_TIMEOUT, check=False)  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(_fail("the node could not be started (see above)"))
    return control.request("status", timeout=10)


# ---------------------------------------------------------------- commands


def init_main(argv: list[str]) -> int:
    def build(p: argparse.ArgumentParser) -> None:
        p.add_argument("name", help="the mesh's name (a-z, 0-9, -)")
        p.add_argument("--cidr", help="the overlay's IPv4 range (default: picked in 100.64.0.0/10)")
        p.add_argument("--port", type=int, default=0, help="WireGuard listen port (default: any)")
        p.add_argument("--endpoint", action="append", default=[], metavar="HOST:PORT",
                       help="how other members reach this node (repeatable)")  # fmt: skip
        p.add_argument("--member", help="this node's member name (default: the host name)")
        p.add_argument("--interface", help="the interface name (default: mn-NAME)")

    args = _parse(argv, build)
    _ensure_node()
    reply = _ask("mesh-init", name=args.name, cidr=args.cidr, port=args.port,
                 endpoints=args.endpoint, member=args.member, interface=args.interface)  # fmt: skip
    print(f"Mesh {reply['mesh']} created; this node is its admin, member {reply['member']}")
    print(f"  interface {reply['interface']}, listen port {reply['listen_port']}")
    print(f"  overlay addresses {reply['ipv4']} and {reply['ipv6']}")
    print("Invite other machines with: meshnode invite")
    return 0


def invite_main(argv: list[str]) -> int:
    def build(p: argparse.ArgumentParser) -> None:
        p.add_argument("mesh", nargs="?", help="the mesh (needed if the node is in several)")
        p.add_argument("--ttl", type=_duration, default=DEFAULT_TTL, help="lifetime (24h)")
        p.add_argument("--name", help="the new member's name")
        p.add_argument("--uses", type=int, default=1, help="how many joins it allows (1)")
        p.add_argument("--endpoint", action="append", default=[], metavar="HOST:PORT",
                       help="where joiners reach this node (default: its known endpoints)")
        p.add_argument("--revoke", metavar="ID", help="cancel a pending invite instead")
        p.add_argument("--qr", action="store_true", help="also print a QR code")

    args = _parse(argv, build)
    if args.revoke:
        reply = _ask("invite-revoke", mesh=args.mesh, id=args.revoke)
        print(f"Invite {args.revoke} of mesh {reply['mesh']} revoked")
        return 0
    reply = _ask("invite", mesh=args.mesh, ttl=args.ttl, name=args.name, uses=args.uses,
                 endpoints=args.endpoint or None)  # fmt: skip
    expires = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(reply["expires"]))
    print(f"Invite {reply['id']} to mesh {reply['mesh']}, valid until {expires}.", file=sys.stderr)
    print("On the new machine, run: meshnode join <invite>", file=sys.stderr)
    if args.qr:
        _print_qr(reply["invite"])
    print(reply["invite"])  # the last line of standard output: the invite alone
    return 0


def _print_qr(text: str) -> None:
    import qrcode  # type: ignore[import-untyped]  # only here: most runs need no QR code

    code = qrcode.QRCode(border=1)
    code.add_data(text.upper())  # base32 in upper case fits the compact alphanumeric mode
    code.print_ascii(out=sys.stderr)


def invites_main(argv: list[str]) -> int:
    args = _parse(argv, lambda p: p.add_argument("mesh", nargs="?"))
    reply = _ask("invites", mesh=args.mesh)
    if not reply["invites"]:
        print(f"No pending invites in mesh {reply['mesh']}")
    for item in reply["invites"]:
        until = time.strftime("%Y-%m-%d %H:%M", time.localtime(item["expires"]))
        who = item["member_name"] or "(any name)"
        print(f"{item['invite_id']}  {who}  {item['status']}, "
              f"{item['uses_left']} use(s) left, until {until}")  # fmt: skip
    return 0


def join_main(argv: list[str]) -> int:
    def build(p: argparse.ArgumentParser) -> None:
        p.add_argument("invite", help="the invite string from `meshnode invite`")
        p.add_argument("--name", help="this node's member name (default: the invite's, or "
                       "the host name)")  # fmt: skip
        p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds (60)")

    args = _parse(argv, build)
    try:
        invite = parse_invite(args.invite, time.time())
    except InviteError as exc:
        return _fail(f"cannot use this invite: {exc}")
    print(f"Invite to mesh {invite.mesh_name}, checked", file=sys.stderr)
    status = _ensure_node()
    store = MeshStore(status.get("state_dir") or os.environ.get("MESHNODE_STATE_DIR") or
                      "/var/lib/meshnode")  # fmt: skip
    if store.exists(invite.mesh_name):
        return _fail(f"this node is already in a mesh called {invite.mesh_name}")
    name = args.name or (None if invite.member_name else _default_member_name())
    private = keys.generate_private_key()
    try:
        joiner = Joiner(invite, keys.public_key(private), name=name, timeout=args.timeout)
    except JoinError as exc:
        return _fail(str(exc))

    def progress(text: str) -> None:
        print(f"  {text}", file=sys.stderr)

    trio.run(run_join, joiner, progress)
    if joiner.result is None:
        failure = joiner.failure
        return _fail(f"join failed at step '{failure.step}': {failure}" if failure else
                     "join failed")  # fmt: skip
    settings = MeshSettings(interface_name(invite.mesh_name))
    try:
        store.create(StoredMesh(invite.mesh_name, private, joiner.result.state, settings))
    except (StoreError, OSError) as exc:
        return _fail(f"joined, but cannot keep the mesh's state: {exc}")
    reply = _ask("mesh-load", mesh=invite.mesh_name)
    record = joiner.result.record
    print(f"Joined mesh {invite.mesh_name} as {record.name}: {record.ipv4}, {record.ipv6} "
          f"on {reply['interface']}")  # fmt: skip
    return 0


def _mesh_and_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("mesh", nargs="?", help="the mesh (default: all of this node's)")
    p.add_argument("--json", action="store_true")


def status_main(argv: list[str]) -> int:
    args = _parse(argv, _mesh_and_json)
    reply = _ask("mesh-status", mesh=args.mesh)
    if args.json:
        print(json.dumps(reply["meshes"], indent=2))
        return 0
    for mesh in reply["meshes"]:
        role = "admin" if mesh["admin"] else "member"
        print(f"mesh {mesh['mesh_name']}: {mesh['name']} ({role}) {mesh['ipv4']} "
              f"{mesh['ipv6']} on {mesh['interface']}")  # fmt: skip
        for member in mesh["members"]:
            endpoint = member["endpoint"]
            where = f"{endpoint[0]}:{endpoint[1]}" if endpoint else "-"
            if member.get("via"):
                where = f"via {member['via']}"
            heard = member["heard_ago"]
            heard_text = "never" if heard is None else f"{heard:.0f} s ago"
            rtt = f" {member['rtt_ms']} ms" if member.get("rtt_ms") is not None else ""
            print(f"  {member['name']:<20} {member['ipv4']:<15} {member['path']:<7} {where:<24} "
                  f"heard {heard_text}{rtt}")  # fmt: skip
            if member.get("why"):
                print(f"  {'':<20} why: {member['why']}")
    return 0


def netcheck_main(argv: list[str]) -> int:
    args = _parse(argv, _mesh_and_json)
    reply = _ask("netcheck", mesh=args.mesh, timeout=30)
    if args.json:
        print(json.dumps(reply["report"], indent=2))
        return 0
    print(f"Report (mesh {reply['mesh']}, from its WireGuard socket):")
    for line in reply["lines"]:
        print(f"  {line}")
    print("  Port mapping (UPnP IGD, NAT-PMP, PCP): not asked (not supported yet)")
    return 0


def ping_main(argv: list[str]) -> int:
    def build(p: argparse.ArgumentParser) -> None:
        p.add_argument("member", help="a member's name (or overlay address)")
        p.add_argument("mesh", nargs="?", help="the mesh (default: the only one)")
        p.add_argument("-c", "--count", type=int, default=4, help="pings to send (default 4)")
        p.add_argument("-6", dest="v6", action="store_true", help="ping the IPv6 address")
        p.add_argument("--until-direct", action="store_true",
                       help="ping until the path is direct (or LAN), at most 60 s")  # fmt: skip

    args = _parse(argv, build)
    return overlayping.run(args, _ask)


def members_main(argv: list[str]) -> int:
    args = _parse(argv, _mesh_and_json)
    reply = _ask("mesh-status", mesh=args.mesh)
    fields = ("name", "public_key", "ipv4", "ipv6")
    rows = []
    for mesh in reply["meshes"]:
        rows.append({**{f: mesh[f] for f in fields}, "self": True, "mesh": mesh["mesh_name"]})
        for m in mesh["members"]:
            row = {f: m[f] for f in fields}
            rows.append({**row, "roles": m["roles"], "mesh": mesh["mesh_name"]})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        me = "  (this node)" if row.get("self") else ""
        roles = f"  [{', '.join(row['roles'])}]" if row.get("roles") else ""
        print(f"{row['name']:<20} {row['ipv4']:<15} {row['ipv6']:<28} {row['public_key']}"
              f"{roles}{me}")  # fmt: skip
    return 0


def revoke_main(argv: list[str]) -> int:
    def build(p: argparse.ArgumentParser) -> None:
        p.add_argument("member", help="the member's name (or base64 public key)")
        p.add_argument("--mesh")
        p.add_argument("--reason", default="")

    args = _parse(argv, build)
    reply = _ask("revoke", mesh=args.mesh, member=args.member, reason=args.reason)
    print(f"Member {args.member} revoked from mesh {reply['mesh']}")
    return 0


_ROLE_CHOICES = {
    # a rendezvous introduces members to each other and relays for them, as
    # the admin does: the two go together
    "rendezvous": ["rendezvous", "relay"],
    "none": [],
}


def roles_main(argv: list[str]) -> int:
    def build(p: argparse.ArgumentParser) -> None:
        p.add_argument("member", help="the member's name (or base64 public key)")
        p.add_argument("role", choices=sorted(_ROLE_CHOICES),
                       help="rendezvous: it introduces members and relays for them, "
                       "as the admin does (give it to a member with a public "
                       "address); none: an ordinary member again")  # fmt: skip
        p.add_argument("--mesh")

    args = _parse(argv, build)
    reply = _ask("roles", mesh=args.mesh, member=args.member, roles=_ROLE_CHOICES[args.role])
    roles = ", ".join(reply["roles"]) or "none"
    print(f"Member {reply['member']} of mesh {reply['mesh']} now has roles: {roles} "
          f"(record version {reply['version']}, spreading to the mesh)")  # fmt: skip
    return 0


def leave_main(argv: list[str]) -> int:
    args = _parse(argv, lambda p: p.add_argument("mesh", nargs="?"))
    reply = _ask("leave", mesh=args.mesh)
    print(f"Left mesh {reply['mesh']}")
    return 0


def log_main(argv: list[str]) -> int:
    args = _parse(argv, lambda p: p.add_argument("mesh", nargs="?"))
    reply = _ask("mesh-log", mesh=args.mesh)
    for line in reply["lines"]:
        print(line)
    return 0
