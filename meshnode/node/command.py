"""`meshnode up`, `down` and `reload`.

    meshnode up [--daemon] [CONFIG]     CONFIG: TOML (default /etc/meshnode/config.toml),
                                        a wg-quick .conf file, or an interface name
                                        (/etc/wireguard/NAME.conf, as wg-quick)
    meshnode down
    meshnode reload

`up` runs in the foreground (systemd's Type=exec); with --daemon it returns
once every interface is up, or fails with the node's error. LOG_LEVEL
overrides the configuration's log level.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import socket
import sys
import time
from typing import Any

import trio

from ..config import DEFAULT_CONFIG, ConfigError, NodeConfig, load_config
from ..config.validate import check_interface_name
from ..log import LEVELS, Logger
from ..net.unixsock import close_unix
from . import control, journal
from .hosted import BringUpError
from .node import Node
from .statefiles import write_atomic

DOWN_TIMEOUT = 150  # s: PreDown and PostDown may take 40 s each, then the rest
USAGE_UP = "Usage: meshnode up [--daemon] [CONFIG]\n"


def _error(message: str) -> int:
    sys.stderr.write(f"meshnode: {message}\n")
    return 1


def up_main(argv: list[str]) -> int:
    args = argv[1:]
    daemon = "--daemon" in args
    args = [a for a in args if a != "--daemon"]
    if len(args) > 1 or any(a.startswith("-") for a in args):
        sys.stderr.write(USAGE_UP)
        return 1
    path = _config_path(args[0] if args else os.environ.get("MESHNODE_CONFIG", DEFAULT_CONFIG))
    if not args and not os.path.exists(path):
        # a machine that only ever ran `meshnode join`: its meshes, no static interfaces
        config = NodeConfig(path="", interfaces=[])
        config.state_dir = os.environ.get("MESHNODE_STATE_DIR") or config.state_dir
    else:
        _warn_if_world_accessible(path)
        try:
            config = load_config(path)
        except ConfigError as exc:
            return _error(str(exc))
    level = LEVELS.get(os.environ.get("LOG_LEVEL", "").lower(), config.log_level)
    try:
        _make_state_dir(config.state_dir)
    except OSError as exc:
        return _error(str(exc))
    try:
        _lock_run_dir()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return _error(exc.strerror or str(exc))
        return _error(f"cannot use the run directory {control.run_dir()}: {exc.strerror or exc}")
    try:
        listener = control.listen()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return _error(exc.strerror or str(exc))
        return _error(f"cannot create the control socket {control.socket_path()}: "
                      f"{exc.strerror or exc}")  # fmt: skip
    inode = control.socket_path().lstat().st_ino
    # this process now owns the run directory: clean up after a node that was
    # killed (kill -9, OOM) before anything comes up
    _recover(level)
    ready_fd = None
    if daemon:
        read_end, ready_fd = os.pipe()
        if os.fork() > 0:  # before trio starts: a forked trio would share its epoll
            os.close(ready_fd)
            listener.close()
            return _wait_for_child(read_end)
        os.close(read_end)
        os.setsid()
        os.chdir("/")
    try:
        error = trio.run(_run, config, level, listener, ready_fd)
    finally:
        close_unix(listener, control.socket_path(), inode)
    if error is None:
        return 0
    if ready_fd is not None:  # the parent prints it
        _report(ready_fd, f"E{error}")
        return 1
    return _error(error)


def _config_path(argument: str) -> str:
    """As wg-quick: a bare interface name means /etc/wireguard/NAME.conf."""
    if "/" not in argument and "." not in argument and not check_interface_name(argument):
        return f"/etc/wireguard/{argument}.conf"
    return argument


def _warn_if_world_accessible(path: str) -> None:
    """wg-quick's warning: a configuration holds private keys."""
    with contextlib.suppress(OSError):
        if os.stat(path).st_mode & 0o007:
            sys.stderr.write(f"Warning: `{path}' is world accessible\n")


