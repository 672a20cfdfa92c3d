"""`budgetwatch backup`: a copy taken while a run commits is a whole store as of one
commit — resumed, it ends exactly where the original does."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from streams.backup import back_up
from streams.errors import StoreError
from streams.store import Store
from tests.functional.test_crash_resume import BIN, cli, snapshot, year  # noqa: F401  (fixture)

END = "2025-12-31"


def clock_of(db: Path) -> int | None:
    with sqlite3.connect(db) as con:
        row = con.execute("SELECT clock FROM cursor WHERE id = 1").fetchone()
        return None if row is None else row[0]


@pytest.mark.slow
def test_backups_taken_during_a_run_resume_to_exactly_the_original(tmp_path: Path, year: Path) -> None:  # noqa: F811
    source = tmp_path / "source.db"
    cli("ingest", str(year), db=source)
    env = {**os.environ, "BUDGETWATCH_DB": str(source)}
    run = subprocess.Popen([str(BIN), "run", "--as-of", END, "--commit-every", "3000"],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    copies: list[Path] = []
    try:
        with Store(source, existing=True) as store:
            while run.poll() is None and len(copies) < 200:
                copies.append(Path(back_up(store, tmp_path / f"copy-{len(copies)}.db").destination))
                time.sleep(0.02)
    finally:
        assert run.wait(timeout=300) == 0, run.stderr.read() if run.stderr else ""
    final = snapshot(source)
    end = clock_of(source)
    mid_run = [c for c in copies if clock_of(c) is not None and clock_of(c) < end]  # type: ignore[operator]
    assert mid_run, f"no copy was taken between two commits of the run ({len(copies)} copies)"
    for copy in (mid_run[len(mid_run) // 2], copies[0]):
        cli("run", "--as-of", END, db=copy)
        assert snapshot(copy) == final, copy.name
    assert not list(tmp_path.glob(".*partial*"))


def test_a_backup_refuses_to_replace_or_guess_and_names_what_to_do(tmp_path: Path) -> None:
    db = tmp_path / "bw.db"
    with Store(db) as store:
        copy = tmp_path / "copy.db"
        summary = back_up(store, copy)
        assert (summary.events, summary.clock, copy.is_file()) == (0, None, True)
        with pytest.raises(StoreError, match="已存在，未做任何改动；加 --force 覆盖"):
            back_up(store, copy)
        copy.write_bytes(b"not a database")
        assert back_up(store, copy, force=True).bytes == copy.stat().st_size > 100
        with pytest.raises(StoreError, match="就是数据库本身"):
            back_up(store, db, force=True)
        with pytest.raises(StoreError, match="是目录"):
            back_up(store, tmp_path)
        with pytest.raises(StoreError, match="不存在；请先创建"):
            back_up(store, tmp_path / "missing" / "copy.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bw.db", "copy.db"]


def test_the_cli_reports_the_copy_and_refuses_a_store_that_is_not_there(tmp_path: Path) -> None:
    db = tmp_path / "bw.db"
    events = tmp_path / "e.jsonl"
    events.write_text(
        json.dumps({"type": "project_registered", "event_id": "R1", "occurred_on": "2025-01-05",
                    "project_id": "P1", "fiscal_year": 2025, "name": "项目", "department_id": "D1",
                    "department_name": "教育局", "fund_source": "general"}, ensure_ascii=False) + "\n",
        "utf-8",
    )
    cli("ingest", str(events), db=db)
    cli("run", db=db)
    answer = json.loads(cli("backup", str(tmp_path / "b.db"), "--json", db=db).stdout)
    assert (answer["events"], answer["clock"], answer["check"]) == (1, "2025-01-05", "ok")
    assert answer["bytes"] == (tmp_path / "b.db").stat().st_size
    human = cli("backup", str(tmp_path / "c.db"), db=db).stdout
    assert "1 条事件" in human and "业务时钟 2025-01-05" in human and "校验通过" in human
    missing = subprocess.run([str(BIN), "backup", str(tmp_path / "d.db"), "--db", str(tmp_path / "nope.db")],
                             capture_output=True, text=True, check=False)
    assert missing.returncode != 0 and "找不到数据库" in missing.stdout + missing.stderr
    assert not (tmp_path / "nope.db").exists()


def test_a_backup_clears_the_copies_of_backups_killed_midway(tmp_path: Path) -> None:
    """A backup killed with -9 left its .partial copy (and -journal); later backups never
    removed them, so a cron directory gathered a store-sized file per kill (audit)."""
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid no process holds now
    stale = [tmp_path / f".b.db.partial-{gone.pid}", tmp_path / f".b.db.partial-{gone.pid}-journal"]
    running = tmp_path / ".b.db.partial-1"  # its process is alive: a backup still under way
    other = tmp_path / f".other.db.partial-{gone.pid}"  # another destination's: not ours to judge
    for path in [*stale, running, other]:
        path.write_bytes(b"partial")
    with Store(tmp_path / "bw.db") as store:
        back_up(store, tmp_path / "b.db")
    assert not any(path.exists() for path in stale)
    assert running.exists() and other.exists() and (tmp_path / "b.db").exists()
