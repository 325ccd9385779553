"""Where a node keeps its meshes: STATE_DIR/meshes/NAME/, root only.

    private.key     this node's WireGuard private key in the mesh (base64)
    state           the agent's MeshState (msgpack, re-verified on load)
    settings.json   the interface name, listen port and public endpoints
    log             the membership changes in plain words, a line each

Every file is 0600 and written atomically, so a crash leaves the old
version or the new one, never half of either.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..mesh.codec import valid_name
from ..mesh.state import MeshState, StateError
from ..wireguard import keys
from .statefiles import append_line, write_atomic


class StoreError(Exception):
    """A mesh's files are missing, unreadable or invalid; the message names the file."""


@dataclass
class MeshSettings:
    interface: str
    listen_port: int = 0  # 0: any free port, remembered once chosen
    endpoints: list[str] = field(default_factory=list)  # HOST:PORT others reach it at

    def encode(self) -> bytes:
        return json.dumps(asdict(self), indent=2).encode() + b"\n"

    @classmethod
    def decode(cls, data: bytes, where: str) -> MeshSettings:
        try:
            raw = json.loads(data)
            settings = cls(
                interface=raw["interface"],
                listen_port=raw.get("listen_port", 0),
                endpoints=list(raw.get("endpoints", [])),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"{where}: not a mesh settings file ({exc})") from None
        if not isinstance(settings.interface, str) or not isinstance(settings.listen_port, int):
            raise StoreError(f"{where}: bad interface name or listen port")
        if not all(isinstance(e, str) for e in settings.endpoints):
            raise StoreError(f"{where}: endpoints must be strings")
        return settings


@dataclass
class StoredMesh:
    name: str
    private_key: bytes = field(repr=False)
    state: MeshState
    settings: MeshSettings


class MeshStore:
    def __init__(self, state_dir: str | Path) -> None:
        self.root = Path(state_dir) / "meshes"

    def directory(self, name: str) -> Path:
        if not valid_name(name):  # never a path outside, nor one the kernel refuses
            raise StoreError(f"invalid mesh name {name[:70]!r}: 1-63 of a-z, 0-9 and '-'")
        return self.root / name

    def names(self) -> list[str]:
        """The meshes kept here (directories with a state file), sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "state").is_file())

    def exists(self, name: str) -> bool:
        return valid_name(name) and (self.directory(name) / "state").is_file()

    def create(self, stored: StoredMesh) -> None:
        """Write a new mesh whole; StoreError if one of that name exists."""
        directory = self.directory(stored.name)
        if self.exists(stored.name):
            raise StoreError(f"a mesh named {stored.name} already exists on this node")
        os.makedirs(directory, mode=0o700, exist_ok=True)
        key_text = keys.to_base64(stored.private_key) + "\n"
        write_atomic(directory / "private.key", key_text.encode())
        write_atomic(directory / "settings.json", stored.settings.encode())
        # the state last: a mesh counts as kept only once its state file exists
        write_atomic(directory / "state", stored.state.encode())

    def load(self, name: str, now: float) -> StoredMesh:
        directory = self.directory(name)
        try:
            key_text = (directory / "private.key").read_text().strip()
            settings_data = (directory / "settings.json").read_bytes()
            state_data = (directory / "state").read_bytes()
        except OSError as exc:
            raise StoreError(f"{exc.filename}: {exc.strerror}") from None
        try:
            private_key = keys.from_base64(key_text)
        except ValueError:
            raise StoreError(f"{directory / 'private.key'}: not a WireGuard private key") from None
        settings = MeshSettings.decode(settings_data, str(directory / "settings.json"))
        try:
            state = MeshState.decode(state_data, now)
        except StateError as exc:
            raise StoreError(f"{directory / 'state'}: {exc}") from None
        if state.public_key != keys.public_key(private_key):
            raise StoreError(f"{directory}: the private key is not this member's")
        return StoredMesh(name, private_key, state, settings)

    def save_state(self, name: str, state: MeshState) -> None:
        write_atomic(self.directory(name) / "state", state.encode())

    def save_settings(self, name: str, settings: MeshSettings) -> None:
        write_atomic(self.directory(name) / "settings.json", settings.encode())

    def log(self, name: str, line: str) -> None:
        append_line(self.directory(name) / "log", line)

    def read_log(self, name: str) -> list[str]:
        try:
            return (self.directory(name) / "log").read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def remove(self, name: str) -> None:
        shutil.rmtree(self.directory(name), ignore_errors=True)
