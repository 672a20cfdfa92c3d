"""The `budgetwatch` command line (DESIGN §7 and issue contracts)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from alerts.monitor import AFTER_CLOSE_SAMPLE
from alerts.profile import Profile, ProfileError
from budget.calendar import iso, to_day
from budget.events import EARLIEST_YEAR, LATEST_YEAR, parse_day
from connectors.exports import write_reductions_xlsx
from connectors.files import InputError, read_events
from connectors.profiles import load_profile
from connectors.synthetic import Spec, generate
from connectors.tabular import UNIT_CHOICES, Layout, TabularError, Unit, iso_date_text
from connectors.wall_clock import today_day, today_in_china
from streams import render
from streams.backup import back_up
from streams.engine import Engine, HeldBy, RunSummary, held_until, waiting_text
from streams.errors import BudgetwatchError
from streams.ingest import IngestCounts, ingest
from streams.json_output import JsonArray, json_text
from streams.settings import Settings
from streams.store import Store

app = typer.Typer(
    name="budgetwatch",
    help="预算执行与绩效目标\"双监控\" — real-time budget-execution monitoring and alerting.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        typer.echo(f"budgetwatch {version('budgetwatch')}")
        raise typer.Exit


@app.callback()
def _options(
    _version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """预算执行与绩效目标"双监控" — real-time budget-execution monitoring and alerting."""

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="SQLite store (env BUDGETWATCH_DB; default ./budgetwatch.db)"),
]
ProfileOption = Annotated[
    str | None,
    typer.Option("--profile", help="policy profile: baseline, provincial or a YAML file (env BUDGETWATCH_PROFILE)"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="machine-readable JSON on stdout")]
# A mistyped year (20266) is a usage error naming the range, not a traceback.
YearOption = Annotated[int | None, typer.Option(
    min=EARLIEST_YEAR, max=LATEST_YEAR, help="fiscal year (default: the clock's year)")]


def settings() -> Settings:
    return Settings()


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_to_stderr() -> None:
    """Log lines (INFO and up) to stderr, for the long-running commands (serve, deliver)."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)


def resolve(db: str | None, profile: str | None) -> tuple[str, Profile]:
    s = settings()
    return db or s.db, load_profile(profile or s.profile)


def open_engine(db: str | None, profile: str | None, *, existing: bool = False) -> Engine:
    path, prof = resolve(db, profile)
    s = settings()
    store = Store(path, synchronous=s.synchronous, existing=existing)
    return Engine(store, prof, commit_every=s.commit_every, today=today_in_china)


@contextmanager
def opened_engine(db: str | None, profile: str | None, *, existing: bool = False) -> Iterator[Engine]:
    """An engine on the store for one command; the store is closed when it is done (the
    last connection's close checkpoints the WAL into the database file)."""
    engine = open_engine(db, profile, existing=existing)
    try:
        yield engine
    finally:
        engine.store.close()


def emit_json(data: Any) -> None:
    sys.stdout.write(json_text(data))


def emit_json_array(items: Iterable[Any]) -> None:
    """What :func:`emit_json` prints for the list of ``items``, written one item at a time."""
    array = JsonArray()
    for item in items:
        sys.stdout.write(array.items((item,)))
    sys.stdout.write(array.end())


def parse_as_of(value: str | None, *, allow_future: bool = True) -> int | None:
    """``--as-of`` as a day; past today only with ``allow_future`` (see refuse_future)."""
    if value is None:
        return None
    try:
        day = to_day(parse_day(iso_date_text(value.strip())))  # the forms file import reads
    except ValueError as err:
        raise typer.BadParameter(
            f"{value!r} 不是有效的业务日期，应为 YYYY-MM-DD（例如 2025-09-30）：{err}", param_hint="--as-of"
        ) from None
    if not allow_future:
        refuse_future(day, today_day())
    return day


def refuse_future(as_of: int, today: int) -> None:
    """A business clock never goes back: an --as-of past today (a mistyped year) would
    move every project's time forward for good — all of them behind schedule, stalled,
    escalated — until a --rebuild."""
    if as_of > today:
        raise typer.BadParameter(
            f"{iso(as_of)} 晚于今天（{iso(today)}，北京时间）。业务时钟只向前走，越过今天后无法退回，"
            f"只能用 --rebuild 从头重放。请检查日期；确需模拟未来日期，请加 --allow-future",
            param_hint="--as-of",
        )


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=render.console(stderr=True), transient=False,
    )


def _count_lines(path: Path) -> int | None:
    if path.suffix.lower() not in (".jsonl", ".ndjson", ".json"):
        return None
    count = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            count += chunk.count(b"\n")
    return count


