"""The node: one process hosting every interface of its configuration, each
in its own task (and nursery) inside the node's nursery, plus the control
socket and signal handling.

Start-up is all or nothing: if one interface cannot come up, the ones
already up are taken down again and the node exits with the error. A reload
(SIGHUP or `meshnode reload`) reads the file again and applies it as
`wg syncconf` would: unchanged peers keep their sessions, interfaces whose
network settings changed are set up again, removed ones go down, new ones
come up; a configuration that does not load, or an interface that cannot
come up, leaves the node as it was.
"""

from __future__ import annotations

import signal
from typing import Any

import trio

from ..config import ConfigError, InterfaceConfig, NodeConfig, load_config
from ..log import Logger
from ..uapi.protocol import UapiError
from . import control
from .hosted import SETUP_ERRORS, BringUpError, HostedInterface


class ReloadError(Exception):
    pass


class Node:
    def __init__(self, config: NodeConfig, log_level: int) -> None:
        self.config = config
        self.log_level = log_level
        self.log = Logger("node", log_level)
        self.hosted: dict[str, HostedInterface] = {}
        self._nursery: trio.Nursery | None = None
        self._reload_lock = trio.Lock()

    async def run(
        self, listener: Any, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bring every interface up, then serve until cancelled or told to go down."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for config in self.config.interfaces:
                await self._start(config)
            nursery.start_soon(control.serve, listener, self._command)
            nursery.start_soon(self._signals)
            task_status.started()

    def down(self) -> None:
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

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

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    try:
                        await self.reload()
                    except ReloadError as exc:
                        self.log.error(f"Reload failed, still running the old configuration: {exc}")
                else:
                    self.down()

    async def _command(self, command: str) -> dict[str, Any]:
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
            return {"ok": True, "config": self.config.path, "interfaces": sorted(self.hosted)}
        return {"ok": False, "error": f"unknown command {command!r}"}

    # ------------------------------------------------------------ reload

    async def reload(self) -> None:
        async with self._reload_lock:
            try:
                new = await trio.to_thread.run_sync(load_config, self.config.path)
            except ConfigError as exc:
                raise ReloadError(str(exc)) from None
            await self._apply(new)
            self.config = new
            self.log.verbose(f"Reloaded {new.path}")

    async def _apply(self, new: NodeConfig) -> None:
        wanted = {config.name: config for config in new.interfaces}
        added = [c for c in new.interfaces if c.name not in self.hosted]
        removed = [name for name in self.hosted if name not in wanted]
        kept = [c for c in new.interfaces if c.name in self.hosted]
        restart = [
            c for c in kept if c.network_settings() != self.hosted[c.name].config.network_settings()
        ]
        in_place = [c for c in kept if c not in restart and c.wg != self.hosted[c.name].config.wg]
        # new interfaces first: if one cannot come up, nothing else has changed
        started: list[str] = []
        try:
            for config in added:
                await self._start(config)
                started.append(config.name)
        except BringUpError as exc:
            for name in started:
                await self.hosted[name].stop()
            raise ReloadError(str(exc)) from None
        for config in in_place:
            try:
                self.hosted[config.name].update_in_place(config)
            except ValueError:
                restart.append(config)  # default routing changed: set it up again
            except (*SETUP_ERRORS, UapiError) as exc:
                raise ReloadError(f"interface {config.name}: {exc}") from None
        for config in restart:
            await self._restart(config)
        for name in removed:
            await self.hosted[name].stop()

    async def _restart(self, config: InterfaceConfig) -> None:
        old = self.hosted[config.name]
        await old.stop()
        try:
            await self._start(config)
        except BringUpError as exc:
            await self._start(old.config)  # back to what it was
            raise ReloadError(str(exc)) from None
