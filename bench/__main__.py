"""`python -m bench [--quick]`: run every piece, print tables, write bench/results/latest.json."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

import compiled_core
from bench import latency
from bench.data import count_lines, remove_db, year_file

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"

TARGETS = {
    "ingest_events_per_s": (">=", 100_000),
    "replay_events_per_s": (">=", 150_000),
    "replay_vs_baseline": (">=", 0.4),
    "faust_agent_events_per_s": (">=", 20_000),
    "alert_latency_p99_ms": ("<=", 50),
    "mb_per_100k_projects": ("<=", 50),
}


@dataclass(frozen=True)
class Plan:
    name: str
    projects: int
    payments_per_project: int
    reps: int
    faust_projects: int
    latency_seconds: float
    latency_rate: int
    latency_projects: int
    scaling: tuple[int, ...]


PLANS = {
    # Faust at 2,000 projects: the agents run ~8k events/s in the in-memory driver, so a
    # larger year would take most of the run's time for the same per-event figure.
    "full": Plan("full", 100_000, 20, 3, 2_000, 30.0, 1000, 2000, (10_000, 100_000, 500_000)),
    "quick": Plan("quick", 10_000, 20, 3, 300, 10.0, 1000, 1000, (2_000, 5_000, 10_000)),
    "tiny": Plan("tiny", 200, 10, 1, 50, 1.5, 200, 50, (50, 100, 200)),
}


def run_piece(piece: str, *, pure: bool = False, **args: Any) -> dict[str, Any]:
    """One piece in a fresh interpreter, so its peak RSS is its own; ``pure``: on the
    Python sources even where the compiled core is built (compiled_core)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if pure:
        env[compiled_core.PURE_ENV] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "bench.pieces", piece, orjson.dumps(args).decode()],
        cwd=ROOT, env=env, capture_output=True, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"bench piece {piece} failed (exit {done.returncode}):\n{done.stderr.decode(errors='replace')}"
        )
    result: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
    return result


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f", {int(line.split()[1]) / 1024 / 1024:.0f} GB RAM"
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores{memory}, {platform.system()} {platform.release()}"


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def slope(points: list[tuple[int, float]]) -> float:
    """Least-squares MB per project over (projects, peak RSS MB)."""
    if len(points) < 2:
        return points[0][1] / points[0][0] if points else 0.0
    mx = statistics.fmean(p for p, _ in points)
    my = statistics.fmean(m for _, m in points)
    den = sum((p - mx) ** 2 for p, _ in points)
    return sum((p - mx) * (m - my) for p, m in points) / den if den else 0.0