def ingest_files(
    store: Store, files: list[Path], *, layout: Layout = "auto", unit: Unit = "auto"
) -> IngestCounts:
    total = IngestCounts()
    for path in files:  # a file refused whole refuses the import before any file goes in
        _check_readable(path, files, layout=layout, unit=unit)
    with progress_bar() as bar:
        for path in files:
            parsed = read_events(path, layout=layout, unit=unit)  # refuses a missing or unknown file first
            task = bar.add_task(f"导入 {escape(path.name)}", total=_count_lines(path))
            counts = ingest(
                store, parsed,
                on_batch=lambda n, t=task: bar.advance(t, n),  # type: ignore[misc]
            )
            bar.update(task, completed=counts.read, total=counts.read)
            total.add(counts)
    return total


def _check_readable(path: Path, files: list[Path], *, layout: Layout, unit: Unit) -> None:
    """Open ``path`` as its import will and read up to its first item: a missing file,
    an unknown type, an unreadable workbook or a sheet with no header row is refused
    here, so the files named before it are not left imported on their own.

    The import opens the file again (a CSV is decoded twice, a workbook's first sheet
    read twice up to its header) rather than keeping every file's reader open from this
    check: those would hold every CSV of a long import decoded in memory at once."""
    try:
        items = read_events(path, layout=layout, unit=unit)
        try:
            next(iter(items), None)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
    except (InputError, TabularError) as err:
        if len(files) == 1:
            raise
        raise type(err)(
            f"{err}；本次 {len(files)} 个文件均未导入（nothing of this import was imported）"
        ) from None


@app.command("ingest")
def ingest_cmd(
    files: Annotated[list[Path], typer.Argument(help="JSONL, CSV or XLSX files")],
    db: DbOption = None,
    layout: Annotated[str, typer.Option(help="auto | projects | payments (CSV/XLSX)")] = "auto",
    unit: Annotated[
        str, typer.Option(help="auto | yuan | qian | wan | yi (元/千元/万元/亿元): unit of amounts in CSV/XLSX")
    ] = "auto",
    as_json: JsonOption = False,
) -> None:
    """Append events to the log (duplicates ignored, bad input kept with its reason)."""
    if layout not in ("auto", "projects", "payments"):
        raise typer.BadParameter("--layout 应为 auto、projects 或 payments（must be auto, projects or payments）")
    if unit not in UNIT_CHOICES:
        raise typer.BadParameter("--unit 应为 auto、yuan、qian、wan 或 yi（must be auto, yuan, qian, wan or yi）")
    with Store(db or settings().db, synchronous=settings().synchronous) as store:
        counts = ingest_files(store, files, layout=layout, unit=unit)  # type: ignore[arg-type]
    if as_json:
        emit_json(counts.to_json())
        return
    out = render.console()
    out.print(render.ingest_table(counts))
    out.print(f"read={counts.read} accepted={counts.accepted} duplicate={counts.duplicates} rejected={counts.rejected}")
    if counts.rejected:
        out.print(f"[yellow]{counts.rejected} 条记录被拒收，原因见 `budgetwatch rejected`[/yellow]")


@app.command("run")
def run_cmd(
    as_of: Annotated[str | None, typer.Option("--as-of", help="process up to this business date (YYYY-MM-DD)")] = None,
    db: DbOption = None,
    profile: ProfileOption = None,
    rebuild: Annotated[bool, typer.Option(help="forget derived state and replay the whole log")] = False,
    commit_every: Annotated[int | None, typer.Option(help="events between commits", min=1)] = None,
    allow_future: Annotated[bool, typer.Option(
        "--allow-future", help="let --as-of pass today (a simulation: the clock cannot come back)")] = False,
) -> None:
    """Process the log in business-date order up to --as-of (default: the latest event date)."""
    # Checked before the store is opened: a mistyped date must neither create a store
    # nor leave a --rebuild half done (its derived state wiped, nothing replayed).
    until = parse_as_of(as_of, allow_future=allow_future)
    with opened_engine(db, profile) as engine:
        if commit_every:
            engine.commit_every = commit_every
        if rebuild:
            engine.rebuild()
        refused_before = engine.store.rejected_count()
        out = render.console()
        with progress_bar() as bar:
            task = bar.add_task("处理事件", total=None)

            def advance(done: int, pending: int) -> None:
                bar.update(task, completed=done, total=pending)

            summary = engine.run(until, progress=advance)
        active = engine.store.alert_rows(status="firing")
        out.print(
            f"处理至 {iso(summary.as_of) if summary.as_of else '—'}：事件 {summary.events} 条，"
            f"预警变化 {summary.transitions} 次，当前预警 {len(active)} 条"
        )
        out.print(f"events={summary.events} transitions={summary.transitions} active_alerts={len(active)}")
        if (refused := engine.store.rejected_count() - refused_before) > 0:
            # valid alone, refused in context: a disposition beyond the unspent budget, …
            out.print(f"[yellow]{refused} 条事件在处理时被拒收，原因见 `budgetwatch rejected`[/yellow]")
        if summary.as_of is not None and (years := engine.uncovered_calendar_years(summary.as_of)):
            out.print(
                f"[yellow]节假日安排未包含 {'、'.join(map(str, years))} 年：其处置期限暂按周一至周五计算；"
                f"国务院办公厅公布该年放假安排后，请补充日历并用 --rebuild 重算[/yellow]"
            )
        if (waiting := waiting_advice(engine, until, summary.as_of)) is not None:
            out.print(f"[yellow]{escape(waiting)}[/yellow]")
        if summary.after_close:
            out.print(f"[yellow]{escape(after_close_text(summary))}[/yellow]")


