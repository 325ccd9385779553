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
import socket
from collections.abc import Awaitable, Callable

import trio

from ..config import InterfaceConfig
from ..interface import Interface, InterfaceGone
from ..log import Logger
from ..net import dns, firewall, link, routing
from ..net.tun import Tun
from ..net.unixsock import close_unix
from ..uapi import server as uapi
from ..uapi.protocol import UapiError
from ..wgtool import sync
from ..wgtool.model import DeviceUpdate
from ..wgtool.uapi_client import parse_get_text
from . import saveconfig
from .journal import Journal
from .routes import RoutePlan, plan_routes
from .settings import request_from_update

HOOK_TIMEOUT = 30.0  # seconds a PreUp/PostUp/... command may take
TEARDOWN_TIMEOUT = 40.0  # for each teardown step that awaits (PreDown, PostDown)


class HookError(Exception):
    """A PreUp/PostUp/PreDown/PostDown command failed or took too long."""


# What a failed bring-up raises, to be reported with the interface's location.
SETUP_ERRORS = (OSError, UapiError, ValueError, HookError)


class NeedsRestart(Exception):
    """A change that cannot be applied in place: the interface is set up again."""


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
        self._save_on_stop = True
        # what bring-up adds, for the next start if this process is killed
        self.journal = Journal(config.name)

    # ------------------------------------------------------------ life cycle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Set up, report started, serve until stopped; BringUpError if setup fails.

        The data path and the UAPI are served from before PostUp until after
        PreDown, so hooks can use `wg` and the tunnel, as with wg-quick."""
        failure: Exception | None = None
        try:
            async with contextlib.AsyncExitStack() as stack:
                try:
                    listener = await self._bring_up(stack)
                except SETUP_ERRORS as exc:
                    raise BringUpError(self._located(exc)) from exc
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._serve, listener)
                    try:
                        with self.cancel_scope:
                            try:
                                await self._hooks(self.config.post_up, "PostUp")
                            except SETUP_ERRORS as exc:
                                failure = exc
                            else:
                                self._came_up = True
                                task_status.started()
                                self.log.verbose("Interface is up")
                                await trio.sleep_forever()
                    finally:
                        if self._came_up:
                            await self._shielded(self._pre_down)
                        nursery.cancel_scope.cancel()
        finally:
            self.stopped.set()
        if failure is not None:
            raise BringUpError(self._located(failure)) from failure

    async def stop(self, *, save: bool = True) -> None:
        """Take the interface down; save=False skips SaveConfig (a reload's
        restart must not write the old state over the file just edited)."""
        self._save_on_stop = save
        self.cancel_scope.cancel()
        await self.stopped.wait()

    def set_log_level(self, level: int) -> None:
        self.log.level = level
        if self.interface is not None:
            device = self.interface.device
            device.trace = self.log.verbose if self.log.verbose_enabled else None

    def _located(self, error: Exception) -> str:
        where = self.config.path
        if self.config.line is not None:
            where += f":{self.config.line}"
        return f"{where}: interface {self.name}: {error}"

    async def _serve(self, listener: socket.socket) -> None:
        assert self.interface is not None
        path = uapi.socket_path(self.name)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.interface.run)
                nursery.start_soon(uapi.serve, listener, self.interface, path, self.log)
        except* InterfaceGone:
            self.log.error("Interface was removed from outside; taking it down")
        except* uapi.SocketRemoved:
            self.log.error("UAPI socket was removed; taking the interface down")
        self.cancel_scope.cancel()  # what is left of the interface goes down too

    # ------------------------------------------------------------ bring-up

    async def _bring_up(self, stack: contextlib.AsyncExitStack) -> socket.socket:
        """Everything up to PostUp, each step's undo registered before the next."""
        config = self.config
        # before anything changes: the crash journal (removed last)
        self.journal.open()
        stack.callback(self._close_journal)
        # registered next, so it runs last but one; armed only once the interface is up
        stack.push_async_callback(self._shielded, self._post_down)
        await self._hooks(config.pre_up, "PreUp")
        mtu = config.mtu or routing.path_mtu(_endpoint_hosts(config)) - _WIREGUARD_OVERHEAD
        record = self.journal.record
        forget_link = record({"kind": "link", "name": config.name})
        try:
            tun = Tun(config.name, vnet_hdr=config.offloads.tun_vnet)
        except BaseException:
            forget_link()
            raise
        stack.callback(forget_link)
        stack.callback(tun.close)
        path = uapi.socket_path(tun.name)
        forget_socket = record({"kind": "socket", "path": str(path)})
        stack.callback(forget_socket)
        listener = uapi.listen(tun.name)
        stack.callback(close_unix, listener, path, path.lstat().st_ino)
        link.configure(tun.name, mtu=mtu)
        interface = Interface(tun, self.log, mtu=mtu, offloads=config.offloads)
        # whichever sockets it holds by then: setting the listen port replaces them
        stack.callback(lambda: interface.udp.close())
        self.interface = interface
        self.plan = plan_routes(config, routing.table_in_use)
        self._apply_wg(self._wg_update(config, self.plan, keep_port=False), replace=True)
        on_undo = self._undo_registrar(stack)
        self._routing = routing.Routing(tun.name, on_undo, record)
        for address in config.addresses:
            self._routing.add_address(address)
        link.configure(tun.name, up=True)
        dns.set_dns(tun.name, config.dns, config.dns_search, on_undo, record)
        self._add_policy_routing(self.plan, on_undo)
        stack.callback(self._remove_routes)
        self._add_routes(self.plan)
        if config.gateway is not None:
            self._add_gateway(config.gateway.out_interface, on_undo)
        return listener

    def _close_journal(self) -> None:
        if not self.journal.close():
            self.log.error(f"Some changes could not be undone; {self.journal.path} lists them "
                           "for the next start to try again")

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

    async def _shielded(self, step: Callable[[], Awaitable[None]]) -> None:
        """Teardown steps that await (hooks) run even while being cancelled,
        for a limited time; a failure is logged and teardown goes on."""
        with trio.CancelScope(shield=True), trio.move_on_after(TEARDOWN_TIMEOUT) as scope:
            try:
                await step()
            except Exception as exc:
                self.log.error(f"While taking the interface down: {exc}")
        if scope.cancelled_caught:
            self.log.error(f"While taking the interface down: gave up after {TEARDOWN_TIMEOUT} s")

    # ------------------------------------------------------------ WireGuard settings

    def _wg_update(
        self, config: InterfaceConfig, plan: RoutePlan, *, keep_port: bool
    ) -> DeviceUpdate:
        """The file's settings, with the fwmark that policy routing needs. A file
        without a listen port means any port: with keep_port, the one it has."""
        return DeviceUpdate(
            private_key=config.wg.private_key,
            listen_port=config.wg.listen_port or (None if keep_port else 0),
            fwmark=plan.default_table or config.wg.fwmark or 0,
            replace_peers=config.wg.replace_peers,
            peers=config.wg.peers,
        )

    def _apply_wg(self, update: DeviceUpdate, *, replace: bool) -> None:
        """Apply whole (replace) or as syncconf would; UapiError leaves it unchanged."""
        assert self.interface is not None
        if not replace:
            update = sync.plan(update, parse_get_text(self.name, self.interface.uapi_get()))
        self.interface.apply(request_from_update(update))

    # ------------------------------------------------------------ routes

    def _add_policy_routing(
        self, plan: RoutePlan, on_undo: Callable[[Callable[[], None]], None]
    ) -> None:
        """wg-quick's add_default: everything unmarked goes to the tunnel's table,
        except what the main table knows more specifically than a default route;
        and its firewall rules for that case (iptables flavour)."""
        assert self._routing is not None
        record = self.journal.record
        table = str(plan.default_table)
        for version in plan.default_versions:
            self._routing.add_rule(version, "not", "fwmark", table, "table", table)
            self._routing.add_rule(version, "table", "main", "suppress_prefixlength", "0")
            for address in self.config.addresses:
                if address.version == version:
                    # with every route through the tunnel, a LAN host must not
                    # reach the tunnel's address from outside it
                    firewall.add_rule(version, "raw", "PREROUTING",
                                      ["!", "-i", self.name, "-d", str(address.ip), "-m",
                                       "addrtype", "!", "--src-type", "LOCAL", "-j", "DROP"],
                                      self.name, on_undo, first=True, record=record)  # fmt: skip
            # the tunnel's own UDP flows keep their mark both ways, so replies
            # to them pass reverse-path filtering (with src_valid_mark)
            firewall.add_rule(version, "mangle", "POSTROUTING",
                              ["-p", "udp", "-m", "mark", "--mark", table,
                               "-j", "CONNMARK", "--save-mark"],
                              self.name, on_undo, first=True, record=record)  # fmt: skip
            firewall.add_rule(version, "mangle", "PREROUTING",
                              ["-p", "udp", "-j", "CONNMARK", "--restore-mark"],
                              self.name, on_undo, first=True, record=record)  # fmt: skip
            if version == 4:
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
        # IPv6 forwarding only for an interface with IPv6 addresses: switching it
        # on stops the host from taking router advertisements on its uplinks
        versions = sorted({address.version for address in self.config.addresses} | {4})
        self._routing.set_sysctl("net.ipv4.ip_forward", "1")
        if 6 in versions:
            self._routing.set_sysctl("net.ipv6.conf.all.forwarding", "1")
        for version in versions:
            for table, chain, spec in (
                ("nat", "POSTROUTING", ["-o", out_interface, "-j", "MASQUERADE"]),
                ("filter", "FORWARD", ["-i", self.name, "-j", "ACCEPT"]),
                ("filter", "FORWARD", ["-o", self.name, "-j", "ACCEPT"]),
            ):
                firewall.add_rule(version, table, chain, spec, self.name, on_undo,
                                  record=self.journal.record)

    # ------------------------------------------------------------ reload in place

    def update_in_place(self, config: InterfaceConfig) -> None:
        """Apply new WireGuard settings and their routes, as `wg syncconf` does:
        peers whose settings did not change keep their sessions. Raises
        UapiError or OSError after putting the old settings back; NeedsRestart
        if the default routing changes."""
        ours = self.plan.default_table
        plan = plan_routes(config, lambda t: t != ours and routing.table_in_use(t))
        if plan.policy != self.plan.policy:
            raise NeedsRestart("default routing changed")
        self._apply_wg(self._wg_update(config, plan, keep_port=True), replace=False)
        try:
            self._add_routes(plan)
        except OSError:
            # back to the old peers and routes, as far as that goes
            self._remove_routes(keep=set(self.plan.routes))
            with contextlib.suppress(*SETUP_ERRORS):
                self._apply_wg(self._wg_update(self.config, self.plan, keep_port=True),
                               replace=False)  # fmt: skip
            raise
        self._remove_routes(keep=set(plan.routes))
        self.config, self.plan = config, plan

    # ------------------------------------------------------------ hooks

    async def _hooks(self, commands: list[str], what: str) -> None:
        for command in commands:
            line = command.replace("%i", self.name)
            self.log.verbose(f"{what}: {line}")
            with trio.move_on_after(HOOK_TIMEOUT) as scope:
                result = await trio.run_process(["bash", "-c", line], check=False)
            if scope.cancelled_caught:
                raise HookError(f"{what} command still running after {HOOK_TIMEOUT:.0f} s: {line}")
            if result.returncode != 0:
                raise HookError(f"{what} command failed (exit {result.returncode}): {line}")

    async def _pre_down(self) -> None:
        await self._hooks(self.config.pre_down, "PreDown")
        if self.config.save_config and self._save_on_stop and self.interface is not None:
            try:
                saveconfig.save(self.config, self.interface.uapi_get())
            except OSError as exc:  # the file as it was: written whole or not at all
                raise OSError(f"SaveConfig: cannot write {self.config.path} (kept as it was): "
                              f"{exc.strerror or exc}") from exc

    async def _post_down(self) -> None:
        if self._came_up:
            await self._hooks(self.config.post_down, "PostDown")


_WIREGUARD_OVERHEAD = 80  # what wg-quick takes off the path MTU: IPv6 + UDP + WireGuard


def _endpoint_hosts(config: InterfaceConfig) -> list[str]:
    """The peers' endpoint addresses (what wg-quick's MTU guess looks at)."""
    return [str(peer.endpoint.sockaddr[0]) for peer in config.wg.peers if peer.endpoint is not None]
