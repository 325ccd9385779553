"""The UAPI socket watch: a deleted or replaced file is noticed at once, and an
idle watch does not wake up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from meshnode.uapi import pathwatch
from meshnode.uapi.pathwatch import wait_replaced


def _file(tmp_path: Path) -> tuple[Path, int]:
    path = tmp_path / "wg0.sock"
    path.write_bytes(b"")
    return path, path.lstat().st_ino


def _count_looks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    looks = [0]
    changed = pathwatch._changed

    def counting(path: Path, inode: int) -> bool:
        looks[0] += 1
        return changed(path, inode)

    monkeypatch.setattr(pathwatch, "_changed", counting)
    return looks


@pytest.mark.parametrize("change", ["delete", "replace", "rename-over", "directory-moved"])
async def test_a_deleted_or_replaced_file_is_noticed_at_once(tmp_path: Path, change: str) -> None:
    path, inode = _file(tmp_path)
    done = trio.Event()

    async def watch() -> None:
        await wait_replaced(path, inode)
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await trio.sleep(0.1)
        (tmp_path / "unrelated").write_bytes(b"x")  # another file: no effect
        await trio.sleep(0.1)
        assert not done.is_set()
        if change == "delete":
            path.unlink()
        elif change == "replace":
            path.unlink()
            path.write_bytes(b"")  # a new socket of the same name, another inode
        elif change == "rename-over":
            (tmp_path / "new.sock").write_bytes(b"")
            os.rename(tmp_path / "new.sock", path)
        else:
            os.rename(tmp_path, tmp_path.with_name(tmp_path.name + "-moved"))
        with trio.fail_after(1):
            await done.wait()


async def test_an_idle_watch_does_not_wake_up(tmp_path: Path, monkeypatch) -> None:
    path, inode = _file(tmp_path)
    looks = _count_looks(monkeypatch)
    with trio.move_on_after(1.5):
        await wait_replaced(path, inode)
    assert looks[0] == 1  # the first look only (polling would have made 6)


async def test_without_inotify_it_polls(tmp_path: Path, monkeypatch) -> None:
    path, inode = _file(tmp_path)
    monkeypatch.setattr(pathwatch, "_libc", None)
    looks = _count_looks(monkeypatch)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_replaced, path, inode)
        await trio.sleep(0.6)
        path.unlink()
    assert looks[0] >= 3
