"""A long run drops the transitions' secondary index and builds it in its last batch."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.jsonl import parse_lines
from connectors.parsed import Parsed
from streams import engine as engine_module
from streams import ingest as ingest_module
from streams.engine import BULK_EVENTS, defers_indexes
from streams.ingest import IngestCounts, ingest
from streams.store import DEFERRABLE_INDEXES, LOG_INDEX, Store
from tests import builders as b
from tests.builders import day, jsonl
from tests.functional.engine_helpers import engine, ingest_events, one_run, outcome

INDEX = "transitions_by_alert"
BY_ALERT = "SELECT data FROM transitions WHERE alert_id = ? ORDER BY id"
PENDING_ORDER = "SELECT seq FROM events WHERE seq > 0 AND day <= 800000 ORDER BY day, seq"


def _year(projects: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for n in range(projects):
        pid = f"P{n}"
        events += [b.registered(pid), b.approved(pid, "1000")]
        events += [b.payment(pid, "10", on=f"2025-{m:02d}-10") for m in (2, 5, 8, 11)]
    return events


def _has_index(path: Path) -> bool:
    """Seen from another connection: what a reader (status, the board) finds committed."""
    with sqlite3.connect(path) as other:
        return other.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (INDEX,)).fetchone() is not None


def _seen_at_each_commit(path: Path, seen: list[bool]) -> Any:
    return lambda done, pending: seen.append(_has_index(path))


def test_the_rule_defers_only_a_run_long_enough_and_longer_than_the_stored_transitions() -> None:
    assert not defers_indexes(BULK_EVENTS - 1, 0)
    assert defers_indexes(BULK_EVENTS, 0)
    assert defers_indexes(BULK_EVENTS, BULK_EVENTS)
    assert not defers_indexes(BULK_EVENTS, BULK_EVENTS + 1)
    assert defers_indexes(5 * BULK_EVENTS, 5 * BULK_EVENTS - 1)


def test_a_new_store_has_every_deferrable_index(tmp_path: Path) -> None:
    Store(tmp_path / "new.db").close()
    assert set(DEFERRABLE_INDEXES) == {INDEX}
    assert _has_index(tmp_path / "new.db")


def test_a_long_run_builds_the_index_at_its_end_and_agrees_with_a_run_that_kept_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept_path, bulk_path = tmp_path / "kept.db", tmp_path / "bulk.db"
    kept = engine(kept_path, commit_every=6)
    ingest_events(kept.store, _year(4))
    kept_seen: list[bool] = []
    kept.run(day("2025-12-31"), progress=_seen_at_each_commit(kept_path, kept_seen))

    monkeypatch.setattr(engine_module, "BULK_EVENTS", 1)
    bulk = engine(bulk_path, commit_every=6)
    ingest_events(bulk.store, _year(4))
    bulk_seen: list[bool] = []
    summary = bulk.run(day("2025-12-31"), progress=_seen_at_each_commit(bulk_path, bulk_seen))

    assert summary.commits > 2
    assert all(kept_seen)
    # Every commit but the last left the index out; the last built it.
    assert bulk_seen[:-1] == [False] * (len(bulk_seen) - 1) and bulk_seen[-1]
    assert outcome(bulk) == outcome(kept)
    alert_id = bulk.store.transition_rows()[0]["alert_id"]
    plan = " ".join(str(row) for row in bulk.store.db.execute(f"EXPLAIN QUERY PLAN {BY_ALERT}", (alert_id,)))
    assert INDEX in plan
    assert [r["alert_id"] for r in bulk.store.transition_rows(alert_id)] == [
        r["alert_id"] for r in kept.store.transition_rows(alert_id)
    ]


def test_a_run_shorter_than_the_stored_transitions_keeps_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bw.db"
    first = engine(path, commit_every=6)
    ingest_events(first.store, _year(4))
    first.run(day("2025-09-30"))
    stored = first.store.db.execute("SELECT COUNT(*) FROM transitions").fetchone()[0]
    assert stored > 2
    first.store.close()

    monkeypatch.setattr(engine_module, "BULK_EVENTS", 1)
    later = engine(path, commit_every=1)
    ingest_events(later.store, [b.payment(f"P{n}", "500", on=f"2025-10-1{n}") for n in range(3)])
    assert stored > 3
    seen: list[bool] = []
    summary = later.run(day("2025-10-12"), progress=_seen_at_each_commit(path, seen))
    assert summary.events == 3 and summary.commits >= 3
    assert len(seen) == summary.commits and all(seen)  # after each commit


def test_a_long_run_killed_midway_leaves_a_store_that_opens_without_waiting_and_the_next_run_rebuilds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = engine(tmp_path / "one.db")
    ingest_events(reference.store, _year(4))
    reference.run(day("2025-12-31"))

    monkeypatch.setattr(engine_module, "BULK_EVENTS", 1)
    path = tmp_path / "bw.db"
    killed = engine(path, commit_every=6)
    ingest_events(killed.store, _year(4))

    def die_after_the_first_commit(done: int, pending: int) -> None:
        raise KeyboardInterrupt  # the operator's Ctrl-C, or a crash, between two batches

    with pytest.raises(KeyboardInterrupt):
        killed.run(day("2025-12-31"), progress=die_after_the_first_commit)
    killed.store.close()
    assert not _has_index(path)
    assert Store(path).cursor()[0] is not None  # the first batch was committed

    # Opening the store must not write (rebuild the index) while a run holds the lock:
    # `budgetwatch status` during a long run would wait for the whole run.
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        reader = Store(path)
        assert reader.cursor()[0] is not None
        reader.close()
    finally:
        writer.execute("ROLLBACK")
        writer.close()

    resumed = engine(path, commit_every=6)
    resumed.run(day("2025-12-31"))
    assert _has_index(path)
    assert outcome(resumed) == outcome(reference)


# -- the log's index, deferred by a bulk import --------------------------------------------
def _has_log_index(path: Path) -> bool:
    with sqlite3.connect(path) as other:
        return other.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (LOG_INDEX,)).fetchone() is not None


def _import(store: Store, events: list[dict[str, Any]], seen: list[bool], origin: str = "bulk.jsonl") -> IngestCounts:
    return ingest(store, parse_lines(jsonl(events).splitlines(), origin),
                  on_batch=lambda _n: seen.append(_has_log_index(Path(store.path))))


def _log_in_business_order(store: Store) -> list[tuple[Any, ...]]:
    return store.db.execute("SELECT seq, event_id FROM events ORDER BY day, seq").fetchall()


def test_a_bulk_import_builds_the_log_index_at_its_end_and_logs_what_a_kept_index_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest_module, "BATCH", 5)
    kept, bulk = engine(tmp_path / "kept.db"), engine(tmp_path / "bulk.db")
    year = _year(4)  # 24 events: five batches
    kept_seen: list[bool] = []
    ingest_events(kept.store, year[:1])  # a log of one event...
    kept.store.drop_log_index()
    kept.store.build_log_index()
    for event in year[1:]:  # ...then imports of one: none is as large as the log
        _import(kept.store, [event], kept_seen)
    bulk_seen: list[bool] = []
    counts = _import(bulk.store, year, bulk_seen)

    assert counts.applied == len(year)
    assert all(kept_seen) and len(kept_seen) == len(year) - 1
    assert bulk_seen == [False] * 5  # every batch went in without it
    assert _has_log_index(tmp_path / "bulk.db")
    plan = " ".join(str(r) for r in bulk.store.db.execute(f"EXPLAIN QUERY PLAN {PENDING_ORDER}"))
    assert LOG_INDEX in plan
    assert _log_in_business_order(bulk.store) == _log_in_business_order(kept.store)
    for e in (kept, bulk):
        e.run(day("2025-12-31"))
    assert outcome(bulk) == outcome(kept)


def test_an_import_smaller_than_the_log_keeps_the_index_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest_module, "BATCH", 5)
    store = Store(tmp_path / "bw.db")
    ingest_events(store, _year(3))  # 18 events
    seen: list[bool] = []
    _import(store, _year(5)[18:], seen, "later.jsonl")  # 12 more: fewer than the log held
    assert seen == [True, True, True]
    # Once it has appended as many as the log held, the rest goes in without it.
    seen.clear()
    _import(store, _year(10)[30:], seen, "large.jsonl")  # 30 more into a log of 30
    assert seen == [True] * 5 + [False] * 2  # the sixth batch and the last, empty, flush
    assert _has_log_index(tmp_path / "bw.db")


def test_an_import_that_fails_midway_keeps_its_batches_and_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest_module, "BATCH", 5)
    store = Store(tmp_path / "bw.db")
    lines = jsonl(_year(2)).splitlines()

    def broken() -> Iterator[Parsed]:
        yield from parse_lines(lines[:7], "cut.jsonl")
        raise OSError("the disk holding the file went away")

    with pytest.raises(OSError, match="went away"):
        ingest(store, broken())
    assert store.max_seq() == 5  # the first batch; the second was never complete
    assert _has_log_index(tmp_path / "bw.db")


def test_a_run_builds_the_log_index_an_import_killed_midway_left_out(tmp_path: Path) -> None:
    reference = one_run(tmp_path / "ref.db", _year(3), day("2025-12-31"))
    path = tmp_path / "killed.db"
    killed = engine(path)
    ingest_events(killed.store, _year(3))
    killed.store.drop_log_index()  # where a kill -9 during a bulk import leaves the store
    killed.store.close()
    reopened = engine(path)
    assert not _has_log_index(path)  # opening it does not write (nor wait for a writer)
    reopened.run(day("2025-12-31"))
    assert _has_log_index(path)
    assert outcome(reopened) == outcome(reference)
