"""The embedded store: one SQLite file in WAL mode.

- ``events``: the append-only log; ``event_id`` is UNIQUE, so ingesting the
  same input twice appends nothing (idempotent ingest).
- ``rejected``: the dead-letter store — raw input, source, reason.
- ``projects``, ``alerts``, ``transitions``, ``outbox``, ``cursor``: the derived
  state, written by the engine in one transaction per commit, so a crash
  resumes from the last commit with nothing lost or counted twice.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, TypeVar

import orjson

from alerts.dispositions import AWAITING
from alerts.lifecycle import YEAR_CLOSED
from budget.calendar import year_bounds
from budget.events import Record, record_to_json_dict
from budget.ledger import DepartmentName, other_year_reason, refused_year_reason, registered_year
from connectors.kept_json import kept_dumps
from streams.errors import StoreError

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    day INTEGER NOT NULL,
    project_id TEXT NOT NULL,
    amount INTEGER,
    details TEXT,
    source TEXT
);
CREATE TABLE IF NOT EXISTS rejected (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    reason TEXT NOT NULL,
    raw TEXT NOT NULL
);
-- INSERT_REJECTION_ONCE looks a dead letter up by its source before keeping it.
CREATE INDEX IF NOT EXISTS rejected_by_source ON rejected(source);
CREATE TABLE IF NOT EXISTS cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    clock INTEGER,
    seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS projects (
    project_id TEXT PRIMARY KEY,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alerts (
    alert_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    department_id TEXT NOT NULL,
    data TEXT NOT NULL,
    awaiting INTEGER  -- 1 while a reduction of the alert awaits the bureau (data's disposition)
);
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY,
    alert_id TEXT NOT NULL,
    day INTEGER NOT NULL,
    kind TEXT NOT NULL,
    department_id TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_by_department ON alerts(department_id, status);
-- One row per transition to deliver; the content is the transition's own JSON
-- (join on transition_id), stored once.
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    transition_id INTEGER NOT NULL,
    alert_id TEXT NOT NULL,
    department_id TEXT NOT NULL,
    kind TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- The fiscal year each project code was first logged for: a code is one year's project,
-- and a registration for another year is refused at ingest, so the log never holds two
-- (a replay in business order then decides as the live run did).
-- The notifier's copy of budget-alerts: the digest of every transition message stored,
-- so a message delivered again (Kafka is at-least-once) is stored once.
CREATE TABLE IF NOT EXISTS alert_messages (
    digest TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS registrations (
    project_id TEXT PRIMARY KEY,
    fiscal_year INTEGER NOT NULL
);
"""

# Secondary indexes a long run drops in its first batch and builds again in its last
# (Batch.defer_indexes, Batch.build_indexes). Kept up one row at a time, each
# transition is a random insert into a B-tree far larger than the page cache: at 100k
# projects the transitions' inserts took 13.5-14.3 s with it and 6.3-7.8 s without
# (timed per call, ~90 s replays); building it at the end takes 1.1 s.
# Queries stay correct without them, only slower, while such a run is under way.
DEFERRABLE_INDEXES = {
    "transitions_by_alert": "CREATE INDEX IF NOT EXISTS transitions_by_alert ON transitions(alert_id, id)",
}
SCHEMA += "".join(f"{ddl};\n" for ddl in DEFERRABLE_INDEXES.values())

# The board's default list: the alerts firing and those whose reduction awaits the bureau.
# Partial, so only those rows are in it: a year's resolved alerts (most of them) cost a
# write nothing more. Without it the list read every alert's JSON: 0.79 s at 100k projects
# (176k alerts), 0.09 s with it. Created after the migration that adds `awaiting`.
OPEN_ALERTS_INDEX = "alerts_open"
OPEN_ALERTS = "(status = 'firing' OR awaiting = 1)"
OPEN_ALERTS_DDL = f"CREATE INDEX IF NOT EXISTS {OPEN_ALERTS_INDEX} ON alerts(alert_id) WHERE {OPEN_ALERTS}"

# The log in business order: every run reads its pending events along it. A bulk import
# drops it and builds it once at its end (streams.ingest): kept up row by row it was ~30%
# of an import's CPU (at 100k projects, 3.05M events: 41-42 s of CPU against 35-36 s
# with the build at the end, which takes ~3 s). A run builds it if an import was killed
# before its end; until then queries stay correct, only slower.
LOG_INDEX = "events_by_day"
LOG_INDEX_DDL = f"CREATE INDEX IF NOT EXISTS {LOG_INDEX} ON events(day, seq)"
SCHEMA += f"{LOG_INDEX_DDL};\n"

# Only these event types need their details to fold; others skip the JSON decode.
_DETAIL_TYPES = (
    "('project_registered','indicator_defined','indicator_reported','alert_disposed','disposition_approved')"
)
_RECORD_COLUMNS = (
    f"type, event_id, day, project_id, amount, "
    f"CASE WHEN type IN {_DETAIL_TYPES} THEN details END"
)


# One import's refused other-year registrations: project -> (refused year, owner's year,
# the refused registrations' sources), carried from batch to batch (Store._other_year).
RefusedYears = dict[str, tuple[int, int, frozenset[str]]]


@dataclass(frozen=True, slots=True)
class Rejection:
    source: str
    reason: str
    raw: str


@dataclass(frozen=True, slots=True)
class AppendResult:
    applied: int
    duplicates: int
    # Ids already logged with different content: dead letters, not duplicates.
    conflicts: list[Rejection] = field(default_factory=list)


# Pending events are decoded into Records this many at a time (Store.pending): a whole
# page (20,000) at once held as many decoded details at the start of a year
# (registrations, indicator definitions), +7 MB of a 10k-project replay's peak.
DECODE_SLICE = 1000

