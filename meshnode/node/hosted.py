"""One interface hosted by the node: set up as wg-quick sets one up, run by
the interface runtime, and taken down again on every way out.

Bring-up follows wg-quick's order: PreUp hooks, the TUN (and its UAPI
socket), the WireGuard settings, addresses, MTU, link up, DNS, routes and
policy rules, gateway forwarding and NAT, PostUp hooks. Every step that
changes the system registers its undo on an exit stack first, so a failure
half-way, a cancellation (SIGTERM, `meshnode down`, reload) or a crash of
the data path all unwind exactly what was done. Taking the interface down
runs PreDown (and SaveConfig) first and PostDown last, as wg-quick does.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Awaitable, Callable

import trio

from ..config import InterfaceConfig
from ..interface import Interface, InterfaceGone
from ..log import Logger
from ..net import dns, firewall, link, routing
from ..net.tun import Tun
from ..uapi import server as uapi
from ..uapi.protocol import UapiError
from ..wgtool import sync
from ..wgtool.model import DeviceUpdate
from ..wgtool.uapi_client import encode_set, parse_get_text
from ..wireguard.constants import DEFAULT_MTU
from . import saveconfig
from .routes import RoutePlan, plan_routes

HOOK_TIMEOUT = 60.0  # seconds a PreUp/PostUp/... command may take
TEARDOWN_TIMEOUT = 90.0

# What a failed bring-up raises, to be reported with the interface's location.
SETUP_ERRORS = (OSError, UapiError, ValueError, trio.TooSlowError)


class BringUpError(Exception):
    """An interface could not be set up; the message says which and why."""


class HostedInterface:
    def __init__(self, config: InterfaceConfig, log_level: int) -> None:
        self.config = config
        self.name = config.name
        self.log = Logger(config.name, log_level)
        self.interface: Interface | None = None
        self.plan = RoutePlan()
        self.cancel_scope = trio.CancelScope()
        self.stopped = trio.Event()
        self._routes: dict[tuple[routing.Network, int | None], Callable[[], None]] = {}
        self._routing: routing.Routing | None = None
        self._came_up = False

    # ------------------------------------------------------------ life cycle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Set up, report started, serve until cancelled; BringUpError if setup fails."""
        try:
            with self.cancel_scope:
                async with contextlib.AsyncExitStack() as stack:
                    try:
                        listener = await self._bring_up(stack)
                    except SETUP_ERRORS as exc:
                        raise BringUpError(self._located(str(exc))) from exc
                    task_status.started()
                    self.log.verbose("Interface is up")
                    await self._serve(listener)
        finally:
            self.stopped.set()

    async def stop(self) -> None:
        self.cancel_scope.cancel()
        await self.stopped.wait()

    def _located(self, message: str) -> str:
        where = (
            self.config.path
            if self.config.line is None
            else (f"{self.config.path}:{self.config.line}")
        )
        return f"{where}: interface {self.name}: {message}"

    async def _serve(self, listener: socket.socket) -> None:
        assert self.interface is not None
        path = uapi.socket_path(self.name)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.interface.run)
                nursery.start_soon(uapi.serve, listener, self.interface, path)
        except* InterfaceGone:
            self.log.error("Interface was removed from outside; taking it down")
        except* uapi.SocketRemoved:
            self.log.error("UAPI socket was removed; taking the interface down")

    # ------------------------------------------------------------ bring-up

    async def _bring_up(self, stack: contextlib.AsyncExitStack) -> socket.socket:
        config = self.config
        # registered first, so it runs last; armed only once the interface is up
        self._shielded(stack, self._post_down)
        await self._hooks(config.pre_up, "PreUp")
        tun = Tun(config.name, vnet_hdr=config.offloads.tun_vnet)
        stack.callback(tun.close)
        listener = uapi.listen(tun.name)
        stack.callback(self._remove_socket, listener, uapi.socket_path(tun.name).lstat().st_ino)
        mtu = config.mtu or DEFAULT_MTU
        link.configure(tun.name, mtu=mtu)
        interface = Interface(tun, self.log, mtu=mtu, offloads=config.offloads)
        stack.callback(interface.udp.close)
        self.interface = interface
        self.plan = plan_routes(config, routing.table_in_use)
        self._apply_wg(self._wg_update(config, self.plan), replace=True)
        on_undo = self._undo_registrar(stack)
        self._routing = routing.Routing(tun.name, on_undo)
        for address in config.addresses:
            self._routing.add_address(address)
        link.configure(tun.name, up=True)
        dns.set_dns(tun.name, config.dns, config.dns_search, on_undo)
        self._add_policy_routing(self.plan)
        stack.callback(self._remove_routes)
        self._add_routes(self.plan)
        if config.gateway is not None:
            self._add_gateway(config.gateway.out_interface, on_undo)
        await self._hooks(config.post_up, "PostUp")
        self._came_up = True
        self._shielded(stack, self._pre_down)
        return listener

    def _undo_registrar(
        self, stack: contextlib.AsyncExitStack
    ) -> Callable[[Callable[[], None]], None]:
        def register(undo: Callable[[], None]) -> None:
            stack.callback(self._safely, undo)

        return register

    def _safely(self, undo: Callable[[], None]) -> None:
        """Run one undo; a failure is logged and the rest still run."""
        try:
            undo()
        except Exception as exc:
            self.log.error(f"While taking the interface down: {exc}")

    def _shielded(
        self, stack: contextlib.AsyncExitStack, step: Callable[[], Awaitable[None]]
    ) -> None:
        """Teardown steps that await (hooks) must run even while being cancelled."""

        async def run() -> None:
            with trio.CancelScope(shield=True), trio.move_on_after(TEARDOWN_TIMEOUT):
                try:
                    await step()
                except Exception as exc:
                    self.log.error(f"While taking the interface down: {exc}")

        stack.push_async_callback(run)

    def _remove_socket(self, listener: socket.socket, inode: int) -> None:
        listener.close()
        path = uapi.socket_path(self.name)
        with contextlib.suppress(OSError):
            if path.lstat().st_ino == inode:  # not a newer daemon's socket
                path.unlink()

    # ------------------------------------------------------------ WireGuard settings

    def _wg_update(self, config: InterfaceConfig, plan: RoutePlan) -> DeviceUpdate:
        """The file's settings, with the fwmark that policy routing needs."""
        update = DeviceUpdate(
            private_key=config.wg.private_key,
            listen_port=config.wg.listen_port if config.wg.listen_port is not None else 0,
            fwmark=plan.default_table or config.wg.fwmark or 0,
            replace_peers=config.wg.replace_peers,
            peers=config.wg.peers,
        )
        return update

    def _apply_wg(self, update: DeviceUpdate, *, replace: bool) -> None:
        """Apply whole (replace) or as syncconf would; UapiError leaves it unchanged."""
        assert self.interface is not None
        if not replace:
            update = sync.plan(update, parse_get_text(self.name, self.interface.uapi_get()))
        lines = encode_set(update).decode("utf-8", "surrogateescape").split("\n")
        self.interface.uapi_set(lines[1 : lines.index("")])

    # ------------------------------------------------------------ routes

    def _add_policy_routing(self, plan: RoutePlan) -> None:
        """wg-quick's add_default: everything unmarked goes to the tunnel's table,
        except what the main table knows more specifically than a default route."""
        assert self._routing is not None
        table = plan.default_table
        for version in plan.default_versions:
            self._routing.add_rule(version, "not", "fwmark", str(table), "table", str(table))
            self._routing.add_rule(version, "table", "main", "suppress_prefixlength", "0")
            if version == 4:
                # replies to marked packets must pass reverse-path filtering
                self._routing.set_sysctl("net.ipv4.conf.all.src_valid_mark", "1")

    def _add_routes(self, plan: RoutePlan) -> None:
        assert self._routing is not None
        for network, table in plan.routes:
            key = (network, table)
            if key not in self._routes:
                self._routes[key] = self._routing.add_route(network, table)

    def _remove_routes(self, keep: set[tuple[routing.Network, int | None]] | None = None) -> None:
        for key in [k for k in self._routes if keep is None or k not in keep]:
            self._safely(self._routes.pop(key))

    def _add_gateway(
        self, out_interface: str, on_undo: Callable[[Callable[[], None]], None]
    ) -> None:
        """Forward for the peers and masquerade what leaves by out_interface."""
        assert self._routing is not None
        self._routing.set_sysctl("net.ipv4.ip_forward", "1")
        self._routing.set_sysctl("net.ipv6.conf.all.forwarding", "1")
        for version in (4, 6):
            for table, chain, spec in (
                ("nat", "POSTROUTING", ["-o", out_interface, "-j", "MASQUERADE"]),
                ("filter", "FORWARD", ["-i", self.name, "-j", "ACCEPT"]),
                ("filter", "FORWARD", ["-o", self.name, "-j", "ACCEPT"]),
            ):
                firewall.add_rule(version, table, chain, spec, self.name, on_undo)

    # ------------------------------------------------------------ reload in place

    def update_in_place(self, config: InterfaceConfig) -> None:
        """Apply new WireGuard settings and their routes, as `wg syncconf` does:
        peers whose settings did not change keep their sessions. Raises
        UapiError or OSError with the interface as it was (routes included)."""
        ours = self.plan.default_table
        plan = plan_routes(config, lambda t: t != ours and routing.table_in_use(t))
        if plan.policy != self.plan.policy:
            raise ValueError("default routing changed")  # the caller restarts the interface
        update = self._wg_update(config, plan)
        if not config.wg.listen_port:
            update.listen_port = None  # keep the port it has, chosen at random
        self._apply_wg(update, replace=False)
        old_plan = self.plan
        try:
            self._add_routes(plan)
        except OSError:
            self._remove_routes(keep=set(old_plan.routes))
            raise
        self._remove_routes(keep=set(plan.routes))
        self.config, self.plan = config, plan

    # ------------------------------------------------------------ hooks

    async def _hooks(self, commands: list[str], what: str) -> None:
        for command in commands:
            line = command.replace("%i", self.name)
            self.log.verbose(f"{what}: {line}")
            with trio.fail_after(HOOK_TIMEOUT):
                result = await trio.run_process(["bash", "-c", line], check=False)
            if result.returncode != 0:
                raise OSError(
                    errno.ECHILD, f"{what} command failed (exit {result.returncode}): {line}"
                )

    async def _pre_down(self) -> None:
        await self._hooks(self.config.pre_down, "PreDown")
        if self.config.save_config and self.interface is not None:
            saveconfig.save(self.config, self.interface.uapi_get())

    async def _post_down(self) -> None:
        if self._came_up:
            await self._hooks(self.config.post_down, "PostDown")
