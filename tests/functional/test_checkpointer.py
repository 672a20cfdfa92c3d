"""WAL checkpoints of a run on their own thread (streams.checkpointer), on real SQLite files."""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest

from streams.checkpointer import DEFAULT_AUTOCHECKPOINT, Checkpointer
from tests import builders as b
from tests.builders import day
from tests.functional.engine_helpers import engine, ingest_events


def _year(projects: int) -> list[dict[str, object]]:
    events: list[dict[str, object]] = []
    for n in range(projects):
        pid = f"P{n:03d}"
        events += [b.registered(pid), b.approved(pid, "100000")]
        events += [b.payment(pid, "100", on=f"2025-{m:02d}-1{n % 9}") for m in range(1, 12, 1 + n % 4)]
    return events


def _checkpoint_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "budgetwatch-checkpoint"]


def test_a_run_leaves_its_commits_in_the_database_file_itself(tmp_path: Path) -> None:
    """With SQLite's automatic checkpoints off during a run, the thread must still copy
    every commit into the database file by the time the run returns: the file alone
    (no -wal beside it) holds the run's transitions, states and cursor."""
    e = engine(tmp_path / "bw.db", commit_every=10)
    ingest_events(e.store, _year(12))
    summary = e.run(day("2025-12-31"))
    assert summary.commits > 3 and summary.transitions > 0
    assert _checkpoint_threads() == []
    assert e.store.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == DEFAULT_AUTOCHECKPOINT
    alone = tmp_path / "copy.db"
    shutil.copyfile(tmp_path / "bw.db", alone)  # the main file only: what the WAL still held is lost
    copy = sqlite3.connect(alone)
    try:
        stored = copy.execute("SELECT COUNT(*) FROM transitions").fetchone()[0]
        clock = copy.execute("SELECT clock FROM cursor").fetchone()[0]
        projects = copy.execute("SELECT COUNT(*) FROM projects").fetchone()[0]
    finally:
        copy.close()
    live = e.store.db.execute("SELECT COUNT(*) FROM transitions").fetchone()[0]
    assert (stored, clock, projects) == (live, day("2025-12-31"), 12)
    e.store.close()