def waiting_advice(engine: Engine, as_of: int | None, reached: int | None) -> str | None:
    """What a run tells of the events it left for later, naming the day that held them
    back — its --as-of, else today (a run without --as-of stops there), not the business
    clock it reached — and what processes them: --as-of alone cannot pass today."""
    today = engine.last_reachable_day() or today_day()
    held_by: HeldBy
    if as_of is not None:
        until, held_by = as_of, "as-of"
    else:
        until, held_by = held_until(today, reached) if reached is not None else (today, "today")
    waiting = engine.waiting_after(until)
    if not waiting:
        return None
    latest = engine.store.max_day() or until
    if latest <= today:  # held by an --as-of before today
        how = "不带 --as-of 再运行 run 即可处理（处理至今天）"
    else:
        how = (f"到其业务日期后再运行 run 即可处理；确需现在处理请用 --as-of {iso(latest)} --allow-future"
               "（模拟：业务时钟越过今天后无法退回）")
        if as_of is not None and as_of < today and engine.waiting_after(today) < waiting:
            how = f"不晚于今天的，不带 --as-of 再运行 run 即可处理；晚于今天的，{how}"
    return waiting_text(waiting, until, f"如日期有误请更正后重新导入；否则{how}", held_by=held_by)


def after_close_text(summary: RunSummary) -> str:
    """A warning for money dated after its project's year closed (see Monitor.after_close)."""
    projects = "、".join(summary.after_close_projects)
    more = "等" if len(summary.after_close_projects) >= AFTER_CLOSE_SAMPLE else ""  # the sample is full
    return (
        f"{summary.after_close} 笔资金事件（支付、退回或调整）的日期在其项目所属年度结束（关闭）之后，已计入该"
        f"已结束年度（项目：{projects}{more}）：若属于新年度的项目，请以新编码登记新年度项目，把这些支付改用新编码"
        "后重新导入（money dated after its project's year closed was counted in that year）"
    )


@app.command("status")
def status_cmd(
    db: DbOption = None,
    profile: ProfileOption = None,
    as_json: JsonOption = False,
    year: YearOption = None,
    limit: Annotated[int, typer.Option(help="projects shown in the human table")] = 20,
) -> None:
    """Region, department and project figures as of the clock."""
    with opened_engine(db, profile, existing=True) as engine:
        status = engine.status(year)
    if as_json:
        emit_json(status)
        return
    out = render.console()
    out.print(render.region_table(status))
    depts = sorted(status["departments"], key=lambda d: (d["execution_rate"] is None, d["execution_rate"] or 0))
    out.print(render.departments_table(depts, "各部门执行率（由低到高）"))
    projects = sorted(
        (p for p in status["projects"] if p["execution_rate"] is not None), key=lambda p: p["execution_rate"]
    )
    out.print(render.projects_table(projects[:limit], f"执行率最低的{min(limit, len(projects))}个项目"))
    # Refunds beyond what was paid, or cuts beyond the budget: figures no ledger should
    # hold, most often a unit or sign error in an import. Kept (events may arrive in any
    # order), but named.
    if negative := [p["project_id"] for p in status["projects"]
                    if p["paid"].startswith("-") or p["budget"].startswith("-")]:
        shown = render.listed(negative)
        out.print(
            f"[yellow]{len(negative)} 个项目的已支付或预算为负数（{escape(shown)}）：退回多于支付，或调减多于预算，"
            f"请核对导入数据的单位与正负号[/yellow]",
            highlight=False,
        )
    if no_rate := [p["project_id"] for p in status["projects"] if p["execution_rate"] is None]:
        shown = render.listed(no_rate)
        out.print(
            f"[yellow]另有 {len(no_rate)} 个项目预算为 0 或为负、没有执行率，未列入上表（{escape(shown)}）；"
            f"其中有支付的会有“超预算支付”预警，见 `budgetwatch alerts`[/yellow]",
            highlight=False,
        )
    if not status["projects"]:
        out.print(f"[yellow]{status['fiscal_year']} 年度没有已登记的项目：以上数字均为 0（请检查 --year）[/yellow]")
    if unregistered := status["unregistered_projects"]:
        shown = render.listed(unregistered)
        out.print(
            f"[yellow]{len(unregistered)} 个项目有支付等事件但尚未登记（{escape(shown)}），未计入以上数字；"
            f"请导入其项目登记（项目表）[/yellow]",
            highlight=False,
        )