def _make_state_dir(path: str) -> None:
    """The state directory (keys and mesh state), root only. OSError naming
    the file and the reason if it cannot be written to (read-only, full):
    better now than half-way through a change; what it holds stays as it is."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cannot create the state directory {path}: {exc.strerror or exc}") from exc
    probe = os.path.join(path, ".meshnode-write-test")
    try:
        write_atomic(probe, b"\0" * _PROBE_SIZE)
    except OSError as exc:
        raise OSError(f"the state directory {path} cannot be written to (writing {probe}: "
                      f"{exc.strerror or exc}); nothing in it was changed") from exc  # fmt: skip
    with contextlib.suppress(OSError):
        os.unlink(probe)


_PROBE_SIZE = 4096  # bytes: a full file system refuses a block, if not an empty file


_run_dir_lock: int | None = None  # held until the process exits, however it exits


def _lock_run_dir() -> None:
    """Take the run directory for this node: an exclusive flock on the
    directory itself, which the kernel releases when the process dies (kill
    -9 included). Two nodes starting at once cannot both get past this, so
    only one of them cleans up after a dead one. EADDRINUSE if it is held."""
    global _run_dir_lock
    directory = control.run_dir()
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OSError(errno.EADDRINUSE, f"a node is already running (it holds {directory}; "
                                        f"control socket {control.socket_path()})") from None
    _run_dir_lock = fd


def _recover(level: int) -> None:
    """Undo what dead nodes' crash journals list, then any firewall rule
    tagged by meshnode whose interface no longer exists here."""
    log = Logger("node", level)
    journal.recover(log=log.error)
    journal.sweep_tagged_rules(log=log.error)


async def _run(config: NodeConfig, level: int, listener: socket.socket,
               ready_fd: int | None) -> str | None:  # fmt: skip
    """Run the node; the start-up error, if any. Signals are caught from before
    the first interface comes up until after the last one is down."""
    node = Node(config, level)

    def ready() -> None:
        if ready_fd is not None:
            _report(ready_fd, "OK")
            # as wireguard-go: a detached daemon logs only if LOG_LEVEL asks
            if "LOG_LEVEL" not in os.environ:
                _detach_stdio()

    error = None
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        try:
            await node.run(listener, signals, ready)
        except* BringUpError as group:
            error = "; ".join(str(exc) for exc in _leaves(group))
    return error


def _leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups: nurseries nest them."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def _report(fd: int, message: str) -> None:
    try:
        os.write(fd, message.encode() + b"\n")
        os.close(fd)
    except OSError:
        pass


def _detach_stdio() -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def _wait_for_child(read_end: int) -> int:
    """The parent of --daemon: exit 0 once the node is up, 1 with its error."""
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode(errors="replace").strip()
    if message == "OK":
        return 0
    return _error(message[1:] if message.startswith("E") else "the node exited during start-up")


def _ask(argv: list[str], command: str) -> dict[str, Any] | int:
    """Send `command` to the running node: its answer, or an exit status."""
    if len(argv) != 1:
        sys.stderr.write(f"Usage: meshnode {command}\n")
        return 1
    try:
        return control.request(command)
    except TimeoutError:
        return _error(f"the node did not answer {command!r} in time")
    except OSError as exc:
        return _error(f"no node is running ({control.socket_path()}: {exc.strerror or exc})")


def down_main(argv: list[str]) -> int:
    reply = _ask(argv, "down")
    if isinstance(reply, int):
        return reply
    if not reply.get("ok"):
        return _error(reply.get("error", "down failed"))
    # the node answers first, then takes its interfaces down: wait for it
    deadline = time.monotonic() + DOWN_TIMEOUT
    while control.socket_path().exists():
        if time.monotonic() > deadline:
            return _error(f"the node is still going down after {DOWN_TIMEOUT} s")
        time.sleep(0.05)
    return 0


def reload_main(argv: list[str]) -> int:
    reply = _ask(argv, "reload")
    if isinstance(reply, int):
        return reply
    if not reply.get("ok"):
        return _error(f"reload failed, the node keeps its configuration: {reply.get('error')}")
    return 0


def stats_main(argv: list[str]) -> int:
    """Every counter of every interface of the running node, as JSON."""
    reply = _ask(argv, "stats")
    if isinstance(reply, int):
        return reply
    if not reply.get("ok"):
        return _error(reply.get("error", "stats failed"))
    sys.stdout.write(json.dumps(reply["interfaces"], indent=2, sort_keys=True) + "\n")
    return 0
