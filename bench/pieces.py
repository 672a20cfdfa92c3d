"""The measured pieces, each meant to run in its own process (peak RSS per piece).

``python -m bench.pieces PIECE '{"json": "args"}'`` prints one JSON object on its
last line of stdout. Pieces:

* ``ingest``   — JSONL file → a fresh SQLite log (the `budgetwatch ingest` path).
* ``replay``   — the baseline loop, then the embedded engine over the whole year
  (every day closed up to Dec 31, so time-driven rules are evaluated for every day).
* ``faust``    — the real Faust agents through the in-memory test driver, then the
  floor: the same messages through the same driver into an agent doing one table write.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import resource
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench.data import FISCAL_YEAR, remove_db
from streams.store import _RECORD_COLUMNS


def peak_rss_mb() -> float:
    """Peak resident set size of this process (VmHWM from /proc, else getrusage)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mb()


def year_end() -> int:
    return dt.date(FISCAL_YEAR, 12, 31).toordinal()


# -- ingest -------------------------------------------------------------------------
def ingest_piece(path: str, db: str) -> dict[str, Any]:
    from connectors.jsonl import read_jsonl
    from streams.ingest import ingest
    from streams.store import Store

    remove_db(Path(db))
    start_rss = rss_mb()
    with Store(db) as store:
        started = time.perf_counter()
        counts = ingest(store, read_jsonl(Path(path)))
        seconds = time.perf_counter() - started
    return {
        "read": counts.read, "applied": counts.applied, "duplicates": counts.duplicates,
        "rejected": counts.rejected, "seconds": seconds, "events_per_s": counts.read / seconds,
        "start_rss_mb": start_rss, "peak_rss_mb": peak_rss_mb(),
    }


# -- baseline and replay --------------------------------------------------------------
def baseline(db: str) -> tuple[int, float]:
    """The practical ceiling: the irreducible work of a replay in the tightest Python loop.

    Every stored event is read from the SQLite log in business order (day, then
    arrival — the order any event-time replay must consume), decoded (the JSON details
    the fold needs, exactly the columns the engine reads) and its amount added to a
    per-project sum. No ledger, no rules, no alerts, no commit."""
    connection = sqlite3.connect(db)
    loads = orjson.loads
    try:
        started = time.perf_counter()
        sums: dict[str, int] = {}
        get = sums.get
        count = 0
        for _type, _id, _day, project_id, amount, details in connection.execute(
            f"SELECT {_RECORD_COLUMNS} FROM events ORDER BY day, seq"
        ):
            if details is not None:
                loads(details)
            sums[project_id] = get(project_id, 0) + (amount or 0)
            count += 1
        seconds = time.perf_counter() - started
    finally:
        connection.close()
    return count, seconds


def replay_piece(db: str, with_baseline: bool = True) -> dict[str, Any]:
    from connectors.profiles import load_profile
    from streams.engine import Engine
    from streams.store import Store

    result: dict[str, Any] = {}
    if with_baseline:
        events, seconds = baseline(db)
        result.update(baseline_events=events, baseline_seconds=seconds,
                      baseline_events_per_s=events / seconds)
    with Store(db) as store:
        engine = Engine(store, load_profile("baseline"))
        engine.rebuild()  # forget derived state: the run replays the whole log
        gc.collect()
        start_rss = rss_mb()
        started, cpu_started = time.perf_counter(), time.process_time()
        summary = engine.run(year_end())
        seconds = time.perf_counter() - started
        # Every thread's CPU, the WAL checkpoint thread's too: beside the wall time, it
        # shows the engine did not get its speed by spreading work over both cores.
        cpu_seconds = time.process_time() - cpu_started
        monitor = engine.monitor
        result.update(
            events=summary.events, seconds=seconds, events_per_s=summary.events / seconds,
            cpu_seconds=cpu_seconds,
            transitions=summary.transitions, days=summary.days, commits=summary.commits,
            projects=len(monitor.ledger.projects),
            alerts=store.db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0],
            alerts_in_memory=len(monitor.book.alerts),
            start_rss_mb=start_rss, end_rss_mb=rss_mb(), peak_rss_mb=peak_rss_mb(),
        )
    return result


# -- Faust agents (in-memory test driver) ------------------------------------------------
def faust_piece(path: str, partitions: int = 4, with_floor: bool = True) -> dict[str, Any]:
    from bench.faust_driver import drive, drive_floor

    lines = [line.strip() for line in Path(path).read_bytes().splitlines() if line.strip()]
    seconds, outcomes, alerts, changelog = asyncio.run(drive(lines, partitions, year_end()))
    result = {
        "events": len(lines), "seconds": seconds, "events_per_s": len(lines) / seconds,
        "outcomes": outcomes, "alerts": alerts, "partitions": partitions,
        "changelog_messages": changelog.messages, "changelog_bytes": changelog.bytes,
        "peak_rss_mb": peak_rss_mb(),  # the agents' own, taken before the floor runs
    }
    if with_floor:
        floor_seconds, floor_messages = asyncio.run(drive_floor(lines, partitions, year_end()))
        result.update(floor_seconds=floor_seconds, floor_messages=floor_messages,
                      floor_events_per_s=len(lines) / floor_seconds)
    return result


PIECES: dict[str, Callable[..., dict[str, Any]]] = {
    "ingest": ingest_piece, "replay": replay_piece, "faust": faust_piece,
}


def main(argv: list[str]) -> None:
    piece, args = argv[0], orjson.loads(argv[1]) if len(argv) > 1 else {}
    result = PIECES[piece](**args)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
