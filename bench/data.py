"""Benchmark inputs: seeded generated years, written once per spec and reused."""

from __future__ import annotations

import os
from pathlib import Path

from connectors.synthetic import Spec, generate

FISCAL_YEAR = 2025


def year_file(workdir: Path, projects: int, payments_per_project: int, seed: int = 7) -> Path:
    """The JSONL year for a spec (generated on first use, then cached in ``workdir``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"year-{projects}p-{payments_per_project}pay-s{seed}.jsonl"
    if path.exists():
        return path
    spec = Spec(projects=projects, seed=seed, fiscal_year=FISCAL_YEAR,
                payments_per_project=payments_per_project)
    partial = path.with_suffix(".partial")
    with partial.open("wb") as handle:  # buffered: a batch of lines would hold orjson's buffers
        for line in generate(spec):
            handle.write(line)
            handle.write(b"\n")
    os.replace(partial, path)
    return path


def count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        target = Path(str(path) + suffix)
        if target.exists():
            target.unlink()