def test_a_failed_run_stops_the_thread_and_restores_automatic_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    e = engine(tmp_path / "bw.db", commit_every=40)
    ingest_events(e.store, _year(5))

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(e, "_store_resolved", broken)
    monkeypatch.setattr(e, "_commit", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        e.run(day("2025-12-31"))
    assert _checkpoint_threads() == []
    assert e.store.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == DEFAULT_AUTOCHECKPOINT
    assert e.store.cursor() == (None, 0)  # nothing of the failed batch was committed
    e.store.close()


def test_every_poke_is_checkpointed_and_a_last_one_is_never_lost(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("CREATE TABLE t(x)")
    with Checkpointer(writer, str(path)) as checkpointer:
        assert writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == DEFAULT_AUTOCHECKPOINT
        checkpointer.take_over()
        checkpointer.take_over()  # idempotent: one thread
        assert writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        assert len(_checkpoint_threads()) == 1
        for n in range(5):
            writer.execute("INSERT INTO t VALUES (?)", (n,))
            checkpointer.poke()
        writer.execute("INSERT INTO t VALUES (99)")  # committed, then the block ends at once
        checkpointer.poke()
    assert 1 <= checkpointer.checkpoints <= 6
    alone = tmp_path / "copy.db"
    shutil.copyfile(path, alone)
    copy = sqlite3.connect(alone)
    try:
        assert copy.execute("SELECT MAX(x), COUNT(*) FROM t").fetchone() == (99, 6)
    finally:
        copy.close()
        writer.close()


def test_an_in_memory_store_runs_without_a_thread() -> None:
    e = engine(":memory:", commit_every=5)
    ingest_events(e.store, _year(3))
    seen: list[list[threading.Thread]] = []
    original = e._commit

    def spy(*args: object, **kwargs: object) -> None:
        seen.append(_checkpoint_threads())
        original(*args, **kwargs)  # type: ignore[arg-type]

    e._commit = spy  # type: ignore[method-assign]
    assert e.run(day("2025-12-31")).commits == len(seen) > 1
    assert all(threads == [] for threads in seen)


def test_a_failing_checkpoint_is_logged_and_the_commits_stay_in_the_wal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "w.db"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("CREATE TABLE t(x)")
    with caplog.at_level(logging.WARNING, logger="streams.checkpointer"):
        checkpointer = Checkpointer(writer, str(path))
        original = Checkpointer._checkpoint

        def failing(self: Checkpointer, connection: sqlite3.Connection) -> None:
            connection.close()  # every statement on it now fails: the real error path
            original(self, connection)

        checkpointer._checkpoint = failing.__get__(checkpointer)  # type: ignore[method-assign]
        with checkpointer:
            checkpointer.take_over()
            writer.execute("INSERT INTO t VALUES (1)")
            checkpointer.poke()
    assert checkpointer.checkpoints == 0
    assert any("WAL checkpoint failed" in r.getMessage() for r in caplog.records)
    assert writer.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 1
    writer.close()


def test_a_run_of_one_commit_starts_no_thread(tmp_path: Path) -> None:
    """`serve` runs the engine for every HTTP batch: one commit each. Handing its
    checkpoint to a thread would make every batch wait for a checkpoint and its fsyncs
    at the end of the run; such a run checkpoints as it always did, when the WAL is full."""
    e = engine(tmp_path / "bw.db", commit_every=100_000)
    ingest_events(e.store, _year(4))
    seen: list[tuple[list[threading.Thread], int]] = []
    original = e._commit

    def spy(*args: object, **kwargs: object) -> None:
        autocheckpoint = e.store.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        seen.append((_checkpoint_threads(), autocheckpoint))
        original(*args, **kwargs)  # type: ignore[arg-type]

    e._commit = spy  # type: ignore[method-assign]
    assert e.run(day("2025-12-31")).commits == 1
    assert seen == [([], DEFAULT_AUTOCHECKPOINT)]
    e.store.close()


def test_a_run_of_several_commits_checkpoints_each_off_the_engine_thread(tmp_path: Path) -> None:
    e = engine(tmp_path / "bw.db", commit_every=10)
    ingest_events(e.store, _year(6))
    seen: list[tuple[int, int]] = []
    original = e._commit

    def spy(*args: object, **kwargs: object) -> None:
        autocheckpoint = e.store.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        seen.append((len(_checkpoint_threads()), autocheckpoint))
        original(*args, **kwargs)  # type: ignore[arg-type]

    e._commit = spy  # type: ignore[method-assign]
    summary = e.run(day("2025-12-31"))
    assert summary.commits == len(seen) > 2
    assert set(seen) == {(1, 0)}  # from the first commit on, the thread checkpoints
    assert _checkpoint_threads() == []
    e.store.close()


def test_settle_waits_for_the_checkpoint_so_the_next_batch_reuses_the_wal(tmp_path: Path) -> None:
    """SQLite starts the WAL over only when a write transaction begins with every
    committed frame in the database file: a batch begun after settle() writes its frames
    from the start of the file instead of after the last batch's."""
    path = tmp_path / "w.db"
    wal = Path(f"{path}-wal")
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("CREATE TABLE t(x)")

    def batch() -> None:
        writer.execute("BEGIN IMMEDIATE")
        writer.executemany("INSERT INTO t VALUES (?)", [(bytes(1000),) for _ in range(400)])
        writer.execute("COMMIT")

    with Checkpointer(writer, str(path)) as checkpointer:
        checkpointer.settle()  # no thread yet: returns at once
        checkpointer.take_over()
        batch()
        checkpointer.poke()
        checkpointer.settle()
        assert checkpointer.checkpoints >= 1
        size = wal.stat().st_size
        for _ in range(3):
            batch()
            checkpointer.poke()
            checkpointer.settle()
            assert wal.stat().st_size == size
    assert writer.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 1600
    writer.close()


def test_a_run_of_province_sized_batches_starts_the_wal_over_at_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches above SETTLED_BATCHES events wait for the checkpoint of the one before:
    the WAL stays one batch long instead of growing by every batch of the run."""
    import streams.engine as engine_module

    sizes: dict[bool, int] = {}
    transitions: dict[bool, list[tuple[object, ...]]] = {}
    for settled in (True, False):
        monkeypatch.setattr(engine_module, "SETTLED_BATCHES", 0 if settled else 10**9)
        path = tmp_path / f"{settled}.db"
        e = engine(path, commit_every=20)
        ingest_events(e.store, _year(12))
        assert e.run(day("2025-12-31")).commits > 3
        sizes[settled] = Path(f"{path}-wal").stat().st_size
        query = "SELECT alert_id, day, kind, data FROM transitions ORDER BY id"
        transitions[settled] = e.store.db.execute(query).fetchall()
        e.store.close()
    assert transitions[True] == transitions[False]
    assert sizes[True] < sizes[False]