@app.command("alerts")
def alerts_cmd(
    db: DbOption = None,
    as_json: JsonOption = False,
    all_: Annotated[bool, typer.Option("--all", help="every transition, not just active alerts")] = False,
    department: Annotated[str | None, typer.Option(help="only this department")] = None,
    year: Annotated[int | None, typer.Option(
        min=EARLIEST_YEAR, max=LATEST_YEAR, help="only this fiscal year's (default: every year's)")] = None,
    limit: Annotated[int, typer.Option(
        min=0, help="rows of the table: the most urgent alerts, or with --all the latest transitions "
                    "(0: every one; --json lists every one)")] = 200,
) -> None:
    """Active alerts (every transition with --all)."""
    with Store(db or settings().db, existing=True) as store:
        if as_json:
            if all_:
                emit_json_array(store.each_transition(department=department, fiscal_year=year))
            else:
                emit_json(store.listed_alerts(every_transition=False, department=department, fiscal_year=year))
            return
        if all_ and limit:
            rows, total = store.latest_transitions(limit, department=department, fiscal_year=year)
        else:
            rows = store.listed_alerts(every_transition=all_, department=department, fiscal_year=year)
            total = len(rows)
    scope = f"{year}年度" if year is not None else ""
    if not all_:
        rows = render.most_urgent_first(rows)[:limit or None]
    shown = f"，{'显示最近' if all_ else '显示最紧要的'}{len(rows):,}条" if len(rows) < total else ""
    title = f"{scope}{'预警变化记录' if all_ else '当前预警'}（{total:,}条{shown}）"
    out = render.console()
    out.print(render.alerts_table(rows, title, transitions=all_))
    if len(rows) < total:
        out.print(f"另有 {total - len(rows):,} 条未显示：--limit 0 显示全部，--department / --year 缩小范围，"
                  "--json 导出全部", highlight=False)


@app.command("reductions")
def reductions_cmd(
    db: DbOption = None,
    profile: ProfileOption = None,
    as_json: JsonOption = False,
    xlsx: Annotated[Path | None, typer.Option("--xlsx", help="also write the proposals to this XLSX file")] = None,
    year: YearOption = None,
) -> None:
    """Reduction proposals (调减建议) of one fiscal year: projects with low_execution firing, or,
    after the year's close, those whose alert ended with it (department_overall lines, whose
    money is their department's projects', get none)."""
    with opened_engine(db, profile, existing=True) as engine:
        proposals = [p.to_json() for p in engine.reductions(year)]
        clock = engine.monitor.clock
        shown = engine.shown_year(year)
        closed_on = engine.profile.year_close_day(year) if year is not None and engine.is_closed(year) else None
    if xlsx is not None:
        write_reductions_xlsx(xlsx, proposals, iso(clock) if clock else "", shown)
    if as_json:
        emit_json(proposals)
        return
    out = render.console()
    label = f"{shown}年度调减建议" if shown else "调减建议"
    out.print(render.reductions_table(proposals, f"{label}（{len(proposals)}个项目）"))
    if not proposals and year is None and shown:
        # January: this year has none yet, last year's are what the bureau is after
        out.print(f"{shown}年度暂无调减建议；上一年度的请用 --year {shown - 1}", highlight=False)
    if closed_on is not None:
        out.print(
            f"{year}年度的预警已于 {iso(closed_on)} 停止跟踪（年度结束）：以上为年度结束时仍低于执行进度要求的项目，"
            f"调减（收回）建议按 {year}-12-31 的序时进度计算，金额按项目当前的预算和支付（含其后的调整和支付）",
            highlight=False,
        )
    if xlsx is not None:
        out.print(f"已写入 {escape(str(xlsx))}")


