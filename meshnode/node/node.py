"""The node: one process hosting every interface of its configuration, each
in its own task (and nursery) inside the node's nursery, plus the control
socket and signal handling.

Start-up is all or nothing: if one interface cannot come up, the ones
already up are taken down again and the node exits with the error. Going
down (SIGTERM, SIGINT, `meshnode down`), each interface is stopped on its
own first, so its PreDown hooks still see a working interface; a second
signal does not cut that short. A reload (SIGHUP or `meshnode reload`)
reads the file again and applies it as `wg syncconf` would: unchanged peers
keep their sessions, interfaces whose network settings changed are set up
again, removed ones go down, new ones come up. A file that does not load
changes nothing; a step that fails undoes the steps of that reload before
it, so the node goes on with its old configuration.

Meshes (meshnode/mesh) are hosted beside the static interfaces: every mesh
kept in the state directory comes up after them (a mesh that cannot come up
is logged and left out, since no configuration file names it), each with its
interface and agent in a MeshHost. A reload never touches them.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import trio

from ..config import DEFAULT_CONFIG, ConfigError, InterfaceConfig, NodeConfig, load_config
from ..log import Logger, drain
from . import control
from .hosted import BringUpError, HostedInterface, NeedsRestart
from .meshcommands import MeshCommands
from .meshhost import MeshHost
from .meshstore import MeshStore, StoreError

Undo = Callable[[], Awaitable[None]]


class ReloadError(Exception):
    pass


class Node:
    def __init__(self, config: NodeConfig, log_level: int) -> None:
        self.config = config
        self.log_level = log_level
        self.log = Logger("node", log_level)
        self.hosted: dict[str, HostedInterface] = {}
        self.store = MeshStore(config.state_dir)
        self.meshes: dict[str, MeshHost] = {}
        self._mesh_commands = MeshCommands(self)
        self._nursery: trio.Nursery | None = None
        self._reload_lock = trio.Lock()
        self._down = trio.Event()
        self._startup = trio.CancelScope()

    # ------------------------------------------------------------ life cycle

    async def run(
        self,
        listener: Any,
        signals: AsyncIterator[int] | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> bool:
        """Bring every interface up, serve until told to go down, take every
        interface down. False if told to go down before all were up.
        BringUpError if one could not come up (the others are down again)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(drain)  # log lines queue for it, never blocking the loop
            if signals is not None:
                nursery.start_soon(self._handle_signals, signals)
            try:
                with self._startup:
                    for config in self.config.interfaces:
                        await self._start(config)
                    for name in self.store.names():
                        try:
                            await self.start_mesh(name)
                        except (StoreError, BringUpError, ValueError) as exc:
                            self.log.error(f"Mesh {name} cannot come up: {exc}")
                if self._startup.cancelled_caught:
                    return False
                nursery.start_soon(control.serve, listener, self._command, self.log)
                if on_ready is not None:
                    on_ready()
                await self._down.wait()
            finally:
                with trio.CancelScope(shield=True):
                    await self._stop_all()
                nursery.cancel_scope.cancel()
        return True

    def down(self) -> None:
        if self._down.is_set():
            self.log.verbose("Already going down")
        self._down.set()
        self._startup.cancel()  # an interface still coming up is unwound

    async def _stop_all(self) -> None:
        async with trio.open_nursery() as nursery:
            for hosted in list(self.hosted.values()):
                nursery.start_soon(hosted.stop)
            for mesh in list(self.meshes.values()):
                nursery.start_soon(mesh.stop)

    async def start_mesh(self, name: str) -> MeshHost:
        """Bring up a mesh kept in the state directory (StoreError, BringUpError)."""
        assert self._nursery is not None
        stored = self.store.load(name, time.time())
        config = next((m for m in self.config.meshes if m.name == name), None)
        host = MeshHost(self.store, stored, self.log_level, config)
        await self._nursery.start(self._host_mesh, host)
        self.meshes[name] = host
        return host

    async def stop_mesh(self, name: str) -> None:
        host = self.meshes.get(name)
        if host is not None:
            await host.stop()

    async def _host_mesh(self, host: MeshHost, *, task_status: trio.TaskStatus[None]) -> None:
        try:
            await host.run(task_status=task_status)
        finally:
            if self.meshes.get(host.name) is host:
                del self.meshes[host.name]

    async def _start(self, config: InterfaceConfig) -> None:
        assert self._nursery is not None
        hosted = HostedInterface(config, self.log_level)
        await self._nursery.start(self._host, hosted)
        self.hosted[config.name] = hosted

    async def _host(self, hosted: HostedInterface, *, task_status: trio.TaskStatus[None]) -> None:
        try:
            await hosted.run(task_status=task_status)
        finally:
            # gone from outside (TUN deleted, socket removed) or stopped by a reload
            if self.hosted.get(hosted.name) is hosted:
                del self.hosted[hosted.name]

    async def _handle_signals(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            if signum == signal.SIGHUP and not self._down.is_set():
                assert self._nursery is not None
                self._nursery.start_soon(self._reload_logged)
            elif signum != signal.SIGHUP:
                self.down()

    async def _reload_logged(self) -> None:
        try:
            await self.reload()
        except ReloadError as exc:
            self.log.error(f"Reload failed, still running the old configuration: {exc}")

    async def _command(self, command: str, args: control.Args) -> dict[str, Any]:
        if command == "down":
            self.down()
            return {"ok": True}
        if command == "reload":
            try:
                await self.reload()
            except ReloadError as exc:
                return {"ok": False, "error": str(exc)}
            return {"ok": True, "interfaces": sorted(self.hosted)}
        if command == "status":
            return {"ok": True, "pid": os.getpid(), "config": self.config.path,
                    "interfaces": sorted(self.hosted), "meshes": sorted(self.meshes),
                    "state_dir": self.config.state_dir}  # fmt: skip
        if command == "stats":
            hosted_all = [*self.hosted.values(), *(m.hosted for m in self.meshes.values())]
            return {"ok": True, "interfaces": {
                hosted.name: hosted.interface.stats()
                for hosted in sorted(hosted_all, key=lambda h: h.name)
                if hosted.interface is not None
            }}  # fmt: skip
        reply = await self._mesh_commands.handle(command, args)
        if reply is not None:
            return reply
        return {"ok": False, "error": f"unknown command {command!r}"}

    # ------------------------------------------------------------ reload

    async def reload(self) -> None:
        """ReloadError (and the node as it was) if the new file cannot be applied."""
        async with self._reload_lock:
            if self._down.is_set():
                raise ReloadError("the node is going down")
            try:
                if not self.config.path:
                    raise ReloadError("this node runs its meshes only, without a "
                                      f"configuration file (create {DEFAULT_CONFIG})")  # fmt: skip
                new = await trio.to_thread.run_sync(load_config, self.config.path)
                await self._apply(new)
            except ConfigError as exc:
                raise ReloadError(str(exc)) from None
            except ReloadError:
                raise
            except Exception as exc:  # whatever it was, the node stays up
                self.log.error(f"Reload: {type(exc).__name__}: {exc}")
                raise ReloadError(f"{type(exc).__name__}: {exc}") from exc
            if new.log_level != self.config.log_level and "LOG_LEVEL" not in os.environ:
                self.log_level = self.log.level = new.log_level
                for hosted in self.hosted.values():
                    hosted.set_log_level(new.log_level)
            self.config = new
            self.log.verbose(f"Reloaded {new.path}")

    async def _apply(self, new: NodeConfig) -> None:
        wanted = {config.name: config for config in new.interfaces}
        removed = [hosted for name, hosted in self.hosted.items() if name not in wanted]
        added = [config for config in new.interfaces if config.name not in self.hosted]
        restart: list[tuple[InterfaceConfig, HostedInterface]] = []
        in_place: list[tuple[InterfaceConfig, HostedInterface]] = []
        for config in new.interfaces:
            if (hosted := self.hosted.get(config.name)) is None:
                continue
            if config.network_settings() != hosted.config.network_settings():
                restart.append((config, hosted))
            elif config.wg != hosted.config.wg:
                in_place.append((config, hosted))
        undo: list[Undo] = []
        try:
            # removed interfaces first: a new one may take over their name or port
            for hosted in removed:
                await hosted.stop()
                undo.append(partial(self._start, hosted.config))
            for config, hosted in in_place:
                old = hosted.config
                try:
                    hosted.update_in_place(config)
                except NeedsRestart:
                    restart.append((config, hosted))
                    continue
                undo.append(partial(self._update, hosted, old))
            for config, hosted in restart:
                await hosted.stop(save=False)
                undo.append(partial(self._replace, config.name, hosted.config))
                await self._start(config)
            for config in added:
                await self._start(config)
                undo.append(partial(self._stop, config.name))
        except Exception as exc:  # whatever failed, the steps before it are undone
            for step in reversed(undo):
                try:
                    await step()
                except Exception as again:
                    self.log.error(f"Reload: could not restore the old state: {again}")
            raise ReloadError(str(exc) or type(exc).__name__) from None

    async def _update(self, hosted: HostedInterface, config: InterfaceConfig) -> None:
        hosted.update_in_place(config)

    async def _stop(self, name: str) -> None:
        if (hosted := self.hosted.get(name)) is not None:
            await hosted.stop(save=False)

    async def _replace(self, name: str, config: InterfaceConfig) -> None:
        await self._stop(name)
        await self._start(config)
