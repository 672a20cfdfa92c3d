"""The mypyc-compiled core (compiled_core) is what runs after `make`, and it gives
exactly what the Python sources give: the same year, both ways, in real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

import compiled_core

BIN = Path(sys.executable).parent / "budgetwatch"
UNUSABLE = compiled_core.why_not()
needs_build = pytest.mark.skipif(
    UNUSABLE is not None,
    reason=f"the compiled core is not usable here ({UNUSABLE}): `make compiled` builds it "
    "(needs a C compiler and the Python headers)",
)


def cli(*args: str, db: Path, pure: bool) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BUDGETWATCH_DB": str(db), compiled_core.PURE_ENV: "1" if pure else "0"}
    return subprocess.run([str(BIN), *args], env=env, capture_output=True, text=True, check=True, timeout=300)


def loaded_from(pure: bool) -> str:
    env = {**os.environ, compiled_core.PURE_ENV: "1" if pure else "0"}
    code = "import budget.ledger, alerts.monitor; print(budget.ledger.__file__); print(alerts.monitor.__file__)"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout


@needs_build
def test_the_compiled_modules_are_loaded_unless_pure_is_asked_for() -> None:
    compiled = loaded_from(pure=False).split()
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    assert all(p.startswith(str(compiled_core.BUILD)) and p.endswith(suffix) for p in compiled), compiled
    sources = loaded_from(pure=True).split()
    assert all(p.endswith(".py") and not p.startswith(str(compiled_core.BUILD)) for p in sources), sources


def _year(db: Path, events: Path, pure: bool) -> dict[str, Any]:
    cli("ingest", str(events), db=db, pure=pure)
    cli("run", "--as-of", "2025-12-31", db=db, pure=pure)
    return {
        what: json.loads(cli(*args, db=db, pure=pure).stdout)
        for what, args in {
            "status": ("status", "--json"),
            "transitions": ("alerts", "--all", "--json"),
            "alerts": ("alerts", "--json"),
            "reductions": ("reductions", "--json"),
            "rejected": ("rejected", "--json"),
        }.items()
    }


@needs_build
@pytest.mark.slow
def test_compiled_and_pure_give_the_same_year(tmp_path: Path) -> None:
    events = tmp_path / "year.jsonl"
    cli("generate", "--projects", "800", "--seed", "5", "--out", str(events), db=tmp_path / "unused.db", pure=True)
    pure = _year(tmp_path / "pure.db", events, pure=True)
    compiled = _year(tmp_path / "compiled.db", events, pure=False)
    assert len(pure["transitions"]) > 1000 and pure["reductions"] and pure["rejected"]
    for what in pure:
        assert compiled[what] == pure[what], what