# The writer's page cache. Measured at 100k projects: 16 MB and 64 MB ingest (93k–100k
# events/s) and replay (46.7k–49.5k) alike — the OS page cache is behind it — while
# 64 MB added ~50 MB to every process's peak RSS. The reader keeps SQLite's 2 MB.
PAGE_CACHE_KIB = 16 * 1024
# The first logged year of each code registered by the events ``where`` selects.
REMEMBER_YEARS = (
    "INSERT OR IGNORE INTO registrations(project_id, fiscal_year)"
    " SELECT project_id, CAST(json_extract(details, '$.fiscal_year') AS INTEGER) FROM events"
    " WHERE {where} AND type = 'project_registered' ORDER BY {order}"
)
# A dead letter is kept once: the same input refused again for the same reason from the
# same place (a file imported twice, a message delivered again, a replay) adds nothing.
INSERT_REJECTION_ONCE = (
    "INSERT INTO rejected(source, reason, raw) SELECT ?1, ?2, ?3 WHERE NOT EXISTS"
    " (SELECT 1 FROM rejected WHERE source = ?1 AND reason = ?2 AND raw = ?3)"
)
# What a current store has; a deferred index may be missing (a long run or a bulk import
# is under way, or was killed): the next run builds it, so opening the store never waits
# for the writer.
_OBJECTS = {*re.findall(r"CREATE (?:TABLE|INDEX) IF NOT EXISTS (\w+)", SCHEMA), OPEN_ALERTS_INDEX} - {
    *DEFERRABLE_INDEXES, LOG_INDEX}


def _unwritable(path: Path) -> str | None:
    """Why a store that is there cannot be opened when it is the place, not the file: in
    WAL mode even a reader creates -wal and -shm files beside it (a read-only disk or a
    copy in a directory one may not write was called "not a budgetwatch store")."""
    directory = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        return f"{path} 是目录：请给出数据库文件名，如 {path / 'budgetwatch.db'}（the path is a directory）"
    if not directory.is_dir():
        return f"目录 {directory} 不存在：请先创建它，或改用已有的目录（no directory {directory}）"
    if not path.is_file():
        if directory.is_dir() and not os.access(directory, os.W_OK):
            return (f"目录 {directory} 不可写，无法在其中创建数据库：请检查权限或改用可写的位置"
                    "（directory not writable）")
        return None
    try:
        with path.open("rb") as handle:
            if handle.read(16) != b"SQLite format 3\x00":
                return None
    except OSError:
        return None
    if not os.access(directory, os.W_OK) or not os.access(path, os.W_OK):
        return (f"数据库文件本身完好，但它或所在目录 {directory} 不可写（磁盘只读或权限不足）；WAL 模式下"
                "读取也要在同一目录创建 -wal/-shm 文件：请把数据库复制到可写的位置，或修正权限"
                "（store or its directory is not writable）")
    return None


def _refusal(source: str, reason: str, record: Record) -> Rejection:
    """A record refused at ingest, kept whole as contract JSON with its type and reason."""
    return Rejection(source, f"{record.type}: {reason}", orjson.dumps(record_to_json_dict(record)).decode())


