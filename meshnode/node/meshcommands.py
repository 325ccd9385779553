"""The node's mesh commands on the control socket: init, invite, members,
status, revoke, leave, log, and taking over a mesh that `meshnode join` wrote.

Each answers {"ok": true, ...} or {"ok": false, "error": ...}; a failed
command leaves the node and its meshes as they were.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from ..config.validate import check_interface_name, parse_host_port
from ..mesh.addressing import new_mesh_id
from ..mesh.authority import Authority
from ..mesh.codec import valid_name
from ..mesh.errors import AgentError
from ..mesh.invite import format_invite
from ..mesh.state import found_mesh
from ..wireguard import keys
from . import control
from .meshhost import MeshHost, interface_name, jsonable
from .meshstore import MeshSettings, StoredMesh, StoreError

if TYPE_CHECKING:
    from .node import Node

Reply = dict[str, Any]
DEFAULT_TTL = 24 * 3600
_LEAVE_GRACE = 0.5  # s for the leave messages to go out before the interface goes


def _error(message: str) -> Reply:
    return {"ok": False, "error": message}


class MeshCommands:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.handlers: dict[str, Callable[[control.Args], Awaitable[Reply]]] = {
            "mesh-init": self.init,
            "mesh-load": self.load,
            "invite": self.invite,
            "invites": self.invites,
            "invite-revoke": self.invite_revoke,
            "mesh-status": self.status,
            "revoke": self.revoke,
            "roles": self.roles,
            "leave": self.leave,
            "mesh-log": self.log,
            "netcheck": self.netcheck,
        }

    async def handle(self, command: str, args: control.Args) -> Reply | None:
        handler = self.handlers.get(command)
        if handler is None:
            return None
        try:
            return await handler(args)
        except (AgentError, StoreError, ValueError) as exc:
            return _error(str(exc))

    def _pick(self, args: control.Args) -> MeshHost:
        """The mesh a command names, or the only one."""
        meshes = self.node.meshes
        name = args.string("mesh")
        if name is not None:
            host = meshes.get(name)
            if host is None:
                known = ", ".join(sorted(meshes)) or "none"
                raise ValueError(f"this node is not in a mesh called {name} (it is in: {known})")
            return host
        if len(meshes) == 1:
            return next(iter(meshes.values()))
        if not meshes:
            raise ValueError("this node is in no mesh: create one with `meshnode init NAME`")
        raise ValueError(f"this node is in {len(meshes)} meshes: name one ({', '.join(meshes)})")

    # ------------------------------------------------------------ life cycle of meshes

    async def init(self, args: control.Args) -> Reply:
        name = args.string("name") or ""
        if not valid_name(name):
            return _error(f"invalid mesh name {name!r}: 1-63 of a-z, 0-9 and '-'")
        store = self.node.store
        if store.exists(name) or name in self.node.meshes:
            return _error(f"this node already has a mesh called {name}")
        member = args.string("member") or _default_member_name()
        if not valid_name(member):
            return _error(f"invalid member name {member!r}: 1-63 of a-z, 0-9 and '-'")
        ifname = args.string("interface") or interface_name(name)
        problem = check_interface_name(ifname)
        if problem:
            return _error(problem)
        if ifname in self.node.hosted or any(h.ifname == ifname for h in self.node.meshes.values()):
            return _error(f"interface {ifname} is already in use on this node")
        cidr_text = args.string("cidr")
        cidr = ipaddress.IPv4Network(cidr_text) if cidr_text else None
        port = args.integer("port", 0) or 0
        if not 0 <= port <= 65535:
            return _error(f"invalid port {port}")
        endpoints = args.strings("endpoints")
        for text in endpoints:
            _split(text)  # refused now, not skipped later
        private = keys.generate_private_key()
        state = found_mesh(
            mesh_id=new_mesh_id(),
            mesh_name=name,
            member_name=member,
            public_key=keys.public_key(private),
            authority=Authority.generate(),
            now=time.time(),
            ipv4_cidr=cidr,
            roles=frozenset({"admin", "rendezvous", "relay"}),
        )
        stored = StoredMesh(name, private, state, MeshSettings(ifname, port, endpoints))
        store.create(stored)
        try:
            host = await self.node.start_mesh(name)
        except BaseException:
            store.remove(name)  # nothing half-made is left
            raise
        record = state.record
        return {"ok": True, "mesh": name, "member": member, "interface": host.ifname,
                "ipv4": str(record.ipv4), "ipv6": str(record.ipv6),
                "listen_port": host.settings.listen_port}  # fmt: skip

    async def load(self, args: control.Args) -> Reply:
        """Take over a mesh that `meshnode join` just wrote to the state directory."""
        name = args.string("mesh") or ""
        if not valid_name(name):
            return _error(f"invalid mesh name {name[:70]!r}: 1-63 of a-z, 0-9 and '-'")
        if name in self.node.meshes:
            return _error(f"mesh {name} is already running on this node")
        if not self.node.store.exists(name):
            return _error(f"no mesh called {name} in {self.node.store.root}")
        host = await self.node.start_mesh(name)
        return {"ok": True, "mesh": name, "interface": host.ifname}

    async def leave(self, args: control.Args) -> Reply:
        host = self._pick(args)
        host.call(lambda agent, now: agent.leave(now))
        await trio.sleep(_LEAVE_GRACE)
        await self.node.stop_mesh(host.name)
        self.node.store.remove(host.name)
        return {"ok": True, "mesh": host.name}

    # ------------------------------------------------------------ invites

    async def invite(self, args: control.Args) -> Reply:
        host = self._pick(args)
        ttl = args.integer("ttl", DEFAULT_TTL) or DEFAULT_TTL
        uses = args.integer("uses", 1) or 1
        member = args.string("name")
        endpoints = args.strings("endpoints")
        bootstrap = [_split(e) for e in endpoints] if endpoints else None
        invite = host.call(
            lambda agent, now: agent.create_invite(now, ttl, member, uses, bootstrap)
        )
        return {"ok": True, "mesh": host.name, "invite": format_invite(invite),
                "id": invite.id.hex(), "expires": invite.expires}  # fmt: skip

    async def invites(self, args: control.Args) -> Reply:
        host = self._pick(args)
        listing = host.call(lambda agent, now: agent.invites(now))
        invites = [{**jsonable(item), "invite_id": item.invite_id.hex()} for item in listing]
        return {"ok": True, "mesh": host.name, "invites": invites}

    async def invite_revoke(self, args: control.Args) -> Reply:
        host = self._pick(args)
        invite_id = args.string("id") or ""
        try:
            wanted = bytes.fromhex(invite_id)
        except ValueError:
            return _error(f"invalid invite id {invite_id!r}: the hex id `meshnode invites` shows")
        host.call(lambda agent, now: agent.revoke_invite(wanted, now))
        return {"ok": True, "mesh": host.name}

    # ------------------------------------------------------------ members

    async def status(self, args: control.Args) -> Reply:
        names = [args.string("mesh")] if args.string("mesh") else sorted(self.node.meshes)
        meshes = []
        for name in names:
            host = self._pick(control.Args({"mesh": name}))
            status = host.call(lambda agent, now: agent.status(now))
            meshes.append(
                {**jsonable(status), "interface": host.ifname, "traversal": host.traversal()}
            )
        return {"ok": True, "meshes": meshes}

    async def netcheck(self, args: control.Args) -> Reply:
        host = self._pick(args)
        report = await host.nat.fresh_report()
        if report is None:
            return _error(
                "no STUN server to ask: add stun = [\"HOST:PORT\", ...] to the mesh's "
                "[[mesh]] table, or wait until a rendezvous member's address is known"
            )
        return {"ok": True, "mesh": host.name, "report": report.to_json(),
                "lines": report.describe()}  # fmt: skip

    async def revoke(self, args: control.Args) -> Reply:
        host = self._pick(args)
        member = args.string("member") or ""
        reason = args.string("reason") or ""
        who = _member_ref(member)
        host.call(lambda agent, now: agent.revoke_member(who, now, reason))
        return {"ok": True, "mesh": host.name, "member": member}

    async def roles(self, args: control.Args) -> Reply:
        host = self._pick(args)
        member = args.string("member") or ""
        roles = frozenset(args.strings("roles") or ())
        who = _member_ref(member)
        record = host.call(lambda agent, now: agent.set_roles(who, roles, now))
        return {"ok": True, "mesh": host.name, "member": record.name,
                "roles": sorted(record.roles), "version": record.version}  # fmt: skip

    async def log(self, args: control.Args) -> Reply:
        host = self._pick(args)
        return {"ok": True, "mesh": host.name, "lines": self.node.store.read_log(host.name)}


def _member_ref(text: str) -> str | bytes:
    """A member as a command names it: its name, or its public key in base64 as
    `meshnode members` shows it (a name never ends in "=", a key always does)."""
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return text
    return key if len(key) == 32 else text


def _split(text: str) -> tuple[str, int]:
    endpoint = parse_host_port(text)
    if endpoint is None:
        raise ValueError(f"invalid endpoint {text!r}: HOST:PORT")
    return endpoint


def _default_member_name() -> str:
    """This machine's host name, made a valid member name."""
    raw = socket.gethostname().split(".")[0].lower()
    name = "".join(c if c.isascii() and (c.isalnum() or c == "-") else "-" for c in raw)
    name = name.strip("-")[:63]
    return name if valid_name(name) else "node"
