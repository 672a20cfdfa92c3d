"""The SQLite store's reads: the pending events in business order, page by page, and
the alert listings filtered in SQL."""

from __future__ import annotations

import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budget.events import Record
from connectors.parsed import Parsed
from streams.store import Rejection, Store
from tests import builders as b


def _payments(days: list[int]) -> list[tuple[Record, str]]:
    return [(Record("payment", f"E{n}", day, f"P{n % 3}", 100, None), "test") for n, day in enumerate(days)]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    days=st.lists(st.integers(0, 6), min_size=0, max_size=60),
    late=st.lists(st.integers(0, 6), max_size=10),
    chunk=st.integers(1, 7),
    clock=st.one_of(st.none(), st.integers(0, 5)),
    until=st.integers(0, 6),
    in_memory=st.booleans(),  # a file is read through a second connection, :memory: cannot be
)
def test_pending_pages_give_the_business_order_whatever_the_page_size(
    days: list[int], late: list[int], chunk: int, clock: int | None, until: int, in_memory: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp, Store(":memory:" if in_memory else Path(tmp) / "s.db") as store:
        store.append(_payments(days), [])
        seq = store.max_seq()
        store.append([(Record("payment", f"L{n}", d, "P9", 1, None), "test") for n, d in enumerate(late)],
                     [Rejection("x", "y", "z")])
        max_seq = store.max_seq()
        rows = list(store.db.execute("SELECT seq, event_id, day FROM events"))
        floor = clock if clock is not None else -1
        # late arrivals (after the cursor, dated on or before the clock) first, then later days
        first = sorted((d, s, e) for s, e, d in rows if s > seq and d <= floor) if clock is not None else []
        then = sorted((d, s, e) for s, e, d in rows if floor < d <= until)
        expected = [e for _, _, e in first + then]
        got = [r.event_id for r in store.pending(clock, seq if clock is not None else 0, until, max_seq, chunk=chunk)]
        assert got == expected



def test_late_arrivals_are_read_page_by_page_too(tmp_path: Path) -> None:
    # A region's year imported into a store whose clock is already at year end arrives
    # all "late": it must be read a page at a time, not fetched whole into memory.
    with Store(tmp_path / "s.db") as store:
        store.append(_payments([3, 1, 2] * 10), [])
        seq = store.max_seq()
        store.append([(Record("payment", f"L{n}", n % 4, "P9", 1, None), "test") for n in range(25)], [])
        statements: list[str] = []
        store.reader().set_trace_callback(statements.append)
        got = list(store.pending(5, seq, 6, store.max_seq(), chunk=4))
        assert [r.event_id for r in got] == [f"L{n}" for n in sorted(range(25), key=lambda n: (n % 4, n))]
        reads = [s for s in statements if "FROM events WHERE" in s and "ORDER BY" in s]
        assert len(reads) >= 25 // 4 and all(s.rstrip().endswith("LIMIT 4") for s in reads)


def test_a_few_late_arrivals_are_found_by_seq_without_walking_the_processed_log(tmp_path: Path) -> None:
    # A live service runs after every small batch: its new events must be found by their
    # seq range, not by scanning the day index over everything processed before.
    with Store(tmp_path / "s.db") as store:
        store.append(_payments([n % 5 for n in range(200)]), [])
        seq = store.max_seq()
        store.append([(Record("payment", f"L{n}", 2, "P9", 1, None), "test") for n in range(3)], [])
        statements: list[str] = []
        store.reader().set_trace_callback(statements.append)
        got = [r.event_id for r in store.pending(4, seq, 4, store.max_seq(), chunk=100)]
        assert got == ["L0", "L1", "L2"]
        store.reader().set_trace_callback(None)
        late = [s for s in statements if "WHERE seq >" in s and "day <= 4" in s]
        assert len(late) == 1
        plan = " ".join(str(row[-1]) for row in store.reader().execute(f"EXPLAIN QUERY PLAN {late[0]}"))
        assert "INTEGER PRIMARY KEY" in plan and "events_by_day" not in plan

def test_alert_listings_filter_by_department_in_sql(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        batch = store.begin()
        rows = [b.alert_transition(alert_id=f"A{n}", department_id=f"D{n % 2}") for n in range(4)]
        batch.add_transitions(
            [(r["alert_id"], 739000, "firing", r["department_id"], orjson.dumps(r).decode()) for r in rows]
        )
        batch.commit(projects=[], alerts=rows, clock=739000, seq=0)
        assert [r["alert_id"] for r in store.listed_alerts(every_transition=False, department="D1")] == ["A1", "A3"]
        assert [r["alert_id"] for r in store.listed_alerts(every_transition=True, department="D0")] == ["A0", "A2"]
        assert len(store.listed_alerts(every_transition=False, department=None)) == 4
        assert store.listed_alerts(every_transition=True, department="D9") == []



def test_an_ingest_runs_with_fewer_collections_and_restores_the_threshold(tmp_path: Path) -> None:
    import gc

    from connectors.jsonl import parse_lines
    from streams.gc_tuning import RUN_GEN0_THRESHOLD
    from streams.ingest import ingest

    before = gc.get_threshold()
    seen: list[int] = []

    text = b.jsonl([b.registered("P1"), b.payment("P1", "10", on="2025-03-01")])

    def lines() -> Iterator[Parsed]:
        for parsed in parse_lines(text.splitlines(), "t.jsonl"):
            seen.append(gc.get_threshold()[0])
            yield parsed

    with Store(tmp_path / "s.db") as store:
        counts = ingest(store, lines())
    assert counts.applied == 2 and seen == [max(before[0], RUN_GEN0_THRESHOLD)] * 2
    assert gc.get_threshold() == before


def test_a_batch_being_appended_holds_its_details_at_their_length(tmp_path: Path) -> None:
    """Each stored event's details are encoded again for the log; orjson's output buffer
    (4 KiB and more a value) held for a whole batch was most of an ingest's peak RSS."""
    details = {"name": "2025年青石镇农田水利项目", "department_id": "D287", "department_name": "青石镇人民政府",
               "fund_source": "general", "fiscal_year": 2025, "plan": [0.1, 0.3, 0.6, 1.0]}
    records = [(Record("project_registered", f"R{n}", 739250, f"P{n}", None, details), "test")
               for n in range(2_000)]
    with Store(tmp_path / "log.db") as store:
        tracemalloc.start()
        try:
            store.append(records, [])
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        stored = store.db.execute("SELECT COUNT(*), MAX(LENGTH(details)) FROM events").fetchone()
    assert stored[0] == len(records)
    per_record = peak / len(records)
    assert per_record < 1_000, f"{per_record:.0f} bytes of Python heap per {stored[1]}-byte record"


def test_a_store_on_a_read_only_place_is_named_as_such(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A backup copy on a read-only disk was called "not a budgetwatch store": in WAL mode
    even a reader must create -wal/-shm beside it (audit). Root passes permission checks,
    so the read-only place is stood in for by os.access."""
    import os

    from streams import store as store_module

    db = tmp_path / "copy.db"
    Store(db).close()
    assert store_module._unwritable(db) is None  # writable here: the usual message stands
    real_access = os.access
    monkeypatch.setattr(store_module.os, "access",
                        lambda p, mode: False if mode == os.W_OK else real_access(p, mode))
    problem = store_module._unwritable(db)
    assert problem is not None and "数据库文件本身完好" in problem and "不可写" in problem
    garbage = tmp_path / "notes.txt"
    garbage.write_text("not a database", encoding="utf-8")
    assert store_module._unwritable(garbage) is None  # not SQLite: the file is the problem
    assert "不可写" in (store_module._unwritable(tmp_path / "new.db") or "")


def test_a_batch_sqlite_already_rolled_back_rolls_back_without_hiding_the_error(tmp_path: Path) -> None:
    """On a full disk SQLite rolls the transaction back itself; the batch's own ROLLBACK
    then raised "cannot rollback - no transaction is active", in place of the real error."""
    with Store(tmp_path / "bw.db") as store:
        batch = store.begin()
        store.db.execute("ROLLBACK")  # as SQLITE_FULL leaves it
        batch.rollback()
        assert not batch.open and not store.db.in_transaction
        store.begin().rollback()  # and the store goes on


def test_a_store_path_that_is_a_directory_or_in_none_is_named_as_such(tmp_path: Path) -> None:
    """`serve --db some/dir` said "cannot open as a budgetwatch store … point --db at a store
    or a new file", which is what it did (live-operations audit)."""
    from streams.errors import StoreError

    with pytest.raises(StoreError, match="是目录：请给出数据库文件名"):
        Store(tmp_path)
    with pytest.raises(StoreError, match=r"目录 .* 不存在：请先创建它"):
        Store(tmp_path / "missing" / "bw.db")
    assert not (tmp_path / "missing").exists()


def test_a_subjects_history_is_its_own_alerts_transitions_in_order_read_through_the_alert_index(
    tmp_path: Path,
) -> None:
    def alert(alert_id: str, subject_type: str, subject_id: str) -> dict[str, object]:
        return b.alert_transition(alert_id=alert_id, subject_type=subject_type, subject_id=subject_id)

    mine = [alert("2025:low_execution:project:P1", "project", "P1"), alert("2026:stalled:project:P1", "project", "P1")]
    others = [
        alert("2025:low_execution:project:X:project:P1", "project", "X:project:P1"),  # ends the same way
        alert("2025:department_low_execution:department:P1", "department", "P1"),
        alert("2025:low_execution:project:P10", "project", "P10"),
    ]
    with Store(tmp_path / "s.db") as store:
        batch = store.begin()
        # interleaved, so the order is the transitions' and not the alerts'
        order = [mine[1], others[0], mine[0], others[1], mine[1], others[2], mine[0]]
        batch.add_transitions([
            (r["alert_id"], 739000 + n, "firing", "D101", orjson.dumps({**r, "date": n}).decode())
            for n, r in enumerate(order)
        ])
        batch.commit(projects=[], alerts=mine + others, clock=739010, seq=0)
        statements: list[str] = []
        store.db.set_trace_callback(statements.append)
        got = store.subject_transitions("project", "P1")
        store.db.set_trace_callback(None)
    assert [(t["alert_id"], t["date"]) for t in got] == [
        ("2026:stalled:project:P1", 0), ("2025:low_execution:project:P1", 2),
        ("2026:stalled:project:P1", 4), ("2025:low_execution:project:P1", 6),
    ]
    reads = [s for s in statements if "FROM transitions" in s]
    assert len(reads) == 1 and "alert_id IN" in reads[0]
