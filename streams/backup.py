"""`budgetwatch backup`: a consistent copy of a store, safe while `serve` or `run` writes.

Copying the database file while a process writes to it (or forgetting its ``-wal``
file) gives a copy that may not open, or that silently lacks the last commits. The
copy here goes through SQLite's online backup API in one step: it reads every page
inside one read transaction, so the copy is the store as of one commit, and in WAL
mode the writers are not held up meanwhile (the WAL only grows until it is done). The
copy is written beside the destination, checked (``PRAGMA quick_check``), and only
then renamed into place: a destination that exists is always a whole, checked store.
"""

from __future__ import annotations

import glob
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from budget.calendar import iso
from streams.errors import StoreError
from streams.store import Store


@dataclass(frozen=True, slots=True)
class BackupSummary:
    source: str
    destination: str
    bytes: int
    events: int
    clock: int | None  # the business clock of the copy (date ordinal), None before any run
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "destination": self.destination,
            "bytes": self.bytes,
            "events": self.events,
            "clock": iso(self.clock) if self.clock is not None else None,
            "seconds": round(self.seconds, 3),
            "check": "ok",
        }


def back_up(store: Store, destination: Path, *, force: bool = False) -> BackupSummary:
    """Copy ``store`` to ``destination`` as of one commit; refuses to replace a file
    unless ``force``."""
    started = time.monotonic()
    destination = destination.expanduser()
    if destination.resolve() == Path(store.path).resolve():
        raise StoreError(
            f"备份目标 {destination} 就是数据库本身；请指定另一个文件（the destination is the store itself）"
        )
    if destination.is_dir():
        raise StoreError(f"{destination} 是目录；请给出备份文件名，如 {destination / 'budgetwatch-备份.db'}"
                         "（the destination is a directory）")
    if not destination.parent.is_dir():
        raise StoreError(f"目录 {destination.parent} 不存在；请先创建（no directory {destination.parent}）")
    if destination.exists() and not force:
        raise StoreError(f"{destination} 已存在，未做任何改动；加 --force 覆盖，或换一个文件名"
                         "（the destination exists; --force replaces it）")
    partial = destination.with_name(f".{destination.name}.partial-{os.getpid()}")
    _remove_stale_partials(destination)
    _remove(partial)
    try:
        target = sqlite3.connect(partial)
        try:
            store.db.backup(target, pages=-1)  # one step: one read transaction, one commit's state
            check = target.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise StoreError(f"备份副本校验失败（quick_check: {check}）；原数据库未受影响，请重试"
                                 "（the copy failed its check）")
            events = int(target.execute("SELECT COUNT(*) FROM events").fetchone()[0])
            clock = target.execute("SELECT clock FROM cursor WHERE id = 1").fetchone()
        finally:
            target.close()  # the last connection: its WAL is checkpointed into the file
        _fsync(partial)
        os.replace(partial, destination)
        _fsync(destination.parent)
    except sqlite3.Error as err:
        raise StoreError(f"备份到 {destination} 失败：{err}；原数据库未受影响（backup failed: {err}）") from None
    except OSError as err:
        raise StoreError(f"无法写入备份 {destination}：{err.strerror}（{err}）") from None
    finally:
        _remove(partial)
    return BackupSummary(
        source=store.path,
        destination=str(destination),
        bytes=destination.stat().st_size,
        events=events,
        clock=None if clock is None or clock[0] is None else int(clock[0]),
        seconds=time.monotonic() - started,
    )


def _remove_stale_partials(destination: Path) -> None:
    """Copies left by backups killed midway (kill -9, a reboot): their process is gone, and
    a cron backup directory gathered one store-sized file per kill."""
    for leftover in destination.parent.glob(f".{glob.escape(destination.name)}.partial-*"):
        pid = leftover.name.rpartition("-")[2]
        if pid.isdigit() and not _alive(int(pid)):
            _remove(leftover)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
