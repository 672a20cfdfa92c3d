"""`bench/` still runs: the whole benchmark on a tiny input (seconds), structure checked.

No timing is asserted here — benchmarks never run inside `make test`; `make bench`
and `make bench-quick` measure.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

import compiled_core

ROOT = Path(__file__).resolve().parents[2]
FIGURES = {
    "ingest_events_per_s", "replay_events_per_s", "baseline_events_per_s", "replay_vs_baseline",
    "faust_agent_events_per_s", "faust_floor_events_per_s", "faust_vs_floor",
    "alert_latency_p50_ms", "alert_latency_p99_ms", "peak_rss_mb", "mb_per_100k_projects",
}


@pytest.mark.slow
def test_bench_runs_on_a_tiny_input(tmp_path: Path) -> None:
    out = tmp_path / "results" / "latest.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--workdir", str(tmp_path / "work"), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "budgetwatch benchmarks" in done.stdout
    result = orjson.loads(out.read_bytes())
    assert set(result) == {"machine", "python", "date", "core", "figures", "scaling"}
    assert all(isinstance(result[k], str) and result[k] for k in ("machine", "python", "date", "core"))
    # With the compiled core built, the same run measures the Python sources beside it.
    compiled = compiled_core.active()
    assert result["core"].startswith("mypyc-compiled" if compiled else "Python sources")
    extra = {"replay_python_sources_events_per_s", "compiled_vs_python_sources"} if compiled else set()
    assert set(result["figures"]) == FIGURES | extra
    for name, value in result["figures"].items():
        assert isinstance(value, int | float) and value > 0, (name, value)
    assert len(result["scaling"]) == 3
    for row in result["scaling"]:
        assert set(row) == {"projects", "events", "replay_s"}
        assert row["projects"] > 0 and row["events"] > 0 and row["replay_s"] > 0
    assert [r["projects"] for r in result["scaling"]] == sorted(r["projects"] for r in result["scaling"])
    # The Faust floor is measured on exactly the messages the agents were given (events
    # and ticks), so their ratio compares like with like.
    details = orjson.loads(out.with_name("latest-details.json").read_bytes())
    for run in details["faust"]:
        assert run["floor_messages"] == sum(run["outcomes"].values()), run
        assert run["floor_events_per_s"] > 0
    # Replay CPU covers every thread (the WAL checkpoint thread too): it is reported
    # beside wall time so a speed-up by spreading work over cores would show.
    for run in details["replay"]:
        assert 0 < run["cpu_seconds"] <= run["seconds"] * 2 + 1, run
    assert "process CPU" in done.stdout