@app.command("rejected")
def rejected_cmd(
    db: DbOption = None,
    as_json: JsonOption = False,
    limit: Annotated[int, typer.Option(
        min=0, help="rows of the table: the latest (0: every one; --json lists every one)")] = 200,
) -> None:
    """Rejected input (dead letters) with source and reason."""
    with Store(db or settings().db, existing=True) as store:
        if as_json:
            emit_json_array(store.each_rejection())
            return
        if limit:
            rows, total = store.latest_rejections(limit)
        else:
            rows = store.rejections()
            total = len(rows)
    out = render.console()
    out.print(render.rejected_table(rows, total))
    if len(rows) < total:
        out.print(f"另有 {total - len(rows):,} 条较早的未显示：--limit 0 显示全部，--json 导出全部", highlight=False)


@app.command("backup")
def backup_cmd(
    destination: Annotated[Path, typer.Argument(help="the copy to write (a new file; --force replaces one)")],
    db: DbOption = None,
    force: Annotated[bool, typer.Option("--force", help="replace the destination if it exists")] = False,
    as_json: JsonOption = False,
) -> None:
    """A consistent copy of the store as of one commit, safe while `serve` or `run` writes."""
    with Store(db or settings().db, existing=True) as store:
        summary = back_up(store, destination, force=force)
    if as_json:
        emit_json(summary.to_json())
        return
    found = summary.to_json()
    render.console().print(
        f"已备份 {escape(summary.source)} → {escape(summary.destination)}："
        f"{summary.bytes / 2**20:,.1f} MB，{summary.events:,} 条事件，"
        f"业务时钟 {found['clock'] or '（尚未运行）'}，用时 {summary.seconds:.1f} 秒，校验通过",
        soft_wrap=True,  # a path broken over two lines cannot be copied
    )


@app.command("generate")
def generate_cmd(
    out: Annotated[Path, typer.Option("--out", help="JSONL file to write")],
    projects: Annotated[int, typer.Option(help="number of projects")] = 4000,
    seed: Annotated[int, typer.Option(help="random seed")] = 7,
    year: Annotated[int, typer.Option(help="fiscal year")] = 2025,
    payments_per_project: Annotated[int, typer.Option(help="mean payments per project")] = 50,
) -> None:
    """Write a seeded, realistic fiscal year of events (with a few malformed lines)."""
    spec = Spec(projects=projects, seed=seed, fiscal_year=year, payments_per_project=payments_per_project)
    count = 0
    with out.open("wb") as handle:
        for line in generate(spec):
            handle.write(line)
            handle.write(b"\n")
            count += 1
    render.console().print(f"已生成 {count} 条事件 → {out}")


@app.command("demo")
def demo_cmd(
    directory: Annotated[Path, typer.Option("--dir", help="where the demo writes its files")] = Path("demo"),
    projects: Annotated[int, typer.Option(help="number of projects")] = 4000,
    seed: Annotated[int, typer.Option(help="random seed")] = 7,
    as_of: Annotated[str, typer.Option("--as-of", help="run up to this date")] = "2025-09-30",
    profile: ProfileOption = None,
) -> None:
    """Generate a fiscal year, ingest it, run it to 09-30 and show warnings and proposals."""
    from streams.demo import run_demo

    run_demo(directory, projects=projects, seed=seed, as_of=as_of, profile=load_profile(profile or settings().profile))


# Commands of other areas register themselves on `app` when imported here.
# One line per module; keep the list sorted.
# (extension modules)
from streams import cli_board  # noqa: E402, F401, I001
from streams import cli_kafka  # noqa: E402, F401
from streams import cli_notify  # noqa: E402, F401
from streams import cli_service  # noqa: E402, F401


def main() -> None:
    try:
        app()
    except (BudgetwatchError, ProfileError, InputError, TabularError) as err:
        fail(str(err))
    except ValidationError as err:  # a BUDGETWATCH_* variable that does not parse
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}={e.get('input')!r}: {e['msg']}" if e["loc"]
            else str(e["msg"]).removeprefix("Value error, ")  # a check of several settings
            for e in err.errors()
        )
        fail(f"配置取值无效：{problems}；请检查命令行选项或 BUDGETWATCH_* 环境变量（a setting cannot be used）")
    except OSError as err:  # a path that cannot be written or read
        where = f" {err.filename}" if err.filename else ""
        fail(f"无法读写文件{where}：{err.strerror or err}；请检查路径及其所在目录（check the path and its directory）")


def fail(message: str) -> NoReturn:
    # escaped: a name or path like pay[/v2].jsonl is text, not rich markup
    render.console().print(f"[red]错误 error:[/red] {escape(message)}", highlight=False)
    sys.exit(2)


if __name__ == "__main__":
    main()
