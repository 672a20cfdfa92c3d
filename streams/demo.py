"""`budgetwatch demo`: a county's fiscal year, end to end, in well under a minute."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path

from rich.markup import escape

from alerts.profile import Profile
from budget.calendar import to_day
from budget.events import parse_day
from connectors.exports import write_reductions_xlsx
from connectors.synthetic import Spec, generate
from streams import render
from streams.engine import Engine
from streams.errors import BudgetwatchError
from streams.store import Store

DEMO_MARKER = ".budgetwatch-demo"


class DemoError(BudgetwatchError):
    """The demo would overwrite something it did not make."""


def _only_demo_events(db_path: Path, events_path: Path) -> bool:
    """A store made by an earlier demo (before the marker): every event it logged came
    from the demo's own events file."""
    prefix = f"{events_path}:"
    try:
        with closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
            other = db.execute(
                "SELECT EXISTS (SELECT 1 FROM events WHERE substr(source, 1, ?) IS NOT ?)", (len(prefix), prefix)
            ).fetchone()[0]
    except sqlite3.Error:
        return False
    return not other


def run_demo(directory: Path, *, projects: int, seed: int, as_of: str, profile: Profile) -> None:
    from streams.cli import ingest_files, progress_bar

    out = render.console()
    directory.mkdir(parents=True, exist_ok=True)
    events_path = directory / "events.jsonl"
    db_path = directory / "budgetwatch.db"
    marker = directory / DEMO_MARKER
    if db_path.exists() and not marker.exists() and not _only_demo_events(db_path, events_path):
        # Not the demo's own store: `demo --dir .` in a bureau's working directory must
        # never replace its real log.
        raise DemoError(
            f"{db_path} 已存在且不是 `budgetwatch demo` 生成的，未做任何改动；请在另一个目录运行演示"
            "（如 --dir demo）（exists and was not made by `budgetwatch demo`; nothing was changed）"
        )
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    marker.write_text("budgetwatch demo: the store in this directory is generated and may be replaced\n",
                      encoding="utf-8")
    started = time.perf_counter()
    day = to_day(parse_day(as_of))
    spec = Spec(projects=projects, seed=seed, fiscal_year=parse_day(as_of).year)
    out.rule("[bold]budgetwatch 演示：预算执行与绩效目标双监控")
    with events_path.open("wb") as handle:
        for line in generate(spec):
            handle.write(line + b"\n")
    out.print(f"1. 已生成 {projects} 个项目一整年的事件 → {escape(str(events_path))}")
    with Store(db_path) as store:
        counts = ingest_files(store, [events_path])
        out.print(render.ingest_table(counts, "2. 导入事件日志"))
        engine = Engine(store, profile)
        with progress_bar() as bar:
            task = bar.add_task(f"3. 按业务日期处理至 {as_of}", total=None)
            summary = engine.run(day, progress=lambda done, total: bar.update(task, completed=done, total=total))
        status = engine.status()
        out.print(render.region_table(status))
        worst = sorted(
            (d for d in status["departments"] if d["execution_rate"] is not None),
            key=lambda d: d["execution_rate"],
        )[:10]
        out.print(render.departments_table(worst, "执行率最低的10个部门"))
        active = store.alert_rows(status="firing")
        out.print(render.alert_counts_table(active))
        proposals = [p.to_json() for p in engine.reductions()]
        out.print(render.reductions_table(proposals[:10], f"调减建议（共{len(proposals)}个项目，显示前10个）"))
        xlsx = directory / "reductions.xlsx"
        write_reductions_xlsx(xlsx, proposals, as_of, spec.fiscal_year)
    elapsed = time.perf_counter() - started
    out.print(
        f"完成：{summary.events} 条事件，{summary.transitions} 次预警变化，当前预警 {len(active)} 条，"
        f"调减建议已写入 {escape(str(xlsx))}；用时 {elapsed:.1f} 秒。"
    )
    db = escape(str(db_path))
    out.print(f"接着试试：budgetwatch alerts --db {db}   budgetwatch status --db {db} --json")