class Store:
    """A connection to the SQLite file with the operations the runtimes need."""

    def __init__(self, path: str | Path, *, synchronous: str = "FULL", existing: bool = False) -> None:
        """``existing``: the store must already be there (commands that only read: a
        mistyped --db must not answer "no alerts" from a new empty file)."""
        self.path = str(path)
        self.synchronous = synchronous
        self._reader: sqlite3.Connection | None = None
        if existing and not Path(self.path).is_file():
            raise StoreError(
                f"找不到数据库 {self.path}：请检查 --db（或 BUDGETWATCH_DB），或先用 "
                f"`budgetwatch ingest 文件 --db …` 导入数据创建（no budgetwatch store at {self.path}）"
            )
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA busy_timeout=30000")
            if not self._current():
                # Only a new or older store is written to on opening: a reader must not
                # wait for the write lock a running batch holds.
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.executescript(SCHEMA)
                # One transaction, its checks inside: a kill midway leaves the store as it
                # was, and a second process opening it meanwhile waits, then finds it done.
                with self.transaction():
                    self._migrate()
                self.db.execute("INSERT OR IGNORE INTO cursor(id, clock, seq) VALUES (1, NULL, 0)")
                self.db.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            self.db.execute(f"PRAGMA synchronous={synchronous}")
            self.db.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")
        except sqlite3.DatabaseError as err:
            if "locked" in str(err):
                raise StoreError(
                    f"{self.path}：另一个进程（`run` 或 `serve`？）正在写入这个数据库；请待其结束后重试，"
                    "或把事件通过 HTTP 发给 `serve`（another process is writing to this store）"
                ) from None
            if (problem := _unwritable(Path(self.path))) is not None:
                raise StoreError(f"{self.path}：{problem}（{err}）") from None
            raise StoreError(
                f"{self.path}：无法作为 budgetwatch 数据库打开（{err}）；请让 --db（或 BUDGETWATCH_DB）"
                "指向 budgetwatch 数据库或一个新文件（cannot open as a budgetwatch store）"
            ) from None

    def _current(self) -> bool:
        """Whether the file already holds this version's tables, in WAL mode (one read)."""
        try:
            objects = {name for (name,) in self.db.execute("SELECT name FROM sqlite_master")}
            if not objects >= _OBJECTS:
                return False
            row = self.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            mode = self.db.execute("PRAGMA journal_mode").fetchone()[0]
        except sqlite3.OperationalError:
            return False
        return row is not None and row[0] == str(SCHEMA_VERSION) and str(mode).lower() == "wal"

    def _migrate(self) -> None:
        if self.db.execute("SELECT NOT EXISTS (SELECT 1 FROM registrations)").fetchone()[0]:
            # A store from before the registrations table: the first logged year of each code.
            # in business order, the order in which the ledger met them
            self.db.execute(REMEMBER_YEARS.format(where="1", order="day, seq"))
        # Stores made before the outbox referenced its transition kept a copy of it.
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(outbox)")}
        if "payload" in columns:
            self.db.execute("ALTER TABLE outbox DROP COLUMN payload")
        if "awaiting" not in {row[1] for row in self.db.execute("PRAGMA table_info(alerts)")}:
            # Stores made before the board's open-alerts index: the flag from each alert's JSON.
            self.db.execute("ALTER TABLE alerts ADD COLUMN awaiting INTEGER")
            self.db.execute(
                "UPDATE alerts SET awaiting = 1 WHERE json_extract(data, '$.disposition.status') = ?", (AWAITING,)
            )
        self.db.execute(OPEN_ALERTS_DDL)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self.db.close()

    def reader(self) -> sqlite3.Connection:
        """A second connection for the long reads of a run (its pending events).

        Its page cache is its own: reading the log in business order — a random walk
        over pages logged in arrival order — no longer competes with a batch's dirty
        pages for the writer's cache (each miss there had SQLite spill dirty pages to
        the WAL early). It sees committed data only, which is all a run reads: the
        events were committed at ingest, and what a batch appends to the log (derived
        events) is beyond the run's max seq."""
        if self._reader is None:
            if self.path == ":memory:" or self.path == "":
                return self.db  # a private in-memory database has no second connection
            self._reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._reader.execute("PRAGMA busy_timeout=30000")
            self._reader.execute("PRAGMA query_only=1")
        return self._reader

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction (BEGIN IMMEDIATE), committed at the end of the block or
        rolled back on an error; inside a transaction the caller opened, only a part of it."""
        db = self.db
        own = not db.in_transaction
        if own:
            db.execute("BEGIN IMMEDIATE")
        try:
            yield
            if own:
                db.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back already (a full disk): a second ROLLBACK would
            # raise "no transaction is active" over the real error.
            if own and db.in_transaction:
                db.execute("ROLLBACK")
            raise

    # -- the log ---------------------------------------------------------
    def has_log_index(self) -> bool:
        return self.db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", (LOG_INDEX,)
        ).fetchone() is not None

    def drop_log_index(self) -> None:
        """For a bulk import: its rows go in without the index, which it builds at its end."""
        with self.transaction():
            self.db.execute(f"DROP INDEX IF EXISTS {LOG_INDEX}")

    def build_log_index(self) -> None:
        """Build the log's index if a bulk import dropped it (a no-op, and no write, if not)."""
        if not self.has_log_index():
            with self.transaction():
                self.db.execute(LOG_INDEX_DDL)

    def append(
        self, records: Sequence[tuple[Record, str]], rejections: Sequence[Rejection],
        *, refused_years: RefusedYears | None = None,
    ) -> AppendResult:
        """Append validated records (with their source) and rejections in one transaction
        (or within the caller's, when one is open: an atomic ingest, see ingest())."""
        db = self.db
        with self.transaction():
            other_year = self._other_year(records, refused_years)
            # (Record is a plain tuple: type, event_id, day, project_id, amount, details)
            rows = [
                (r[1], r[0], r[2], r[3], r[4], kept_dumps(r[5]) if r[5] else None, source)
                for r, source in records
            ]
            if other_year:
                rows = [row for n, row in enumerate(rows) if n not in other_year]
            top = self.max_seq()
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO events(event_id, type, day, project_id, amount, details, source)"
                " VALUES (?, ?, ?, ?, ?, CAST(? AS TEXT), ?)",  # details: UTF-8 bytes (TransitionRow)
                rows,
            )
            applied = db.total_changes - before
            self._remember_years(top)
            differing = self._conflicts(self._not_inserted(rows, top)) if applied < len(rows) else []
            duplicates = len(rows) - applied - len(differing)
            conflicts = [*other_year.values(), *differing]
            refused = [*rejections, *conflicts]
            if refused:
                db.executemany(INSERT_REJECTION_ONCE, [(r.source, r.reason, r.raw) for r in refused])
            self._bump(
                {
                    "events_applied": applied,
                    "events_duplicate": duplicates,
                    "events_rejected": len(refused),
                }
            )
        return AppendResult(applied, duplicates, conflicts)

    def _other_year(
        self, records: Sequence[tuple[Record, str]], refused_years: RefusedYears | None = None
    ) -> dict[int, Rejection]:
        """Registrations of a code already logged for another fiscal year (by position in
        ``records``), refused; the others' years are remembered for the next. Events of a
        refused code dated in the refused year go with it, and so do those of its own row
        (a projects sheet's approval, dated in December for the next year's budget).
        ``refused_years`` (project -> (refused year, owner's year, the refused
        registrations' sources)) carries the refusals from batch to batch of one import, so a batch
        boundary between a registration and its approval changes nothing."""
        refused_years = {} if refused_years is None else refused_years
        registrations = [(n, r, source) for n, (r, source) in enumerate(records) if r[0] == "project_registered"]
        refused: dict[int, Rejection] = {}
        if registrations:
            owners: dict[str, int] = dict(self._where_in(
                "SELECT project_id, fiscal_year FROM registrations WHERE project_id IN ({})",
                sorted({r.project_id for _, r, _ in registrations}),
            ))
            # Already logged ids are left to the duplicate / conflict checks.
            logged = {i for (i,) in self._where_in(
                "SELECT event_id FROM events WHERE event_id IN ({})", [r.event_id for _, r, _ in registrations]
            )}
            for n, record, source in registrations:
                if record.event_id in logged:
                    continue
                year = registered_year(record)
                owner = owners.get(record.project_id)
                if owner is None:
                    owners[record.project_id] = year  # within the batch; stored once logged
                elif owner != year:
                    refused[n] = _refusal(source, other_year_reason(record.project_id, owner, year), record)
                    held = refused_years.get(record.project_id)
                    rows = held[2] if held is not None and held[0] == year else frozenset()
                    refused_years[record.project_id] = (year, owner, rows | {source})  # a row pasted twice
        companions = [(n, r, source) for n, (r, source) in enumerate(records)
                      if r.project_id in refused_years and n not in refused
                      and r.type != "project_registered"] if refused_years else []
        if companions:
            # A new year's sheet reusing last year's codes: its approvals and payments,
            # dated in the new year, would go into last year's project (an approval
            # replaces its budget). They go with their refused registration.
            logged_companions = {i for (i,) in self._where_in(
                "SELECT event_id FROM events WHERE event_id IN ({})", [r.event_id for _, r, _ in companions]
            )}
            for n, record, source in companions:
                refused_year, owner, rows = refused_years[record.project_id]
                first, last = year_bounds(refused_year)
                if record.event_id in logged_companions or not (first <= record.day <= last or source in rows):
                    continue  # logged already (the duplicate checks); or the owner's year's
                refused[n] = _refusal(source, refused_year_reason(record.project_id, owner, refused_year), record)
        return refused

    def _where_in(self, query: str, values: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
        """Rows of ``query`` with its ``IN ({})`` filled, in chunks SQLite takes."""
        for start in range(0, len(values), 500):
            chunk = values[start:start + 500]
            yield from self.db.execute(query.format(",".join("?" for _ in chunk)), chunk)

    def _remember_years(self, top: int) -> None:
        """The year of each code first registered by rows this batch logged (seq > top)."""
        self.db.execute(REMEMBER_YEARS.format(where="seq > ?", order="seq"), (top,))

    def _not_inserted(self, rows: list[tuple[Any, ...]], top: int) -> list[tuple[Any, ...]]:
        """The rows the INSERT OR IGNORE left out (a few of a batch, as a rule): only
        they are compared with the log."""
        inserted = {event_id for (event_id,) in self.db.execute("SELECT event_id FROM events WHERE seq > ?", (top,))}
        taken: set[str] = set()
        left: list[tuple[Any, ...]] = []
        for row in rows:
            event_id = row[0]
            if event_id in inserted and event_id not in taken:
                taken.add(event_id)  # the first occurrence went in
            else:
                left.append(row)
        return left

    def _conflicts(self, rows: list[tuple[Any, ...]]) -> list[Rejection]:
        """Rows not inserted whose event_id is logged with other content (voucher 0001 of
        another unit, a project listed twice): a duplicate id must be the same event, or
        that money would vanish without a trace. Checked in SQL, only when a batch had
        duplicates (a re-import), in the open transaction."""
        db = self.db
        db.execute(
            "CREATE TEMP TABLE IF NOT EXISTS incoming(n INTEGER PRIMARY KEY, event_id TEXT, type TEXT,"
            " day INTEGER, project_id TEXT, amount INTEGER, details TEXT, source TEXT)"
        )
        db.execute("DELETE FROM incoming")
        db.executemany(
            "INSERT INTO incoming(event_id, type, day, project_id, amount, details, source)"
            " VALUES (?, ?, ?, ?, ?, CAST(? AS TEXT), ?)",
            rows,
        )
        found = db.execute(
            "SELECT i.event_id, i.type, i.day, i.project_id, i.amount, i.details, i.source, e.source"
            " FROM incoming i JOIN events e ON e.event_id = i.event_id"
            # Only the date may differ for the same line of the same file re-imported: a
            # newer release reads a datetime's date in China time. (A file re-exported
            # under the same name with other content is other content.)
            " WHERE e.type IS NOT i.type OR e.project_id IS NOT i.project_id OR e.amount IS NOT i.amount"
            " OR e.details IS NOT i.details OR (e.day IS NOT i.day AND e.source IS NOT i.source)"
            " ORDER BY i.n"
        ).fetchall()
        db.execute("DELETE FROM incoming")
        return [
            Rejection(
                source,
                f"事件编号 {event_id!r} 已用于另一条内容不同的事件（见 {first or '事件日志'}）：一个编号只能"
                f"对应一个事件，请给这条另编号（event_id {event_id!r} is already logged with other content "
                f"(from {first or 'the log'}): an event_id names one event; give this one its own id)",
                orjson.dumps(record_to_json_dict(Record(
                    kind, event_id, day, project_id, amount, orjson.loads(details) if details else None
                ))).decode(),
            )
            for event_id, kind, day, project_id, amount, details, source, first in found
        ]

    def _bump(self, counters: dict[str, int]) -> None:
        self.db.executemany(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + excluded.value",
            [(k, str(v)) for k, v in counters.items() if v],
        )

    def counters(self) -> dict[str, int]:
        keys = ("events_applied", "events_duplicate", "events_rejected")
        found = dict(
            self.db.execute(
                "SELECT key, CAST(value AS INTEGER) FROM meta WHERE key IN (?, ?, ?)", keys
            ).fetchall()
        )
        return {k: int(found.get(k, 0)) for k in keys}

    def max_seq(self) -> int:
        return int(self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])

    def min_day(self) -> int | None:
        row = self.db.execute("SELECT MIN(day) FROM events").fetchone()
        return None if row[0] is None else int(row[0])

    def max_day(self, not_after: int | None = None) -> int | None:
        if not_after is None:
            row = self.db.execute("SELECT MAX(day) FROM events").fetchone()
        else:
            row = self.db.execute("SELECT MAX(day) FROM events WHERE day <= ?", (not_after,)).fetchone()
        return None if row[0] is None else int(row[0])

    def event_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def pending(
        self, clock: int | None, seq: int, until: int, max_seq: int, *, chunk: int = 20000
    ) -> Iterator[Record]:
        """Events not yet processed, in business order: late arrivals (dated on or
        before the clock) first, then by (day, seq) up to ``until``.

        Read a page at a time (``chunk`` events), lazily, and decoded in slices that are
        chained in C: taking an event costs no Python frame (a generator or two per event
        and a Record._make call were ~2% of a replay's instructions)."""
        return chain.from_iterable(self._pending_pages(clock, seq, until, max_seq, chunk))

    def _pending_pages(
        self, clock: int | None, seq: int, until: int, max_seq: int, chunk: int
    ) -> Iterator[list[Record]]:
        loads = orjson.loads
        new = tuple.__new__
        db = self.reader()

        def slices(rows: list[tuple[Any, ...]]) -> Iterator[list[Record]]:
            # tuple.__new__ is what Record._make does (every row has Record's six columns).
            for start in range(0, len(rows), DECODE_SLICE):
                yield [
                    new(Record, row) if row[5] is None
                    else Record(row[0], row[1], row[2], row[3], row[4], loads(row[5]))
                    for row in rows[start:start + DECODE_SLICE]
                ]

        # Keyset pages that each stay on the (day, seq) index as a range: the rest of the
        # last page's day, then the days after it. A page never rescans what came before
        # it, so a live service whose events all carry today's date does not read the
        # whole day again on every run, and memory holds one page however many wait.
        def page(where: str, order: str, args: tuple[int, ...]) -> list[tuple[Any, ...]]:
            query = f"SELECT {_RECORD_COLUMNS} FROM events WHERE {where} ORDER BY {order} LIMIT ?"
            return db.execute(query, (*args, chunk)).fetchall()

        def pages(after_day: int, last_day: int, after_seq: int) -> Iterator[list[Record]]:
            """Events dated in (after_day, last_day] with seq in (after_seq, max_seq]."""
            day, seq_in_day = after_day, max_seq
            while True:
                rows: list[tuple[Any, ...]] = []
                if seq_in_day < max_seq:
                    rows = page("day = ? AND seq > ? AND seq <= ?", "seq", (day, seq_in_day, max_seq))
                if not rows:
                    rows = page(
                        "day > ? AND day <= ? AND seq > ? AND seq <= ?", "day, seq",
                        (day, last_day, after_seq, max_seq),
                    )
                    if not rows:
                        return
                # The keyset's seq comes from the unique event_id of the page's last row,
                # so the rows need no extra column to slice off.
                day = rows[-1][2]
                seq_in_day = db.execute("SELECT seq FROM events WHERE event_id = ?", (rows[-1][1],)).fetchone()[0]
                yield from slices(rows)

        if clock is None:
            yield from pages(-1, until, 0)
            return
        # Late arrivals first (dated on or before the clock, whose days were closed: they
        # are applied at the clock), then the days after the clock. A live service's run
        # has a few new arrivals: the seq (rowid) range finds them without walking the
        # processed log, sorted in one page. Many (a region's year imported into a store
        # already at year end) are paged along the day index instead, one page in memory.
        if max_seq - seq <= chunk:
            late = db.execute(
                f"SELECT {_RECORD_COLUMNS} FROM events WHERE seq > ? AND seq <= ? AND day <= ?"
                " ORDER BY day, seq",
                (seq, max_seq, clock),
            ).fetchall()
            yield from slices(late)
        else:
            yield from pages(-1, clock, seq)
        yield from pages(clock, until, 0)

    def records(self) -> Iterator[Record]:
        """Every logged event in arrival order (for export and publish)."""
        loads = orjson.loads
        for row in self.db.execute(
            "SELECT type, event_id, day, project_id, amount, details FROM events ORDER BY seq"
        ):
            yield Record(row[0], row[1], row[2], row[3], row[4], loads(row[5]) if row[5] else None)

    @staticmethod
    def _append_derived(db: sqlite3.Connection, records: Sequence[Record], source: str) -> None:
        """Events the processing itself derived (an approved disposition's budget_adjusted);
        not input, so the ingest counters do not move."""
        dumps = orjson.dumps
        db.executemany(
            "INSERT OR IGNORE INTO events(event_id, type, day, project_id, amount, details, source)"
            " VALUES (?, ?, ?, ?, ?, CAST(? AS TEXT), ?)",
            [
                (r.event_id, r.type, r.day, r.project_id, r.amount,
                 dumps(r.details) if r.details else None, source)
                for r in records
            ],
        )

    @staticmethod
    def _add_rejections_once(db: sqlite3.Connection, refused: Sequence[tuple[str, str, str]]) -> None:
        """Dead letters found while processing — (event_id, reason, raw) of a logged event
        that is valid alone but not in context; the source is the event's own. Kept once:
        a replay that refuses the same event again adds nothing."""
        for event_id, reason, raw in refused:
            row = db.execute("SELECT source FROM events WHERE event_id = ?", (event_id,)).fetchone()
            source = (row[0] if row and row[0] else "log") + f" (event_id {event_id})"
            Store._add_rejection_once(db, source, reason, raw)

    @staticmethod
    def _add_rejection_once(db: sqlite3.Connection, source: str, reason: str, raw: str) -> None:
        db.execute(INSERT_REJECTION_ONCE, (source, reason, raw))

    def add_rejection_once(self, source: str, reason: str, raw: str) -> None:
        """A dead letter outside ingest (e.g. a refused budget-alerts message), kept once
        however often its message is delivered again."""
        self._add_rejection_once(self.db, source, reason, raw)

    def rejected_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM rejected").fetchone()[0])

    def rejections(self) -> list[dict[str, Any]]:
        return list(self.each_rejection())

    def each_rejection(self) -> Iterator[dict[str, Any]]:
        """Dead letters in order, one at a time (a wrong file imported is one per line)."""
        for _, row in self._rejections("ORDER BY id", ()):
            yield row

    def rejection_page(self, *, after: int, limit: int) -> tuple[list[dict[str, Any]], int | None]:
        """At most ``limit`` dead letters after the one numbered ``after``, and the number
        to ask after for the next page (None: this page is the last)."""
        return one_page(list(self._rejections("WHERE id > ? ORDER BY id LIMIT ?", (after, limit + 1))), limit)

    def latest_rejections(self, limit: int) -> tuple[list[dict[str, Any]], int]:
        """The last ``limit`` dead letters in order, and how many there are in all."""
        (total,) = self.db.execute("SELECT count(*) FROM rejected").fetchone()
        latest = list(self._rejections("ORDER BY id DESC LIMIT ?", (limit,)))
        return [row for _, row in reversed(latest)], int(total)

    def _rejections(self, clause: str, args: tuple[int, ...]) -> Iterator[tuple[int, dict[str, Any]]]:
        for n, s, r, raw in self.db.execute(f"SELECT id, source, reason, raw FROM rejected {clause}", args):
            yield n, {"source": s, "reason": r, "raw": raw}

    # -- derived state ---------------------------------------------------
    def cursor(self) -> tuple[int | None, int]:
        clock, seq, _ = self.position()
        return clock, seq

    def position(self) -> tuple[int | None, int, int]:
        """The cursor and the generation of the derived state (bumped by each rebuild)."""
        clock, seq, generation = self.db.execute(
            "SELECT clock, seq, (SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?) FROM cursor WHERE id = 1",
            (GENERATION_KEY,),
        ).fetchone()
        return clock, int(seq), int(generation or 0)

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def mark_run_until(self, day: int) -> None:
        """Record the business day a run is heading to, before its first batch commits:
        readers that judge by business time (the notification horizon) then see where
        this run ends, not how far its last commit got."""
        if self.meta(RUN_UNTIL_KEY) != str(day):
            self.set_meta(RUN_UNTIL_KEY, str(day))

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def department_names(self) -> list[DepartmentName]:
        """The department names the last commit kept (Ledger.department_names)."""
        value = self.meta(DEPARTMENT_NAMES_KEY)
        if value is None:
            return []
        return [(int(y), str(d), str(n), str(v)) for y, d, n, v in orjson.loads(value)]

    def project_states(self) -> Iterator[dict[str, Any]]:
        loads = orjson.loads
        for (state,) in self.db.execute("SELECT state FROM projects"):
            yield loads(state)

    def alert_rows(
        self, *, status: str | None = None, department: str | None = None, fiscal_year: int | None = None,
    ) -> list[dict[str, Any]]:
        return list(self.each_alert(status=status, department=department, fiscal_year=fiscal_year))

    def each_alert(
        self, *, status: str | None = None, department: str | None = None, fiscal_year: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Alert rows one at a time (a province has hundreds of thousands)."""
        where, args = _filters(status=status, department_id=department, fiscal_year=fiscal_year)
        loads = orjson.loads
        for (data,) in self.db.execute(f"SELECT data FROM alerts{where} ORDER BY alert_id", args):
            yield loads(data)

    def active_alerts(self, *, department: str | None = None, fiscal_year: int | None = None) -> list[dict[str, Any]]:
        """The board's default view: alerts firing, and those resolved whose reduction
        still awaits the bureau — without reading the year's resolved ones (most of them)."""
        where, args = _filters(department_id=department, fiscal_year=fiscal_year, also=OPEN_ALERTS)
        loads = orjson.loads
        return [loads(data) for (data,) in self.db.execute(f"SELECT data FROM alerts{where} ORDER BY alert_id", args)]

    def alert_departments(self, department: str | None = None) -> list[str]:
        """The departments with any alert (of any year), from the department index."""
        where, args = _filters(department_id=department)
        return [d for (d,) in self.db.execute(f"SELECT DISTINCT department_id FROM alerts{where} ORDER BY 1", args)]

    def alert_years(self, department: str | None = None) -> list[int]:
        """The fiscal years with any alert, newest first: ids start with their year, so
        one index probe per year rather than a scan (within a department, its index)."""
        if department is not None:
            ids = self.db.execute("SELECT alert_id FROM alerts WHERE department_id = ?", (department,))
            return sorted({int(a.split(":", 1)[0]) for (a,) in ids}, reverse=True)
        years: list[int] = []
        after = ""
        while row := self.db.execute(
            "SELECT alert_id FROM alerts WHERE alert_id > ? ORDER BY alert_id LIMIT 1", (after,)
        ).fetchone():
            year = row[0].split(":", 1)[0]
            years.append(int(year))
            after = _id_range(f"{year}:")[1]  # past every id of the year
        return sorted(years, reverse=True)

    def ended_with_year(self, fiscal_year: int, rule: str) -> list[str]:
        """The projects whose ``rule`` alert of ``fiscal_year`` ended with the year's close
        (reason year_closed), from a range of the alert-id key."""
        rows = self.db.execute(
            "SELECT data FROM alerts WHERE alert_id >= ? AND alert_id < ? AND status = 'resolved'",
            _id_range(f"{fiscal_year}:{rule}:project:"),
        )
        return [d["subject_id"] for (raw,) in rows if (d := orjson.loads(raw)).get("reason") == YEAR_CLOSED]

    def alert_row(self, alert_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT data FROM alerts WHERE alert_id = ?", (alert_id,)).fetchone()
        return orjson.loads(row[0]) if row is not None else None

    def transition_rows(
        self, alert_id: str | None = None, *, department: str | None = None, fiscal_year: int | None = None,
    ) -> list[dict[str, Any]]:
        return list(self.each_transition(alert_id, department=department, fiscal_year=fiscal_year))

    def each_transition(
        self, alert_id: str | None = None, *, department: str | None = None, fiscal_year: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Transitions in order, one at a time."""
        where, args = _filters(alert_id=alert_id, department_id=department, fiscal_year=fiscal_year)
        loads = orjson.loads
        for (data,) in self.db.execute(f"SELECT data FROM transitions{where} ORDER BY id", args):
            yield loads(data)

    def latest_transitions(
        self, limit: int, *, department: str | None = None, fiscal_year: int | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """The last ``limit`` transitions in order, and how many there are in all."""
        where, args = _filters(department_id=department, fiscal_year=fiscal_year)
        (total,) = self.db.execute(f"SELECT count(*) FROM transitions{where}", args).fetchone()
        found = self.db.execute(f"SELECT data FROM transitions{where} ORDER BY id DESC LIMIT ?", (*args, limit))
        return [orjson.loads(d) for (d,) in reversed(found.fetchall())], int(total)

    def transition_page(
        self, *, after: int, limit: int, department: str | None = None, fiscal_year: int | None = None,
    ) -> tuple[list[dict[str, Any]], int | None]:
        """At most ``limit`` transitions in order after the one numbered ``after``, and the
        number to ask after for the next page (None: this page is the last)."""
        where, args = _filters(department_id=department, fiscal_year=fiscal_year, also=("id > ?", after))
        query = f"SELECT id, data FROM transitions{where} ORDER BY id LIMIT ?"
        found = [(n, orjson.loads(d)) for n, d in self.db.execute(query, (*args, limit + 1))]
        return one_page(found, limit)

    def subject_transitions(self, subject_type: str, subject_id: str) -> list[dict[str, Any]]:
        """Every transition of one subject's alerts (all years and rules), in order — a
        project page's history. Its alerts are found by how their ids end
        (``{year}:{rule}:{type}:{id}``, one key scan), their transitions through the
        alert index: a province's store holds ~800k transitions, too many to decode for
        one project."""
        suffix = f":{subject_type}:{subject_id}"
        alert_ids = [a for (a,) in self.db.execute(
            "SELECT alert_id FROM alerts WHERE substr(alert_id, -?) = ?", (len(suffix), suffix))]
        found: list[tuple[int, bytes]] = []
        for start in range(0, len(alert_ids), 500):  # within SQLite's limit on parameters
            chunk = alert_ids[start:start + 500]
            marks = ", ".join("?" * len(chunk))
            found += self.db.execute(f"SELECT id, data FROM transitions WHERE alert_id IN ({marks})", chunk)
        found.sort()
        rows = [orjson.loads(data) for _, data in found]
        # an id may end the same way yet belong to another subject ("X:project:P1")
        return [t for t in rows if t["subject_type"] == subject_type and t["subject_id"] == subject_id]

    def listed_alerts(
        self, *, every_transition: bool, department: str | None, fiscal_year: int | None = None,
    ) -> list[dict[str, Any]]:
        """What `budgetwatch alerts [--all] [--department] [--year]` and GET /api/alerts list."""
        if every_transition:
            return self.transition_rows(department=department, fiscal_year=fiscal_year)
        return self.alert_rows(status="firing", department=department, fiscal_year=fiscal_year)

    def begin(self, *, durable: bool = False) -> Batch:
        """Open the engine's write transaction (see :class:`Batch`); ``durable`` keeps the
        store's own synchronous setting, for writers with no log to recompute from."""
        return Batch(self, durable=durable)

    def is_notifier_store(self) -> bool:
        """Whether this store is the notifier's copy of budget-alerts (streams.alert_sink)."""
        return self.meta(ROLE_KEY) == NOTIFIER_ROLE

    def refuse_if_notifier(self) -> None:
        if self.is_notifier_store():
            raise StoreError(
                f"{self.path} 是通知进程的数据库（存放从 budget-alerts 收到的预警），没有事件日志可运行或重建；"
                "请让 --db 指向嵌入式引擎的数据库（this is the notifier's store, it has no event log）"
            )

    def reset_derived(self, profile: str | None = None) -> None:
        """Forget all derived state; the next run replays the whole log. ``profile``: the
        fingerprint of the policy that replay uses, claimed in the same transaction, so
        a `serve` on another policy cannot replay the log under its own in between."""
        self.refuse_if_notifier()
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        for table in ("projects", "alerts", "transitions", "outbox"):
            db.execute(f"DELETE FROM {table}")
        # Dead letters found while processing (sources "… (event_id X)", see
        # _add_rejections_once) are derived too: the replay finds them again.
        db.execute("DELETE FROM rejected WHERE source LIKE '% (event_id %)'")
        db.execute("UPDATE cursor SET clock = NULL, seq = 0 WHERE id = 1")
        db.execute("DELETE FROM meta WHERE key = ?", (DEPARTMENT_NAMES_KEY,))
        if profile is None:
            db.execute("DELETE FROM meta WHERE key = 'profile'")
        else:
            self.set_meta("profile", profile)
        # A rebuild may end on the very cursor it started from (the same log, another
        # profile): the generation tells a running `serve` its state was replaced.
        db.execute(
            f"INSERT INTO meta(key, value) VALUES ('{GENERATION_KEY}', '1')"
            " ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
        )
        db.execute("COMMIT")


RUN_UNTIL_KEY = "run_until"
GENERATION_KEY = "derived_generation"
# Department names with the registration each comes from (derived state, like projects)
DEPARTMENT_NAMES_KEY = "department_names"
# meta key marking a store made by the notifier (streams.alert_sink), which no engine runs
ROLE_KEY = "role"
NOTIFIER_ROLE = "notifier"


def business_day(db: sqlite3.Connection) -> int | None:
    """The store's business day as readers should judge it: the day the current (or last)
    run is heading to, or the committed clock if later. None before any run."""
    row = db.execute(
        "SELECT MAX(day) FROM (SELECT clock AS day FROM cursor WHERE id = 1"
        " UNION ALL SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?)",
        (RUN_UNTIL_KEY,),
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


# alert_id, day, kind, department_id, JSON as UTF-8 bytes. The batch binds JSON as bytes
# cast to TEXT: the same stored text, without decoding orjson's UTF-8 into a str that
# sqlite3 would encode back (Chinese messages made that ~8% of a replay's instructions).
TransitionRow = tuple[str, int, str, str, bytes]


def _id_range(prefix: str) -> tuple[str, str]:
    """The key range of the alert ids starting with ``prefix`` (ids begin with the fiscal
    year, then the rule): [prefix, the same with its last character's successor)."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


Row = TypeVar("Row")


def one_page(found: list[tuple[int, Row]], limit: int) -> tuple[list[Row], int | None]:
    """Rows read with ``LIMIT limit + 1`` as (number, row): the page, and the number to
    read after for the next one (None when nothing follows)."""
    page = found[:limit]
    return [row for _, row in page], (page[-1][0] if len(found) > limit else None)


def _awaiting(alert: dict[str, Any]) -> int | None:
    """The alerts row's ``awaiting`` flag: 1 while a reduction awaits the bureau."""
    disposition = alert.get("disposition")
    return 1 if disposition is not None and disposition.get("status") == AWAITING else None


def _filters(
    *, fiscal_year: int | None = None, also: str | tuple[str, str | int] | None = None, **columns: str | None,
) -> tuple[str, tuple[str | int, ...]]:
    """A WHERE clause matching the given (trusted) column names to the values not None;
    ``fiscal_year``: alert ids of that year (a range of the key: ids start with it);
    ``also``: one more (trusted) term, with its one argument if it takes one."""
    given = {name: value for name, value in columns.items() if value is not None}
    terms = [f"{name} = ?" for name in given]
    args: list[str | int] = [str(value) for value in given.values()]
    if fiscal_year is not None:
        terms.append("alert_id >= ? AND alert_id < ?")
        args += _id_range(f"{fiscal_year}:")
    if isinstance(also, str):
        terms.append(also)
    elif also is not None:
        terms.append(also[0])
        args.append(also[1])
    if not terms:
        return "", ()
    return " WHERE " + " AND ".join(terms), tuple(args)


class Batch:
    """One write transaction of the engine: transitions go in as their days close, then
    derived events, refusals, state, alerts and cursor at :meth:`commit` — all or nothing.

    Streaming the transitions keeps a batch's memory flat however long it runs, so the
    engine can commit rarely (each commit rewrites every project changed since the last).
    Written with synchronous=NORMAL: in WAL mode that survives a process crash (kill -9);
    a power cut may drop the last commits, and since the cursor is in the same
    transaction the next run recomputes them from the log, which ingest writes with the
    store's own (FULL by default) durability. A ``durable`` batch keeps that setting: the
    notifier's store has no log behind it, and Kafka forgets what it acknowledged.
    """

    def __init__(self, store: Store, *, durable: bool = False) -> None:
        self.store = store
        db = self.db = store.db
        if not durable:
            db.execute("PRAGMA synchronous=NORMAL")
        db.execute("BEGIN IMMEDIATE")
        self.open = True
        with self._or_rollback():
            # Ids assigned here (the engine is the only writer of transitions) so both
            # tables go in with one executemany each.
            self._next_id = int(db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM transitions").fetchone()[0])
        self.transitions = 0

    @contextmanager
    def _or_rollback(self) -> Iterator[None]:
        """Any error inside leaves nothing of this batch: it is rolled back, then raised."""
        try:
            yield
        except BaseException:
            self.rollback()
            raise

    @property
    def stored_transitions(self) -> int:
        """Transitions in the store before this batch's (the highest id)."""
        return self._next_id - 1 - self.transitions

    def add_transitions(self, rows: Sequence[TransitionRow], *, notify: bool = True) -> None:
        """Transitions, each with an outbox row unless ``notify`` is false (history only)."""
        if not rows:
            return
        db, first = self.db, self._next_id
        with self._or_rollback():
            db.executemany(
                "INSERT INTO transitions(id, alert_id, day, kind, department_id, data)"
                " VALUES (?, ?, ?, ?, ?, CAST(? AS TEXT))",
                [(first + i, *row) for i, row in enumerate(rows)],
            )
            if notify:
                db.executemany(
                    "INSERT INTO outbox(transition_id, alert_id, department_id, kind) VALUES (?, ?, ?, ?)",
                    [(first + i, a, dept, kind) for i, (a, _, kind, dept, _) in enumerate(rows)],
                )
        self._next_id += len(rows)
        self.transitions += len(rows)

    def defer_indexes(self) -> None:
        """Drop the deferrable indexes for a long run (its last batch builds them)."""
        self._run_ddl(f"DROP INDEX IF EXISTS {name}" for name in DEFERRABLE_INDEXES)

    def build_indexes(self) -> None:
        """Build any deferrable index that is missing (a no-op when all are there)."""
        self._run_ddl(DEFERRABLE_INDEXES.values())

    def _run_ddl(self, statements: Iterable[str]) -> None:
        with self._or_rollback():
            for statement in statements:
                self.db.execute(statement)

    def add_alerts(self, alerts: Iterable[dict[str, Any]]) -> None:
        """Alert rows written ahead of the commit (visible to this connection at once)."""
        with self._or_rollback():
            self._put_alerts(alerts)

    def _put_alerts(self, alerts: Iterable[dict[str, Any]]) -> None:
        dumps = orjson.dumps
        self.db.executemany(
            "INSERT INTO alerts(alert_id, status, department_id, data, awaiting) VALUES (?, ?, ?, CAST(? AS TEXT), ?)"
            " ON CONFLICT(alert_id) DO UPDATE SET status = excluded.status,"
            " department_id = excluded.department_id, data = excluded.data, awaiting = excluded.awaiting",
            ((a["alert_id"], a["status"], a["department_id"], dumps(a), _awaiting(a)) for a in alerts),
        )

    def commit(
        self,
        *,
        projects: Iterable[dict[str, Any]],
        alerts: Iterable[dict[str, Any]],
        clock: int,
        seq: int,
        derived: Sequence[Record] = (),
        derived_source: str = "",
        refused: Sequence[tuple[str, str, str]] = (),
        department_names: Sequence[DepartmentName] | None = None,
    ) -> None:
        """``department_names``: the ledger's, when they changed since the last commit."""
        dumps = orjson.dumps
        db = self.db
        with self._or_rollback():
            if department_names is not None:
                self.store.set_meta(DEPARTMENT_NAMES_KEY, dumps(department_names).decode())
            if derived:
                Store._append_derived(db, derived, derived_source)
            if refused:
                Store._add_rejections_once(db, refused)
            db.executemany(
                "INSERT INTO projects(project_id, state) VALUES (?, CAST(? AS TEXT))"
                " ON CONFLICT(project_id) DO UPDATE SET state = excluded.state",
                ((p["project_id"], dumps(p)) for p in projects),
            )
            self._put_alerts(alerts)
            db.execute("UPDATE cursor SET clock = ?, seq = ? WHERE id = 1", (clock, seq))
            db.execute("COMMIT")
        self.open = False
        db.execute(f"PRAGMA synchronous={self.store.synchronous}")

    def rollback(self) -> None:
        if self.open:
            self.open = False
            # SQLite may have rolled back already (a full disk, SQLITE_FULL): a second
            # ROLLBACK said "no transaction is active" in place of the error that matters.
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            self.db.execute(f"PRAGMA synchronous={self.store.synchronous}")