def run(plan: Plan, workdir: Path, out: Path, console: Console) -> dict[str, Any]:
    started = time.perf_counter()
    details: dict[str, Any] = {"plan": plan.__dict__}

    def step(text: str) -> None:
        console.print(f"[dim]{time.perf_counter() - started:7.1f}s[/dim] {text}", highlight=False)

    step(f"generating {plan.projects:,} projects x ~{plan.payments_per_project} payments")
    main_file = year_file(workdir, plan.projects, plan.payments_per_project)
    lines = count_lines(main_file)
    db = workdir / f"main-{plan.projects}.db"

    ingests = []
    for rep in range(plan.reps):
        ingests.append(run_piece("ingest", path=str(main_file), db=str(db)))
        step(f"ingest {rep + 1}/{plan.reps}: {ingests[-1]['events_per_s']:,.0f} events/s")
    details["ingest"] = ingests

    compiled, core = compiled_core.choice()
    details["core"] = core
    replays, pure_replays = [], []
    for rep in range(plan.reps):
        replays.append(run_piece("replay", db=str(db)))
        r = replays[-1]
        step(f"replay {rep + 1}/{plan.reps}: {r['events_per_s']:,.0f} events/s, "
             f"baseline {r['baseline_events_per_s']:,.0f}, peak RSS {r['peak_rss_mb']:.0f} MB")
        if compiled:  # paired, alternating: what the compiled core is worth on this machine now
            pure_replays.append(run_piece("replay", pure=True, db=str(db), with_baseline=False))
            step(f"replay on the Python sources {rep + 1}/{plan.reps}: "
                 f"{pure_replays[-1]['events_per_s']:,.0f} events/s")
    details["replay"] = replays
    details["replay_python_sources"] = pure_replays

    faust_file = year_file(workdir, plan.faust_projects, plan.payments_per_project)
    fausts = []
    for rep in range(plan.reps):
        fausts.append(run_piece("faust", path=str(faust_file)))
        step(f"faust agents {rep + 1}/{plan.reps}: {fausts[-1]['events_per_s']:,.0f} events/s, "
             f"floor {fausts[-1]['floor_events_per_s']:,.0f}")
    details["faust"] = fausts

    step(f"latency: budgetwatch serve at {plan.latency_rate}/s for {plan.latency_seconds:g}s")
    lat = latency.measure(ROOT, rate=plan.latency_rate, seconds=plan.latency_seconds,
                          projects=plan.latency_projects)
    details["latency"] = lat
    step(f"latency p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms over {lat['probes']} probes")

    scaling = []
    rss_points: list[tuple[int, float]] = []
    for projects in plan.scaling:
        if projects == plan.projects:
            r = sorted(replays, key=lambda x: x["seconds"])[len(replays) // 2]
            events, seconds, peak = r["events"], median([x["seconds"] for x in replays]), max(
                x["peak_rss_mb"] for x in replays)
        else:
            step(f"scaling: {projects:,} projects")
            path = year_file(workdir, projects, plan.payments_per_project)
            scale_db = workdir / f"scale-{projects}.db"
            run_piece("ingest", path=str(path), db=str(scale_db))
            r = run_piece("replay", db=str(scale_db), with_baseline=False)
            events, seconds, peak = r["events"], r["seconds"], r["peak_rss_mb"]
            remove_db(scale_db)
        scaling.append({"projects": projects, "events": events, "replay_s": round(seconds, 3)})
        rss_points.append((projects, peak))
        step(f"scaling {projects:,} projects: {events:,} events in {seconds:.2f}s, peak RSS {peak:.0f} MB")
    details["scaling_rss_mb"] = rss_points
    remove_db(db)

    replay_rate = median([r["events_per_s"] for r in replays])
    baseline_rate = median([r["baseline_events_per_s"] for r in replays])
    figures = {
        "ingest_events_per_s": round(median([r["events_per_s"] for r in ingests])),
        "replay_events_per_s": round(replay_rate),
        "baseline_events_per_s": round(baseline_rate),
        "replay_vs_baseline": round(median(
            [r["events_per_s"] / r["baseline_events_per_s"] for r in replays]), 3),
        "faust_agent_events_per_s": round(median([r["events_per_s"] for r in fausts])),
        "faust_floor_events_per_s": round(median([r["floor_events_per_s"] for r in fausts])),
        "faust_vs_floor": round(median([r["events_per_s"] / r["floor_events_per_s"] for r in fausts]), 3),
        "alert_latency_p50_ms": round(lat["p50_ms"], 2),
        "alert_latency_p99_ms": round(lat["p99_ms"], 2),
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in replays), 1),
        "mb_per_100k_projects": round(slope(rss_points) * 100_000, 1),
    }
    if pure_replays:
        figures["replay_python_sources_events_per_s"] = round(median([r["events_per_s"] for r in pure_replays]))
        figures["compiled_vs_python_sources"] = round(median(
            [c["events_per_s"] / p["events_per_s"] for c, p in zip(replays, pure_replays, strict=True)]), 3)
    result = {
        "machine": machine(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "date": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "core": f"mypyc-compiled ({len(compiled_core.MODULES)} modules)" if compiled else f"Python sources ({core})",
        "figures": figures,
        "scaling": scaling,
    }
    details.update(mode=plan.name, input_events=lines, seconds=time.perf_counter() - started)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    out.with_name(out.stem + "-details.json").write_bytes(
        orjson.dumps(details, option=orjson.OPT_INDENT_2) + b"\n")
    report(result, details, console)
    return result


def _meets(name: str, value: float) -> str:
    target = TARGETS.get(name)
    if target is None:
        return ""
    op, bound = target
    ok = value >= bound if op == ">=" else value <= bound
    return "[green]yes[/green]" if ok else "[red]no[/red]"


def _per_event(runs: list[dict[str, Any]], key: str) -> float:
    return median([r[key] / r["events"] for r in runs])


def report(result: dict[str, Any], details: dict[str, Any], console: Console) -> None:
    f = result["figures"]
    table = Table(title=f"budgetwatch benchmarks ({details['mode']}) — {result['date']}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_column("met", justify="center")
    table.add_column("how", overflow="fold")
    plan = details["plan"]
    rows = [
        ("ingest_events_per_s", f"{f['ingest_events_per_s']:,}",
         f"JSONL → SQLite log, {details['input_events']:,} lines, median of {plan['reps']}"),
        ("replay_events_per_s", f"{f['replay_events_per_s']:,}",
         f"embedded engine, {plan['projects']:,} projects, every day to 12-31; process CPU "
         f"{median([r['cpu_seconds'] for r in details['replay']]):.1f} s for "
         f"{median([r['seconds'] for r in details['replay']]):.1f} s wall (all threads)"),
        ("baseline_events_per_s", f"{f['baseline_events_per_s']:,}",
         "same run: read + decode every event in business order, sum per project"),
        ("replay_vs_baseline", f"{f['replay_vs_baseline']:.3f}", "median of paired ratios"),
        ("faust_agent_events_per_s", f"{f['faust_agent_events_per_s']:,}",
         f"real agents, in-memory test driver (no broker), {plan['faust_projects']:,} projects; "
         f"changelog {_per_event(details['faust'], 'changelog_messages'):.1f} messages and "
         f"{_per_event(details['faust'], 'changelog_bytes'):,.0f} B per event; "
         f"peak RSS {max(r['peak_rss_mb'] for r in details['faust']):.0f} MB"),
        ("faust_floor_events_per_s", f"{f['faust_floor_events_per_s']:,}",
         "same run, same driver and messages: an agent doing one table write per message"),
        ("faust_vs_floor", f"{f['faust_vs_floor']:.3f}", "median of paired ratios"),
        ("alert_latency_p50_ms", f"{f['alert_latency_p50_ms']:.1f}",
         f"serve subprocess, {plan['latency_rate']}/s for {plan['latency_seconds']:g}s"),
        ("alert_latency_p99_ms", f"{f['alert_latency_p99_ms']:.1f}",
         f"{details['latency']['probes']} probes, HTTP ingest → visible in /api/alerts"),
        *([("replay_python_sources_events_per_s", f"{f['replay_python_sources_events_per_s']:,}",
            "same replay, BUDGETWATCH_PURE=1: the Python sources, alternating with the compiled runs"),
           ("compiled_vs_python_sources", f"{f['compiled_vs_python_sources']:.3f}", "median of paired ratios")]
          if "compiled_vs_python_sources" in f else []),
        ("peak_rss_mb", f"{f['peak_rss_mb']:.0f}", "replay process, peak RSS (VmHWM)"),
        ("mb_per_100k_projects", f"{f['mb_per_100k_projects']:.1f}",
         "slope of replay peak RSS over the scaling sizes"),
    ]
    for name, value, how in rows:
        target = TARGETS.get(name)
        shown = f"{target[0]} {target[1]:,}" if target else ""
        table.add_row(name, value, shown, _meets(name, f[name]), how)
    console.print(table)
    scale = Table(title="scaling: replay of one fiscal year")
    for column in ("projects", "events", "replay s", "events/s", "peak RSS MB"):
        scale.add_column(column, justify="right")
    for row, (_, rss) in zip(result["scaling"], details["scaling_rss_mb"], strict=True):
        scale.add_row(f"{row['projects']:,}", f"{row['events']:,}", f"{row['replay_s']:.2f}",
                      f"{row['events'] / row['replay_s']:,.0f}", f"{rss:.0f}")
    console.print(scale)
    console.print(f"machine: {result['machine']}; python {result['python']}; core {result['core']}; "
                  f"total {details['seconds']:.0f}s", highlight=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller run, under two minutes")
    parser.add_argument("--tiny", action="store_true", help="seconds; for the smoke test")
    parser.add_argument("--workdir", type=Path, default=Path(os.environ.get(
        "BUDGETWATCH_BENCH_DIR", "/tmp/budgetwatch-bench")), help="generated inputs and stores")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    args = parser.parse_args(argv)
    plan = PLANS["tiny" if args.tiny else "quick" if args.quick else "full"]
    run(plan, args.workdir, args.out, Console())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
